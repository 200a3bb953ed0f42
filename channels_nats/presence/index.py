"""The indexes of the roster: members by node, by room and by user.

:class:`MemberIndex` keeps the three indexes consistent (and each node's
digest up to date) through four mutations, drops whole nodes and answers the
reads. :class:`~.roster.Roster` builds on it with what changes them: this
node's own joins and leaves, and the frames of the other nodes.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from typing import Any

from .nodes import Change, NodeView, RoomCount, member_key, meta_entry
from .protocol import Member, member_hash
from .settings import PresenceSettings

__all__ = ["MemberIndex"]


def _hash(m: Member) -> int:
    return member_hash(m.room, m.session, m.user, m.meta, m.joined_at)


class MemberIndex:
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

    # -- reads ---------------------------------------------------------------

    def list(self, room: str) -> dict[str, dict[str, builtins.list[dict[str, Any]]]]:
        """``{key: {"metas": [...]}}`` of a room, metas ordered by joined_at."""
        out: dict[str, dict[str, builtins.list[dict[str, Any]]]] = {}
        members = sorted(self.rooms.get(room, {}).values(), key=lambda m: m.joined_at)
        for m in members:
            out.setdefault(member_key(m), {"metas": []})["metas"].append(meta_entry(m))
        return out

    def count(self, room: str) -> RoomCount:
        members = self.rooms.get(room, {})
        return RoomCount(len(members), len({member_key(m) for m in members.values()}))

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

    def room_size(self, room: str) -> int:
        return len(self.rooms.get(room, ()))
