"""Presence frames: round trips, strict decoding, digests and chunking (no NATS)."""

from __future__ import annotations

import contextlib
import json

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels_nats.presence import protocol as P

NODE = "a1b2c3d4e5f6"


def member(i: int, room: str = "room", meta: str = "{}") -> P.Member:
    return P.Member(room, f"specific.{NODE}!c{i}", f"user{i}", meta, NODE, 1000.0 + i)


def test_join_round_trip() -> None:
    frame = P.encode_delta(
        P.JOIN,
        NODE,
        7,
        3,
        "lobby",
        "specific.x!y",
        user="42",
        meta='{"s":"online"}',
        joined_at=12.5,
    )
    d = P.decode(frame)
    assert d == P.Delta(
        P.JOIN, NODE, 7, 3, "lobby", "specific.x!y", "42", '{"s":"online"}', 12.5, ""
    )


def test_update_and_leave_round_trip() -> None:
    u = P.decode(P.encode_delta(P.UPDATE, NODE, 1, 2, "r", "s!x", meta='{"a":1}'))
    assert isinstance(u, P.Delta) and u.kind == P.UPDATE and u.meta == '{"a":1}'
    lv = P.decode(P.encode_delta(P.LEAVE, NODE, 1, 3, "r", "s!x", reason="disconnect"))
    assert isinstance(lv, P.Delta) and lv.reason == "disconnect"


def test_node_frames_round_trip() -> None:
    assert P.decode(P.encode_heartbeat(NODE, 1, 2, 2**64 - 1, 5)) == P.Heartbeat(
        NODE, 1, 2, 2**64 - 1, 5
    )
    assert P.decode(P.encode_bye(NODE, 1, 9)) == P.Bye(NODE, 1, 9)
    s = P.Summary(NODE, 1, 2, 3, 4, "host", 123, 99.5)
    assert P.decode(P.encode_sync(s)) == P.SyncFrame(P.SYNC, s)
    assert P.decode(P.encode_summary(s)) == P.SyncFrame(P.SUMMARY, s)
    assert P.decode(P.encode_ping(NODE)) == P.Ping(NODE)
    assert P.decode(P.encode_pong(NODE, 1, 2)) == P.Pong(NODE, 1, 2)
    assert P.decode(P.encode_roster_request(NODE, 5)) == P.RosterRequest(NODE, 5)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb({"a": 1}),
        msgpack.packb([2, P.HEARTBEAT, NODE, 1, 2, 3, 4]),  # unknown version
        msgpack.packb([1, 99, NODE]),  # unknown kind
        msgpack.packb([1, P.HEARTBEAT, NODE, 1, 2, 3]),  # short
        msgpack.packb([1, P.HEARTBEAT, "bad node!", 1, 2, 3, 4]),
        msgpack.packb([1, P.HEARTBEAT, NODE, -1, 2, 3, 4]),
        msgpack.packb([1, P.HEARTBEAT, NODE, 1, 2, -3, 4]),
        msgpack.packb([1, P.HEARTBEAT, NODE, 1.0, 2, 3, 4]),
        msgpack.packb([1, P.JOIN, NODE, 1, 0, "r", "s!x", None, "{}", 1.0]),  # seq 0
        msgpack.packb([1, P.JOIN, NODE, 1, 1, "bad room!", "s!x", None, "{}", 1.0]),
        msgpack.packb([1, P.JOIN, NODE, 1, 1, "r", "bad session", None, "{}", 1.0]),
        msgpack.packb([1, P.JOIN, NODE, 1, 1, "r", "s!x", 5, "{}", 1.0]),
        msgpack.packb([1, P.JOIN, NODE, 1, 1, "r", "s!x", "", "{}", 1.0]),
        msgpack.packb([1, P.JOIN, NODE, 1, 1, "r", "s!x", None, "[1]", 1.0]),
        msgpack.packb([1, P.JOIN, NODE, 1, 1, "r", "s!x", None, "{nope", 1.0]),
        msgpack.packb([1, P.JOIN, NODE, 1, 1, "r", "s!x", None, '{"a":NaN}', 1.0]),
        msgpack.packb([1, P.JOIN, NODE, 1, 1, "r", "s!x", None, "{}", float("inf")]),
        msgpack.packb([1, P.JOIN, NODE, 1, 1, "r" * 100, "s!x", None, "{}", 1.0]),
        msgpack.packb([1, P.LEAVE, NODE, 1, 1, "r", "s!x", "node_down"]),
        msgpack.packb([1, P.ROSTER, NODE, 1, 1, 0, 0, "h", 1, 1.0, 1, 1, 1, []]),
        msgpack.packb([1, P.ROSTER, NODE, 1, 1, 0, 0, "h", 1, 1.0, 1, 0, 1, [[1]]]),
        msgpack.packb([1, P.SYNC, NODE, 1, 1, 0, 0, "h" * 500, 1, 1.0]),
    ],
)
def test_malformed_frames_raise_malformed_frame(data: bytes) -> None:
    with pytest.raises(P.MalformedFrame):
        P.decode(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_malformed(data: bytes) -> None:
    with contextlib.suppress(P.MalformedFrame):
        P.decode(data)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.integers(-(2**63), 2**64 - 1),
            st.text(max_size=5),
            st.binary(max_size=5),
            st.floats(),
            st.lists(st.integers(0, 9), max_size=3),
        ),
        max_size=14,
    ),
    st.sampled_from(range(13)),
)
def test_random_arrays_never_raise_anything_but_malformed(
    fields: list[object], kind: int
) -> None:
    with contextlib.suppress(P.MalformedFrame):
        P.decode(msgpack.packb([1, kind, *fields]))


