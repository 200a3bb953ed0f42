"""What the roster is made of: one node's view, the changes, the counts.

:class:`NodeView` is what this process knows about one node (itself
included): its members, incarnation, sequence numbers and digest, and the
state of the failure detector for it. Every mutation of the roster returns
:class:`Change` records, from which the tracker fires signals and builds
diffs.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

from .protocol import Delta, Member, Summary

__all__ = ["NEVER", "Change", "NodeView", "RoomCount", "member_key", "meta_entry"]

#: A time before any other, for "never happened".
NEVER = -math.inf


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
        self.last_probe = NEVER
        self.probe_failures = 0
        self.fetching = False
        self.fetch_started = 0.0
        self.next_fetch = NEVER
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


def member_key(member: Member) -> str:
    """The key a member is listed under: its user, or its session if anonymous."""
    return member.user if member.user is not None else member.session
