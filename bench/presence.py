"""The ``presence`` scenario: convergence, crash cleanup, sync, traffic, memory.

Presence peers are separate OS processes (``tests/presence_peer.py``, the
same ones the tests use), so they can be killed and frozen for real. It
measures, on the harness's nats-server with the default presence settings
(heartbeat 1 s, ttl 10 s):

* join-to-visible latency in two other processes: when a diff listener there
  (``diff_window`` 0, so it runs right after the change lands) sees the
  member, minus its ``joined_at`` (one machine, one clock); and the same for
  a sync ``member_joined`` receiver (a thread hop later);
* cleanup after SIGKILL and after SIGSTOP of a process holding members (time
  from the signal until an observer's roster no longer has them);
* the first ``sync()`` of a fresh process while another holds 10,000 members
  (connect, the sync window, fetching and applying the chunked roster), and a
  targeted roster fetch of those 10,000 alone;
* heartbeat bytes per second of one node, with 0 and with 10,000 members
  (raw nats-py subscriber; payload bytes plus the ``MSG`` protocol line);
* memory of the roster per member, for the owning node and for an observer
  (tracemalloc over the pure roster engine, 10,000 members).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

from bench.agent import percentiles

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "presence_peer.py"


def _layers(url: str, prefix: str, **presence: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "channels_nats.NatsChannelLayer",
            "CONFIG": {"servers": [url], "prefix": prefix, "presence": presence},
        }
    }


async def _peer(url: str, prefix: str, **presence: Any) -> Any:
    from tests.peers import Peer

    peer = await Peer.start(_layers(url, prefix, **presence), script=SCRIPT)
    peer.node = await peer.call("presence_node")
    return peer


async def _stop(*peers: Any) -> None:
    for peer in peers:
        if peer.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(peer.proc.pid, signal.SIGCONT)
        await peer.stop()


async def _heartbeat_rate(url: str, prefix: str, node: str, seconds: float) -> float:
    """Bytes per second on the wire of ``node``'s heartbeats."""
    import nats

    from channels_nats.presence import protocol as P

    nc = await nats.connect(url)
    total = 0

    async def count(msg: Any) -> None:
        nonlocal total
        try:
            frame = P.decode(msg.data)
        except P.MalformedFrame:
            return
        if isinstance(frame, P.Heartbeat) and frame.node == node:
            # MSG <subject> <sid> <size>\r\n<payload>\r\n
            line = f"MSG {msg.subject} 1 {len(msg.data)}\r\n"
            total += len(line) + len(msg.data) + 2

    await nc.subscribe(f"{prefix}.presence.nodes", cb=count)
    await nc.flush()
    await asyncio.sleep(seconds)
    await nc.close()
    return total / seconds


async def _cleanup(observer: Any, victim: Any, sig: int, room: str, n: int) -> float:
    await victim.call("presence_join_many", room=room, prefix=f"s.{room}", n=n)
    await observer.call("presence_wait", room=room, connections=n, timeout=10)
    sent = time.time()
    os.kill(victim.proc.pid, sig)
    done = await observer.call(
        "presence_wait", room=room, connections=0, timeout=30, call_timeout=40
    )
    return float(done - sent)


def memory_per_member(n: int = 10_000) -> dict[str, float]:
    """Bytes of roster per member: as the owner, and as an observer."""
    from channels_nats.presence import protocol as P
    from channels_nats.presence.roster import Roster
    from channels_nats.presence.settings import PresenceSettings

    owner_id, other = secrets.token_hex(6), secrets.token_hex(6)
    meta = json.dumps({"status": "online"}, separators=(",", ":"))

    def session(i: int) -> str:
        return f"specific.{owner_id}!{secrets.token_urlsafe(9)}{i}"

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        owner = Roster(owner_id, 1, PresenceSettings())
        now = time.time()
        for i in range(n):
            owner.local_join(f"room{i % 100}", session(i), str(100000 + i), meta, now)
        as_owner = (tracemalloc.get_traced_memory()[0] - before) / n
        before = tracemalloc.get_traced_memory()[0]
        observer = Roster(other, 1, PresenceSettings())
        for seq, m in enumerate(list(owner.local.members.values()), 1):
            d = P.Delta(
                P.JOIN,
                owner_id,
                1,
                seq,
                m.room,
                # Strings of its own, as decoded from the wire.
                m.session[:-1] + m.session[-1],
                m.user,
                meta[:-1] + "}",
                m.joined_at,
                "",
            )
            observer.apply_delta(d, 0.0)
        as_observer = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    return {"owner_bytes": as_owner, "observer_bytes": as_observer}


