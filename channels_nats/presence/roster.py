"""The roster as one process knows it: pure state, no I/O, no locks, no clock.

:class:`Roster` holds this node's own members and a copy of every other
node's, applies deltas, heartbeats and snapshots from the wire, and decides
from the time it is given (``now``, monotonic seconds) which nodes to ask
whether they are alive, whose roster to fetch again and whom to expire.
Every mutation returns the :class:`Change` list it caused, from which the
tracker fires signals and builds diffs. The tracker serialises all calls
with one short lock.

Per remote node it keeps the incarnation, the last applied sequence number,
the digest of the copy, and a small reorder buffer: frames published from
different threads of a node may arrive out of order, so a gap waits
``reorder_window`` for the missing frame before a targeted resync.
"""

from __future__ import annotations

import builtins
import json
import math
from collections.abc import Iterator
from typing import Any, NamedTuple

from .protocol import (
    JOIN,
    LEAVE,
    UPDATE,
    Delta,
    Heartbeat,
    MalformedFrame,
    Member,
    Pong,
    Summary,
    member_hash,
    roster_digest,
)
from .settings import PresenceSettings

__all__ = ["Change", "DiffBuffer", "NodeView", "Roster", "RoomCount", "meta_entry"]

#: Out-of-order frames buffered per node before giving up and resyncing.
PENDING_MAX = 10000
_NEVER = -math.inf


class Change(NamedTuple):
    """One change of the roster: ``join``, ``leave``, ``update``, ``online``
    (a user's first member anywhere) or ``offline`` (their last one gone)."""

    kind: str
    member: Member
    previous: Member | None = None
    reason: str = ""


class RoomCount(NamedTuple):
    """Connections in a room, and distinct users (an anonymous connection
    counts as one user)."""

    connections: int
    users: int


class NodeView:
    """What this process knows about one node (itself included)."""

    __slots__ = (
        "digest",
        "fetch_started",
        "fetching",
        "gap_since",
        "host",
        "inc",
        "known_seq",
        "last_probe",
        "last_seen",
        "members",
        "needs_resync",
        "next_fetch",
        "node",
        "pending",
        "pid",
        "probe_failures",
        "probing",
        "seq",
        "started",
    )

    def __init__(self, node: str, inc: int, now: float) -> None:
        self.node = node
        self.host = ""
        self.pid = 0
        self.started = 0.0
        self.members: dict[tuple[str, str], Member] = {}
        self.last_seen = now
        self.probing = False
        self.last_probe = _NEVER
        self.probe_failures = 0
        self.fetching = False
        self.fetch_started = 0.0
        self.next_fetch = _NEVER
        self.reset(inc)

    def reset(self, inc: int) -> None:
        """Start over with an empty copy at sequence 0 of incarnation ``inc``."""
        self.inc = inc
        self.seq = 0
        self.known_seq = 0
        self.digest = 0
        self.pending: dict[int, Delta] = {}
        self.gap_since: float | None = None
        self.needs_resync = False

    @property
    def state(self) -> str:
        return "suspect" if self.probe_failures else "alive"

    def summary(self) -> Summary:
        return Summary(
            self.node,
            self.inc,
            self.seq,
            self.digest,
            len(self.members),
            self.host,
            self.pid,
            self.started,
        )


def meta_entry(member: Member) -> dict[str, Any]:
    """The ``metas`` entry of a member, in Phoenix's shape."""
    meta: dict[str, Any] = json.loads(member.meta) if member.meta != "{}" else {}
    meta.update(session=member.session, node=member.node, joined_at=member.joined_at)
    return meta


def _key(member: Member) -> str:
    """The key a member is listed under: its user, or its session if anonymous."""
    return member.user if member.user is not None else member.session


def _hash(m: Member) -> int:
    return member_hash(m.room, m.session, m.user, m.meta, m.joined_at)


