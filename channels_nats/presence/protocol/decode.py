"""Strict decoding of presence frames: anything else is a :class:`MalformedFrame`.

Every field is checked for type and range (node ids, 63-bit counters, 64-bit
digests, finite times, Channels names, bounded user keys and metadata that is
the JSON text of an object) before a frame is returned.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import msgpack

from ..settings import META_HARD_MAX
from .frames import (
    BYE,
    HEARTBEAT,
    HOST_MAX,
    JOIN,
    LEAVE,
    PING,
    PONG,
    PV,
    ROSTER,
    ROSTER_REQ,
    SUMMARY,
    SYNC,
    UPDATE,
    USER_MAX,
    Bye,
    Delta,
    Frame,
    Heartbeat,
    MalformedFrame,
    Member,
    Ping,
    Pong,
    RosterChunk,
    RosterRequest,
    Summary,
    SyncFrame,
    valid_room,
    valid_session,
)

__all__ = ["decode"]

_WIRE_REASONS = frozenset(("leave", "disconnect"))
_NODE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_U64 = 2**64
_I63 = 2**63


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
