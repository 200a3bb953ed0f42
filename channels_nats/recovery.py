"""Recovering frames core NATS dropped: the wire side of :mod:`channels_nats.resend`.

Frames of this protocol (control frames, see :mod:`channels_nats.serializers`):

- ``RESEND(stream, target, first, last)`` receiver -> sender's control
  subject: "publish frames ``first``..``last`` of your connection ``stream``
  to ``target`` again". The sender publishes what it still has to the
  receiver's process subject as ``*_RESENT`` data frames, then
  ``GONE(stream, target, first, last)``: "that was all I had"; the receiver
  counts the rest of the range as lost.
- ``MARK(stream, target, seq)`` sender -> the target's subject (the owning
  process's, or the group's): "my last frame to ``target`` was ``seq``".
- ``HELLO()`` on the broadcast subject: "my subscriptions are back after a
  reconnect"; every process answers with marks for what it recently sent to
  that process's channels and to groups.

Marks go out when this process's connection is back (its own backlog may
have reached the server before the receivers had re-subscribed) and when
another process says hello. Nothing is sent while no connection recovers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .exceptions import NatsLayerError
from .resend import Reassembly
from .serializers import (
    DIRECT,
    GONE,
    HELLO,
    MARK,
    RESEND,
    RESENT,
    pack_control,
    pack_data,
)
from .stats import Stats
from .subjects import Subjects, owner_of

if TYPE_CHECKING:
    from .hub import Hub
    from .links import Links

__all__ = ["Recovery"]

logger = logging.getLogger(__name__)

#: Seconds a receiver holds frames behind a gap waiting for the resend.
RESEND_WAIT = 2.0

Item = tuple[int, str, tuple[Any, ...], bool]  # (kind, origin, args, held)


class Recovery:
    """Asks for, answers and announces resends for one layer instance."""

    def __init__(
        self,
        client_id: str,
        subjects: Subjects,
        hub: Hub,
        links: Links,
        stats: Stats,
        deliver: Callable[[int, str, tuple[Any, ...], bool], None],
    ) -> None:
        self.client_id = client_id
        self.subjects = subjects
        self.hub = hub
        self.links = links
        self.stats = stats
        self._deliver = deliver
        self.reassembly = Reassembly(self._ask, self._release, self._lost, RESEND_WAIT)

    # -- receiver side -----------------------------------------------------------

    def _ask(
        self, origin: str, stream: int, target: str, first: int, last: int
    ) -> None:
        frame = pack_control(RESEND, self.client_id, stream, target, first, last)
        self._publish(self.subjects.control(origin), frame)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - frames arrive on a loop
            return
        loop.call_later(RESEND_WAIT + 0.05, self.reassembly.expire)

    def _release(self, item: Item) -> None:
        kind, origin, args, _ = item
        # Released after a gap: part of a backlog, taken beyond capacity.
        self._deliver(kind, origin, args, True)

    def _lost(self, origin: str, target: str, n: int) -> None:
        self.stats.drop(
            "lost_in_transit",
            "%d message(s) from %s to %s never arrived and could not be resent "
            "(older than outage_buffer, or their sender is gone)",
            n,
            origin,
            target,
            n=n,
        )

    def on_gone(self, origin: str, args: tuple[Any, ...]) -> None:
        stream, target, first, last = args
        self.reassembly.gone(origin, stream, target, first, last)

    def on_mark(self, origin: str, args: tuple[Any, ...]) -> None:
        stream, target, seq = args
        self.reassembly.mark(origin, stream, target, seq)

    # -- sender side ---------------------------------------------------------------

    def on_resend(self, origin: str, args: tuple[Any, ...]) -> None:
        stream, target, first, last = args
        to = self.subjects.process(origin)
        for link in list(self.links.by_loop.values()):
            if link.stream != stream:
                continue
            found = link.retained.find(target, first, last)
            for kept in found:
                frame = pack_data(
                    kept.kind + RESENT,
                    self.client_id,
                    kept.target,
                    kept.sent_at,
                    kept.body,
                    kept.seq,
                    stream,
                )
                self._publish(to, frame)
            self.stats.incr("resent", len(found))
            break
        self._publish(
            to, pack_control(GONE, self.client_id, stream, target, first, last)
        )

    def on_hello(self, origin: str) -> None:
        self.send_marks(origin)

    def recovered(self) -> None:
        """Our connection is back: say hello, and mark what we sent."""
        self._publish(self.subjects.broadcast, pack_control(HELLO, self.client_id))
        self.send_marks(None)

    def send_marks(self, owner: str | None) -> None:
        """Mark the last frame to each recent target (of ``owner``, if given)."""
        for link in list(self.links.by_loop.values()):
            for kept in link.retained.latest():
                if (
                    owner is not None
                    and kept.kind == DIRECT
                    and owner_of(kept.target) != owner
                ):
                    continue
                frame = pack_control(
                    MARK, self.client_id, link.stream, kept.target, kept.seq
                )
                self._publish(kept.subject, frame)

    def _publish(self, subject: str, frame: bytes) -> None:
        try:
            self.hub.publish(subject, frame)
        except NatsLayerError as exc:
            logger.debug("could not publish a recovery frame to %s: %r", subject, exc)
