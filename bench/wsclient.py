"""WebSocket load client of the ``websocket`` scenario (its own process).

``python -m bench.wsclient '<json params>'`` with params ``clients``, ``rooms``,
``messages``, ``timeout``, ``ports`` (the daphne ports) and optionally ``rate``
(messages per second, all rooms together; default 1000) and ``host``.

Opens ``clients // rooms`` connections per room, spread round-robin over the
ports. When all are connected, the first member of each room sends probes
until every member of its room has received one, so measuring starts only
once every group membership works end to end. Then that member sends
``messages // rooms`` messages at a fixed pace, each carrying ``time.time()``
and a sequence number; every member (the sender too) records the latency of
each message it receives. Stops when all expected deliveries arrived or at
``timeout`` and prints one JSON line::

    {"delivered": ..., "expected": ..., "duplicates": ...,
     "first": <wall time of the first send>, "last": <wall time of the last
     delivery>, "latency": [seconds, ... at most 5000 samples], ...}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

MAX_SAMPLES = 5000


class Member:
    def __init__(self, room: int, ws: ClientConnection) -> None:
        self.room = room
        self.ws = ws
        self.probes: set[int] = set()
        self.seen: set[int] = set()


class Stats:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.delivered = 0
        self.duplicates = 0
        self.last = 0.0
        self.latency: list[float] = []
        self.done = asyncio.Event()
        if expected == 0:
            self.done.set()


async def read(member: Member, stats: Stats) -> None:
    with contextlib.suppress(Exception):
        async for raw in member.ws:
            now = time.time()
            msg = json.loads(raw)
            seq = msg["seq"]
            if seq < 0:
                member.probes.add(seq)
                continue
            if seq in member.seen:
                stats.duplicates += 1
                continue
            member.seen.add(seq)
            stats.delivered += 1
            stats.latency.append(now - msg["sent"])
            stats.last = now
            if stats.delivered >= stats.expected:
                stats.done.set()


async def ready(sender: Member, members: list[Member], deadline: float) -> None:
    """Probe the room until every member received the same probe."""
    loop = asyncio.get_running_loop()
    probe = 0
    while True:
        probe -= 1
        await sender.ws.send(json.dumps({"sent": time.time(), "seq": probe}))
        resend = loop.time() + 1.0
        while loop.time() < resend:
            if all(probe in m.probes for m in members):
                return
            if loop.time() > deadline:
                missing = sum(probe not in m.probes for m in members)
                raise TimeoutError(
                    f"room {sender.room}: {missing}/{len(members)} members "
                    "never received a probe"
                )
            await asyncio.sleep(0.005)


async def send_room(
    sender: Member, n: int, interval: float, offset: float, t0: float
) -> None:
    loop = asyncio.get_running_loop()
    for seq in range(n):
        delay = t0 + offset + seq * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await sender.ws.send(json.dumps({"sent": time.time(), "seq": seq}))


async def main_async(p: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + p["timeout"]
    rooms = p["rooms"]
    per_room = max(1, p["clients"] // rooms)
    per_sender = max(1, p["messages"] // rooms)
    rate = float(p.get("rate", 1000))
    host = p.get("host", "127.0.0.1")
    ports = p["ports"]
    total = per_room * rooms
    stats = Stats(per_sender * per_room * rooms)

    gate = asyncio.Semaphore(p.get("connect_concurrency", 20))

    async def open_one(i: int) -> Member:
        room = i % rooms
        uri = f"ws://{host}:{ports[i % len(ports)]}/ws/room/r{room}/"
        async with gate:
            ws = await connect(
                uri,
                compression=None,
                ping_interval=None,
                max_queue=None,
                open_timeout=max(1.0, deadline - loop.time()),
            )
        return Member(room, ws)

    opened = await asyncio.gather(
        *(open_one(i) for i in range(total)), return_exceptions=True
    )
    members = [m for m in opened if isinstance(m, Member)]
    readers = [asyncio.create_task(read(m, stats)) for m in members]
    try:
        failed = [e for e in opened if isinstance(e, BaseException)]
        if failed:
            raise RuntimeError(
                f"{len(failed)}/{total} WebSocket connections failed: {failed[0]!r}"
            )
        connected = loop.time()
        by_room: dict[int, list[Member]] = {r: [] for r in range(rooms)}
        for m in members:
            by_room[m.room].append(m)
        senders = [by_room[r][0] for r in range(rooms)]
        await asyncio.gather(
            *(ready(senders[r], by_room[r], deadline) for r in range(rooms))
        )
        is_ready = loop.time()

        interval = rooms / rate  # per room; all rooms together send ``rate``/s
        first = time.time()
        t0 = loop.time()
        await asyncio.gather(
            *(
                send_room(senders[r], per_sender, interval, r * interval / rooms, t0)
                for r in range(rooms)
            )
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stats.done.wait(), max(0.0, deadline - loop.time()))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.gather(
                    *(m.ws.close() for m in members), return_exceptions=True
                ),
                5,
            )
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    latency = stats.latency
    if len(latency) > MAX_SAMPLES:
        latency = random.Random(0).sample(latency, MAX_SAMPLES)
    return {
        "delivered": stats.delivered,
        "expected": stats.expected,
        "duplicates": stats.duplicates,
        "first": first,
        "last": stats.last,
        "latency": latency,
        "clients": total,
        "rooms": rooms,
        "messages": per_sender * rooms,
        "connect_s": connected - started,
        "ready_s": is_ready - connected,
    }


def main() -> None:
    params = json.loads(sys.argv[1])
    result = asyncio.run(main_async(params))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
