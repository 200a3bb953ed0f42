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

The tracker is built in layers, one module each, every one adding to the
previous: :mod:`.state` (the state and its lock), :mod:`.events` (signals and
diffs), :mod:`.sync` (sync rounds, roster fetches), :mod:`.inbound` (frames
from the wire), :mod:`.liveness` (heartbeats, probes, expiry),
:mod:`.lifecycle` (start, reconnect, bye) and this module (the API).
"""

from __future__ import annotations

import builtins
import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from ..exceptions import ConnectionUnavailable
from . import protocol as P
from .exceptions import NotJoined, RoomFull
from .lifecycle import Lifecycle
from .nodes import Change, NodeView, RoomCount
from .state import DiffListener
from .validation import check_frame, check_room, check_session, check_user, meta_text

__all__ = ["DiffListener", "PresenceTracker"]


class PresenceTracker(Lifecycle):
    """This process's presence node for one channel layer.

    Get it with :func:`channels_nats.presence.get_presence`; every method is
    a coroutine, callable from any event loop (use ``async_to_sync`` from
    sync code). Reads (``list``, ``count``, ``rooms``) are answered from
    local state.
    """

    def __repr__(self) -> str:
        state = "closed" if self.closed else "started" if self.started else "new"
        return f"<PresenceTracker {self.alias} node={self.node} {state}>"

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
        room = check_room(room)
        session = check_session(session)
        key = check_user(user)
        text = meta_text(meta, self.settings.meta_max_bytes)
        await self._ensure_started()
        joined_at = self._wall()
        nv = self._roster.local
        check_frame(
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
            ),
            self.hub.max_payload,
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
        room = check_room(room)
        session = check_session(session)
        text = meta_text(meta, self.settings.meta_max_bytes)
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
        room = check_room(room)
        session = check_session(session)
        if reason not in ("leave", "disconnect"):
            raise ValueError("reason must be 'leave' or 'disconnect'")
        if not self.started:
            return
        with self._lock:
            changes = self._leave_locked(room, session, reason)
        self._dispatch(changes)

    async def leave_all(self, session: str, *, reason: str = "disconnect") -> None:
        """Remove ``session`` from every room it is in (what a disconnect does)."""
        session = check_session(session)
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
        room = check_room(room)
        await self._ensure_started()
        with self._lock:
            return self._roster.list(room)

    async def count(self, room: str) -> RoomCount:
        """Connections and distinct users in ``room``."""
        room = check_room(room)
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
