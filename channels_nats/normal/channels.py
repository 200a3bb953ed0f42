"""Send and receive of normal channels (names without ``!``) over JetStream.

Messages to a normal channel wait in a JetStream stream (:mod:`.jetstream`)
until one receiver, in any process, takes them. Each receiving process pulls
through one :class:`~.puller.Puller` per channel and link; a message is acked
just before ``receive()`` returns it, so a receiver cancelled or killed before
that leaves it for another receiver (redelivered after
``redelivery_timeout``, at once if cancelled). Group memberships and
forwarding are :mod:`.members`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ..exceptions import ChannelFull
from ..inbox import Entry
from ..link import Link
from ..serializers import DIRECT, MalformedFrame, pack_data, unpack_frame
from .context import NormalContext
from .jetstream import JetStream
from .members import Members
from .puller import Fetched, Puller

__all__ = ["NormalChannels"]

logger = logging.getLogger(__name__)


class NormalChannels:
    """Send, receive and group membership of normal channels over JetStream."""

    def __init__(self, ctx: NormalContext) -> None:
        self._ctx = ctx
        self.jetstream = JetStream(ctx.config, ctx.capacity_of)
        self.members = Members(ctx, self.jetstream)
        self.inbox = ctx.inbox
        self.ack_wait = self.jetstream.ack_wait
        self._pullers: dict[tuple[int, str], Puller] = {}
        # Called on the transport's paths: bound once, no extra frame.
        self.forward = self.members.forward
        self.watch = self.members.watch
        self.membership = self.members.record

    # -- receiving ---------------------------------------------------------------

    async def puller(self, link: Link, channel: str) -> Puller:
        """The fetcher of ``channel`` on ``link``, bound to its consumer."""
        key = (id(link), channel)
        puller = self._pullers.get(key)
        if puller is not None and puller.link is link and not puller.broken:
            return puller
        address = self.jetstream.address(channel)
        await self.jetstream.ensure_stream(link, address.stream)
        psub = await link.run(self.jetstream.bind, link, address, channel)
        puller = Puller(
            self.jetstream,
            self.inbox,
            self._ctx.stats,
            self.accept,
            link,
            psub,
            channel,
            address,
        )
        existing = self._pullers.get(key)
        if existing is not None and existing.link is link and not existing.broken:
            # A concurrent receive subscribed first: use that one.
            with contextlib.suppress(Exception):
                await link.run(psub.unsubscribe)
            return existing
        self._pullers[key] = puller
        return puller

    def accept(self, channel: str, fetched: Fetched) -> None:
        """Buffer a fetched message for the receivers of ``channel``."""
        msg = fetched.msg
        try:
            frame = unpack_frame(msg.data)
            if frame.kind != DIRECT:
                raise MalformedFrame("not a direct frame")
        except MalformedFrame as exc:
            self._ctx.stats.drop(
                "malformed_frames",
                "dropped a malformed message on %s: %s",
                channel,
                exc,
            )
            fetched.link.spawn(msg.term())
            return
        _target, sent_at, body, _seq, _link = frame.args
        entry = Entry(sent_at, body, "", fetched, time.monotonic())
        self.inbox.put(channel, entry, enforce_capacity=False)

    async def receive(self, channel: str) -> Entry:
        """Take the next message of ``channel`` and ack it to JetStream."""
        link = await self._ctx.link()
        puller = await self.puller(link, channel)
        puller.want(1)
        try:
            while True:
                if puller.broken:
                    puller.want(-1)
                    puller = await self.puller(link, channel)
                    puller.want(1)
                entry = await self.inbox.get(channel)
                handle = entry.handle
                if handle is None:  # put back by a receive cancelled while acking
                    return entry
                if time.monotonic() - entry.fetched_at > self.ack_wait * 0.8:
                    # JetStream may have handed it to another receiver by
                    # now: let it decide rather than risk a duplicate.
                    handle.settle(ack=False)
                    continue
                await self._confirm(channel, entry)
                return entry
        finally:
            puller.want(-1)

    async def _confirm(self, channel: str, entry: Entry) -> None:
        """Ack ``entry`` and wait for JetStream to confirm it.

        Once confirmed the message has left the stream, so the channel has
        room again when ``receive()`` returns, as with channels_redis. If the
        receive is cancelled meanwhile, the message goes back to this
        process's buffer for the next receiver instead of being lost.
        """
        fetched: Fetched = entry.handle
        timeout = self._ctx.config.request_timeout
        future = asyncio.run_coroutine_threadsafe(
            fetched.msg.ack_sync(timeout=timeout), fetched.link.loop
        )
        waiter = asyncio.wrap_future(future)
        try:
            await asyncio.shield(waiter)
        except asyncio.CancelledError:
            kept = entry._replace(handle=None)

            def put_back(done: asyncio.Future[Any]) -> None:
                if not done.cancelled() and done.exception() is None:
                    self.inbox.put(channel, kept, enforce_capacity=False)

            waiter.add_done_callback(put_back)
            raise
        except Exception as exc:
            # Not confirmed: JetStream may deliver it again (at-least-once).
            logger.debug("ack on %s not confirmed: %r", channel, exc)

    # -- sending -----------------------------------------------------------------

    async def send(self, channel: str, body: bytes, now: float) -> None:
        ctx = self._ctx
        address = self.jetstream.address(channel)
        payload = pack_data(DIRECT, ctx.client_id, channel, now, body)
        link = await ctx.link()
        ctx.check_size(body, channel)
        await self.jetstream.ensure_stream(link, address.stream)
        try:
            await link.run(self.jetstream.publish, link, address, payload, None)
        except ChannelFull:
            ctx.stats.incr("refused_channel_full")
            raise ChannelFull(channel) from None

    # -- housekeeping ------------------------------------------------------------

    async def flush(self, link: Link) -> None:
        """Purge this prefix's queued messages and normal-channel memberships."""
        await link.run(self.jetstream.purge_all, link)

    def forget_link(self, link: Link) -> bool:
        """Drop the state bound to ``link``; return whether it held the watcher."""
        for key in [k for k, p in self._pullers.items() if p.link is link]:
            self._pullers.pop(key, None)
        self.jetstream.forget_link(link)
        return self.members.forget_link(link)
