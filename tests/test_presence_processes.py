"""Presence across OS processes: visibility, crash and freeze cleanup, restarts.

Each peer is a separate Python process (``tests/presence_peer.py``) with its
own layer and tracker; the tests only ever poll with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.peers import Peer, PeerError
from tests.servers import NatsCluster, NatsServer

SCRIPT = Path(__file__).with_name("presence_peer.py")


def layers(servers: list[str], prefix: str, **presence: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "channels_nats.NatsChannelLayer",
            "CONFIG": {"servers": servers, "prefix": prefix, "presence": presence},
        }
    }


class Peers:
    """Start presence peers; stop (or kill) them all at the end."""

    def __init__(self) -> None:
        self.started: list[Peer] = []

    async def start(self, servers: list[str], prefix: str, **presence: Any) -> Peer:
        peer = await Peer.start(layers(servers, prefix, **presence), script=SCRIPT)
        self.started.append(peer)
        return peer

    async def close(self) -> None:
        for peer in self.started:
            if peer.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(peer.proc.pid, signal.SIGCONT)
            await peer.stop()


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    group = Peers()
    yield group
    await group.close()


async def started(
    group: Peers, servers: list[str], prefix: str, n: int, **kw: Any
) -> list[Peer]:
    made = await asyncio.gather(*(group.start(servers, prefix, **kw) for _ in range(n)))
    # Every tracker starts (its first sync) before the test begins.
    await asyncio.gather(*(p.call("presence_node") for p in made))
    return made


def events(found: list[dict[str, Any]], signal_name: str, **match: Any) -> list[Any]:
    return [
        e
        for e in found
        if e["signal"] == signal_name and all(e[k] == v for k, v in match.items())
    ]


async def events_when(
    peer: Peer, check: Callable[[list[dict[str, Any]]], bool], what: str
) -> list[dict[str, Any]]:
    """The peer's recorded signals once ``check`` holds (signals trail state)."""
    found: list[dict[str, Any]] = []

    async def ready() -> bool:
        found[:] = await peer.call("presence_events")
        return check(found)

    await until(ready, 5, what)
    return found


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what} (last: {value!r})")
        await asyncio.sleep(0.02)


async def _visible_everywhere(made: list[Peer]) -> None:
    a, b, c = made
    await a.call(
        "presence_join",
        room="lobby",
        session="s.a!1",
        user="ann",
        meta={"status": "online"},
    )
    for other in (b, c):
        await other.call("presence_wait", room="lobby", connections=1, timeout=5)
        listed = await other.call("presence_list", room="lobby")
        assert list(listed) == ["ann"]
        assert listed["ann"]["metas"][0]["status"] == "online"

    await a.call(
        "presence_update", room="lobby", session="s.a!1", meta={"status": "away"}
    )

    async def updated_everywhere() -> bool:
        for other in (b, c):
            listed = await other.call("presence_list", room="lobby")
            if listed["ann"]["metas"][0].get("status") != "away":
                return False
        return True

    await until(updated_everywhere, 5, "the update reached b and c")
    await b.call("presence_join", room="lobby", session="s.b!1", user="bob")
    await c.call("presence_wait", room="lobby", connections=2, timeout=5)
    await a.call("presence_leave", room="lobby", session="s.a!1")
    for other in (b, c):
        await other.call("presence_wait", room="lobby", connections=1, timeout=5)

    for peer in (a, b, c):
        found = await events_when(
            peer,
            lambda f: (
                bool(events(f, "member_joined", session="s.b!1"))
                and bool(events(f, "user_offline", user="ann"))
            ),
            "the signals of ann and bob",
        )
        assert len(events(found, "member_joined", session="s.a!1")) == 1
        assert len(events(found, "member_updated", session="s.a!1")) == 1
        [left] = events(found, "member_left", session="s.a!1")
        assert left["reason"] == "leave"
        assert len(events(found, "user_online", user="ann")) == 1
        assert len(events(found, "user_offline", user="ann")) == 1
        assert len(events(found, "member_joined", session="s.b!1")) == 1


