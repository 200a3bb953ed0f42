"""Trackers of several layers in one test process (each layer is a node).

Real nats-server; every wait polls local state with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgpack
import nats
import pytest
from asgiref.sync import async_to_sync

from channels_nats import NatsChannelLayer
from channels_nats.presence import (
    NotJoined,
    PresenceTracker,
    RoomFull,
    member_joined,
    member_left,
    member_updated,
    user_offline,
    user_online,
)
from channels_nats.presence import protocol as P
from channels_nats.presence.api import tracker_for
from channels_nats.presence.settings import PresenceSettings, parse_presence
from tests.servers import NatsServer, await_until
from tests.test_malformed import _hpub, _raw_protocol

Make = Callable[..., PresenceTracker]


@pytest.fixture
async def trackers(nats_server: NatsServer, prefix: str) -> AsyncIterator[Make]:
    """Make trackers, each on its own layer (a node of its own)."""
    layers: list[NatsChannelLayer] = []

    def make(server: NatsServer | None = None, **presence: Any) -> PresenceTracker:
        layer = NatsChannelLayer(servers=[(server or nats_server).url], prefix=prefix)
        layers.append(layer)
        return tracker_for(layer, parse_presence(presence))

    yield make
    for layer in layers:
        await layer.close()


async def connections(tracker: PresenceTracker, room: str, n: int, timeout: float = 5):
    async def reached() -> bool:
        return (await tracker.count(room)).connections == n

    await await_until(reached, timeout, message=f"{room} has {n} connections")


async def test_join_is_listed_in_the_other_node_in_phoenix_shape(trackers: Make):
    a, b = trackers(), trackers()
    await a.join("lobby", "specific.a!1", user=7, meta={"status": "online"})
    await a.join("lobby", "specific.a!2", user=7)
    await a.join("lobby", "specific.a!3")
    await connections(b, "lobby", 3)
    listed = await b.list("lobby")
    assert set(listed) == {"7", "specific.a!3"}
    first = listed["7"]["metas"][0]
    assert first["status"] == "online" and first["session"] == "specific.a!1"
    assert first["node"] == a.node and isinstance(first["joined_at"], float)
    assert await b.count("lobby") == (3, 2)
    assert await b.rooms() == {"lobby": 3}
    assert await a.list("lobby") == listed


async def test_update_and_leave_reach_the_other_node(trackers: Make) -> None:
    a, b = trackers(), trackers()
    await a.join("r", "specific.a!1", user="u")
    await connections(b, "r", 1)
    await a.update("r", "specific.a!1", {"typing": True})

    async def updated() -> bool:
        return (await b.list("r"))["u"]["metas"][0].get("typing") is True

    await await_until(updated, 5)
    await a.leave("r", "specific.a!1")
    await connections(b, "r", 0)
    assert await b.rooms() == {}


async def test_leave_all_leaves_every_room_of_a_session(trackers: Make) -> None:
    a, b = trackers(), trackers()
    for room in ("r1", "r2", "r3"):
        await a.join(room, "specific.a!1", user="u")
    await a.join("r1", "specific.a!2", user="v")
    await connections(b, "r3", 1)
    await a.leave_all("specific.a!1")
    await connections(b, "r3", 0)
    assert await b.rooms() == {"r1": 1}


async def test_signals_fire_once_per_change_with_reasons(trackers: Make) -> None:
    a, b = trackers(), trackers()
    seen: list[tuple[str, Any, str]] = []

    def receiver(name: str) -> Any:
        def on(sender: Any, tracker: PresenceTracker, **kw: Any) -> None:
            if tracker is b:
                seen.append((name, kw.get("user"), kw.get("reason", "")))

        return on

    async def async_joined(sender: Any, tracker: PresenceTracker, **kw: Any) -> None:
        if tracker is b:
            seen.append(("async_joined", kw["user"], ""))

    receivers = {
        member_joined: receiver("joined"),
        member_left: receiver("left"),
        member_updated: receiver("updated"),
        user_online: receiver("online"),
        user_offline: receiver("offline"),
    }
    for signal, func in receivers.items():
        signal.connect(func)
    member_joined.connect(async_joined)
    try:
        await b.sync()
        await a.join("r", "specific.a!1", user="u")
        await a.update("r", "specific.a!1", {"x": 1})
        await a.leave("r", "specific.a!1")

        def complete() -> bool:
            return ("offline", "u", "leave") in seen

        await await_until(complete, 5, message=f"all signals, got {seen}")
        assert sorted(seen) == sorted(
            [
                ("joined", "u", ""),
                ("async_joined", "u", ""),
                ("online", "u", ""),
                ("updated", "u", ""),
                ("left", "u", "leave"),
                ("offline", "u", "leave"),
            ]
        )
    finally:
        for signal, func in receivers.items():
            signal.disconnect(func)
        member_joined.disconnect(async_joined)


async def test_a_node_started_later_sees_everything_after_its_first_call(
    trackers: Make,
) -> None:
    a = trackers()
    for i in range(50):
        await a.join(f"r{i % 5}", f"specific.a!{i}", user=f"u{i}")
    b = trackers()
    assert await b.rooms() == {f"r{i}": 10 for i in range(5)}


async def test_close_says_bye_and_the_others_drop_its_members_at_once(
    trackers: Make,
) -> None:
    a, b = trackers(), trackers()
    await a.join("r", "specific.a!1", user="u")
    await connections(b, "r", 1)
    left: list[str] = []

    def on_left(sender: Any, tracker: PresenceTracker, reason: str, **kw: Any) -> None:
        if tracker is b:
            left.append(reason)

    member_left.connect(on_left)
    try:
        t0 = time.perf_counter()
        await a.layer.close()
        await connections(b, "r", 0, timeout=1)
        assert time.perf_counter() - t0 < 0.5
        await await_until(lambda: left, 2)
        assert left == ["node_down"]
    finally:
        member_left.disconnect(on_left)
    # The closed layer starts afresh with a new tracker (a new node).
    fresh = tracker_for(a.layer)
    assert fresh is not a and fresh.node != a.node
    await fresh.join("r", "specific.a!1", user="u")
    await connections(b, "r", 1)


async def test_a_dropped_delta_is_repaired_through_the_heartbeat(
    trackers: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = trackers(), trackers()
    await a.join("r", "specific.a!0", user="u0")
    await connections(b, "r", 1)
    publish = a.hub.publish
    dropped: list[str] = []

    def lossy(subject: str, payload: bytes, reply: str = "") -> None:
        if a.subjects.is_room(subject) and not dropped:
            dropped.append(subject)  # this frame never reaches the server
            return
        publish(subject, payload, reply)

    monkeypatch.setattr(a.hub, "publish", lossy)
    await a.join("r", "specific.a!1", user="u1")
    assert dropped
    # Nothing else happens: only the heartbeat (seq ahead) reveals the gap.
    await connections(b, "r", 2, timeout=4)
    assert b.hub.stats.snapshot()["presence_resyncs"] >= 1


async def test_a_dropped_delta_is_repaired_when_the_next_one_shows_a_gap(
    trackers: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = trackers(heartbeat_interval=5.0, ttl=20), trackers()
    await a.join("r", "specific.a!0", user="u0")
    await connections(b, "r", 1)
    publish = a.hub.publish
    dropped: list[str] = []

    def lossy(subject: str, payload: bytes, reply: str = "") -> None:
        if a.subjects.is_room(subject) and not dropped:
            dropped.append(subject)
            return
        publish(subject, payload, reply)

    monkeypatch.setattr(a.hub, "publish", lossy)
    await a.join("r", "specific.a!1", user="u1")
    await a.join("r", "specific.a!2", user="u2")
    # Heartbeats are 5 s apart: the gap in the sequence triggers the resync.
    await connections(b, "r", 3, timeout=3)


async def test_a_digest_mismatch_is_repaired(trackers: Make) -> None:
    a, b = trackers(), trackers()
    await a.join("r", "specific.a!1", user="u", meta={"v": 1})
    await connections(b, "r", 1)
    # Corrupt b's copy without changing its sequence number.
    with b._lock:
        nv = b._roster.nodes[a.node]
        key = ("r", "specific.a!1")
        wrong = nv.members[key]._replace(meta='{"v":2}')
        b._roster._replace(nv, nv.members[key], wrong, [])

    async def repaired() -> bool:
        return (await b.list("r"))["u"]["metas"][0]["v"] == 1

    await await_until(repaired, 4)


async def test_limits_and_bad_input_raise_before_publishing(trackers: Make) -> None:
    a = trackers(meta_max_bytes=64, room_max_members=2)
    with pytest.raises(TypeError, match="Room name"):
        await a.join("bad room", "specific.a!1")
    with pytest.raises(TypeError, match="Room name"):
        await a.join("x" * 100, "specific.a!1")
    with pytest.raises(TypeError, match="channel name"):
        await a.join("r", "not a channel")
    with pytest.raises(ValueError, match="meta_max_bytes=64"):
        await a.join("r", "specific.a!1", meta={"bio": "x" * 100})
    with pytest.raises(ValueError, match="JSON-serializable"):
        await a.join("r", "specific.a!1", meta={"when": object()})
    with pytest.raises(ValueError, match="JSON object"):
        await a.join("r", "specific.a!1", meta=["a"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reserved"):
        await a.join("r", "specific.a!1", meta={"session": "x"})
    with pytest.raises(ValueError, match="JSON-serializable"):
        await a.join("r", "specific.a!1", meta={"x": float("nan")})
    with pytest.raises(NotJoined):
        await a.update("r", "specific.a!1", {})
    assert a.layer.stats().get("presence_syncs", 0) == 1  # started, nothing sent
    assert await a.rooms() == {}
    await a.join("r", "specific.a!1")
    await a.join("r", "specific.a!2")
    with pytest.raises(RoomFull, match="room_max_members"):
        await a.join("r", "specific.a!3")
    await a.join("r", "specific.a!2", meta={"again": True})  # a re-join is fine
    with pytest.raises(ValueError, match="leave first"):
        await a.join("r", "specific.a!2", user="someone-else")


async def test_malformed_frames_are_counted_and_never_create_members(
    trackers: Make, nats_server: NatsServer, prefix: str
) -> None:
    a = trackers()
    await a.sync()
    s = P.Subjects(prefix)
    forged_join = P.encode_delta(
        P.JOIN, "ffffffffffff", 1, 1, "lobby", "specific.x!1", meta="{}"
    )
    bad = [
        (s.nodes, b"\x00garbage"),
        (s.nodes, msgpack.packb([1, P.HEARTBEAT, "x", 1])),
        (s.room("lobby"), msgpack.packb([1, P.JOIN, "n1", 1, 1, "lobby"])),
        (s.room("elsewhere"), forged_join),  # a room's delta on another subject
        (s.nodes, forged_join),
        (s.node(a.node), P.encode_heartbeat("ffffffffffff", 1, 1, 0, 0)),
        (s.room("lobby"), P.encode_ping("ffffffffffff")),
    ]
    nc = await nats.connect(nats_server.url)
    try:
        for subject, payload in bad:
            await nc.publish(subject, payload)
        await nc.flush()
    finally:
        await nc.close()
    # Hostile header blocks on a presence subject (these used to kill nats-py).
    await _raw_protocol(
        nats_server.port,
        _hpub(s.room("lobby"), b"NATS/1.0", b"x") + _hpub(s.nodes, b"\r\n\r\n", b"x"),
    )

    def counted() -> bool:
        return a.layer.stats().get("presence_malformed", 0) >= len(bad)

    await await_until(counted, 5)
    assert await a.rooms() == {}
    # The tracker still works.
    b = trackers()
    await b.join("lobby", "specific.b!1")
    await connections(a, "lobby", 1)


async def test_diffs_are_coalesced_per_room(trackers: Make) -> None:
    a, b = trackers(diff_window=0.2), trackers()
    await a.sync()
    diffs: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    remove = a.watch(lambda room, joins, leaves: diffs.append((room, joins, leaves)))
    try:
        for i in range(100):
            await b.join("r", f"specific.b!{i}", user=f"u{i}")
        await b.join("r", "specific.b!x", user="ux")
        await b.leave("r", "specific.b!x")  # within the window: no trace
        await connections(a, "r", 100)
        await await_until(lambda: sum(len(j) for _, j, _ in diffs) == 100, 5)
        assert len(diffs) <= 3
        assert all("ux" not in joins for _, joins, _ in diffs)
        diffs.clear()
        await b.layer.close()  # 100 leaves in one go
        await await_until(lambda: sum(len(lv) for _, _, lv in diffs) == 100, 5)
        assert len(diffs) == 1
    finally:
        remove()


async def test_sync_callers_use_async_to_sync(trackers: Make) -> None:
    a, b = trackers(), trackers()
    await a.join("r", "specific.a!1", user="u")

    def from_a_thread() -> dict[str, Any]:
        async_to_sync(b.sync)()
        return async_to_sync(b.list)("r")

    listed = await asyncio.get_running_loop().run_in_executor(None, from_a_thread)
    assert list(listed) == ["u"]


@pytest.fixture
def small_payload_server(tmp_path: Path) -> Any:
    conf = tmp_path / "small.conf"
    conf.write_text("max_payload: 65536\n")
    with NatsServer(name="small", jetstream=False, extra_args=["-c", str(conf)]) as srv:
        yield srv


async def test_ten_thousand_members_sync_in_chunks_below_max_payload(
    trackers: Make, small_payload_server: NatsServer, prefix: str
) -> None:
    frames: list[tuple[str, int]] = []
    nc = await nats.connect(small_payload_server.url)

    async def seen(msg: Any) -> None:
        frames.append((msg.subject, len(msg.data)))

    await nc.subscribe(f"{prefix}.presence.>", cb=seen)
    await nc.flush()
    try:
        a = trackers(small_payload_server)
        await a.sync()
        assert a.hub.max_payload == 65536
        meta = {"name": "somebody with a long display name", "status": "online"}
        for i in range(10_000):
            await a.join(f"room{i % 10}", f"specific.a!{i}", user=f"user{i}", meta=meta)
        b = trackers(small_payload_server)
        # How long this takes is the benchmark's business (bench presence).
        await b.sync()
        assert sum((await b.rooms()).values()) == 10_000
        await b.sync()  # an up-to-date node fetches nothing
        # Heartbeats of a with 10k members are as large as with none.
        beats = [n for subject, n in frames if subject.endswith(".presence.nodes")]
        await await_until(
            lambda: len([f for f in frames if f[0].endswith(".nodes")]) > len(beats),
            3,
        )
        node_frames = [n for s, n in frames if s.endswith(".presence.nodes")]
        assert max(node_frames) < 100
        chunks = [n for s, n in frames if s.endswith(f".n.{b.node}")]
        assert len(chunks) >= 10  # 10k members do not fit in one 64 KiB frame
        assert max(n for _, n in frames) <= 65536
    finally:
        await nc.close()


async def test_heartbeat_bytes_do_not_depend_on_the_member_count(
    trackers: Make, nats_server: NatsServer, prefix: str
) -> None:
    sizes: list[int] = []
    a = trackers(heartbeat_interval=0.2, ttl=2)
    await a.sync()
    nc = await nats.connect(nats_server.url)

    async def beat(msg: Any) -> None:
        frame = P.decode(msg.data)
        if isinstance(frame, P.Heartbeat) and frame.node == a.node:
            sizes.append(len(msg.data))

    await nc.subscribe(f"{prefix}.presence.nodes", cb=beat)
    await nc.flush()
    try:
        await a.join("r", "specific.a!first", user="first")
        n = len(sizes)
        await await_until(lambda: len(sizes) >= n + 2, 3)
        one = max(sizes[n:])
        for i in range(3000):
            await a.join("r", f"specific.a!{i}", user=f"u{i}")
        n = len(sizes)
        await await_until(lambda: len(sizes) >= n + 2, 3)
        assert max(sizes[n:]) - one <= 8
        assert max(sizes) <= 48
    finally:
        await nc.close()


def test_settings_default() -> None:
    assert PresenceSettings().ttl == 10.0


async def test_snapshot_filters_members(trackers: Make) -> None:
    a, b = trackers(), trackers()
    await a.join("alpha", "specific.a!1", user="ann")
    await a.join("beta", "specific.a!2", user="bob")
    await connections(b, "beta", 1)
    snap = await b.snapshot(user="AN")
    assert [m["user"] for m in snap["members"]] == ["ann"]
    assert {n["id"] for n in snap["nodes"]} == {a.node, b.node}
    assert {r["room"] for r in snap["rooms"]} == {"alpha", "beta"}
    snap = await b.snapshot(room="bet", node=a.node, limit=0)
    assert snap["members"] == [] and snap["members_total"] == 1 and snap["truncated"]
    assert json.dumps(snap)  # JSON-ready


# -- the failure modes Phoenix users reported ----------------------------------


async def test_a_leave_lost_in_a_partition_leaves_no_ghost(
    trackers: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = trackers(), trackers()
    await a.join("r", "specific.a!1", user="u1")
    await a.join("r", "specific.a!2", user="u2")
    await connections(b, "r", 2)
    publish = a.hub.publish

    def cut_off(subject: str, payload: bytes, reply: str = "") -> None:
        if not a.subjects.is_room(subject):
            publish(subject, payload, reply)  # only the room traffic is lost

    monkeypatch.setattr(a.hub, "publish", cut_off)
    await a.leave("r", "specific.a!1")
    await a.leave_all("specific.a!2")
    monkeypatch.setattr(a.hub, "publish", publish)  # healed
    await connections(b, "r", 0, timeout=4)
    assert (await b.count("r")).users == 0


async def test_a_ghost_of_an_old_incarnation_goes_at_once(
    trackers: Make, nats_server: NatsServer
) -> None:
    a, b = trackers(), trackers()
    await a.join("r", "specific.a!1", user="u1")
    await connections(b, "r", 1)
    # The same node id comes back as a newer incarnation (a restarted tracker).
    nc = await nats.connect(nats_server.url)
    try:
        await nc.publish(
            a.subjects.nodes, P.encode_heartbeat(a.node, a.incarnation + 1, 0, 0, 0)
        )
        await nc.flush()
    finally:
        await nc.close()
    await connections(b, "r", 0, timeout=2)
    # Frames of the old incarnation cannot bring the member back.
    await a.join("r", "specific.a!2", user="u2")
    await a.update("r", "specific.a!1", {"x": 1})
    await b.sync()  # a answers after its frames above: b has seen them
    assert (await b.count("r")).connections == 0


async def test_many_updates_never_leak_members(trackers: Make) -> None:
    a, b, c = trackers(), trackers(), trackers()
    for i in range(20):
        await a.join("r", f"specific.a!{i}", user="same-user")
    for round_ in range(10):
        for i in range(20):
            await a.update("r", f"specific.a!{i}", {"round": round_})
    await connections(b, "r", 20)

    async def last_round_everywhere() -> bool:
        for t in (b, c):
            metas = (await t.list("r"))["same-user"]["metas"]
            if len(metas) != 20 or {m["round"] for m in metas} != {9}:
                return False
        return True

    await await_until(last_round_everywhere, 5)
    for t in (b, c):
        assert await t.count("r") == (20, 1)
        with t._lock:
            nv = t._roster.nodes[a.node]
            assert nv.digest == a._roster.local.digest
