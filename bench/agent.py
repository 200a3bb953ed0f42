"""Agent processes: each runs roles of the benchmark scenarios on request.

An agent is a separate OS process with its own event loop, started once per
benchmark run and reused by every scenario and implementation, so interpreter
start-up is never measured and connections behave as in a long-lived server
process. The driver (``bench.run``) sends commands over a pipe::

    {"op": "start", "id": ..., "role": ..., "impl": ..., "params": {...}}
    {"op": "run",   "id": ..., "params": {...}}
    {"op": "stop",  "id": ...}

and gets one answer per command: ``{"ok": ...}`` or ``{"error": "..."}``.

Implementations: ``nats`` (channels_nats), ``redis`` (channels_redis
RedisChannelLayer), ``redis-pubsub`` (RedisPubSubChannelLayer) and ``raw``
(nats-py alone: the floor of what NATS costs from Python).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from channels.exceptions import ChannelFull

IMPLS = ("nats", "redis", "redis-pubsub", "raw")


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p90/p99 of ``samples`` (seconds), in microseconds."""
    if not samples:
        return {"p50_us": float("nan"), "p90_us": float("nan"), "p99_us": float("nan")}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6

    return {"p50_us": at(0.50), "p90_us": at(0.90), "p99_us": at(0.99)}


def make_layer(impl: str, servers: dict[str, Any], prefix: str, capacity: int) -> Any:
    if impl == "nats":
        from channels_nats import NatsChannelLayer

        return NatsChannelLayer(
            servers=[servers["nats"]], prefix=prefix, capacity=capacity
        )
    if impl == "redis":
        from channels_redis.core import RedisChannelLayer

        return RedisChannelLayer(
            hosts=[servers["redis"]], prefix=prefix, capacity=capacity
        )
    if impl == "redis-pubsub":
        from channels_redis.pubsub import RedisPubSubChannelLayer

        return RedisPubSubChannelLayer(hosts=[servers["redis"]], prefix=prefix)
    raise ValueError(f"no channel layer for {impl!r}")


class Role:
    """One part of a scenario played by an agent."""

    def __init__(self, impl: str, servers: dict[str, Any], params: dict[str, Any]):
        self.impl = impl
        self.servers = servers
        self.params = params
        self.layer: Any = None
        self.nc: Any = None

    async def open(self) -> None:
        if self.impl == "raw":
            import nats

            self.nc = await nats.connect(self.servers["nats"])
        else:
            self.layer = make_layer(
                self.impl,
                self.servers,
                self.params["prefix"],
                self.params.get("capacity", 100),
            )

    async def setup(self) -> Any:
        return None

    async def run(self, params: dict[str, Any]) -> Any:
        raise NotImplementedError

    async def _cancel(self, tasks: list[asyncio.Task[None]]) -> None:
        """Cancel and await background tasks before their layer closes."""
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()
        if self.layer is not None:
            if self.impl == "nats":
                await self.layer.close()
            elif self.impl == "redis":
                await self.layer.flush()
                await self.layer.close_pools()
            elif self.impl == "redis-pubsub":
                await self.layer.flush()


# -- rtt ---------------------------------------------------------------------


class Ponger(Role):
    """Answer every ping on its channel (or subject) until told to stop."""

    async def setup(self) -> Any:
        if self.impl == "raw":

            async def respond(msg: Any) -> None:
                await msg.respond(msg.data)

            self.sub = await self.nc.subscribe(self.params["subject"], cb=respond)
            await self.nc.flush()
            return None
        self.channel = await self.layer.new_channel()
        self.task = asyncio.create_task(self._serve())
        return self.channel

    async def _serve(self) -> None:
        while True:
            message = await self.layer.receive(self.channel)
            await self.layer.send(message["reply"], message)

    async def run(self, params: dict[str, Any]) -> Any:
        return None

    async def close(self) -> None:
        if self.impl != "raw":
            await self._cancel([self.task])
        await super().close()


class Pinger(Role):
    async def setup(self) -> Any:
        if self.impl != "raw":
            self.channel = await self.layer.new_channel()
        return None

    async def run(self, params: dict[str, Any]) -> Any:
        n, warmup = params["n"], params["warmup"]
        samples = []
        for i in range(n + warmup):
            started = time.perf_counter()
            if self.impl == "raw":
                await self.nc.request(params["subject"], b"x" * 100, timeout=5)
            else:
                await self.layer.send(
                    params["target"],
                    {"type": "ping", "reply": self.channel, "pad": "x" * 64},
                )
                await self.layer.receive(self.channel)
            if i >= warmup:
                samples.append(time.perf_counter() - started)
        return percentiles(samples)