async def test_join_update_leave_reach_two_other_processes(
    nats_server: NatsServer, prefix: str, peers: Peers
) -> None:
    await _visible_everywhere(await started(peers, [nats_server.url], prefix, 3))


@pytest.mark.cluster
async def test_join_update_leave_on_a_three_node_cluster(
    nats_cluster: NatsCluster, prefix: str, peers: Peers
) -> None:
    # One peer per cluster node: every frame crosses a route.
    made = [await peers.start([url], prefix) for url in nats_cluster.urls]
    await asyncio.gather(*(p.call("presence_node") for p in made))
    await _visible_everywhere(made)


async def _kill_and_watch(a: Peer, b: Peer, victim: Peer) -> None:
    await victim.call("presence_join", room="r1", session="s.v!1", user="vic")
    await victim.call("presence_join", room="r2", session="s.v!1", user="vic")
    await victim.call("presence_join", room="r1", session="s.v!2", user="val")
    await a.call("presence_join", room="r1", session="s.a!1", user="val")
    for peer in (a, b):
        await peer.call("presence_wait", room="r1", connections=3, timeout=5)
        await peer.call("presence_wait", room="r2", connections=1, timeout=5)
        await peer.call("presence_events", clear=True)
    killed = time.time()
    victim.proc.kill()
    for peer in (a, b):
        done = await peer.call("presence_wait", room="r1", connections=1, timeout=5)
        await peer.call("presence_wait", room="r2", connections=0, timeout=5)
        assert done - killed < 3.0, f"cleanup took {done - killed:.2f}s"
        found = await events_when(
            peer,
            lambda f: (
                len(events(f, "member_left")) >= 3 and bool(events(f, "user_offline"))
            ),
            "three member_left signals",
        )
        left = events(found, "member_left")
        assert {e["reason"] for e in left} == {"node_down"}
        assert len(left) == 3
        assert [e["user"] for e in events(found, "user_offline")] == ["vic"]
        assert events(found, "user_offline", user="val") == []  # still on a


async def test_sigkill_removes_members_within_3s(
    nats_server: NatsServer, prefix: str, peers: Peers
) -> None:
    a, b, victim = await started(peers, [nats_server.url], prefix, 3)
    await _kill_and_watch(a, b, victim)


@pytest.mark.cluster
async def test_sigkill_on_a_cluster_removes_members_within_3s(
    nats_cluster: NatsCluster, prefix: str, peers: Peers
) -> None:
    made = [await peers.start([url], prefix) for url in nats_cluster.urls]
    await asyncio.gather(*(p.call("presence_node") for p in made))
    await _kill_and_watch(*made)


async def test_sigstop_expires_after_ttl_and_sigcont_brings_members_back(
    nats_server: NatsServer, prefix: str, peers: Peers
) -> None:
    ttl = 3.0
    a, frozen = await started(peers, [nats_server.url], prefix, 2, ttl=ttl)
    await frozen.call("presence_join", room="r", session="s.f!1", user="fay")
    await a.call("presence_wait", room="r", connections=1, timeout=5)
    await a.call("presence_events", clear=True)
    stopped = time.time()
    os.kill(frozen.proc.pid, signal.SIGSTOP)
    gone = await a.call("presence_wait", room="r", connections=0, timeout=ttl + 5)
    assert gone - stopped <= ttl + 1.0, f"expired after {gone - stopped:.2f}s"
    assert gone - stopped >= ttl - 1.0, "a frozen node must not go before its TTL"
    found = await events_when(a, lambda f: bool(events(f, "member_left")), "left")
    [left] = events(found, "member_left")
    assert left["reason"] == "expired"
    os.kill(frozen.proc.pid, signal.SIGCONT)
    back = await a.call("presence_wait", room="r", connections=1, timeout=5)
    assert back - gone < 5
    # The resumed process still sees itself and a.
    assert len(await frozen.call("presence_nodes")) == 2