async def run(servers: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    url = servers["nats"]
    prefix = "bp" + uuid.uuid4().hex[:10]
    ttl = p.get("ttl", 10.0)
    out: dict[str, Any] = {"ttl": ttl}
    joiner = await _peer(url, prefix)
    # Observers publish diffs at once, so a listener sees each join as it lands.
    b, c = await asyncio.gather(*(_peer(url, prefix, diff_window=0) for _ in "bc"))
    try:
        # Heartbeat traffic of an empty node.
        out["heartbeat_bps_empty"] = await _heartbeat_rate(
            url, prefix, joiner.node, p["hb_seconds"]
        )
        # Join-to-visible latency, one join after the other.
        for peer in (b, c):
            await peer.call("presence_watch")
            await peer.call("presence_events", clear=True)
        for i in range(p["joins"]):
            await joiner.call(
                "presence_join", room="lat", session=f"s.j!{i}", user=f"u{i}"
            )
        visible: list[float] = []
        signalled: list[float] = []
        for peer in (b, c):
            await peer.call(
                "presence_wait", room="lat", connections=p["joins"], timeout=10
            )
            visible += [
                w["t"] - w["joined_at"]
                for w in await peer.call("presence_watched")
                if w["room"] == "lat"
            ]
            events = await peer.call("presence_events", clear=True)
            signalled += [
                e["t"] - e["joined_at"]
                for e in events
                if e["signal"] == "member_joined" and e["room"] == "lat"
            ]
        lat = percentiles(visible)
        out["join_p50_ms"] = lat["p50_us"] / 1000
        out["join_p99_ms"] = lat["p99_us"] / 1000
        sig = percentiles(signalled)
        out["signal_p50_ms"] = sig["p50_us"] / 1000
        out["signal_p99_ms"] = sig["p99_us"] / 1000

        # 10,000 members: join, heartbeat traffic, sync of a fresh process.
        n = p["members"]
        out["join_many_per_s"] = n / await joiner.call(
            "presence_join_many", room="big", prefix="s.big", n=n, call_timeout=120
        )
        await b.call("presence_wait", room="big", connections=n, timeout=30)
        out["heartbeat_bps_10k"] = await _heartbeat_rate(
            url, prefix, joiner.node, p["hb_seconds"]
        )
        late = await _peer_timed(url, prefix, n)
        out["connect_s"] = late["connect"]
        out["sync_10k_s"] = late["sync"]
        out["fetch_10k_s"] = late["fetch"]

        # Crash cleanup.
        victim = await _peer(url, prefix)
        out["sigkill_cleanup_s"] = await _cleanup(b, victim, signal.SIGKILL, "k", 100)
        await _stop(victim)
        frozen = await _peer(url, prefix, ttl=ttl)
        out["sigstop_cleanup_s"] = await _cleanup(b, frozen, signal.SIGSTOP, "f", 100)
        out["sigstop_over_ttl_s"] = out["sigstop_cleanup_s"] - ttl
        await _stop(frozen)
    finally:
        await _stop(joiner, b, c)
    # msgpack integers grow from 1 to 9 bytes (digest) and 1 to 3 bytes (seq,
    # count) between 0 and 10k members; nothing else depends on the count.
    out["heartbeat_growth_bps"] = out["heartbeat_bps_10k"] - out["heartbeat_bps_empty"]
    mem = memory_per_member(p["members"])
    out["memory_owner_bytes_per_member"] = mem["owner_bytes"]
    out["memory_observer_bytes_per_member"] = mem["observer_bytes"]
    out["memory_observer_mib_per_10k"] = mem["observer_bytes"] * 10_000 / 2**20
    return out


async def _peer_timed(url: str, prefix: str, n: int) -> dict[str, float]:
    """Start a process and time its first sync and a targeted roster fetch."""
    from tests.peers import Peer

    peer = await Peer.start(_layers(url, prefix), script=SCRIPT)
    try:
        timing = await peer.call("presence_timed_sync", room="big", connections=n)
        return {k: float(timing[k]) for k in ("connect", "sync", "fetch")}
    finally:
        await _stop(peer)
