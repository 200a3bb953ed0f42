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
from .resend import MAX_FRAMES, Reassembly
from .serializers import (
    DIRECT,
    DIRECT_HELD,
    DIRECT_RESENT,
    GONE,
    GROUP,
    GROUP_HELD,
    GROUP_RESENT,
    HELLO,
    MARK,
    RESEND,
    RESENT,
    Frame,
    pack_control,
    pack_data,
)
from .stats import Stats
from .subjects import Subjects, owner_of

if TYPE_CHECKING:
    from .hub import Hub
    from .link import Link
    from .loops import Links

__all__ = ["Recovery"]

logger = logging.getLogger(__name__)

#: Seconds a receiver holds frames behind a gap waiting for the resend.
RESEND_WAIT = 2.0

#: Data frame kind -> DIRECT or GROUP.
_BASE = {
    DIRECT: DIRECT,
    DIRECT_HELD: DIRECT,
    DIRECT_RESENT: DIRECT,
    GROUP: GROUP,
    GROUP_HELD: GROUP,
    GROUP_RESENT: GROUP,
}
#: Argument types of the protocol's control frames.
_SHAPES: dict[int, tuple[type, ...]] = {
    RESEND: (int, str, int, int),
    GONE: (int, str, int, int),
    MARK: (int, str, int),
}


def _shaped(args: tuple[Any, ...], shape: tuple[type, ...]) -> bool:
    """Whether arguments have the right types and sane numbers."""
    if len(args) != len(shape) or not all(
        type(a) is t for a, t in zip(args, shape, strict=True)
    ):
        return False
    numbers = args[2:]  # first and last of a range, or a mark's number
    if any(n <= 0 for n in numbers):
        return False
    return len(numbers) < 2 or 0 <= numbers[1] - numbers[0] < MAX_FRAMES


class Recovery:
    """Asks for, answers and announces resends for one layer instance.

    ``take`` maps DIRECT and GROUP to what hands a released frame to this
    process's channels (beyond capacity: it is part of a backlog); the
    transport fills it in, and :attr:`links`, once they exist.
    """

    def __init__(
        self, client_id: str, subjects: Subjects, hub: Hub, stats: Stats
    ) -> None:
        self.client_id = client_id
        self.subjects = subjects
        self.hub = hub
        self.stats = stats
        self.links: Links  # set by the transport
        self.take: dict[int, Callable[[Frame], None]] = {}
        self.reassembly = Reassembly(
            self._ask,
            self._release,
            self._lost,
            RESEND_WAIT,
            overlapping=lambda: self.links.overlapping,
        )

    # -- receiver side -----------------------------------------------------------

    def _ask(
        self, origin: str, number: int, target: str, first: int, last: int
    ) -> None:
        frame = pack_control(RESEND, self.client_id, number, target, first, last)
        self._publish(self.subjects.control(origin), frame)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - frames arrive on a loop
            return
        loop.call_later(RESEND_WAIT + 0.05, self.reassembly.expire)

    def _release(self, frame: Frame) -> None:
        self.take[_BASE[frame.kind]](frame)

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

    def on_resent(self, frame: Frame, subject: str, reply: str, link: Link) -> None:
        target, _, _, seq, number = frame.args
        self.reassembly.resent(frame.origin, number, target, seq, frame)

    def on_gone(self, frame: Frame, subject: str, reply: str, link: Link) -> None:
        if self._valid(frame):
            number, target, first, last = frame.args
            self.reassembly.gone(frame.origin, number, target, first, last)

    def on_mark(self, frame: Frame, subject: str, reply: str, link: Link) -> None:
        if self._valid(frame):
            number, target, seq = frame.args
            self.reassembly.mark(frame.origin, number, target, seq)

    def _valid(self, frame: Frame) -> bool:
        if _shaped(frame.args, _SHAPES[frame.kind]):
            return True
        self.stats.drop(
            "refused_resend",
            "dropped a resend frame of kind %r with %r",
            frame.kind,
            frame.args,
        )
        return False

    # -- sender side ---------------------------------------------------------------

    def on_resend(self, frame: Frame, subject: str, reply: str, link: Link) -> None:
        if not self._valid(frame):
            return
        number, target, first, last = frame.args
        to = self.subjects.process(frame.origin)
        for mine in list(self.links.by_loop.values()):
            if mine.number != number:
                continue
            found = mine.retained.find(target, first, last)
            for kept in found:
                again = pack_data(
                    kept.kind + RESENT,
                    self.client_id,
                    kept.target,
                    kept.sent_at,
                    kept.body,
                    kept.seq,
                    number,
                )
                self._publish(to, again)
            self.stats.incr("resent", len(found))
            break
        self._publish(
            to, pack_control(GONE, self.client_id, number, target, first, last)
        )

    def on_hello(self, frame: Frame, subject: str, reply: str, link: Link) -> None:
        self.send_marks(frame.origin)

    def recovered(self) -> None:
        """Our connection is back: say hello, and mark what we sent."""
        self._publish(self.subjects.broadcast, pack_control(HELLO, self.client_id))
        self.send_marks(None)

    def send_marks(self, owner: str | None) -> None:
        """Mark the last frame to each recent target (of ``owner``, if given)."""
        for mine in list(self.links.by_loop.values()):
            for kept in mine.retained.latest():
                if (
                    owner is not None
                    and kept.kind == DIRECT
                    and owner_of(kept.target) != owner
                ):
                    continue
                frame = pack_control(
                    MARK, self.client_id, mine.number, kept.target, kept.seq
                )
                self._publish(kept.subject, frame)

    def _publish(self, subject: str, frame: bytes) -> None:
        try:
            self.hub.publish(subject, frame, raw=True)  # read by the layer itself
        except NatsLayerError as exc:
            logger.debug("could not publish a recovery frame to %s: %r", subject, exc)
