"""The presence frame types, their kinds and limits, and the subjects.

The layout of every frame is in the docstring of :mod:`..protocol`.
"""

from __future__ import annotations

from typing import NamedTuple

from channels.layers import BaseChannelLayer

from ...subjects import token

__all__ = [
    "BYE",
    "HEARTBEAT",
    "HOST_MAX",
    "JOIN",
    "LEAVE",
    "PING",
    "PONG",
    "PV",
    "REASONS",
    "ROSTER",
    "ROSTER_OVERHEAD",
    "ROSTER_REQ",
    "SUMMARY",
    "SYNC",
    "UPDATE",
    "USER_MAX",
    "Bye",
    "Delta",
    "Frame",
    "Heartbeat",
    "MalformedFrame",
    "Member",
    "Ping",
    "Pong",
    "RosterChunk",
    "RosterRequest",
    "Subjects",
    "Summary",
    "SyncFrame",
    "valid_room",
    "valid_session",
]

PV = 1
JOIN, UPDATE, LEAVE, HEARTBEAT, BYE, SYNC, SUMMARY = 1, 2, 3, 4, 5, 6, 7
PING, PONG, ROSTER_REQ, ROSTER = 8, 9, 10, 11

#: Reasons a member leaves. ``leave`` and ``disconnect`` travel in LEAVE
#: frames; an observer infers ``node_down`` (the node's connection is gone, or
#: it said bye) and ``expired`` (no heartbeat for ``ttl`` seconds) itself.
REASONS = ("leave", "disconnect", "node_down", "expired")

#: Longest user key, in characters.
USER_MAX = 256
HOST_MAX = 128
#: Bytes of a ROSTER frame besides its members (bounded: the host is cut).
ROSTER_OVERHEAD = 512


class MalformedFrame(ValueError):
    """A frame from the wire that is not a valid presence frame."""


class Member(NamedTuple):
    """One connection in one room. ``meta`` is compact JSON text of a dict."""

    room: str
    session: str
    user: str | None
    meta: str
    node: str
    joined_at: float


class Summary(NamedTuple):
    """What a node says about itself: enough to tell if a copy is current."""

    node: str
    inc: int
    seq: int
    digest: int
    size: int
    host: str
    pid: int
    started: float


class Delta(NamedTuple):
    kind: int  # JOIN, UPDATE or LEAVE
    node: str
    inc: int
    seq: int
    room: str
    session: str
    user: str | None  # JOIN only
    meta: str  # JOIN and UPDATE
    joined_at: float  # JOIN only
    reason: str  # LEAVE only


class Heartbeat(NamedTuple):
    node: str
    inc: int
    seq: int
    digest: int
    size: int


class Bye(NamedTuple):
    node: str
    inc: int
    seq: int


class SyncFrame(NamedTuple):
    kind: int  # SYNC (a request) or SUMMARY (an answer)
    summary: Summary


class Ping(NamedTuple):
    node: str


class Pong(NamedTuple):
    node: str
    inc: int
    seq: int


class RosterRequest(NamedTuple):
    node: str
    request_id: int


class RosterChunk(NamedTuple):
    summary: Summary
    request_id: int
    part: int
    total: int
    members: list[Member]


Frame = Delta | Heartbeat | Bye | SyncFrame | Ping | Pong | RosterRequest | RosterChunk


class Subjects:
    """The presence subjects below a layer prefix."""

    __slots__ = ("_node", "_room", "nodes", "rooms")

    def __init__(self, prefix: str) -> None:
        self.nodes = f"{prefix}.presence.nodes"
        self._room = f"{prefix}.presence.r."
        self.rooms = self._room + ">"
        self._node = f"{prefix}.presence.n."

    def room(self, room: str) -> str:
        return self._room + token(room)

    def node(self, node: str) -> str:
        return self._node + node

    def is_room(self, subject: str) -> bool:
        return subject.startswith(self._room)


# -- validation ------------------------------------------------------------------


def valid_room(room: object) -> bool:
    """Whether ``room`` is valid as a room: the rules of Channels group names."""
    return (
        isinstance(room, str)
        and len(room) < BaseChannelLayer.MAX_NAME_LENGTH
        and BaseChannelLayer.group_name_regex.match(room) is not None
    )


def valid_session(session: object) -> bool:
    """Whether ``session`` is valid as a session: a Channels channel name."""
    return (
        isinstance(session, str)
        and len(session) < BaseChannelLayer.MAX_NAME_LENGTH
        and BaseChannelLayer.channel_name_regex.match(session) is not None
    )
