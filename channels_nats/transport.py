"""The process side of a layer: where its subscriptions live and how frames move.

Data flow of one layer instance (one per process and CHANNEL_LAYERS alias)::

    send / group_send ──► Serializer ──► local Inbox (own channels, no broker)
                                   └──► Link.publish ──► NATS
    NATS ──► home Link ──► _on_message ──► Inbox / GroupRegistry / CreditWindows
    receive ◄── Inbox.get (any loop) ──► CreditBatcher ──► credit frame to sender

Which connection each event loop uses, and which one holds the process's
subscriptions (the *home*), is :mod:`channels_nats.links`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import re
import secrets
import time
import weakref
from collections.abc import Callable
from typing import Any

from channels.layers import BaseChannelLayer

from .config import LayerConfig
from .connection import Link
from .exceptions import (
    ChannelFull,
    MessageTooLarge,
    NatsLayerError,
    NoResponders,
    RequestTimeout,
)
from .flow import CreditBatcher, CreditWindows
from .groups import GroupRegistry
from .hub import Hub
from .inbox import Entry, Inbox
from .links import Links
from .queues import NormalChannels
from .sealing import Sealer
from .sequence import GapDetector
from .serializers import (
    CREDIT,
    DATA_OVERHEAD,
    DIRECT,
    FLUSH,
    GROUP,
    GROUP_ADD,
    GROUP_DISCARD,
    MalformedFrame,
    Serializer,
    pack_control,
    unpack_frame,
)
from .stats import Stats
from .subjects import Subjects, owner_of

__all__ = ["Transport"]

logger = logging.getLogger("channels_nats")

CREDIT_FLUSH_DELAY = 0.02
CREDIT_YIELDS = 4


def _valid_name(name: object, regex: re.Pattern[str]) -> bool:
    """Validate a name from the wire exactly as Channels validates API input."""
    return (
        isinstance(name, str)
        and len(name) < BaseChannelLayer.MAX_NAME_LENGTH
        and regex.match(name) is not None
    )


class Transport:
    """Everything one layer instance does in one process."""

    def __init__(self, config: LayerConfig, capacity_of: Callable[[str], int]) -> None:
        self.config = config
        self.client_id = secrets.token_hex(6)
        self.subjects = Subjects(config.prefix)
        self.serializer = Serializer(config.symmetric_encryption_keys)
        self.stats = Stats()
        self.capacity_of = capacity_of
        self.gaps = GapDetector()
        self._sequence_sweep_every = max(2 * config.expiry, 240.0)
        self.credits = CreditBatcher(
            lambda ch: max(1, capacity_of(ch) // 4),
            self._send_credit,
            self._schedule_credit_flush,
        )
        self.inbox = Inbox(
            config.expiry, capacity_of, self.stats, self.credits.consumed
        )
        self.groups = GroupRegistry(config.group_expiry)
        self.windows = CreditWindows(capacity_of, config.expiry)
        self._process_subject = self.subjects.process(self.client_id)
        self._dot_client_id = "." + self.client_id
        self._routes: dict[str, str] = {}
        self.closed = False
        self.normal = NormalChannels(self)
        keys = config.symmetric_encryption_keys
        self.hub = Hub(
            self.client_id, config.prefix, self.stats, Sealer(keys) if keys else None
        )
        self.links = Links(
            config,
            self.client_id,
            self.stats,
            self._on_message,
            wanted=self._wanted_subjects,
            home_moved=self.hub.home_moved,
            dropped=self.normal.forget_link,
            rewatch=self.normal.watch,
            handlers=self.hub.handlers,
            reconnected=self.hub.link_reconnected,
        )
        self.hub.attach(self.links)
        self.hub.run_on_home("sweeper", self._sweep_forever)
        atexit.register(_close_at_exit, weakref.ref(self))

    # -- links and home ------------------------------------------------------

    async def link(self) -> Link:
        """The link to use from the running loop (see :class:`Links`)."""
        return await self.links.link()

    async def home(self) -> Link:
        """The link holding the process's subscriptions, established if needed."""
        return await self.links.get_home()

    def current_home(self) -> Link | None:
        return self.links.current_home()

    @property
    def max_payload(self) -> int:
        return self.links.max_payload

    def _wanted_subjects(self) -> list[str]:
        subjects = [
            self._process_subject,
            self.subjects.control(self.client_id),
            self.subjects.broadcast,
        ]
        subjects.extend(self.subjects.group(g) for g in self.groups.names())
        subjects.extend(self.hub.subjects())
        return subjects

    async def _sweep_forever(self) -> None:
        interval = max(0.5, min(self.config.expiry, 30.0) / 2)
        sequences_swept = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            self.inbox.sweep()
            now = time.monotonic()
            if now - sequences_swept >= self._sequence_sweep_every:
                # Two generations: state idle for one to two intervals goes.
                sequences_swept = now
                self.gaps.sweep()
                for link in list(self.links.by_loop.values()):
                    link.sequencer.sweep()
            emptied = self.groups.sweep()
            home = self.links.current_home()
            if home is not None and emptied:
                await home.unsubscribe_many(self.subjects.group(g) for g in emptied)

    # -- incoming frames ---------------------------------------------------------

    def _on_message(self, subject: str, data: bytes, reply: str, link: Link) -> None:
        try:
            frame = unpack_frame(data)
        except MalformedFrame as exc:
            self.stats.drop(
                "malformed_frames",
                "channels_nats: dropped a malformed frame on %s: %s",
                subject,
                exc,
            )
            return
        if frame.origin == self.client_id:
            return  # our own publish: local members already have it
        kind, args = frame.kind, frame.args
        if kind in (DIRECT, GROUP):
            target, sent_at, body, seq, stream = args
            lost = self.gaps.observe(frame.origin, stream, target, seq)
            if lost:
                self.stats.drop(
                    "lost_in_transit",
                    "channels_nats: %d message(s) from %s to %s never arrived (NATS "
                    "drops what is published while nobody is subscribed, e.g. "
                    "during a reconnect)",
                    lost,
                    frame.origin,
                    target,
                    n=lost,
                )
        if kind == DIRECT:
            channel = target
            if not self._owns(channel):
                self.stats.drop(
                    "malformed_frames",
                    "channels_nats: dropped a frame for %s, not a channel of this "
                    "process",
                    channel,
                )
                return
            self.inbox.put(
                channel, Entry(sent_at, body, frame.origin), enforce_capacity=False
            )
        elif kind == GROUP:
            self._deliver_group(
                target, Entry(sent_at, body, ""), (frame.origin, stream, seq)
            )
        elif kind == CREDIT:
            channel, n = args
            if (
                not isinstance(channel, str)
                or not isinstance(n, int)
                or not 0 < n <= self.capacity_of(channel)
            ):
                self.stats.drop(
                    "malformed_frames",
                    "channels_nats: dropped a credit frame with count %r for %r",
                    n,
                    channel,
                )
                return
            self.windows.give_back(channel, n)
        elif kind in (GROUP_ADD, GROUP_DISCARD):
            link.spawn(self._membership_request(kind, args, reply, link))
        elif kind == FLUSH:
            link.spawn(self._local_flush())
        else:
            self.stats.drop(
                "malformed_frames",
                "channels_nats: dropped a frame of unknown kind %r on %s",
                kind,
                subject,
            )

    def _owns(self, channel: str) -> bool:
        """Whether specific channel ``channel`` belongs to this process."""
        head = channel.split("!", 1)[0]
        return head == self.client_id or head.endswith(self._dot_client_id)

    def _deliver_group(
        self, group: str, entry: Entry, sender: tuple[str, int, int]
    ) -> None:
        """Give a group message to this process's members of ``group``.

        Specific channels get it in their buffer; normal channels are
        forwarded to their JetStream stream, de-duplicated there by
        ``sender`` (origin, stream, seq), which names the message uniquely.
        """
        members = self.groups.members(group)
        if not members:
            return
        specific = [channel for channel in members if "!" in channel]
        if len(specific) != len(members):
            for channel in members:
                if "!" not in channel:
                    self.normal.forward(group, channel, entry, sender)
        for channel in self.inbox.put_many(specific, entry):
            self.stats.drop(
                "dropped_capacity",
                "channels_nats: group_send to %s dropped a message for %s: the "
                "channel is at capacity",
                group,
                channel,
            )

    async def _membership_request(
        self, kind: int, args: tuple[Any, ...], reply: str, link: Link
    ) -> None:
        group, channel = args
        try:
            if not _valid_name(group, BaseChannelLayer.group_name_regex):
                raise NatsLayerError(f"invalid group name {group!r:.120}")
            if not _valid_name(channel, BaseChannelLayer.channel_name_regex):
                raise NatsLayerError(f"invalid channel name {channel!r:.120}")
            if owner_of(channel) != self.client_id:
                raise NatsLayerError(f"{channel} is not a channel of this process")
            if kind == GROUP_ADD:
                await self._add_local(group, channel)
            else:
                self._discard_local(group, channel)
            answer = b"ok"
        except Exception as exc:
            self.stats.drop(
                "malformed_frames",
                "channels_nats: refused a membership request: %r",
                exc,
            )
            answer = f"error: {exc}".encode()
        if reply:
            await link.publish(reply, answer)

    # -- credits -----------------------------------------------------------------

    def _send_credit(self, origin: str, channel: str, n: int) -> None:
        frame = pack_control(CREDIT, self.client_id, channel, n)
        with contextlib.suppress(NatsLayerError):
            self.hub.publish(self.subjects.control(origin), frame, raw=True)

    async def _return_credit(self, origin: str, channel: str, n: int) -> None:
        """Send a due credit frame now, from the receiving loop if it can.

        A receiver draining a full buffer does not yield, so a frame handed to
        a task would wait until the buffer is empty and the sender would stall
        meanwhile. Publishing here and yielding once lets nats-py's flusher
        write it at once.
        """
        link = self.links.by_loop.get(asyncio.get_running_loop())
        if link is None or not link.usable:
            self._send_credit(origin, channel, n)
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

    # -- operations ----------------------------------------------------------------

    def check_size(self, body: bytes, target: str) -> None:
        """Raise :class:`MessageTooLarge` if a frame of ``body`` cannot be sent."""
        name = len(target) if target.isascii() else len(target.encode())
        size = len(body) + name + len(self.client_id) + DATA_OVERHEAD
        if size > self.max_payload:
            raise MessageTooLarge(
                f"The encoded message is about {size} bytes; the NATS server "
                f"accepts at most max_payload={self.max_payload}. Nothing was sent."
            )

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        body = self.serializer.dumps(message)
        now = time.time()
        if "!" not in channel:
            await self.normal.send(channel, body, now)
            return
        subject = self._routes.get(channel)
        if subject is None:
            subject = self._route(channel)
        if not subject:  # a channel of this process: no broker involved
            if not self.inbox.put(channel, Entry(now, body, ""), enforce_capacity=True):
                self.stats.incr("refused_channel_full")
                raise ChannelFull(channel)
            return
        loop = asyncio.get_running_loop()
        link = self.links.by_loop.get(loop)
        if link is None or not link.usable:
            link = await self.links.link()
        self.check_size(body, channel)
        home = self.links.home
        if home is not link and (home is None or not home.usable):
            # Credits for this send come back on our control subject.
            await self.home()
        if not self.windows.take(channel) and not await self._credit_arrived(channel):
            self.stats.incr("refused_channel_full")
            raise ChannelFull(channel)
        try:
            if link.loop is loop:
                await link.publish_data(
                    subject, DIRECT, self.client_id, channel, now, body
                )
            else:
                link.publish_data_threadsafe(
                    subject, DIRECT, self.client_id, channel, now, body
                )
        except BaseException:
            self.windows.give_back(channel)
            raise

    def _route(self, channel: str) -> str:
        """Return the subject that reaches specific ``channel`` ("" if it is ours).

        Cached per channel name (bounded), as senders reply to the same
        channels over and over.
        """
        owner = owner_of(channel)
        subject = "" if owner == self.client_id else self.subjects.process(owner)
        if len(self._routes) >= 8192:
            self._routes.clear()
        self._routes[channel] = subject
        return subject

    async def _credit_arrived(self, channel: str) -> bool:
        """Let credit frames already in the socket in, then take a credit.

        A sender in a tight loop never yields, so its read loop cannot process
        the credits the receiver has sent back; raising ChannelFull then would
        report a full channel that has room. A few loop iterations (socket
        read, then the read loop's dispatch) are enough to see them.
        """
        for _ in range(CREDIT_YIELDS):
            await asyncio.sleep(0)
            if self.windows.take(channel):
                return True
        return False

    async def receive(self, channel: str) -> dict[str, Any]:
        normal = "!" not in channel
        if normal:
            # A process that consumes a normal channel also forwards the
            # group messages meant for it.
            await self.normal.watch()
        else:
            home = self.links.home
            if home is None or home.loop is not asyncio.get_running_loop():
                await self.links.follow_receiver()
        while True:
            if normal:
                entry = await self.normal.receive(channel)
            else:
                entry = await self.inbox.get(channel)
            if entry.origin:
                due = self.credits.due(entry.origin, channel)
                if due:
                    await self._return_credit(entry.origin, channel, due)
            try:
                return self.serializer.loads(entry.body)
            except MalformedFrame as exc:
                self.stats.drop(
                    "malformed_frames",
                    "channels_nats: dropped an undecodable message for %s: %s",
                    channel,
                    exc,
                )

    async def new_channel(self, prefix: str) -> str:
        await self.home()
        return f"{prefix}.{self.client_id}!{secrets.token_hex(8)}"

    async def group_add(self, group: str, channel: str) -> None:
        if "!" not in channel:
            # This process forwards at once; the bucket tells the others.
            await self._add_local(group, channel)
            await self.normal.membership(True, group, channel)
            return
        owner = owner_of(channel)
        if owner == self.client_id:
            await self._add_local(group, channel)
        else:
            await self._remote_membership(GROUP_ADD, owner, group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        if "!" not in channel:
            self._discard_local(group, channel)
            await self.normal.membership(False, group, channel)
            return
        owner = owner_of(channel)
        if owner == self.client_id:
            self._discard_local(group, channel)
        else:
            await self._remote_membership(GROUP_DISCARD, owner, group, channel)

    def add_normal_member(self, group: str, channel: str) -> None:
        """Follow a membership of a normal channel recorded by any process."""
        home = self.current_home()
        if home is not None:
            home.spawn(self._add_local(group, channel))

    def discard_normal_member(self, group: str, channel: str) -> None:
        self._discard_local(group, channel)

    async def _add_local(self, group: str, channel: str) -> None:
        self.groups.add(group, channel)
        subject = self.subjects.group(group)
        while True:
            home = await self.home()
            if subject not in home.confirmed:
                await home.run(home.ensure_subscribed, [subject])
            if self.links.home is home:
                return

    def _discard_local(self, group: str, channel: str) -> None:
        if not self.groups.discard(group, channel):
            return
        home = self.links.current_home()
        if home is None:
            return
        subject = self.subjects.group(group)

        async def unsubscribe() -> None:
            if not self.groups.has_members(group):
                await home.unsubscribe(subject)

        with contextlib.suppress(RuntimeError):
            home.loop.call_soon_threadsafe(home.spawn, unsubscribe())

    async def _remote_membership(
        self, kind: int, owner: str, group: str, channel: str
    ) -> None:
        payload = pack_control(kind, self.client_id, group, channel)
        subject = self.subjects.control(owner)
        timeout = self.config.request_timeout
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                answer = await self.hub.request(subject, payload, timeout, raw=True)
                break
            except NoResponders:
                # The owner may be reconnecting: its subscriptions come back
                # within a reconnect interval. Past request_timeout it is gone.
                if time.monotonic() + delay > deadline:
                    logger.warning(
                        "channels_nats: no process owns %s (it has closed); %s of "
                        "%s ignored",
                        channel,
                        "group_add" if kind == GROUP_ADD else "group_discard",
                        group,
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            except RequestTimeout as exc:
                raise NatsLayerError(
                    f"The process owning {channel} did not confirm the membership "
                    f"change within request_timeout={timeout}s."
                ) from exc
        if answer != b"ok":
            raise NatsLayerError(
                f"The process owning {channel} refused the membership change: "
                f"{answer.decode(errors='replace')}"
            )

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        body = self.serializer.dumps(message)
        now = time.time()
        loop = asyncio.get_running_loop()
        link = self.links.by_loop.get(loop)
        if link is None or not link.usable:
            link = await self.links.link()
        self.check_size(body, group)
        subject = self.subjects.group(group)
        if link.loop is loop:
            seq = await link.publish_data(
                subject, GROUP, self.client_id, group, now, body
            )
        else:
            seq = link.publish_data_threadsafe(
                subject, GROUP, self.client_id, group, now, body
            )
        # Local members get it now, without a round trip through the broker.
        self._deliver_group(
            group, Entry(now, body, ""), (self.client_id, link.stream, seq)
        )

    async def flush(self) -> None:
        link = await self.link()
        await link.run(
            self._publish_and_sync,
            link,
            self.subjects.broadcast,
            pack_control(FLUSH, self.client_id),
        )
        await self.normal.flush(link)
        await self._local_flush()

    async def _publish_and_sync(self, link: Link, subject: str, payload: bytes) -> None:
        await link.publish(subject, payload)
        await link.barrier()

    async def _local_flush(self) -> None:
        self.inbox.clear()
        self.windows.clear()
        self.credits.clear()
        emptied = self.groups.clear()
        home = self.links.current_home()
        if home is not None and emptied:
            subjects = [self.subjects.group(g) for g in emptied]

            async def unsubscribe() -> None:
                for subject in subjects:
                    if subject in home.confirmed:
                        await home.unsubscribe(subject)

            with contextlib.suppress(Exception):
                await home.run(unsubscribe)

    async def close(self) -> None:
        """Fail waiting receives, drain and close every link, stop the I/O thread."""
        if self.closed:
            return
        await self.hub.close()
        self.closed = True
        self.inbox.close()
        self.credits.flush()
        await self.links.close()

    def snapshot(self) -> dict[str, Any]:
        counters: dict[str, Any] = self.stats.snapshot()
        counters.update(
            client_id=self.client_id,
            buffered=len(self.inbox),
            groups=len(self.groups.names()),
            connections=self.links.open_count(),
        )
        return counters


def _close_at_exit(ref: weakref.ref[Transport]) -> None:
    """Flush what plain-thread callers handed to the I/O thread before exit."""
    transport = ref()
    if transport is not None and not transport.closed:
        transport.links.close_at_exit()
