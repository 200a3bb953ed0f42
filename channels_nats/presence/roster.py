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

The indexes it builds on are in :mod:`.index`, the per-node views and the
change records in :mod:`.nodes`, the coalescing of changes into diffs in
:mod:`.diffs`.
"""

from __future__ import annotations

import builtins

from .index import MemberIndex
from .nodes import NEVER, Change, NodeView
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
    roster_digest,
)

__all__ = ["Roster"]

#: Out-of-order frames buffered per node before giving up and resyncing.
PENDING_MAX = 10000


class Roster(MemberIndex):
    """The roster: this node's members, and copies of the others' from the wire."""

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
                nv.last_probe = NEVER
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
