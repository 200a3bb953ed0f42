"""A process with a channel layer and a presence tracker, driven over stdin.

Run as ``python tests/presence_peer.py '<CHANNEL_LAYERS json>'``; it speaks
the protocol of :mod:`tests.peer` (every op of that module works here too)
plus presence ops::

    {"id": 1, "op": "presence_join", "room": "r", "session": "s!1", "user": "u"}
    {"id": 2, "op": "presence_wait", "room": "r", "connections": 3, "timeout": 5}
    {"id": 3, "op": "presence_events"}

It records every presence signal it receives, with the wall time of receipt.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import peer as base

EVENTS: list[dict[str, Any]] = []
WATCHED: list[dict[str, Any]] = []


def record_signals() -> None:
    from channels_nats.presence import signals

    def receiver(name: str) -> Any:
        def on_signal(sender: Any, **kw: Any) -> None:
            member = kw["member"]
            EVENTS.append(
                {
                    "signal": name,
                    "t": time.time(),
                    "room": member.room,
                    "session": member.session,
                    "user": member.user,
                    "node": member.node,
                    "joined_at": member.joined_at,
                    "reason": kw.get("reason"),
                }
            )

        return on_signal

    for name in (
        "member_joined",
        "member_left",
        "member_updated",
        "user_online",
        "user_offline",
    ):
        handler = receiver(name)
        getattr(signals, name).connect(handler, weak=False)


async def handle(layer: Any, cmd: dict[str, Any]) -> Any:
    op = cmd["op"]
    if not op.startswith("presence_"):
        return await base.handle(layer, cmd)
    from channels_nats.presence import get_presence

    p = get_presence()
    if op == "presence_node":
        await p.sync()
        return p.node
    if op == "presence_join":
        await p.join(cmd["room"], cmd["session"], cmd.get("user"), cmd.get("meta"))
        return time.time()
    if op == "presence_join_many":
        # n members of one room (distinct sessions and users), as fast as possible.
        t0 = time.perf_counter()
        for i in range(cmd["n"]):
            await p.join(
                cmd["room"],
                f"{cmd['prefix']}!{i}",
                f"{cmd['prefix']}-u{i}",
                cmd.get("meta"),
            )
        return time.perf_counter() - t0
    if op == "presence_update":
        await p.update(cmd["room"], cmd["session"], cmd["meta"])
        return None
    if op == "presence_leave":
        await p.leave(cmd["room"], cmd["session"])
        return None
    if op == "presence_list":
        return await p.list(cmd["room"])
    if op == "presence_count":
        return list(await p.count(cmd["room"]))
    if op == "presence_rooms":
        return await p.rooms()
    if op == "presence_sync":
        t0 = time.perf_counter()
        await p.sync()
        return time.perf_counter() - t0
    if op == "presence_wait":
        # Poll local state (no network) until the room has that many connections.
        deadline = time.monotonic() + cmd["timeout"]
        while True:
            count = (await p.count(cmd["room"])).connections
            if count == cmd["connections"]:
                return time.time()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{cmd['room']} has {count} connections, not {cmd['connections']}"
                )
            await asyncio.sleep(0.005)
    if op == "presence_timed_sync":
        # For the benchmark: the first sync of a fresh process, then one
        # targeted roster fetch of the largest node.
        t0 = time.perf_counter()
        await p.hub.start()
        connect = time.perf_counter() - t0
        t0 = time.perf_counter()
        await p.sync()  # the first call starts the tracker: subscribe + sync
        sync = time.perf_counter() - t0
        count = (await p.count(cmd["room"])).connections
        if count != cmd["connections"]:
            raise AssertionError(f"{count} connections after sync")
        with p._lock:
            node = max(p._roster.nodes.values(), key=lambda v: len(v.members)).node
            p._roster.fetch_started(node, time.monotonic())
        t0 = time.perf_counter()
        ok = await p._fetch(node)
        fetch = time.perf_counter() - t0
        return {"connect": connect, "sync": sync, "fetch": fetch, "ok": ok}
    if op == "presence_watch":
        # Record when each join becomes visible here (a diff listener runs on
        # the tracker's loop right after the change; use diff_window=0).
        def seen(room: str, joins: dict[str, Any], leaves: dict[str, Any]) -> None:
            now = time.time()
            for entry in joins.values():
                for meta in entry["metas"]:
                    WATCHED.append(
                        {"t": now, "room": room, "joined_at": meta["joined_at"]}
                    )

        await p.sync()
        p.watch(seen)
        return None
    if op == "presence_watched":
        out = list(WATCHED)
        WATCHED.clear()
        return out
    if op == "presence_events":
        out = list(EVENTS)
        if cmd.get("clear"):
            EVENTS.clear()
        return out
    if op == "presence_nodes":
        return (await p.snapshot(limit=0))["nodes"]
    raise ValueError(f"unknown op {op!r}")


async def main() -> None:
    from channels.layers import get_channel_layer

    record_signals()
    layer = get_channel_layer()
    loop = asyncio.get_running_loop()
    out_lock = asyncio.Lock()
    tasks: set[asyncio.Task[None]] = set()

    async def run(cmd: dict[str, Any]) -> None:
        try:
            answer = {"id": cmd["id"], "ok": await handle(layer, cmd)}
        except Exception as exc:
            answer = {"id": cmd["id"], "error": f"{type(exc).__name__}: {exc}"}
        async with out_lock:
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()

    print(json.dumps({"id": 0, "ok": "ready"}), flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        cmd = json.loads(line)
        if cmd["op"] == "exit":
            break
        task = asyncio.create_task(run(cmd))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for task in tasks:
        task.cancel()
    await layer.close()


if __name__ == "__main__":
    base.setup(json.loads(sys.argv[1]))
    asyncio.run(main())
