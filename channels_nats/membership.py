"""Group membership: local members, requests to other processes, delivery.

A process subscribes the subject of every group it has a member of, on its
home link. ``group_add`` of a specific channel of another process asks that
process (a ``GROUP_ADD`` request on its control subject, answered ``ok`` or
``error: ...``); a normal channel's membership goes to the JetStream bucket
(:mod:`.normal.members`), which every process using normal channels follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from channels.layers import BaseChannelLayer

from .exceptions import NatsLayerError, NoResponders, RequestTimeout
from .groups import GroupRegistry
from .hub import Hub
from .inbox import Entry, Inbox
from .link import Link
from .resend import Reassembly
from .serializers import GROUP_ADD, GROUP_DISCARD, Frame, pack_control
from .stats import Stats
from .subjects import Subjects, owner_of

if TYPE_CHECKING:
    from .loops import Links
    from .normal import NormalChannels

__all__ = ["Membership"]

#: Membership requests from other processes answered at the same time, at most.
MAX_ANSWERING = 1000

logger = logging.getLogger(__name__)


def _valid_name(name: object, regex: re.Pattern[str]) -> bool:
    """Validate a name from the wire exactly as Channels validates API input."""
    return (
        isinstance(name, str)
        and len(name) < BaseChannelLayer.MAX_NAME_LENGTH
        and regex.match(name) is not None
    )


class Membership:
    """The groups of this process's channels, and delivery to their members."""

    def __init__(
        self,
        client_id: str,
        subjects: Subjects,
        stats: Stats,
        groups: GroupRegistry,
        inbox: Inbox,
        gaps: Reassembly,
        hub: Hub,
        request_timeout: float,
    ) -> None:
        self.client_id = client_id
        self.subjects = subjects
        self.stats = stats
        self.groups = groups
        self.inbox = inbox
        self.gaps = gaps
        self.hub = hub
        self.request_timeout = request_timeout
        self._answering = 0  # requests from other processes being answered
        self._answering_lock = threading.Lock()
        self.links: Links  # set by the transport once its links exist
        self.normal: NormalChannels  # likewise

    # -- delivery ----------------------------------------------------------------

    def deliver(
        self,
        group: str,
        entry: Entry,
        sender: tuple[str, int, int],
        enforce_capacity: bool = True,
    ) -> None:
        """Give a group message to this process's members of ``group``.

        Specific channels get it in their buffer; normal channels are
        forwarded to their JetStream stream, de-duplicated there by
        ``sender`` (origin, link number, seq), which names the message
        uniquely.
        """
        members = self.groups.members(group)
        if not members:
            return
        specific = [channel for channel in members if "!" in channel]
        if len(specific) != len(members):
            for channel in members:
                if "!" not in channel:
                    self.normal.forward(group, channel, entry, sender)
        for channel in self.inbox.put_many(
            specific, entry, enforce_capacity=enforce_capacity
        ):
            self._full(group, channel)

    def _full(self, group: str, channel: str) -> None:
        self.stats.drop(
            "dropped_capacity",
            "group_send to %s dropped a message for %s: the channel is at capacity",
            group,
            channel,
        )

    def on_group(self, frame: Frame, subject: str, reply: str, link: Link) -> None:
        group, sent_at, body, seq, link_no = frame.args
        if not self.gaps.observe(frame.origin, link_no, group, seq, frame):
            return  # behind a gap: take() gets it once the gap is closed
        # deliver(), inlined: this runs in the read loop for every message.
        members = self.groups.members(group)
        if not members:
            return
        entry = Entry(sent_at, body, "")
        specific = [channel for channel in members if "!" in channel]
        if len(specific) != len(members):
            sender = (frame.origin, link_no, seq)
            for channel in members:
                if "!" not in channel:
                    self.normal.forward(group, channel, entry, sender)
        for channel in self.inbox.put_many(specific, entry):
            self._full(group, channel)

    def on_held(self, frame: Frame, subject: str, reply: str, link: Link) -> None:
        """A GROUP_HELD frame: sent while its sender's link was down."""
        group, _, _, seq, link_no = frame.args
        if self.gaps.observe(frame.origin, link_no, group, seq, frame):
            self.take(frame)

    def take(self, frame: Frame) -> None:
        """Deliver a frame of an outage's backlog: beyond capacity, not counted."""
        group, sent_at, body, seq, link_no = frame.args
        self.deliver(
            group,
            Entry(sent_at, body, "", None, 0.0, True),
            (frame.origin, link_no, seq),
            enforce_capacity=False,
        )

    # -- the API -----------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        if "!" not in channel:
            # This process forwards at once; the bucket tells the others.
            await self.add_local(group, channel)
            await self.normal.membership(True, group, channel)
            return
        owner = owner_of(channel)
        if owner == self.client_id:
            await self.add_local(group, channel)
        else:
            await self._remote(GROUP_ADD, owner, group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        if "!" not in channel:
            self.discard_local(group, channel)
            await self.normal.membership(False, group, channel)
            return
        owner = owner_of(channel)
        if owner == self.client_id:
            self.discard_local(group, channel)
        else:
            await self._remote(GROUP_DISCARD, owner, group, channel)

    def add_normal_member(self, group: str, channel: str) -> None:
        """Follow a membership of a normal channel recorded by any process."""
        home = self.links.current_home()
        if home is not None:
            home.spawn(self.add_local(group, channel))

    def discard_normal_member(self, group: str, channel: str) -> None:
        self.discard_local(group, channel)

    # -- this process ------------------------------------------------------------

    async def add_local(self, group: str, channel: str) -> None:
        self.groups.add(group, channel)
        await self.links.subscribe_on_home(self.subjects.group(group))

    def discard_local(self, group: str, channel: str) -> None:
        if not self.groups.discard(group, channel):
            return
        if not self.groups.has_members(group):
            # Left the group: what is published to it from now on is not for
            # us (forgotten again once the UNSUB is confirmed, see below).
            self.gaps.forget(group)
        home = self.links.current_home()
        if home is None:
            return
        subject = self.subjects.group(group)

        async def unsubscribe() -> None:
            if not self.groups.has_members(group):
                await home.unsubscribe(subject)
                self.gaps.forget(group)

        with contextlib.suppress(RuntimeError):
            home.loop.call_soon_threadsafe(home.spawn, unsubscribe())

    # -- other processes ---------------------------------------------------------

    async def _remote(self, kind: int, owner: str, group: str, channel: str) -> None:
        payload = pack_control(kind, self.client_id, group, channel)
        subject = self.subjects.control(owner)
        timeout = self.request_timeout
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
                        "no process owns %s (it has closed); %s of %s ignored",
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

    def on_request(self, frame: Frame, subject: str, reply: str, link: Link) -> None:
        """Handle a GROUP_ADD / GROUP_DISCARD request (dispatch table handler).

        At most :data:`MAX_ANSWERING` are answered at once: a flood of them
        (a bug or an attack) is refused and counted, not turned into as many
        tasks.
        """
        with self._answering_lock:
            busy = self._answering >= MAX_ANSWERING
            if not busy:
                self._answering += 1
        if busy:
            self.stats.drop(
                "refused_membership",
                "refused a membership request: %d are being answered already",
                MAX_ANSWERING,
            )
            return
        task = link.spawn(self._answer(frame.kind, frame.args, reply, link))
        task.add_done_callback(self._answered)

    def _answered(self, task: object) -> None:
        with self._answering_lock:
            self._answering -= 1

    async def _answer(
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
                await self.add_local(group, channel)
            else:
                self.discard_local(group, channel)
            answer = b"ok"
        except Exception as exc:
            self.stats.drop(
                "refused_membership",
                "refused a membership request: %r",
                exc,
            )
            answer = f"error: {exc}".encode()
        if reply:
            await link.publish(reply, answer)