def test_digest_is_order_independent_and_changes_with_meta() -> None:
    ms = [member(i) for i in range(10)]
    assert P.roster_digest(ms) == P.roster_digest(reversed(ms))
    changed = [*ms[:-1], ms[-1]._replace(meta='{"x":1}')]
    assert P.roster_digest(changed) != P.roster_digest(ms)
    assert P.roster_digest([]) == 0


def test_roster_chunks_stay_below_max_payload_and_round_trip() -> None:
    meta = json.dumps({"name": "x" * 200})
    ms = [member(i, room=f"room{i % 7}", meta=meta) for i in range(2000)]
    summary = P.Summary(NODE, 5, 2000, P.roster_digest(ms), 2000, "h" * 300, 7, 1.0)
    frames = P.encode_roster(summary, 9, ms, 16384)
    assert len(frames) > 10
    assert all(len(f) <= 16384 for f in frames)
    chunks = [P.decode(f) for f in frames]
    assert all(isinstance(c, P.RosterChunk) for c in chunks)
    got = [m for c in chunks for m in c.members]  # type: ignore[union-attr]
    assert got == ms
    first = chunks[0]
    assert isinstance(first, P.RosterChunk)
    assert first.total == len(frames) and first.request_id == 9
    assert len(first.summary.host) == P.HOST_MAX


def test_empty_roster_is_one_frame() -> None:
    summary = P.Summary(NODE, 1, 0, 0, 0, "h", 1, 1.0)
    frames = P.encode_roster(summary, 1, [], 1024)
    assert len(frames) == 1
    chunk = P.decode(frames[0])
    assert isinstance(chunk, P.RosterChunk) and chunk.members == [] and chunk.total == 1


def test_member_too_large_for_a_chunk_raises() -> None:
    summary = P.Summary(NODE, 1, 1, 0, 1, "h", 1, 1.0)
    big = member(1, meta=json.dumps({"x": "y" * 5000}))
    with pytest.raises(ValueError, match="holds at most"):
        P.encode_roster(summary, 1, [big], 4096)


def test_heartbeat_size_does_not_depend_on_the_member_count() -> None:
    small = P.encode_heartbeat(NODE, 2**57, 1, 2**63, 0)
    large = P.encode_heartbeat(NODE, 2**57, 10**6, 2**63 + 5, 10**6)
    assert len(large) - len(small) <= 8
    assert len(large) < 60


def test_subjects_keep_rooms_apart_from_node_traffic() -> None:
    s = P.Subjects("app.asgi")
    assert s.nodes == "app.asgi.presence.nodes"
    assert s.room("a..b") == "app.asgi.presence.r.a_d_db"
    assert s.rooms == "app.asgi.presence.r.>"
    assert s.node(NODE) == f"app.asgi.presence.n.{NODE}"
    assert s.is_room(s.room("x")) and not s.is_room(s.nodes)