class Roster:
    """Every member this process knows of, indexed by node, room and user."""

    def __init__(
        self,
        node: str,
        inc: int,
        settings: PresenceSettings,
        *,
        host: str = "",
        pid: int = 0,
        started: float = 0.0,
        now: float = 0.0,
    ) -> None:
        self.settings = settings
        self.local = NodeView(node, inc, now)
        self.local.host, self.local.pid, self.local.started = host, pid, started
        self.nodes: dict[str, NodeView] = {}
        #: room -> (node, session) -> member, over all nodes.
        self.rooms: dict[str, dict[tuple[str, str], Member]] = {}
        #: user key -> number of members anywhere.
        self.users: dict[str, int] = {}
        #: node -> (incarnation, until): deltas of a node that went down are
        #: ignored for a while, so a late frame cannot bring back a ghost.
        self.tombstones: dict[str, tuple[int, float]] = {}

    # -- mutations of the indexes ---------------------------------------------

    def _add(self, nv: NodeView, m: Member, changes: builtins.list[Change]) -> None:
        nv.members[(m.room, m.session)] = m
        nv.digest ^= _hash(m)
        self.rooms.setdefault(m.room, {})[(m.node, m.session)] = m
        changes.append(Change("join", m))
        if m.user is not None:
            n = self.users.get(m.user, 0)
            self.users[m.user] = n + 1
            if not n:
                changes.append(Change("online", m))

    def _remove(
        self,
        nv: NodeView,
        key: tuple[str, str],
        reason: str,
        changes: builtins.list[Change],
    ) -> None:
        m = nv.members.pop(key)
        nv.digest ^= _hash(m)
        room = self.rooms[m.room]
        del room[(m.node, m.session)]
        if not room:
            del self.rooms[m.room]
        changes.append(Change("leave", m, None, reason))
        if m.user is not None:
            n = self.users[m.user] - 1
            if n:
                self.users[m.user] = n
            else:
                del self.users[m.user]
                changes.append(Change("offline", m, None, reason))

    def _replace(
        self, nv: NodeView, old: Member, new: Member, changes: builtins.list[Change]
    ) -> None:
        nv.members[(new.room, new.session)] = new
        nv.digest ^= _hash(old) ^ _hash(new)
        self.rooms[new.room][(new.node, new.session)] = new
        changes.append(Change("update", new, old))

    def _drop_members(
        self, nv: NodeView, reason: str, changes: builtins.list[Change]
    ) -> None:
        for key in list(nv.members):
            self._remove(nv, key, reason, changes)

    # -- this node's own members ----------------------------------------------

    def local_member(self, room: str, session: str) -> Member | None:
        return self.local.members.get((room, session))

    def local_join(
        self, room: str, session: str, user: str | None, meta: str, joined_at: float
    ) -> tuple[int, builtins.list[Change]]:
        """Add (or re-join, replacing the metadata) a member of this node.

        Returns the new sequence number (0 if nothing changed) and the changes.
        """
        nv = self.local
        old = nv.members.get((room, session))
        changes: builtins.list[Change] = []
        if old is not None:
            if old.user != user:
                raise ValueError(
                    f"{session} is already in {room!r} as user {old.user!r}; "
                    "leave first to join as another user"
                )
            if old.meta == meta:
                return 0, changes
            self._replace(nv, old, old._replace(meta=meta), changes)
        else:
            self._add(
                nv, Member(room, session, user, meta, nv.node, joined_at), changes
            )
        nv.seq += 1
        return nv.seq, changes

    def local_update(
        self, room: str, session: str, meta: str
    ) -> tuple[int, builtins.list[Change]]:
        """Replace a member's metadata; raise ``KeyError`` if it is not in the room."""
        nv = self.local
        old = nv.members[(room, session)]
        changes: builtins.list[Change] = []
        if old.meta == meta:
            return 0, changes
        self._replace(nv, old, old._replace(meta=meta), changes)
        nv.seq += 1
        return nv.seq, changes

    def local_leave(
        self, room: str, session: str, reason: str
    ) -> tuple[int, builtins.list[Change]]:
        """Remove a member of this node; sequence 0 if it was not there."""
        nv = self.local
        changes: builtins.list[Change] = []
        if (room, session) not in nv.members:
            return 0, changes
        self._remove(nv, (room, session), reason, changes)
        nv.seq += 1
        return nv.seq, changes

    def local_rooms_of(self, session: str) -> builtins.list[str]:
        return [room for room, s in self.local.members if s == session]

    def room_size(self, room: str) -> int:
        return len(self.rooms.get(room, ()))

    # -- frames from other nodes ----------------------------------------------

    def _view(
        self,
        node: str,
        inc: int,
        now: float,
        changes: builtins.list[Change],
        *,
        alive: bool,
    ) -> NodeView | None:
        """The view of ``node`` for a frame of incarnation ``inc``, or None to
        ignore the frame. ``alive``: the frame proves the node runs now."""
        nv = self.nodes.get(node)
        if nv is None:
            tomb = self.tombstones.get(node)
            if tomb is not None:
                if not alive and tomb[0] >= inc and tomb[1] > now:
                    return None
                del self.tombstones[node]
            nv = self.nodes[node] = NodeView(node, inc, now)
            return nv
        if inc < nv.inc:
            return None  # a frame of an older incarnation
        if inc > nv.inc:
            # The process restarted its tracker: the old members go at once.
            self._drop_members(nv, "node_down", changes)
            nv.reset(inc)
        return nv

    def _note_seq(self, nv: NodeView, seq: int, now: float) -> None:
        if seq > nv.known_seq:
            nv.known_seq = seq
        if nv.seq < nv.known_seq:
            if nv.gap_since is None:
                nv.gap_since = now
        else:
            nv.gap_since = None

    def _apply_one(
        self, nv: NodeView, d: Delta, changes: builtins.list[Change]
    ) -> None:
        key = (d.room, d.session)
        old = nv.members.get(key)
        if d.kind == JOIN:
            new = Member(d.room, d.session, d.user, d.meta, nv.node, d.joined_at)
            if old is None:
                self._add(nv, new, changes)
            elif old != new:
                if old.user != new.user or old.joined_at != new.joined_at:
                    self._remove(nv, key, "leave", changes)
                    self._add(nv, new, changes)
                else:
                    self._replace(nv, old, new, changes)
        elif d.kind == UPDATE:
            if old is None:
                nv.needs_resync = True  # an update of a member we never saw
            elif old.meta != d.meta:
                self._replace(nv, old, old._replace(meta=d.meta), changes)
        elif d.kind == LEAVE and old is not None:
            self._remove(nv, key, d.reason, changes)
        nv.seq = d.seq

    def _drain(self, nv: NodeView, changes: builtins.list[Change]) -> None:
        pending = nv.pending
        while pending:
            d = pending.pop(nv.seq + 1, None)
            if d is None:
                break
            self._apply_one(nv, d, changes)
        if pending:
            for seq in [s for s in pending if s <= nv.seq]:
                del pending[seq]

    def apply_delta(self, d: Delta, now: float) -> builtins.list[Change]:
        changes: builtins.list[Change] = []
        nv = self._view(d.node, d.inc, now, changes, alive=False)
        if nv is None or d.seq <= nv.seq:
            return changes
        if d.seq == nv.seq + 1:
            self._apply_one(nv, d, changes)
            self._drain(nv, changes)
        elif len(nv.pending) >= PENDING_MAX:
            nv.pending.clear()
            nv.needs_resync = True
        else:
            nv.pending[d.seq] = d
        self._note_seq(nv, max(d.seq, nv.known_seq), now)
        return changes

    def apply_heartbeat(self, hb: Heartbeat, now: float) -> builtins.list[Change]:
        changes: builtins.list[Change] = []
        nv = self._view(hb.node, hb.inc, now, changes, alive=True)
        if nv is None:
            return changes
        nv.last_seen = now
        nv.probe_failures = 0
        if hb.seq == nv.seq and (hb.digest != nv.digest or hb.size != len(nv.members)):
            nv.needs_resync = True
        self._note_seq(nv, hb.seq, now)
        return changes

    def apply_summary(
        self, s: Summary, now: float
    ) -> tuple[builtins.list[Change], bool]:
        """Take a node's summary; return the changes and whether to fetch it."""
        changes: builtins.list[Change] = []
        nv = self._view(s.node, s.inc, now, changes, alive=True)
        if nv is None:
            return changes, False
        nv.host, nv.pid, nv.started = s.host, s.pid, s.started
        nv.last_seen = now
        nv.probe_failures = 0
        self._note_seq(nv, s.seq, now)
        if s.seq == nv.seq and (s.digest != nv.digest or s.size != len(nv.members)):
            nv.needs_resync = True
        return changes, nv.needs_resync or nv.seq < s.seq

    def apply_pong(self, p: Pong, now: float) -> builtins.list[Change]:
        changes: builtins.list[Change] = []
        nv = self._view(p.node, p.inc, now, changes, alive=True)
        if nv is not None:
            nv.last_seen = now
            nv.probe_failures = 0
            self._note_seq(nv, p.seq, now)
        return changes

    def apply_snapshot(
        self, s: Summary, members: builtins.list[Member], now: float
    ) -> builtins.list[Change]:
        """Replace the copy of a node with the roster it sent at ``s.seq``.

        Raises :class:`MalformedFrame` (and changes nothing) if the members
        do not match the summary's count and digest.
        """
        if len(members) != s.size or roster_digest(members) != s.digest:
            raise MalformedFrame(
                f"the roster of {s.node} does not match its own digest"
            )
        changes: builtins.list[Change] = []
        nv = self._view(s.node, s.inc, now, changes, alive=True)
        if nv is None:
            return changes
        nv.host, nv.pid, nv.started = s.host, s.pid, s.started
        nv.last_seen = now
        nv.probe_failures = 0
        if s.seq < nv.seq:
            return changes  # older than what we applied since we asked
        new = {(m.room, m.session): m for m in members}
        if len(new) != len(members):
            raise MalformedFrame(f"the roster of {s.node} lists a member twice")
        for key in [k for k in nv.members if k not in new]:
            self._remove(nv, key, "leave", changes)
        for key, m in new.items():
            old = nv.members.get(key)
            if old is None:
                self._add(nv, m, changes)
            elif old != m:
                if old.user != m.user or old.joined_at != m.joined_at:
                    self._remove(nv, key, "leave", changes)
                    self._add(nv, m, changes)
                else:
                    self._replace(nv, old, m, changes)
        nv.seq = s.seq
        nv.needs_resync = False
        self._drain(nv, changes)
        self._note_seq(nv, s.seq, now)
        return changes

    def drop_node(self, node: str, reason: str, now: float) -> builtins.list[Change]:
        """Remove a node and all its members (one batch), e.g. after a bye."""
        changes: builtins.list[Change] = []
        nv = self.nodes.pop(node, None)
        if nv is None:
            return changes
        self._drop_members(nv, reason, changes)
        if reason == "node_down":
            self.tombstones[node] = (nv.inc, now + self.settings.ttl)
        return changes

    def drop_if(
        self, node: str, inc: int, reason: str, now: float
    ) -> builtins.list[Change]:
        """Drop ``node`` if we know it at incarnation ``inc`` or older (a bye)."""
        nv = self.nodes.get(node)
        if nv is None or nv.inc > inc:
            return []
        return self.drop_node(node, reason, now)

    # -- failure detection and resync ------------------------------------------

    def due(self, now: float) -> builtins.list[tuple[str, str]]:
        """What to do now: ``("probe" | "fetch" | "expire", node)`` actions.

        Marks probes and fetches as in flight; report their outcome with
        :meth:`probe_done` and :meth:`fetch_done`.
        """
        s = self.settings
        actions = []
        for nv in self.nodes.values():
            age = now - nv.last_seen
            if age > s.ttl:
                actions.append(("expire", nv.node))
                continue
            if nv.fetching and now - nv.fetch_started > s.fetch_timeout:
                nv.fetching = False
                nv.needs_resync = True
            gap = nv.gap_since is not None and now - nv.gap_since >= s.reorder_window
            if (nv.needs_resync or gap) and not nv.fetching and now >= nv.next_fetch:
                nv.fetching = True
                nv.fetch_started = now
                actions.append(("fetch", nv.node))
            if (
                age > s.late_after
                and not nv.probing
                and now - nv.last_probe >= s.heartbeat_interval
            ):
                nv.probing = True
                nv.last_probe = now
                actions.append(("probe", nv.node))
        if self.tombstones:
            for node in [n for n, (_, t) in self.tombstones.items() if t <= now]:
                del self.tombstones[node]
        return actions

    def probe_done(
        self, node: str, outcome: str, now: float, *, grace: bool = False
    ) -> builtins.list[Change]:
        """Record a liveness probe's outcome: ``alive``, ``gone`` or ``timeout``.

        ``gone`` (the server said nobody is subscribed) drops the node at
        once, unless ``grace`` (this process reconnected a moment ago, and
        the node may simply not be back yet). A first timeout is retried at
        once; after that the node waits for its TTL.
        """
        nv = self.nodes.get(node)
        if nv is None:
            return []
        nv.probing = False
        if outcome == "alive":
            nv.last_seen = now
            nv.probe_failures = 0
        elif outcome == "gone" and not grace:
            return self.drop_node(node, "node_down", now)
        elif outcome in ("gone", "timeout"):
            nv.probe_failures += 1
            if nv.probe_failures == 1:
                nv.last_probe = _NEVER
        return []

    def fetch_started(self, node: str, now: float) -> None:
        """Mark a fetch of ``node``'s roster as in flight (outside :meth:`due`)."""
        nv = self.nodes.get(node)
        if nv is not None:
            nv.fetching = True
            nv.fetch_started = now

    def fetch_done(self, node: str, ok: bool, now: float) -> None:
        nv = self.nodes.get(node)
        if nv is None:
            return
        nv.fetching = False
        if not ok:
            nv.needs_resync = True
            nv.next_fetch = now + self.settings.heartbeat_interval

    def refresh_all(self, now: float) -> None:
        """Give every node a fresh TTL (after this process stalled or was cut off)."""
        for nv in self.nodes.values():
            nv.last_seen = now
            nv.probe_failures = 0
            nv.last_probe = now

    # -- reads ---------------------------------------------------------------

    def list(self, room: str) -> dict[str, dict[str, builtins.list[dict[str, Any]]]]:
        """``{key: {"metas": [...]}}`` of a room, metas ordered by joined_at."""
        out: dict[str, dict[str, builtins.list[dict[str, Any]]]] = {}
        members = sorted(self.rooms.get(room, {}).values(), key=lambda m: m.joined_at)
        for m in members:
            out.setdefault(_key(m), {"metas": []})["metas"].append(meta_entry(m))
        return out

    def count(self, room: str) -> RoomCount:
        members = self.rooms.get(room, {})
        return RoomCount(len(members), len({_key(m) for m in members.values()}))

    def room_counts(self) -> dict[str, int]:
        return {room: len(members) for room, members in self.rooms.items()}

    def members(self, room: str | None = None) -> Iterator[Member]:
        if room is not None:
            yield from self.rooms.get(room, {}).values()
            return
        for members in self.rooms.values():
            yield from members.values()

    def views(self) -> builtins.list[NodeView]:
        return [self.local, *self.nodes.values()]


