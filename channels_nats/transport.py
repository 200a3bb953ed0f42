"""The process side of a layer: its parts, the API's hot paths, frame dispatch.

Data flow of one layer instance (one per process and CHANNEL_LAYERS alias)::

    send / group_send ──► Serializer ──► local Inbox (own channels, no broker)
                                   └──► Link.publish ──► NATS
    NATS ──► home Link ──► Transport.on_message ──► handler of the frame's kind
    receive ◄── Inbox.get (any loop) ──► CreditBatcher ──► credit frame to sender

The parts: :mod:`.specific` (routes, sizes, credits, direct arrivals),
:mod:`.membership` (groups, local and remote), :mod:`.housekeeping` (sweeps,
flush), :mod:`.normal` (normal channels over JetStream), :mod:`.hub` (the
extension surface) and :mod:`.loops` (which link each event loop uses, and
which one holds the subscriptions: the *home*).
"""

from __future__ import annotations

import atexit
import secrets
import time
import weakref
from collections.abc import Callable
from typing import Any

from .config import LayerConfig
from .exceptions import ChannelFull
from .groups import GroupRegistry
from .housekeeping import Housekeeping
from .hub import Hub
from .inbox import Entry
from .link import Link
from .loops import Links, runs_here
from .membership import Membership
from .normal import NormalChannels, NormalContext
from .recovery import Recovery
from .sealing import Sealer
from .serializers import (
    BATCH,
    CREDIT,
    DIRECT,
    DIRECT_HELD,
    DIRECT_RESENT,
    FLUSH,
    GONE,
    GROUP,
    GROUP_ADD,
    GROUP_DISCARD,
    GROUP_HELD,
    GROUP_RESENT,
    HELLO,
    MARK,
    RESEND,
    Frame,
    MalformedFrame,
    Serializer,
    unbatch,
    unpack_frame,
)
from .specific import NAME_ROOM, SpecificChannels
from .stats import Stats
from .subjects import Subjects

__all__ = ["Transport"]

#: A handler of one kind of incoming frame: (frame, subject, reply, link).
FrameHandler = Callable[[Frame, str, str, Link], None]