# -- send (one producer, one consumer) ------------------------------------------


class Consumer(Role):
    async def setup(self) -> Any:
        self.done = asyncio.get_running_loop().create_future()
        self.count = 0
        self.first = self.last = 0.0
        if self.impl == "raw":

            async def count(msg: Any) -> None:
                self._got()

            self.sub = await self.nc.subscribe(self.params["subject"], cb=count)
            await self.nc.flush()
            return None
        self.channel = await self.layer.new_channel()
        self.task = asyncio.create_task(self._consume())
        return self.channel

    def _got(self) -> None:
        now = time.perf_counter()
        if not self.count:
            self.first = now
            # CPU of the whole process (every thread), read twice a run: a
            # CPU clock is a system call, not a vDSO read.
            self.cpu_first = time.process_time()
        self.count += 1
        self.last = now
        if self.count >= self.params["n"] and not self.done.done():
            self.cpu_last = time.process_time()
            self.done.set_result(None)

    async def _consume(self) -> None:
        while True:
            await self.layer.receive(self.channel)
            self._got()

    async def run(self, params: dict[str, Any]) -> Any:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.done), params["timeout"])
        span = max(self.last - self.first, 1e-9)
        result = {"received": self.count, "rate": self.count / span}
        if self.done.done() and self.count > 1:
            cpu = self.cpu_last - self.cpu_first
            result["cpu_us"] = cpu * 1e6 / (self.count - 1)
        return result

    async def close(self) -> None:
        if self.impl != "raw":
            await self._cancel([self.task])
        await super().close()


class Producer(Role):
    async def run(self, params: dict[str, Any]) -> Any:
        n, full = params["n"], 0
        message = {"type": "m", "pad": "x" * 64}
        started = time.perf_counter()
        cpu = time.process_time()
        if self.impl == "raw":
            payload = b"x" * 100
            for _ in range(n):
                await self.nc.publish(params["subject"], payload)
            await self.nc.flush()
        else:
            i = 0
            while i < n:
                try:
                    await self.layer.send(params["target"], message)
                    i += 1
                except ChannelFull:
                    full += 1
                    await asyncio.sleep(0.0002)
        return {
            "sent": n,
            "channel_full": full,
            "seconds": time.perf_counter() - started,
            "cpu_us": (time.process_time() - cpu) * 1e6 / n,
        }


# -- fan-out and rooms ---------------------------------------------------------