class DiffBuffer:
    """Changes of the last window, coalesced into Phoenix ``presence_diff``s.

    For each (room, node, session) it remembers the member as it was when
    the window opened; at the end of the window it compares that with the
    roster: absent -> present is a join, present -> absent a leave, a changed
    member a leave of the old and a join of the new (Phoenix's update), and
    a member that came and went within the window is nothing at all.
    """

    def __init__(self) -> None:
        self.pending: dict[str, dict[tuple[str, str], Member | None]] = {}

    def __bool__(self) -> bool:
        return bool(self.pending)

    def record(self, change: Change) -> None:
        m = change.member
        if change.kind == "join":
            before = None
        elif change.kind == "leave":
            before = m
        elif change.kind == "update":
            before = change.previous
        else:
            return
        self.pending.setdefault(m.room, {}).setdefault((m.node, m.session), before)

    def take(self, roster: Roster) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """Return ``(room, joins, leaves)`` per room that changed, and reset."""
        out = []
        for room, entries in self.pending.items():
            current = roster.rooms.get(room, {})
            joins: dict[str, Any] = {}
            leaves: dict[str, Any] = {}
            for key, before in entries.items():
                after = current.get(key)
                if before == after:
                    continue
                if before is not None:
                    leaves.setdefault(_key(before), {"metas": []})["metas"].append(
                        meta_entry(before)
                    )
                if after is not None:
                    joins.setdefault(_key(after), {"metas": []})["metas"].append(
                        meta_entry(after)
                    )
            if joins or leaves:
                out.append((room, joins, leaves))
        self.pending.clear()
        return out