class Transport:
    """One layer instance in one process: its parts and the channel-layer API."""

    def __init__(
        self,
        config: LayerConfig,
        capacity_of: Callable[[str], int],
        previous: Transport | None = None,
    ) -> None:
        """``previous`` is the layer's closed transport, if any: its client id,
        group memberships and buffered messages carry over, so channels made
        before a ``close()`` keep working after it."""
        self.config = config
        self.client_id: str = (
            secrets.token_hex(6) if previous is None else previous.client_id
        )
        client_id = self.client_id
        self.subjects = subjects = Subjects(config.prefix)
        self.serializer = Serializer(config.symmetric_encryption_keys)
        self.stats = stats = Stats()
        self.capacity_of = capacity_of
        self.closed = False
        keys = config.symmetric_encryption_keys
        self.hub = hub = Hub(
            client_id,
            config.prefix,
            stats,
            Sealer(keys) if keys else None,
            node=None if previous is None else secrets.token_hex(6),
        )
        self.recovery = recovery = Recovery(client_id, subjects, hub, stats)
        gaps = recovery.reassembly
        self.specific = specific = SpecificChannels(
            config, client_id, subjects, stats, capacity_of, gaps, hub
        )
        self.inbox = inbox = specific.inbox
        self.windows = specific.windows
        self.credits = specific.credits
        self.groups: GroupRegistry = (
            GroupRegistry(config.group_expiry) if previous is None else previous.groups
        )
        if previous is not None:
            inbox.adopt(previous.inbox.detach())
        self.membership = membership = Membership(
            client_id,
            subjects,
            stats,
            self.groups,
            inbox,
            gaps,
            hub,
            config.request_timeout,
        )
        self.housekeeping = housekeeping = Housekeeping(
            config,
            client_id,
            subjects,
            inbox,
            self.groups,
            gaps,
            self.windows,
            self.credits,
            hub,
        )
        self.normal = normal = NormalChannels(
            NormalContext(
                config=config,
                client_id=client_id,
                inbox=inbox,
                stats=stats,
                capacity_of=capacity_of,
                check_size=specific.check_size,
                link=self.link,
                home=self.home,
                current_home=self.current_home,
                add_member=membership.add_normal_member,
                discard_member=membership.discard_normal_member,
            )
        )
        self._process_subject = subjects.process(client_id)
        self.links = links = Links(
            config,
            client_id,
            stats,
            self.on_message,
            wanted=self._wanted_subjects,
            home_moved=hub.home_moved,
            dropped=normal.forget_link,
            rewatch=normal.watch,
            handlers=hub.handlers,
            reconnected=hub.link_reconnected,
        )
        specific.links = membership.links = housekeeping.links = links
        recovery.links = links
        recovery.take = {DIRECT: specific.take, GROUP: membership.take}
        membership.normal = housekeeping.normal = normal
        hub.attach(links)
        #: The dispatch table of :meth:`on_message`: one handler per frame
        #: kind, each counting its own refusals.
        self.handlers: dict[int, FrameHandler] = {
            DIRECT: specific.on_direct,
            GROUP: membership.on_group,
            CREDIT: specific.on_credit,
            GROUP_ADD: membership.on_request,
            GROUP_DISCARD: membership.on_request,
            FLUSH: housekeeping.on_flush,
            DIRECT_HELD: specific.on_held,
            GROUP_HELD: membership.on_held,
            DIRECT_RESENT: recovery.on_resent,
            GROUP_RESENT: recovery.on_resent,
            RESEND: recovery.on_resend,
            GONE: recovery.on_gone,
            MARK: recovery.on_mark,
            HELLO: recovery.on_hello,
            BATCH: self.on_batch,
        }
        # The hot paths below use these directly (no extra lookups or frames).
        self._routes = specific.routes
        self._route = specific.route
        self.check_size = specific.check_size
        self._credit_arrived = specific.credit_arrived
        self._link_down = specific.link_down
        self._return_credit = specific.return_credit
        self._deliver_group = membership.deliver
        self.group_add = membership.group_add
        self.group_discard = membership.group_discard
        self.flush = housekeeping.flush
        hub.run_on_home("sweeper", housekeeping.sweep_forever)
        # Credits returned to us while our subscriptions were down are gone:
        # waiting for expiry to refill the windows would refuse sends with
        # ChannelFull for a minute. Windows are capped at capacity, so the
        # credits that did arrive cannot over-fill them.
        hub.on_reconnected(self.windows.clear)
        # Receivers may have missed what we sent while we were away.
        hub.on_reconnected(recovery.recovered)
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

    # -- incoming frames ---------------------------------------------------------

    def on_message(self, subject: str, data: bytes, reply: str, link: Link) -> None:
        """Decode a frame from the wire and hand it to its kind's handler."""
        try:
            frame = unpack_frame(data)
        except MalformedFrame as exc:
            self.stats.drop(
                "malformed_frames", "dropped a malformed frame on %s: %s", subject, exc
            )
            return
        if frame.origin == self.client_id:
            return  # our own publish: local members already have it
        try:
            handler = self.handlers[frame.kind]
        except KeyError:
            self.stats.drop(
                "unknown_frames",
                "dropped a frame of unknown kind %r on %s (from a newer version?)",
                frame.kind,
                subject,
            )
            return
        handler(frame, subject, reply, link)

    def on_batch(self, batch: Frame, subject: str, reply: str, link: Link) -> None:
        """Hand each data frame of a batch to its kind's handler, in order."""
        frames, bad = unbatch(batch)
        if bad:
            self.stats.drop(
                "malformed_frames",
                "dropped %d malformed frame(s) of a batch on %s",
                bad,
                subject,
                n=bad,
            )
        handlers = self.handlers
        on_run = self.specific.on_direct_run
        i, end = 0, len(frames)
        while i < end:
            frame = frames[i]
            if frame.kind != DIRECT:
                handlers[frame.kind](frame, subject, reply, link)
                i += 1
                continue
            # A run: DIRECT frames for one channel over one link, numbered
            # in a row (a burst of sends to one consumer).
            channel, _, _, seq, link_no = frame.args
            j = i + 1
            while j < end:
                args = frames[j].args
                if (
                    frames[j].kind != DIRECT
                    or args[0] != channel
                    or args[3] != seq + j - i
                    or args[4] != link_no
                ):
                    break
                j += 1
            if j - i == 1:
                handlers[DIRECT](frame, subject, reply, link)
            else:
                on_run(frames[i:j], subject, link)
            i = j

    # -- operations ----------------------------------------------------------------

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
            # Refused as it would be from any other process.
            self.check_size(body, channel)
            if not self.inbox.put(channel, Entry(now, body, ""), enforce_capacity=True):
                self.stats.incr("refused_channel_full")
                raise ChannelFull(channel)
            return
        link = self.links.current()
        here = True  # current() is the running loop's own link
        if link is None or not link.usable:
            link = await self.links.link()
            here = runs_here(link.loop)  # or the I/O thread's
        if len(body) > self.links.max_payload - NAME_ROOM:
            self.check_size(body, channel)
        home = self.links.home
        if home is not link and (home is None or not home.usable):
            # Credits for this send come back on our control subject.
            await self.home()
        if (
            not self.windows.take(channel)
            and not await self._credit_arrived(channel)
            and not await self._link_down(link, channel)
        ):
            self.stats.incr("refused_channel_full")
            raise ChannelFull(channel)
        try:
            if here:
                done = link.publish_data(
                    subject, DIRECT, self.client_id, channel, now, body
                )
                if not isinstance(done, int):
                    await done
            else:
                link.publish_data_threadsafe(
                    subject, DIRECT, self.client_id, channel, now, body
                )
        except BaseException:
            self.windows.give_back(channel)
            raise

    async def receive(self, channel: str) -> dict[str, Any]:
        normal = "!" not in channel
        if normal:
            # A process that consumes a normal channel also forwards the
            # group messages meant for it.
            await self.normal.watch()
        else:
            home = self.links.home
            if home is None or not runs_here(home.loop):
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
                    "dropped an undecodable message for %s: %s",
                    channel,
                    exc,
                )

    async def new_channel(self, prefix: str) -> str:
        await self.home()
        return f"{prefix}.{self.client_id}!{secrets.token_hex(8)}"

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        body = self.serializer.dumps(message)
        now = time.time()
        link = self.links.current()
        here = True  # current() is the running loop's own link
        if link is None or not link.usable:
            link = await self.links.link()
            here = runs_here(link.loop)  # or the I/O thread's
        if len(body) > self.links.max_payload - NAME_ROOM:
            self.check_size(body, group)
        subject = self.subjects.group(group)
        home = self.links.home
        if home is not link and (home is None or not home.usable):
            # Receivers that miss a frame ask us on our control subject.
            await self.home()
        if here:
            done = link.publish_data(subject, GROUP, self.client_id, group, now, body)
            seq = done if isinstance(done, int) else await done
        else:
            seq = link.publish_data_threadsafe(
                subject, GROUP, self.client_id, group, now, body
            )
        # Local members get it now, without a round trip through the broker.
        self._deliver_group(
            group, Entry(now, body, ""), (self.client_id, link.number, seq)
        )

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
        counters["batched_frames"] += self.links.batched()
        return counters


def _close_at_exit(ref: weakref.ref[Transport]) -> None:
    """Flush what plain-thread callers handed to the I/O thread before exit."""
    transport = ref()
    if transport is not None and not transport.closed:
        transport.links.close_at_exit()
