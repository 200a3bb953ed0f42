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

The frame types, constants and subjects are in :mod:`.frames`; encoding,
roster chunking and digests in :mod:`.encode`; strict decoding in
:mod:`.decode`. The tracker and the roster use them as one namespace,
``from channels_nats.presence import protocol as P``.
"""

from __future__ import annotations

from .decode import (
    decode,
)
from .encode import (
    encode_bye,
    encode_delta,
    encode_heartbeat,
    encode_ping,
    encode_pong,
    encode_roster,
    encode_roster_request,
    encode_summary,
    encode_sync,
    member_hash,
    roster_digest,
)
from .frames import (
    BYE,
    HEARTBEAT,
    HOST_MAX,
    JOIN,
    LEAVE,
    PING,
    PONG,
    PV,
    REASONS,
    ROSTER,
    ROSTER_OVERHEAD,
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
    Subjects,
    Summary,
    SyncFrame,
    valid_room,
    valid_session,
)

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
