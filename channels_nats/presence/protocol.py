"""Presence frames on the wire: encoding, strict decoding, digests, chunking.

Pure functions, free of I/O. Every frame is a msgpack array
``[PV, kind, node, ...]``; ``node`` is the sender's node id, ``inc`` its
incarnation (a new one per tracker: a restarted process is a new incarnation)
and ``seq`` its sequence number, incremented by every delta::

    JOIN       [PV, 1, node, inc, seq, room, session, user, meta, joined_at]
    UPDATE     [PV, 2, node, inc, seq, room, session, meta]
    LEAVE      [PV, 3, node, inc, seq, room, session, reason]
    HEARTBEAT  [PV, 4, node, inc, seq, digest, count]
    BYE        [PV, 5, node, inc, seq]
    SYNC       [PV, 6, *summary]              request; every node replies SUMMARY
    SUMMARY    [PV, 7, *summary]              summary = node, inc, seq, digest,
                                              count, host, pid, started
    PING       [PV, 8, node]                  liveness request; reply PONG
    PONG       [PV, 9, node, inc, seq]
    ROSTER_REQ [PV, 10, node, request_id]     "send me your roster"
    ROSTER     [PV, 11, *summary, request_id, index, total, [member, ...]]
               member = [room, session, user, meta, joined_at]

``meta`` is the compact JSON text of a dict. Deltas travel on
``<prefix>.presence.r.<token(room)>``, node traffic (heartbeats, bye, sync) on
``<prefix>.presence.nodes``, and requests to one node (liveness, roster) on
``<prefix>.presence.n.<node>``. The heartbeat carries a digest of the roster,
never the members, so its size does not depend on the member count. The
digest is the XOR of a 64-bit hash per member, so both sides keep it up to
date in O(1) per change.

Anything that is not exactly such a frame raises :class:`MalformedFrame`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import msgpack
from channels.layers import BaseChannelLayer

from ..subjects import token
from .settings import META_HARD_MAX

__all__ = [
    "BYE",
    "HEARTBEAT",
    "JOIN",
    "LEAVE",
    "PING",
    "PONG",
    "PV",
    "REASONS",
    "ROSTER",
    "ROSTER_REQ",
    "SUMMARY",
    "SYNC",
    "UPDATE",
    "USER_MAX",
    "Bye",
    "Delta",
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
    "decode",
    "encode_bye",
    "encode_delta",
    "encode_heartbeat",
    "encode_ping",
    "encode_pong",
    "encode_roster",
    "encode_roster_request",
    "encode_summary",
    "encode_sync",
    "member_hash",
    "roster_digest",
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
_WIRE_REASONS = frozenset(("leave", "disconnect"))

#: Longest user key, in characters.
USER_MAX = 256
HOST_MAX = 128
_NODE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_U64 = 2**64
_I63 = 2**63
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


def _node(value: object) -> str:
    if type(value) is not str or not _NODE_RE.fullmatch(value):
        raise MalformedFrame(f"bad node id {value!r:.80}")
    return value


def _uint(value: object, bound: int, what: str) -> int:
    if type(value) is not int or not 0 <= value < bound:
        raise MalformedFrame(f"bad {what} {value!r:.40}")
    return value


def _time(value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise MalformedFrame(f"bad time {value!r:.40}")
    if not math.isfinite(value):
        raise MalformedFrame(f"bad time {value!r:.40}")
    return float(value)


def _room(value: object) -> str:
    if not isinstance(value, str) or not valid_room(value):
        raise MalformedFrame(f"bad room {value!r:.120}")
    return value


def _session(value: object) -> str:
    if not isinstance(value, str) or not valid_session(value):
        raise MalformedFrame(f"bad session {value!r:.120}")
    return value


def _user(value: object) -> str | None:
    if value is None:
        return None
    if type(value) is not str or not 0 < len(value) <= USER_MAX:
        raise MalformedFrame(f"bad user key {value!r:.80}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _meta(value: object) -> str:
    if type(value) is not str or len(value) > META_HARD_MAX:
        raise MalformedFrame("bad metadata")
    if value == "{}":
        return value
    try:
        parsed = json.loads(value, parse_constant=_no_constant)
    except ValueError:
        raise MalformedFrame("metadata is not JSON") from None
    if type(parsed) is not dict:
        raise MalformedFrame("metadata is not a JSON object")
    return value


def _summary(values: Sequence[Any]) -> Summary:
    node, inc, seq, digest, count, host, pid, started = values
    if type(host) is not str or len(host) > HOST_MAX:
        raise MalformedFrame("bad host")
    return Summary(
        _node(node),
        _uint(inc, _I63, "incarnation"),
        _uint(seq, _I63, "sequence number"),
        _uint(digest, _U64, "digest"),
        _uint(count, _I63, "count"),
        host,
        _uint(pid, _I63, "pid"),
        _time(started),
    )


def _member(values: object, node: str) -> Member:
    if type(values) is not list or len(values) != 5:
        raise MalformedFrame("bad member")
    room, session, user, meta, joined_at = values
    return Member(
        _room(room), _session(session), _user(user), _meta(meta), node, _time(joined_at)
    )


# -- encoding ----------------------------------------------------------------------


def _pack(values: list[Any]) -> bytes:
    return msgpack.packb(values)  # type: ignore[no-any-return]


def encode_delta(
    kind: int,
    node: str,
    inc: int,
    seq: int,
    room: str,
    session: str,
    *,
    user: str | None = None,
    meta: str = "{}",
    joined_at: float = 0.0,
    reason: str = "leave",
) -> bytes:
    if kind == JOIN:
        return _pack([PV, JOIN, node, inc, seq, room, session, user, meta, joined_at])
    if kind == UPDATE:
        return _pack([PV, UPDATE, node, inc, seq, room, session, meta])
    if kind == LEAVE:
        return _pack([PV, LEAVE, node, inc, seq, room, session, reason])
    raise ValueError(f"not a delta kind: {kind!r}")


def encode_heartbeat(node: str, inc: int, seq: int, digest: int, size: int) -> bytes:
    return _pack([PV, HEARTBEAT, node, inc, seq, digest, size])


def encode_bye(node: str, inc: int, seq: int) -> bytes:
    return _pack([PV, BYE, node, inc, seq])


def encode_sync(summary: Summary) -> bytes:
    return _pack([PV, SYNC, *summary])


def encode_summary(summary: Summary) -> bytes:
    return _pack([PV, SUMMARY, *summary])


def encode_ping(node: str) -> bytes:
    return _pack([PV, PING, node])


def encode_pong(node: str, inc: int, seq: int) -> bytes:
    return _pack([PV, PONG, node, inc, seq])


def encode_roster_request(node: str, request_id: int) -> bytes:
    return _pack([PV, ROSTER_REQ, node, request_id])


def encode_roster(
    summary: Summary,
    request_id: int,
    members: Iterable[Member],
    max_bytes: int,
) -> list[bytes]:
    """Encode a roster as ROSTER frames, each at most ``max_bytes`` long.

    Members are packed once each and split greedily; a roster without
    members is one frame. Raises ``ValueError`` if one member alone cannot
    fit (the join that made it checked the same bound, so this is a bug).
    """
    budget = max_bytes - ROSTER_OVERHEAD
    if budget <= 0:
        raise ValueError(f"max_bytes={max_bytes} leaves no room for members")
    packer = msgpack.Packer()
    groups: list[list[bytes]] = [[]]
    size = 0
    for m in members:
        packed = packer.pack([m.room, m.session, m.user, m.meta, m.joined_at])
        if len(packed) > budget:
            raise ValueError(
                f"a member of {m.room!r} needs {len(packed)} bytes; a roster frame "
                f"holds at most {budget}"
            )
        if size + len(packed) > budget and groups[-1]:
            groups.append([])
            size = 0
        groups[-1].append(packed)
        size += len(packed)
    summary = summary._replace(host=summary.host[:HOST_MAX])
    total = len(groups)
    frames = []
    for index, group in enumerate(groups):
        head = [PV, ROSTER, *summary, request_id, index, total]
        frames.append(
            packer.pack_array_header(len(head) + 1)
            + b"".join(packer.pack(x) for x in head)
            + packer.pack_array_header(len(group))
            + b"".join(group)
        )
    return frames


# -- decoding ----------------------------------------------------------------------


def decode(data: bytes) -> Frame:
    """Decode and validate one presence frame; raise :class:`MalformedFrame`."""
    try:
        obj = msgpack.unpackb(data)
    except Exception as exc:  # msgpack raises several unrelated types
        raise MalformedFrame(f"not msgpack: {type(exc).__name__}") from None
    if type(obj) is not list or len(obj) < 3 or obj[0] != PV or type(obj[1]) is not int:
        raise MalformedFrame("not a presence frame of version 1")
    kind, rest = obj[1], obj[2:]
    try:
        decoder = _DECODERS[kind]
    except KeyError:
        raise MalformedFrame(f"unknown frame kind {kind!r}") from None
    try:
        return decoder(rest)  # type: ignore[no-any-return]
    except KeyError:
        raise MalformedFrame(f"unknown frame kind {kind!r}") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, MalformedFrame):
            raise
        raise MalformedFrame(f"bad frame of kind {kind}: {exc}") from None


def _arity(rest: list[Any], n: int) -> list[Any]:
    if len(rest) != n:
        raise MalformedFrame(f"expected {n} fields, got {len(rest)}")
    return rest


def _head(rest: list[Any]) -> tuple[str, int, int]:
    return (
        _node(rest[0]),
        _uint(rest[1], _I63, "incarnation"),
        _uint(rest[2], _I63, "sequence number"),
    )


def _seq1(head: tuple[str, int, int]) -> None:
    if head[2] < 1:
        raise MalformedFrame("a delta has a sequence number >= 1")


def _join(rest: list[Any]) -> Delta:
    _arity(rest, 8)
    head = _head(rest)
    _seq1(head)
    user, meta = _user(rest[5]), _meta(rest[6])
    return Delta(
        JOIN, *head, _room(rest[3]), _session(rest[4]), user, meta, _time(rest[7]), ""
    )


def _update(rest: list[Any]) -> Delta:
    _arity(rest, 6)
    head = _head(rest)
    _seq1(head)
    meta = _meta(rest[5])
    return Delta(UPDATE, *head, _room(rest[3]), _session(rest[4]), None, meta, 0.0, "")


def _leave(rest: list[Any]) -> Delta:
    _arity(rest, 6)
    head = _head(rest)
    _seq1(head)
    reason = rest[5]
    if reason not in _WIRE_REASONS:
        raise MalformedFrame(f"bad leave reason {reason!r:.40}")
    return Delta(
        LEAVE, *head, _room(rest[3]), _session(rest[4]), None, "{}", 0.0, reason
    )


def _heartbeat(rest: list[Any]) -> Heartbeat:
    _arity(rest, 5)
    return Heartbeat(
        *_head(rest), _uint(rest[3], _U64, "digest"), _uint(rest[4], _I63, "count")
    )


def _bye(rest: list[Any]) -> Bye:
    _arity(rest, 3)
    return Bye(*_head(rest))


def _sync(rest: list[Any]) -> SyncFrame:
    return SyncFrame(SYNC, _summary(_arity(rest, 8)))


def _summary_frame(rest: list[Any]) -> SyncFrame:
    return SyncFrame(SUMMARY, _summary(_arity(rest, 8)))


def _ping(rest: list[Any]) -> Ping:
    return Ping(_node(_arity(rest, 1)[0]))


def _pong(rest: list[Any]) -> Pong:
    return Pong(*_head(_arity(rest, 3)))


def _roster_request(rest: list[Any]) -> RosterRequest:
    _arity(rest, 2)
    return RosterRequest(_node(rest[0]), _uint(rest[1], _I63, "request id"))


def _roster(rest: list[Any]) -> RosterChunk:
    _arity(rest, 12)
    summary = _summary(rest[:8])
    request_id = _uint(rest[8], _I63, "request id")
    total = _uint(rest[10], 1 << 20, "chunk count")
    part = _uint(rest[9], total, "chunk index")
    if type(rest[11]) is not list:
        raise MalformedFrame("members are not a list")
    members = [_member(m, summary.node) for m in rest[11]]
    return RosterChunk(summary, request_id, part, total, members)


_DECODERS: dict[int, Any] = {
    JOIN: _join,
    UPDATE: _update,
    LEAVE: _leave,
    HEARTBEAT: _heartbeat,
    BYE: _bye,
    SYNC: _sync,
    SUMMARY: _summary_frame,
    PING: _ping,
    PONG: _pong,
    ROSTER_REQ: _roster_request,
    ROSTER: _roster,
}


# -- digests -----------------------------------------------------------------------


def member_hash(
    room: str, session: str, user: str | None, meta: str, joined_at: float
) -> int:
    """64-bit hash of one member as both ends see it."""
    packed = msgpack.packb([room, session, user, meta, joined_at])
    return int.from_bytes(hashlib.blake2b(packed, digest_size=8).digest(), "little")


def roster_digest(members: Iterable[Member]) -> int:
    """The digest of a set of members: the XOR of their hashes."""
    digest = 0
    for m in members:
        digest ^= member_hash(m.room, m.session, m.user, m.meta, m.joined_at)
    return digest
