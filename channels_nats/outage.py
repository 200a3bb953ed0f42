"""Whether a link to NATS carries traffic, and since when it has not.

A link is *down* from the moment nats-py reports a disconnect until it has
reconnected, and *stalled* when a PING it wrote has had no PONG for
:data:`STALL_AFTER` seconds (a frozen server, a network that drops without a
reset: nats-py itself only notices after ``ping_interval`` times
``max_outstanding_pings``). While a link is down or stalled:

- ``send`` and ``group_send`` keep publishing into nats-py's buffer (or the
  socket's) without waiting for credits, and mark their frames *held*
  (:data:`~channels_nats.serializers.DIRECT_HELD`,
  :data:`~channels_nats.serializers.GROUP_HELD`), so the receiver takes them
  beyond capacity when they arrive in one burst after recovery;
- once the outage is older than ``outage_buffer`` seconds, they raise
  :class:`~channels_nats.exceptions.LinkDown` instead, and nothing more is
  buffered; nats-py's ``pending_size`` bounds the bytes held meanwhile.

Liveness costs nothing on an idle link: a PING goes out at most every
:data:`PROBE_EVERY` seconds, and only from a link that is publishing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .exceptions import LinkDown, NatsLayerError
from .resend import Retained
from .stats import Stats

__all__ = ["PROBE_EVERY", "STALL_AFTER", "LinkHealth"]

logger = logging.getLogger(__name__)

#: Seconds between liveness PINGs of a link that is publishing.
PROBE_EVERY = 0.25
#: A PING unanswered this long marks the link stalled.
STALL_AFTER = 0.5
#: Pause between probes while the server does not answer at all.
RETRY_PAUSE = 0.1
#: A probe deadline that fires this late means the loop itself was busy (a
#: sender in a tight loop): the PONG may be unread in the socket, so look again.
LAG_TOLERANCE = 0.1


class LinkHealth:
    """Outage state of one link; all methods run on the link's loop.

    ``barrier`` is a PING/PONG round trip on the link; ``spawn`` runs a
    task owned by the link (cancelled when it closes).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        label: str,
        limit: float,
        stats: Stats,
        barrier: Callable[[], Awaitable[None]],
        spawn: Callable[[Awaitable[Any]], Any],
        recovered: Callable[[], None] = lambda: None,
        retained: Retained | None = None,
    ) -> None:
        self.loop = loop
        self.label = label
        self.limit = limit
        #: ``time.monotonic()`` when the current outage began, or None.
        self.down_since: float | None = None
        self._stats = stats
        self._barrier = barrier
        self._spawn = spawn
        # Called when a stall ends (a reconnect has nats-py's own callback).
        self._on_recovered = recovered
        # What the link sent recently stops ageing while it is down.
        self._retained = retained
        self._stalled = False
        self._probing = False
        self._probe_started = 0.0
        self._probe_due = 0.0

    # -- events from nats-py ----------------------------------------------------

    def disconnected(self) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
        if self._retained is not None:
            self._retained.pause()

    def reconnected(self) -> None:
        if not self._stalled:
            self._recovered()

    # -- called before each publish --------------------------------------------

    def held(self, now: float) -> bool:
        """Whether a frame published now is held by an outage.

        Raises :class:`LinkDown` once the outage is older than the limit.
        ``now`` is ``time.monotonic()``.
        """
        if not self._probing and now >= self._probe_due:
            self._start_probe(now)
        return self.held_elsewhere(now)

    def held_elsewhere(self, now: float) -> bool:
        """:meth:`held` for a caller on another thread: no probe from there."""
        down = self.down_since
        if down is None:
            return False
        if now - down > self.limit:
            self._stats.incr("refused_link_down")
            raise LinkDown(
                f"the NATS link of {self.label} has been down or unresponsive "
                f"for {now - down:.1f}s, longer than outage_buffer="
                f"{self.limit:g}s; the message was not sent"
            )
        return True

    def buffer_full(self, subject: str) -> LinkDown:
        """The error for a publish nats-py refused: its outage buffer is full."""
        self._stats.incr("refused_link_down")
        return LinkDown(
            f"the NATS link of {self.label} is down and its buffer of "
            f"pending_size bytes is full; the message to {subject} was not sent"
        )

    async def is_down(self) -> bool:
        """Whether the link is down, waiting up to :data:`STALL_AFTER` to know.

        Asked when a send finds no credit: a PONG within the wait proves the
        link and the server are alive (and lets credits still in flight
        arrive); no PONG marks the link stalled.
        """
        if self.down_since is not None:
            return True
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._barrier(), STALL_AFTER)
        except asyncio.TimeoutError:
            self._stall(started)
            return True
        except NatsLayerError:
            return self.down_since is not None
        return False

    # -- liveness probe ---------------------------------------------------------

    def _start_probe(self, now: float) -> None:
        self._probing = True
        self._probe_started = now
        self._probe_due = now + PROBE_EVERY
        self._spawn(self._probe())
        self._check_at(self.loop.time() + STALL_AFTER, now)

    def _check_at(self, when: float, started: float) -> None:
        self.loop.call_at(when, self._deadline, when, started)

    def _deadline(self, when: float, started: float) -> None:
        if not self._probing or self._stalled or started != self._probe_started:
            return  # answered, already stalled, or a later probe's business
        if self.loop.time() - when > LAG_TOLERANCE:
            # The loop was busy until now: let it read what arrived first.
            self._check_at(self.loop.time() + LAG_TOLERANCE, started)
            return
        self._stall(self._probe_started)

    def _stall(self, since: float) -> None:
        if self._stalled:
            return
        self._stalled = True
        if self.down_since is None:
            self.down_since = since
        if self._retained is not None:
            self._retained.pause()
        self._stats.incr("stalls")
        logger.warning(
            "%s: NATS has not answered a PING for %.1fs; holding publishes for "
            "up to outage_buffer=%gs",
            self.label,
            time.monotonic() - since,
            self.limit,
        )
        if not self._probing:
            self._probing = True
            self._probe_started = since
            self._spawn(self._probe())

    async def _probe(self) -> None:
        try:
            while True:
                try:
                    await self._barrier()
                    break
                except NatsLayerError:
                    await asyncio.sleep(RETRY_PAUSE)
        finally:
            self._probing = False
        if self._stalled:
            self._stalled = False
            logger.info(
                "%s: NATS answers again after %.1fs",
                self.label,
                time.monotonic() - self._probe_started,
            )
            self._recovered()
            self._on_recovered()

    def _recovered(self) -> None:
        self.down_since = None
        if self._retained is not None:
            self._retained.resume()
