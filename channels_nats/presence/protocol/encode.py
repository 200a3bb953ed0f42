"""Encoding of presence frames, roster chunking and roster digests.

A roster is split into ROSTER frames below the server's ``max_payload``. The
digest of a roster is the XOR of a 64-bit hash per member, so both ends keep
it up to date in O(1) per change, and a heartbeat carries it instead of the
members.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import msgpack

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
    ROSTER_OVERHEAD,
    ROSTER_REQ,
    SUMMARY,
    SYNC,
    UPDATE,
    Member,
    Summary,
)

__all__ = [
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
]


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
