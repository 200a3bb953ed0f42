"""Diffs: the changes of a short window, coalesced for ``presence.diff``."""

from __future__ import annotations

from typing import Any

from .index import MemberIndex
from .nodes import Change, member_key, meta_entry
from .protocol import Member

__all__ = ["DiffBuffer"]


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

    def take(
        self, roster: MemberIndex
    ) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
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
                    leaves.setdefault(member_key(before), {"metas": []})[
                        "metas"
                    ].append(meta_entry(before))
                if after is not None:
                    joins.setdefault(member_key(after), {"metas": []})["metas"].append(
                        meta_entry(after)
                    )
            if joins or leaves:
                out.append((room, joins, leaves))
        self.pending.clear()
        return out