async def test_late_process_converges_on_its_first_sync_and_graceful_stop_is_immediate(
    nats_server: NatsServer, prefix: str, peers: Peers
) -> None:
    a, b = await started(peers, [nats_server.url], prefix, 2)
    await a.call("presence_join_many", room="big", prefix="s.a", n=200)
    await b.call("presence_join", room="big", session="s.b!1", user="bob")
    await a.call("presence_wait", room="big", connections=201, timeout=5)
    late = await peers.start([nats_server.url], prefix)
    await late.call("presence_node")  # starts the tracker, with its first sync
    # Everything is there once the first sync is done (no heartbeat waited for).
    connections, _users = await late.call("presence_count", room="big")
    assert connections == 201
    await late.call("presence_events", clear=True)
    stopping = time.time()
    await b.stop()
    gone = await late.call("presence_wait", room="big", connections=200, timeout=2)
    assert gone - stopping < 1.0
    found = await events_when(late, lambda f: bool(events(f, "member_left")), "left")
    [left] = events(found, "member_left")
    assert left["reason"] == "node_down"


async def test_server_restart_every_tracker_resyncs_within_2s(
    nats_server_fresh: NatsServer, prefix: str, peers: Peers
) -> None:
    servers = [nats_server_fresh.url]
    a, b = await started(peers, servers, prefix, 2)
    await a.call("presence_join", room="r", session="s.a!1", user="ann")
    await b.call("presence_join", room="r", session="s.b!1", user="bob")
    for peer in (a, b):
        await peer.call("presence_wait", room="r", connections=2, timeout=5)
    nats_server_fresh.stop()
    # A change while the server is down: published after the reconnect.
    joined = asyncio.ensure_future(
        a.call("presence_join", room="r", session="s.a!2", user="amy")
    )
    nats_server_fresh.start()
    restarted = time.time()
    await joined
    for peer in (a, b):
        done = await peer.call("presence_wait", room="r", connections=3, timeout=5)
        assert done - restarted < 2.0, f"complete after {done - restarted:.2f}s"
    for peer in (a, b):
        found = await peer.call("presence_events")
        # Nobody was dropped on the way, and every tracker resynced.
        assert events(found, "member_left") == []

        async def resynced(peer: Peer = peer) -> bool:
            return bool((await peer.call("stats"))["presence_syncs"] >= 2)

        await until(resynced, 2, "a sync after the reconnect")


async def test_a_dead_peer_reports_errors_not_hangs(
    nats_server: NatsServer, prefix: str, peers: Peers
) -> None:
    [a] = await started(peers, [nats_server.url], prefix, 1)
    with pytest.raises(PeerError, match="TypeError"):
        await a.call("presence_join", room="bad room", session="s.a!1")


async def test_ten_thousand_members_reach_a_fresh_process_below_max_payload(
    tmp_path: Path, prefix: str, peers: Peers
) -> None:
    conf = tmp_path / "small.conf"
    conf.write_text("max_payload: 65536\n")
    with NatsServer(name="small", jetstream=False, extra_args=["-c", str(conf)]) as srv:
        [owner] = await started(peers, [srv.url], prefix, 1)
        await owner.call(
            "presence_join_many", room="big", prefix="s.o", n=10_000, call_timeout=60
        )
        fresh = await peers.start([srv.url], prefix)
        timing = await fresh.call(
            "presence_timed_sync", room="big", connections=10_000, call_timeout=60
        )
        # Its duration is measured by the benchmark (bench presence), not here.
        assert timing["ok"]
        # Nothing went over max_payload: the server would have closed a connection.
        for peer in (owner, fresh):
            stats = await peer.call("stats")
            assert stats.get("presence_malformed", 0) == 0
            assert stats["disconnects"] == 0
