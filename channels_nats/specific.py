"""Specific channels (``prefix.<client>!<id>``): routes, sizes, credits, arrivals.

A specific channel belongs to the process whose client id its name carries.
Sends to it go to that process's subject (:meth:`SpecificChannels.route`);
the receiving process buffers them in its :class:`~.inbox.Inbox` and, as its
consumers take them, returns credits in batches to the sender's control
subject (:mod:`.flow`). The hot paths (``Transport.send``/``receive``) use
the attributes of this object directly; the handlers of incoming ``DIRECT``
and ``CREDIT`` frames are :meth:`on_direct` and :meth:`on_credit`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .config import LayerConfig
from .exceptions import MessageTooLarge, NatsLayerError
from .flow import CreditBatcher, CreditWindows
from .hub import Hub
from .inbox import Entry, Inbox
from .link import Link
from .loops import runs_here
from .resend import Reassembly
from .serializers import CREDIT, DATA_OVERHEAD, Frame, pack_control
from .stats import Stats
from .subjects import Subjects, owner_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from .loops import Links

__all__ = ["SpecificChannels"]

CREDIT_FLUSH_DELAY = 0.02
#: A body at least this far below ``max_payload`` fits in a frame whatever
#: its target: names are shorter than 100 characters (400 bytes of UTF-8),
#: the client id is 12 and the envelope at most DATA_OVERHEAD. The send paths
#: skip :meth:`SpecificChannels.check_size` for such bodies.
NAME_ROOM = 1024
MAX_ROUTES = 8192


def _wake_up(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class SpecificChannels:
    """Routing, size checks, credit windows and the buffer of specific channels."""

    def __init__(
        self,
        config: LayerConfig,
        client_id: str,
        subjects: Subjects,
        stats: Stats,
        capacity_of: Callable[[str], int],
        gaps: Reassembly,
        hub: Hub,
    ) -> None:
        self.client_id = client_id
        self.credit_wait = config.credit_wait
        self.subjects = subjects
        self.stats = stats
        self.capacity_of = capacity_of
        self.gaps = gaps
        self.hub = hub
        self.credits = CreditBatcher(
            lambda ch: max(1, capacity_of(ch) // 2),
            self.send_credit,
            self._schedule_credit_flush,
        )
        self.inbox = Inbox(config.expiry, capacity_of, stats, self.credits.consumed)
        self.windows = CreditWindows(capacity_of, config.expiry)
        #: channel -> subject of its process ("" for a channel of this one).
        self.routes: dict[str, str] = {}
        self._dot_client_id = "." + client_id
        self.links: Links  # set by the transport once its links exist

    # -- sending -----------------------------------------------------------------

    def route(self, channel: str) -> str:
        """Return the subject that reaches ``channel`` ("" if it is ours).

        Cached per channel name (bounded), as senders reply to the same
        channels over and over.
        """
        owner = owner_of(channel)
        subject = "" if owner == self.client_id else self.subjects.process(owner)
        routes = self.routes
        if len(routes) >= MAX_ROUTES:
            routes.clear()
        routes[channel] = subject
        return subject

    def check_size(self, body: bytes, target: str) -> None:
        """Raise :class:`MessageTooLarge` if a frame of ``body`` cannot be sent."""
        name = len(target) if target.isascii() else len(target.encode())
        size = len(body) + name + len(self.client_id) + DATA_OVERHEAD
        max_payload = self.links.max_payload
        if size > max_payload:
            raise MessageTooLarge(
                f"The encoded message is about {size} bytes; the NATS server "
                f"accepts at most max_payload={max_payload}. Nothing was sent."
            )

    async def credit_arrived(self, channel: str) -> bool:
        """Wait up to ``credit_wait`` seconds for credit on its way, then take it.

        With a consumer that keeps up, credit for a channel whose window is
        used up is a batch away (``capacity / 2`` taken messages): waiting
        for it instead of raising ``ChannelFull`` at once spares the caller a
        retry loop, and a sender that waits leaves the CPU to the consumer.
        The wait also lets in the credit frames sitting in the socket of a
        sender in a tight loop, which never yields otherwise. A consumer that
        is stuck costs the sender this wait and one PING (:meth:`link_down`).
        """
        windows = self.windows
        self.stats.incr("credit_waits")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.credit_wait
        while True:
            fut = windows.take_or_wait(channel)
            if fut is None:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                windows.stop_waiting(channel, fut)
                return False
            # Woken by credit (then take it: another sender may be first) or
            # by the deadline (then one last try).
            timer = loop.call_later(remaining, _wake_up, fut)
            try:
                await fut
            finally:
                timer.cancel()
                windows.stop_waiting(channel, fut)

    async def link_down(self, link: Link, channel: str) -> bool:
        """Whether a send without credit goes out held by an outage.

        No credit can mean a full channel or a link that carries nothing (its
        credits are stuck with it). A PING round trip tells them apart, and
        lets credits still in flight arrive: a send that finds credit after
        it is not refused either. A link that is down takes the message into
        its outage buffer (see :mod:`channels_nats.outage`).
        """
        if not runs_here(link.loop):
            return link.health.down_since is not None
        if await link.health.is_down():
            return True
        return self.windows.take(channel)

    # -- returning credits -------------------------------------------------------

    def send_credit(self, origin: str, channel: str, n: int) -> None:
        frame = pack_control(CREDIT, self.client_id, channel, n)
        try:
            self.hub.publish(self.subjects.control(origin), frame, raw=True)
        except NatsLayerError as exc:
            # The sender refills its window when its link comes back or
            # after expiry; until then it may see ChannelFull. Say so.
            self.stats.drop(
                "dropped_credits",
                "could not return %d credit(s) for %s to %s: %s",
                n,
                channel,
                origin,
                exc,
            )

    async def return_credit(self, origin: str, channel: str, n: int) -> None:
        """Send a due credit frame now, from the receiving loop if it can.

        A receiver draining a full buffer does not yield, so a frame handed to
        a task would wait until the buffer is empty and the sender would stall
        meanwhile. Publishing here and yielding once lets nats-py's flusher
        write it at once.
        """
        link = self.links.current()
        if link is None or not link.usable:
            self.send_credit(origin, channel, n)
            return
        frame = pack_control(CREDIT, self.client_id, channel, n)
        try:
            await link.publish(self.subjects.control(origin), frame)
        except NatsLayerError:
            return  # the sender refills the window after expiry
        await asyncio.sleep(0)

    def _schedule_credit_flush(self) -> None:
        home = self.links.current_home()
        if home is None:
            self.credits.flush()
            return
        try:
            home.loop.call_soon_threadsafe(
                home.loop.call_later, CREDIT_FLUSH_DELAY, self.credits.flush
            )
        except RuntimeError:
            self.credits.flush()

    # -- incoming frames (dispatch table handlers) -------------------------------

    def on_direct(self, frame: Frame, subject: str, reply: str, link: Link) -> None:
        channel, sent_at, body, seq, link_no = frame.args
        if not self.gaps.observe(frame.origin, link_no, channel, seq, frame):
            return  # behind a gap: take() gets it once the gap is closed
        head = channel.split("!", 1)[0]
        if head != self.client_id and not head.endswith(self._dot_client_id):
            self.stats.drop(
                "refused_direct",
                "dropped a frame for %s, not a channel of this process",
                channel,
            )
            return
        self.inbox.put(
            channel, Entry(sent_at, body, frame.origin), enforce_capacity=False
        )

    def on_direct_run(self, frames: list[Frame], subject: str, link: Link) -> None:
        """DIRECT frames of one batch for one channel, numbered in a row.

        One gap check, one name check and one buffer lock for the run when
        nothing is missing; else each frame takes :meth:`on_direct`.
        """
        first = frames[0]
        channel, _, _, seq, link_no = first.args
        if not self.gaps.observe_run(
            first.origin, link_no, channel, seq, seq + len(frames) - 1
        ):
            for frame in frames:
                self.on_direct(frame, subject, "", link)
            return
        head = channel.split("!", 1)[0]
        if head != self.client_id and not head.endswith(self._dot_client_id):
            self.stats.drop(
                "refused_direct",
                "dropped %d frame(s) for %s, not a channel of this process",
                len(frames),
                channel,
                n=len(frames),
            )
            return
        origin = first.origin
        new = tuple.__new__  # Entry(...) goes through a Python-level __new__
        self.inbox.put_run(
            channel,
            [
                new(Entry, (f.args[1], f.args[2], origin, None, 0.0, False))
                for f in frames
            ],
        )

    def on_held(self, frame: Frame, subject: str, reply: str, link: Link) -> None:
        """A DIRECT_HELD frame: sent while its sender's link was down."""
        channel, _, _, seq, link_no = frame.args
        if self.gaps.observe(frame.origin, link_no, channel, seq, frame):
            self.take(frame)

    def take(self, frame: Frame) -> None:
        """Buffer a frame of an outage's backlog: beyond capacity, not counted."""
        channel, sent_at, body, _, _ = frame.args
        head = channel.split("!", 1)[0]
        if head != self.client_id and not head.endswith(self._dot_client_id):
            self.stats.drop(
                "refused_direct",
                "dropped a frame for %s, not a channel of this process",
                channel,
            )
            return
        entry = Entry(sent_at, body, frame.origin, None, 0.0, True)
        self.inbox.put(channel, entry, enforce_capacity=False)

    def on_credit(self, frame: Frame, subject: str, reply: str, link: Link) -> None:
        channel, n = frame.args
        if (
            not isinstance(channel, str)
            or not isinstance(n, int)
            or not 0 < n <= self.capacity_of(channel)
        ):
            self.stats.drop(
                "refused_credits",
                "dropped a credit frame with count %r for %r",
                n,
                channel,
            )
            return
        self.windows.give_back(channel, n)