class Members(Role):
    """Hold channels in groups; count deliveries and their latency."""

    async def setup(self) -> Any:
        groups: dict[str, int] = self.params["groups"]  # group -> members here
        self.expected = self.params["expected"]
        self.count = 0
        self.samples: list[float] = []
        self.first = self.last = 0.0
        self.done = asyncio.get_running_loop().create_future()
        self.tasks: list[asyncio.Task[None]] = []
        if self.impl == "raw":
            # The floor: one subscription per group, local copies counted.
            for group, members in groups.items():
                await self.nc.subscribe(
                    f"{self.params['prefix']}.{group}", cb=self._raw_cb(members)
                )
            await self.nc.flush()
            return None
        for group, members in groups.items():
            for _ in range(members):
                channel = await self.layer.new_channel()
                await self.layer.group_add(group, channel)
                self.tasks.append(asyncio.create_task(self._consume(channel)))
        return None

    def _raw_cb(self, members: int) -> Any:
        async def cb(msg: Any) -> None:
            sent = float(msg.data[:20])
            for _ in range(members):
                self._got(sent)

        return cb

    def _got(self, sent: float) -> None:
        now = time.time()
        if not self.count:
            self.first = now
        self.count += 1
        self.last = now
        if self.count % self.params.get("sample_every", 1) == 0:
            self.samples.append(now - sent)
        if self.count >= self.expected and not self.done.done():
            self.done.set_result(None)

    async def _consume(self, channel: str) -> None:
        while True:
            message = await self.layer.receive(channel)
            self._got(message["sent"])

    async def run(self, params: dict[str, Any]) -> Any:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.done), params["timeout"])
        return {
            "received": self.count,
            "first": self.first,
            "last": self.last,
            "latency": sorted(self.samples)[:: max(1, len(self.samples) // 2000)],
        }

    async def close(self) -> None:
        await self._cancel(self.tasks)
        await super().close()


class Broadcaster(Role):
    """group_send to groups, open loop or at a fixed rate."""

    async def run(self, params: dict[str, Any]) -> Any:
        groups, n, rate = params["groups"], params["n"], params.get("rate")
        rng = random.Random(params.get("seed", 1))
        started = time.perf_counter()
        interval = 1.0 / rate if rate else 0.0
        for i in range(n):
            if rate:
                delay = started + i * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            group = groups[rng.randrange(len(groups))] if len(groups) > 1 else groups[0]
            now = time.time()
            if self.impl == "raw":
                await self.nc.publish(
                    f"{params['prefix']}.{group}", f"{now:<20.6f}".encode() + b"x" * 80
                )
            else:
                await self.layer.group_send(
                    group, {"type": "m", "sent": now, "pad": "x" * 64}
                )
        if self.impl == "raw":
            await self.nc.flush()
        return {"first_send": started, "seconds": time.perf_counter() - started}


# -- sync and churn (one process) ------------------------------------------------


class SyncCaller(Role):
    """async_to_sync(group_send) from a plain thread, next to an empty call."""

    async def run(self, params: dict[str, Any]) -> Any:
        from asgiref.sync import async_to_sync

        n = params["n"]
        layer = self.layer
        result: dict[str, Any] = {}

        async def empty() -> None:
            return None

        def work() -> None:
            send = async_to_sync(layer.group_send)
            noop = async_to_sync(empty)
            message = {"type": "m", "pad": "x" * 64}
            for _ in range(20):  # warm up: connect, first calls
                send("sync-bench", message)
                noop()
            floor, calls = [], []
            for _ in range(n):  # interleaved, so both see the same machine
                t0 = time.perf_counter()
                noop()
                t1 = time.perf_counter()
                send("sync-bench", message)
                t2 = time.perf_counter()
                floor.append(t1 - t0)
                calls.append(t2 - t1)
            result["floor"] = percentiles(floor)
            result["call"] = percentiles(calls)

        thread = threading.Thread(target=work)
        thread.start()
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        return result


class Churner(Role):
    async def run(self, params: dict[str, Any]) -> Any:
        n, concurrency = params["n"], params["concurrency"]
        channels = [await self.layer.new_channel() for _ in range(concurrency)]
        tag = params["prefix"]

        async def caller(k: int, op: Any) -> None:
            for i in range(k, n, concurrency):
                await op(f"{tag}-churn-{i}", channels[k])

        started = time.perf_counter()
        await asyncio.gather(
            *(caller(k, self.layer.group_add) for k in range(concurrency))
        )
        added = time.perf_counter()
        await asyncio.gather(
            *(caller(k, self.layer.group_discard) for k in range(concurrency))
        )
        ended = time.perf_counter()
        return {
            "add_per_s": n / (added - started),
            "discard_per_s": n / (ended - added),
        }


ROLES: dict[str, type[Role]] = {
    "ponger": Ponger,
    "pinger": Pinger,
    "consumer": Consumer,
    "producer": Producer,
    "members": Members,
    "broadcaster": Broadcaster,
    "sync": SyncCaller,
    "churner": Churner,
}


async def serve(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    roles: dict[str, Role] = {}
    lock = threading.Lock()

    def answer(payload: dict[str, Any]) -> None:
        with lock:
            conn.send(payload)

    async def handle(cmd: dict[str, Any]) -> None:
        try:
            if cmd["op"] == "start":
                role = ROLES[cmd["role"]](cmd["impl"], cmd["servers"], cmd["params"])
                await role.open()
                roles[cmd["id"]] = role
                result = await role.setup()
            elif cmd["op"] == "run":
                result = await roles[cmd["id"]].run(cmd["params"])
            elif cmd["op"] == "stop":
                role = roles.pop(cmd["id"])
                await role.close()
                result = None
            else:
                raise ValueError(f"unknown op {cmd['op']!r}")
            answer({"seq": cmd["seq"], "ok": result})
        except Exception:
            answer({"seq": cmd["seq"], "error": traceback.format_exc()})

    tasks: set[asyncio.Task[None]] = set()
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd["op"] == "exit":
            break
        task = asyncio.create_task(handle(cmd))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for role in roles.values():
        await role.close()


def agent_main(conn: Connection) -> None:
    """Entry point of an agent process."""
    asyncio.run(serve(conn))
