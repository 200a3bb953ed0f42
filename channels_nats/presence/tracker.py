"""The presence tracker: one node per process and layer alias.

A tracker is authoritative for the members of its own process and keeps a
copy of every other node's, replicated over core NATS through the layer's
:class:`~channels_nats.hub.Hub` (never through a connection directly):

* local ``join`` / ``update`` / ``leave`` publish one delta each, numbered per
  node, on the room's subject;
* a heartbeat every ``heartbeat_interval`` carries the node's sequence number
  and the digest of its roster; a gap or a digest mismatch makes an observer
  fetch that node's roster (a targeted resync, chunked below ``max_payload``);
* ``sync()`` asks every node for its summary at once and fetches the rosters
  that differ; it runs at start, after every reconnect and after a stall;
* a late heartbeat makes the observer ask the node's liveness subject:
  "no responders" means its connection is gone, so its members go now
  (``node_down``); a timeout is retried once, then the node goes after
  ``ttl`` (``expired``);
* ``close()`` of the layer sends a bye, which removes the node's members
  everywhere at once.

State lives in :class:`~.roster.Roster`, touched from NATS handlers (the home
loop) and from API calls (any loop or thread) under one short lock; nothing
awaits while holding it. Signals and ``presence.diff`` events are sent from
tasks on the home loop, never from a handler.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import itertools
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from asgiref.sync import sync_to_async
from channels.exceptions import ChannelFull

from ..exceptions import (
    ConnectionUnavailable,
    NatsLayerError,
    NoResponders,
    RequestTimeout,
)
from . import protocol as P
from . import signals
from .exceptions import NotJoined, RoomFull
from .roster import Change, DiffBuffer, NodeView, RoomCount, Roster
from .settings import PresenceSettings

__all__ = ["DiffListener", "PresenceTracker"]

logger = logging.getLogger(__name__)

#: ``callback(room, joins, leaves)``, called on the home loop; must not block.
DiffListener = Callable[[str, dict[str, Any], dict[str, Any]], None]

_RESERVED = frozenset(("session", "node", "joined_at"))


def _new_incarnation() -> int:
    """Milliseconds since the epoch and 16 random bits: later is larger."""
    return (time.time_ns() // 1_000_000) << 16 | secrets.randbits(16)


class _Assembly:
    """The chunks of one requested roster as they arrive."""

    __slots__ = ("chunks", "future", "node", "summary", "total")

    def __init__(self, node: str) -> None:
        self.node = node
        #: True once the roster is applied, False if it was malformed.
        self.future: concurrent.futures.Future[bool] = concurrent.futures.Future()
        self.chunks: dict[int, list[P.Member]] = {}
        self.summary: P.Summary | None = None
        self.total = 0

    def add(self, chunk: P.RosterChunk) -> list[P.Member] | None:
        """Add a chunk; return all members once every chunk is there."""
        if self.summary is None:
            self.summary, self.total = chunk.summary, chunk.total
        elif chunk.summary != self.summary or chunk.total != self.total:
            raise P.MalformedFrame("chunks of one roster disagree")
        self.chunks[chunk.part] = chunk.members
        if len(self.chunks) < self.total:
            return None
        return [m for i in range(self.total) for m in self.chunks[i]]


class PresenceTracker:
    """This process's presence node for one channel layer.

    Get it with :func:`channels_nats.presence.get_presence`; every method is
    a coroutine, callable from any event loop (use ``async_to_sync`` from
    sync code). Reads (``list``, ``count``, ``rooms``) are answered from
    local state.
    """

    def __init__(
        self,
        layer: Any,
        settings: PresenceSettings | None = None,
        *,
        alias: str = "default",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.layer = layer
        self.hub: Any = layer.hub
        self.alias = alias
        self.settings = settings or PresenceSettings()
        self.node: str = self.hub.client_id
        self.incarnation = _new_incarnation()
        self.subjects = P.Subjects(self.hub.prefix)
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._roster = Roster(
            self.node,
            self.incarnation,
            self.settings,
            host=socket.gethostname()[: P.HOST_MAX],
            pid=os.getpid(),
            started=wall(),
            now=clock(),
        )
        self._handler = self._on_frame  # one object: the hub compares handlers
        self._diffs = DiffBuffer()
        self._diff_sessions: dict[str, set[str]] = {}
        self._diff_listeners: builtins.list[DiffListener] = []
        self._diff_scheduled = False
        self._signal_queue: deque[Change] = deque()
        self._pumping = False
        self._fetches: dict[int, _Assembly] = {}
        self._request_ids = itertools.count(1)
        self._starting: concurrent.futures.Future[None] | None = None
        self._removers: builtins.list[Callable[[], None]] = []
        self._grace_until = -math.inf
        self._converged = False
        self.last_sync: float | None = None
        self.started = False
        self.closed = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else "started" if self.started else "new"
        return f"<PresenceTracker {self.alias} node={self.node} {state}>"

    # -- lifecycle -----------------------------------------------------------

    async def _ensure_started(self) -> bool:
        """Start the node once; return True in the call that started it."""
        if self.started:
            if self.closed:
                raise ConnectionUnavailable(
                    "this presence tracker's layer was closed; call get_presence() "
                    "again for the new one"
                )
            return False
        with self._lock:
            if self.closed:
                raise ConnectionUnavailable("this presence tracker was closed")
            starting = self._starting
            owner = starting is None
            if starting is None:
                starting = self._starting = concurrent.futures.Future()
        if not owner:
            await asyncio.wrap_future(starting)
            return False
        try:
            await self._start_up()
        except BaseException as exc:
            with self._lock:
                self._starting = None
            if isinstance(exc, Exception):
                starting.set_exception(exc)
            else:
                starting.set_exception(
                    ConnectionUnavailable("the presence start was cancelled")
                )
            raise
        self.started = True
        starting.set_result(None)
        return True

    async def _start_up(self) -> None:
        hub = self.hub
        await hub.start()
        for subject in (
            self.subjects.node(self.node),
            self.subjects.nodes,
            self.subjects.rooms,
        ):
            await hub.subscribe(subject, self._handler)
        if not self._removers:
            self._removers = [
                hub.on_reconnected(self._on_reconnected),
                hub.on_home_moved(self._on_home_moved),
                hub.on_close(self._on_close),
            ]
        hub.run_on_home(f"presence:{self.node}", self._ticker)
        await self._sync_round()
        logger.info(
            "channels_nats.presence: node %s (alias %s) started, %d other node(s)",
            self.node,
            self.alias,
            len(self._roster.nodes),
        )

    async def _on_close(self) -> None:
        """Say bye while the connection still works (a hook of layer.close())."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            nv = self._roster.local
            frame = P.encode_bye(self.node, nv.inc, nv.seq)
        with contextlib.suppress(NatsLayerError):
            self.hub.publish(self.subjects.nodes, frame)
        for remove in self._removers:
            remove()
        logger.info("channels_nats.presence: node %s said bye", self.node)

    def _on_reconnected(self) -> None:
        """After an outage every copy is suspect and others may have lost ours."""
        now = self._clock()
        self._grace_until = now + self.settings.reconnect_grace
        with self._lock:
            self._roster.refresh_all(now)
        self._beat()
        self._spawn(self._resync("reconnect"))

    def _on_home_moved(self) -> None:
        # Tasks on the old home loop may be gone: restart the pumps.
        with self._lock:
            self._pumping = False
            self._diff_scheduled = False
            signals_waiting = bool(self._signal_queue)
            diffs_waiting = bool(self._diffs)
        if signals_waiting:
            self._kick_pump()
        if diffs_waiting:
            with self._lock:
                self._schedule_diffs()

    # -- input checks --------------------------------------------------------

    def _check_room(self, room: Any) -> str:
        if not P.valid_room(room):
            raise TypeError(
                "Room name must be a valid unicode string with length < 100 "
                "containing only ASCII alphanumerics, hyphens, underscores, or "
                f"periods (the rules of group names), not {room!r:.120}"
            )
        return str(room)

    def _check_session(self, session: Any) -> str:
        if not P.valid_session(session):
            raise TypeError(
                "Session must be a channel name (the consumer's channel_name), "
                f"not {session!r:.120}"
            )
        return str(session)

    def _check_user(self, user: Any) -> str | None:
        if user is None:
            return None
        if isinstance(user, bool) or not isinstance(user, (str, int)):
            raise TypeError(f"user must be a str, an int or None, not {user!r:.80}")
        key = str(user)
        if not 0 < len(key) <= P.USER_MAX:
            raise ValueError(
                f"user keys are 1 to {P.USER_MAX} characters, got {len(key)}"
            )
        return key

    def _meta_text(self, meta: Any) -> str:
        if meta is None:
            return "{}"
        if not isinstance(meta, Mapping):
            raise ValueError(
                f"meta must be a JSON object (a dict), not {type(meta).__name__}"
            )
        reserved = _RESERVED.intersection(meta)
        if reserved:
            raise ValueError(
                f"meta keys {sorted(reserved)} are reserved: presence sets them"
            )
        try:
            text = json.dumps(
                dict(meta),
                separators=(",", ":"),
                ensure_ascii=False,
                allow_nan=False,
                sort_keys=True,
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"meta is not JSON-serializable: {exc}") from None
        size = len(text.encode("utf-8"))
        cap = self.settings.meta_max_bytes
        if size > cap:
            raise ValueError(
                f"meta is {size} bytes of JSON; the limit is meta_max_bytes={cap} "
                "(CONFIG['presence']['meta_max_bytes'])"
            )
        return text

    def _check_frame(self, frame: bytes) -> None:
        limit = self.hub.max_payload
        if len(frame) > limit:
            raise ValueError(
                f"the presence frame would be {len(frame)} bytes; the NATS server "
                f"accepts at most max_payload={limit}"
            )

    # -- the API -------------------------------------------------------------

    async def join(
        self,
        room: str,
        session: str,
        user: str | int | None = None,
        meta: Mapping[str, Any] | None = None,
        *,
        diffs: bool = False,
    ) -> None:
        """Add ``session`` to ``room``, as ``user`` (None: anonymous).

        Joining a room the session is already in replaces its metadata.
        With ``diffs=True`` the session also gets ``presence.diff`` events of
        the room. Raises ``TypeError`` (invalid room or session), ``ValueError``
        (metadata) or :class:`RoomFull` before anything is published.
        """
        room = self._check_room(room)
        session = self._check_session(session)
        key = self._check_user(user)
        text = self._meta_text(meta)
        await self._ensure_started()
        joined_at = self._wall()
        nv = self._roster.local
        self._check_frame(
            P.encode_delta(
                P.JOIN,
                self.node,
                nv.inc,
                2**62,
                room,
                session,
                user=key,
                meta=text,
                joined_at=joined_at,
            )
        )
        with self._lock:
            old = self._roster.local_member(room, session)
            cap = self.settings.room_max_members
            if old is None and cap is not None and self._roster.room_size(room) >= cap:
                raise RoomFull(
                    f"room {room!r} has {cap} connections, the limit "
                    "(CONFIG['presence']['room_max_members'])"
                )
            seq, changes = self._roster.local_join(room, session, key, text, joined_at)
            if diffs:
                self._diff_sessions.setdefault(room, set()).add(session)
            if seq:
                m = self._roster.local_member(room, session)
                assert m is not None
                kind = P.JOIN if old is None else P.UPDATE
                frame = P.encode_delta(
                    kind,
                    self.node,
                    nv.inc,
                    seq,
                    room,
                    session,
                    user=m.user,
                    meta=m.meta,
                    joined_at=m.joined_at,
                )
                self.hub.publish(self.subjects.room(room), frame)
            self._record(changes)
        self._dispatch(changes)

    async def update(self, room: str, session: str, meta: Mapping[str, Any]) -> None:
        """Replace the metadata of ``session`` in ``room``.

        Raises :class:`NotJoined` if the session is not in the room here.
        """
        room = self._check_room(room)
        session = self._check_session(session)
        text = self._meta_text(meta)
        await self._ensure_started()
        nv = self._roster.local
        with self._lock:
            try:
                seq, changes = self._roster.local_update(room, session, text)
            except KeyError:
                raise NotJoined(f"{session} is not in room {room!r}") from None
            if seq:
                self.hub.publish(
                    self.subjects.room(room),
                    P.encode_delta(
                        P.UPDATE, self.node, nv.inc, seq, room, session, meta=text
                    ),
                )
            self._record(changes)
        self._dispatch(changes)

    async def leave(self, room: str, session: str, *, reason: str = "leave") -> None:
        """Remove ``session`` from ``room`` (nothing happens if it is not there)."""
        room = self._check_room(room)
        session = self._check_session(session)
        if reason not in ("leave", "disconnect"):
            raise ValueError("reason must be 'leave' or 'disconnect'")
        if not self.started:
            return
        with self._lock:
            changes = self._leave_locked(room, session, reason)
        self._dispatch(changes)

    async def leave_all(self, session: str, *, reason: str = "disconnect") -> None:
        """Remove ``session`` from every room it is in (what a disconnect does)."""
        session = self._check_session(session)
        if reason not in ("leave", "disconnect"):
            raise ValueError("reason must be 'leave' or 'disconnect'")
        if not self.started:
            return
        changes: builtins.list[Change] = []
        with self._lock:
            for room in self._roster.local_rooms_of(session):
                changes += self._leave_locked(room, session, reason)
        self._dispatch(changes)

    def _leave_locked(
        self, room: str, session: str, reason: str
    ) -> builtins.list[Change]:
        sessions = self._diff_sessions.get(room)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._diff_sessions[room]
        seq, changes = self._roster.local_leave(room, session, reason)
        if seq and not self.closed:
            nv = self._roster.local
            with contextlib.suppress(ConnectionUnavailable):
                self.hub.publish(
                    self.subjects.room(room),
                    P.encode_delta(
                        P.LEAVE, self.node, nv.inc, seq, room, session, reason=reason
                    ),
                )
        self._record(changes)
        return changes

    async def list(
        self, room: str
    ) -> dict[str, dict[str, builtins.list[dict[str, Any]]]]:
        """The members of ``room``: ``{key: {"metas": [...]}}`` (Phoenix's shape).

        ``key`` is the user key, or the session for an anonymous member; each
        meta is the member's metadata plus ``session``, ``node`` and
        ``joined_at`` (epoch seconds), ordered by ``joined_at``.
        """
        room = self._check_room(room)
        await self._ensure_started()
        with self._lock:
            return self._roster.list(room)

    async def count(self, room: str) -> RoomCount:
        """Connections and distinct users in ``room``."""
        room = self._check_room(room)
        await self._ensure_started()
        with self._lock:
            return self._roster.count(room)

    async def rooms(self) -> dict[str, int]:
        """``{room: connections}`` of every room with members."""
        await self._ensure_started()
        with self._lock:
            return self._roster.room_counts()

    async def sync(self) -> None:
        """Converge now: ask every node for its summary, fetch what differs."""
        if await self._ensure_started():
            return  # starting included a sync round
        await self._sync_round()

    def watch(self, callback: DiffListener) -> Callable[[], None]:
        """Call ``callback(room, joins, leaves)`` with every coalesced diff.

        It runs on the tracker's event loop and must not block. Returns a
        function that removes it.
        """
        with self._lock:
            self._diff_listeners.append(callback)

        def remove() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._diff_listeners.remove(callback)

        return remove

    async def snapshot(
        self,
        *,
        room: str = "",
        user: str = "",
        node: str = "",
        limit: int = 500,
    ) -> dict[str, Any]:
        """Nodes, rooms and members for the admin page and the CLI.

        ``room`` and ``user`` filter by case-insensitive substring, ``node``
        by node id; at most ``limit`` members are listed.
        """
        await self._ensure_started()
        now = self._clock()
        room_q, user_q = room.lower(), user.lower()
        with self._lock:
            nodes = [self._node_row(nv, now) for nv in self._roster.views()]
            rooms = [
                {
                    "room": r,
                    "connections": c.connections,
                    "users": c.users,
                }
                for r in sorted(self._roster.rooms)
                if room_q in r.lower()
                for c in (self._roster.count(r),)
            ]
            members: builtins.list[dict[str, Any]] = []
            total = 0
            for r in sorted(self._roster.rooms):
                if room_q not in r.lower():
                    continue
                for m in sorted(
                    self._roster.rooms[r].values(), key=lambda m: m.joined_at
                ):
                    if node and m.node != node:
                        continue
                    if user_q and user_q not in (m.user or "").lower():
                        continue
                    total += 1
                    if len(members) < limit:
                        members.append(
                            {
                                "room": m.room,
                                "user": m.user,
                                "session": m.session,
                                "node": m.node,
                                "joined_at": m.joined_at,
                                "meta": json.loads(m.meta),
                            }
                        )
        return {
            "node": self.node,
            "alias": self.alias,
            "generated_at": self._wall(),
            "last_sync_age": None if self.last_sync is None else now - self.last_sync,
            "nodes": nodes,
            "rooms": rooms,
            "members": members,
            "members_total": total,
            "truncated": total > len(members),
        }

    def _node_row(self, nv: NodeView, now: float) -> dict[str, Any]:
        local = nv is self._roster.local
        return {
            "id": nv.node,
            "host": nv.host,
            "pid": nv.pid or None,
            "members": len(nv.members),
            "last_heartbeat_age": 0.0 if local else round(now - nv.last_seen, 3),
            "state": "self" if local else nv.state,
            "incarnation": nv.inc,
            "seq": nv.seq,
        }

    # -- publishing helpers --------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        with contextlib.suppress(ConnectionUnavailable):  # it closed the coroutine
            self.hub.spawn(coro)

    def _beat(self) -> None:
        with self._lock:
            nv = self._roster.local
            frame = P.encode_heartbeat(
                self.node, nv.inc, nv.seq, nv.digest, len(nv.members)
            )
            with contextlib.suppress(ConnectionUnavailable):
                self.hub.publish(self.subjects.nodes, frame)

    def _malformed(self, where: str, exc: Exception) -> None:
        self.hub.stats.drop(
            "presence_malformed",
            "channels_nats.presence: dropped a malformed frame on %s: %s",
            where,
            exc,
        )

    # -- incoming frames (called inline from the NATS read loop) -------------

    def _on_frame(self, subject: str, data: bytes, reply: str) -> None:
        try:
            frame = P.decode(data)
        except P.MalformedFrame as exc:
            self._malformed(subject, exc)
            return
        try:
            self._handle(subject, frame, reply)
        except P.MalformedFrame as exc:
            self._malformed(subject, exc)

    def _handle(self, subject: str, frame: P.Frame, reply: str) -> None:
        now = self._clock()
        changes: builtins.list[Change] = []
        subjects = self.subjects
        if isinstance(frame, P.Delta):
            if frame.node == self.node:
                return
            if subject != subjects.room(frame.room):
                raise P.MalformedFrame(
                    f"a delta of {frame.room!r} on the wrong subject"
                )
            with self._lock:
                changes = self._roster.apply_delta(frame, now)
                self._record(changes)
        elif subject == subjects.nodes:
            changes = self._on_node_traffic(frame, reply, now)
        elif subject == subjects.node(self.node):
            changes = self._on_request(frame, reply, now)
        else:
            raise P.MalformedFrame(f"frame {type(frame).__name__} on the wrong subject")
        self._dispatch(changes)

    def _on_node_traffic(
        self, frame: P.Frame, reply: str, now: float
    ) -> builtins.list[Change]:
        if isinstance(frame, P.Heartbeat):
            if frame.node == self.node:
                return []
            with self._lock:
                changes = self._roster.apply_heartbeat(frame, now)
                self._record(changes)
            return changes
        if isinstance(frame, P.Bye):
            if frame.node == self.node:
                return []
            with self._lock:
                changes = self._roster.drop_if(frame.node, frame.inc, "node_down", now)
                self._record(changes)
            logger.info(
                "channels_nats.presence: node %s said bye (%d member(s) left)",
                frame.node,
                sum(1 for c in changes if c.kind == "leave"),
            )
            return changes
        if isinstance(frame, P.SyncFrame) and frame.kind == P.SYNC:
            s = frame.summary
            if s.node == self.node:
                return []
            with self._lock:
                own = self._roster.local.summary()
                changes, fetch = self._roster.apply_summary(s, now)
                if fetch:
                    fetch = not self._roster.nodes[s.node].fetching
                    self._roster.fetch_started(s.node, now)
                self._record(changes)
            if reply:
                with contextlib.suppress(ConnectionUnavailable):
                    self.hub.publish(reply, P.encode_summary(own))
            if fetch:
                self._spawn(self._fetch(s.node))
            return changes
        raise P.MalformedFrame(f"{type(frame).__name__} on the node subject")

    def _on_request(
        self, frame: P.Frame, reply: str, now: float
    ) -> builtins.list[Change]:
        if isinstance(frame, P.Ping):
            if reply:
                with self._lock:
                    nv = self._roster.local
                    pong = P.encode_pong(self.node, nv.inc, nv.seq)
                with contextlib.suppress(ConnectionUnavailable):
                    self.hub.publish(reply, pong)
            return []
        if isinstance(frame, P.RosterRequest):
            self._send_roster(frame)
            return []
        if isinstance(frame, P.RosterChunk):
            return self._take_chunk(frame, now)
        raise P.MalformedFrame(f"{type(frame).__name__} on a node's own subject")

    def _send_roster(self, request: P.RosterRequest) -> None:
        with self._lock:
            summary = self._roster.local.summary()
            members = list(self._roster.local.members.values())
        frames = P.encode_roster(
            summary, request.request_id, members, self.hub.max_payload
        )
        target = self.subjects.node(request.node)
        with contextlib.suppress(ConnectionUnavailable):
            for frame in frames:
                self.hub.publish(target, frame)
        self.hub.stats.incr("presence_rosters_sent")

    def _take_chunk(self, chunk: P.RosterChunk, now: float) -> builtins.list[Change]:
        with self._lock:
            assembly = self._fetches.get(chunk.request_id)
            if assembly is None or assembly.node != chunk.summary.node:
                return []  # late: that fetch gave up already
            try:
                members = assembly.add(chunk)
                if members is None:
                    return []
                changes = self._roster.apply_snapshot(chunk.summary, members, now)
            except P.MalformedFrame:
                del self._fetches[chunk.request_id]
                assembly.future.set_result(False)
                raise
            del self._fetches[chunk.request_id]
            self._record(changes)
        assembly.future.set_result(True)
        return changes

    # -- sync, fetch, probe ---------------------------------------------------

    async def _sync_round(self) -> None:
        with self._lock:
            own = self._roster.local.summary()
            known = len(self._roster.nodes) if self._converged else 0
        replies = await self.hub.gather(
            self.subjects.nodes,
            P.encode_sync(own),
            timeout=self.settings.sync_window,
            expected=known or None,
        )
        now = self._clock()
        changes: builtins.list[Change] = []
        fetch: builtins.list[str] = []
        for data in replies:
            try:
                frame = P.decode(data)
                if not isinstance(frame, P.SyncFrame) or frame.kind != P.SUMMARY:
                    raise P.MalformedFrame(f"{type(frame).__name__} as a sync answer")
            except P.MalformedFrame as exc:
                self._malformed("a sync answer", exc)
                continue
            s = frame.summary
            if s.node == self.node:
                continue
            with self._lock:
                found, need = self._roster.apply_summary(s, now)
                if need:
                    self._roster.fetch_started(s.node, now)
                self._record(found)
            changes += found
            if need:
                fetch.append(s.node)
        self._dispatch(changes)
        if fetch:
            await asyncio.gather(*(self._fetch(node) for node in fetch))
        self._converged = True
        self.last_sync = self._clock()
        self.hub.stats.incr("presence_syncs")

    async def _resync(self, why: str) -> None:
        try:
            await self._sync_round()
        except NatsLayerError as exc:
            logger.warning(
                "channels_nats.presence: sync after %s failed: %r (the next "
                "heartbeats repair the roster)",
                why,
                exc,
            )

    async def _fetch(self, node: str) -> bool:
        """Ask ``node`` for its roster; True once it arrived and was applied."""
        request_id = next(self._request_ids)
        assembly = _Assembly(node)
        with self._lock:
            self._fetches[request_id] = assembly
        ok = False
        try:
            self.hub.publish(
                self.subjects.node(node),
                P.encode_roster_request(self.node, request_id),
            )
            ok = await asyncio.wait_for(
                asyncio.wrap_future(assembly.future), self.settings.fetch_timeout
            )
        except (asyncio.TimeoutError, ConnectionUnavailable):
            pass
        finally:
            with self._lock:
                self._fetches.pop(request_id, None)
                self._roster.fetch_done(node, ok, self._clock())
        self.hub.stats.incr("presence_resyncs")
        return ok

    async def _probe(self, node: str) -> None:
        self.hub.stats.incr("presence_probes")
        changes: builtins.list[Change] = []
        try:
            answer = await self.hub.request(
                self.subjects.node(node),
                P.encode_ping(self.node),
                self.settings.probe_timeout,
            )
        except NoResponders:
            outcome = "gone"
        except RequestTimeout:
            outcome = "timeout"
        except NatsLayerError:
            outcome = "unknown"  # we are cut off ourselves: no verdict
        else:
            outcome = "alive"
            try:
                pong = P.decode(answer)
                if not isinstance(pong, P.Pong) or pong.node != node:
                    raise P.MalformedFrame("not a pong of that node")
            except P.MalformedFrame as exc:
                self._malformed(f"a liveness answer of {node}", exc)
            else:
                with self._lock:
                    changes = self._roster.apply_pong(pong, self._clock())
                    self._record(changes)
        now = self._clock()
        with self._lock:
            gone = self._roster.probe_done(
                node, outcome, now, grace=now < self._grace_until
            )
            self._record(gone)
        if gone:
            self.hub.stats.incr("presence_nodes_down")
            logger.info(
                "channels_nats.presence: node %s is gone (no responders); "
                "%d member(s) removed",
                node,
                sum(1 for c in gone if c.kind == "leave"),
            )
        self._dispatch(changes + gone)

    async def _ticker(self) -> None:
        """Heartbeats and failure detection; runs on the home loop."""
        s = self.settings
        tick = min(0.1, s.heartbeat_interval / 4)
        stall = max(3 * s.heartbeat_interval, s.ttl / 2)
        last = self._clock()
        next_beat = last
        while True:
            now = self._clock()
            if now - last > stall:
                # This process was frozen or its loop blocked: the silence of
                # the others says nothing, and they may have dropped us.
                logger.warning(
                    "channels_nats.presence: node %s stalled for %.1fs; resyncing",
                    self.node,
                    now - last,
                )
                with self._lock:
                    self._roster.refresh_all(now)
                self._spawn(self._resync("a stall"))
            last = now
            if now >= next_beat:
                self._beat()
                next_beat = now + s.heartbeat_interval
            self._check(now)
            await asyncio.sleep(tick)

    def _check(self, now: float) -> None:
        with self._lock:
            actions = self._roster.due(now)
        for action, node in actions:
            if action == "expire":
                with self._lock:
                    changes = self._roster.drop_node(node, "expired", now)
                    self._record(changes)
                self.hub.stats.incr("presence_nodes_expired")
                logger.info(
                    "channels_nats.presence: node %s expired (no heartbeat for "
                    "%.1fs); %d member(s) removed",
                    node,
                    self.settings.ttl,
                    sum(1 for c in changes if c.kind == "leave"),
                )
                self._dispatch(changes)
            elif action == "probe":
                self._spawn(self._probe(node))
            elif action == "fetch":
                self._spawn(self._fetch(node))

    # -- signals and diffs ---------------------------------------------------

    def _record(self, changes: builtins.list[Change]) -> None:
        """Note changes for the diff events (called with the lock held)."""
        if not changes or not (self._diff_sessions or self._diff_listeners):
            return
        everything = bool(self._diff_listeners)
        for change in changes:
            if everything or change.member.room in self._diff_sessions:
                self._diffs.record(change)
        if self._diffs:
            self._schedule_diffs()

    def _schedule_diffs(self) -> None:
        # Called with the lock held.
        if self._diff_scheduled:
            return
        self._diff_scheduled = True
        try:
            self.hub.spawn(self._flush_diffs())
        except ConnectionUnavailable:
            self._diff_scheduled = False

    async def _flush_diffs(self) -> None:
        try:
            await asyncio.sleep(self.settings.diff_window)
        except asyncio.CancelledError:
            with self._lock:
                self._diff_scheduled = False
            raise
        with self._lock:
            self._diff_scheduled = False
            diffs = self._diffs.take(self._roster)
            sessions = {
                room: list(self._diff_sessions.get(room, ())) for room, _, _ in diffs
            }
            listeners = list(self._diff_listeners)
        for room, joins, leaves in diffs:
            event = {
                "type": "presence.diff",
                "room": room,
                "joins": joins,
                "leaves": leaves,
            }
            for session in sessions[room]:
                try:
                    await self.layer.send(session, event)
                except ChannelFull:
                    self.hub.stats.drop(
                        "presence_diffs_dropped",
                        "channels_nats.presence: a presence.diff for %s was dropped: "
                        "its channel is full",
                        session,
                    )
                except NatsLayerError as exc:
                    self.hub.stats.drop(
                        "presence_diffs_dropped",
                        "channels_nats.presence: a presence.diff for %s failed: %r",
                        session,
                        exc,
                    )
            for listener in listeners:
                try:
                    listener(room, joins, leaves)
                except Exception:
                    logger.exception("a presence diff listener raised")

    def _dispatch(self, changes: builtins.list[Change]) -> None:
        """Queue the signals of ``changes`` (never from inside the lock)."""
        if not changes or not signals.has_receivers():
            return
        with self._lock:
            self._signal_queue.extend(changes)
            if self._pumping:
                return
            self._pumping = True
        self._kick_pump(already_marked=True)

    def _kick_pump(self, already_marked: bool = False) -> None:
        if not already_marked:
            with self._lock:
                if self._pumping:
                    return
                self._pumping = True
        try:
            self.hub.spawn(self._pump())
        except ConnectionUnavailable:
            with self._lock:
                self._pumping = False

    async def _pump(self) -> None:
        try:
            while True:
                with self._lock:
                    if not self._signal_queue:
                        self._pumping = False
                        return
                    batch = list(self._signal_queue)
                    self._signal_queue.clear()
                await sync_to_async(signals.fire)(self, batch)
        except BaseException:
            with self._lock:
                self._pumping = False
            raise
