"""Soak: rooms traffic with WebSocket-like churn and presence on two processes.

    python -m bench.soak                 # 10 minutes
    python -m bench.soak --minutes 2     # shorter
    python -m bench.soak --out DIR       # default bench/results/soak

Starts its own nats-server, then two worker processes. Each keeps about
``--connections`` simulated WebSocket connections open: a connection is a
new specific channel with a receiving task, a ``group_add`` to one of
``--rooms`` rooms and a presence join; it lives a random 1-10 s and then
disconnects (``group_discard``, presence leave, task cancelled). Meanwhile
each worker sends ``--rate`` ``group_send``/s to random rooms. The layer's
``expiry`` is ``--expiry`` (10 s) so that the buffers of closed channels are
gone within the tail of the run. Every second
each worker records its RSS and the layer's and the tracker's own counts
(subscriptions, buffers, groups, members, sequence state). At the end the
connections close and the counts must go back to their baseline; the
report (``report.md``, ``samples.jsonl``, ``rss.png``) gives the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def counts(layer: Any, tracker: Any) -> dict[str, Any]:
    """The layer's and tracker's own state sizes (internal, for the soak only)."""
    t = layer.transport
    links = list(t.links.by_loop.values())
    home = t.links.home
    seq = sum(
        len(link.sequencer._state.current) + len(link.sequencer._state.previous)
        for link in links
    )
    gaps = len(t.gaps._state.current) + len(t.gaps._state.previous)
    roster = tracker._roster
    stats = layer.stats()
    return {
        "subscriptions": len(home._subs) if home is not None else 0,
        "buffers": len(t.inbox._buffers),
        "buffered": stats["buffered"],
        "groups": stats["groups"],
        "members_local": len(roster.local.members),
        "members_seen": sum(len(r) for r in roster.rooms.values()),
        "rooms_seen": len(roster.rooms),
        "sequence_state": seq + gaps,
        "windows": len(getattr(t.windows, "_windows", ())),
    }


async def worker(args: argparse.Namespace) -> None:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["channels", "channels_nats"],
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": "channels_nats.NatsChannelLayer",
                "CONFIG": {
                    "servers": [args.url],
                    "prefix": args.prefix,
                    "expiry": args.expiry,
                },
            }
        },
        USE_TZ=True,
    )
    django.setup()
    from channels.layers import get_channel_layer

    from channels_nats.presence import get_presence

    layer = get_channel_layer()
    tracker = get_presence()
    await tracker.sync()
    rng = random.Random(args.worker)
    out = open(args.samples, "a")  # noqa: ASYNC230, SIM115 - closed at the end
    received = sent = opened = closed = 0
    conns: dict[str, tuple[str, asyncio.Task[None], float]] = {}

    def sample(phase: str) -> None:
        row = {
            "worker": args.worker,
            "t": time.monotonic() - started,
            "phase": phase,
            "rss_mib": rss_mib(),
            "connections": len(conns),
            "sent": sent,
            "received": received,
            "opened": opened,
            "closed": closed,
            **counts(layer, tracker),
            "stats": layer.stats(),
        }
        out.write(json.dumps(row) + "\n")
        out.flush()

    async def consume(channel: str) -> None:
        nonlocal received
        while True:
            await layer.receive(channel)
            received += 1

    async def connect() -> None:
        nonlocal opened
        channel = await layer.new_channel()
        room = f"room{rng.randrange(args.rooms)}"
        task = asyncio.create_task(consume(channel))
        conns[channel] = (room, task, time.monotonic() + rng.uniform(1, 10))
        await layer.group_add(room, channel)
        await tracker.join(room, channel, f"u{rng.randrange(10_000)}", {"w": 1})
        opened += 1

    async def disconnect(channel: str) -> None:
        nonlocal closed
        room, task, _ = conns.pop(channel)
        task.cancel()
        await layer.group_discard(room, channel)
        await tracker.leave_all(channel)
        closed += 1

    started = time.monotonic()
    sample("baseline")
    end = started + args.seconds
    next_sample = started + 1
    interval = 1 / args.rate
    next_send = time.monotonic()
    while time.monotonic() < end:
        now = time.monotonic()
        for channel in [c for c, v in conns.items() if v[2] <= now]:
            await disconnect(channel)
        while len(conns) < args.connections:
            await connect()
        while next_send <= now:
            room = f"room{rng.randrange(args.rooms)}"
            await layer.group_send(room, {"type": "chat", "n": sent, "w": args.worker})
            sent += 1
            next_send += interval
        if now >= next_sample:
            sample("churn")
            next_sample += 1
        await asyncio.sleep(0.005)
    for channel in list(conns):
        await disconnect(channel)
    # Buffers of closed channels (messages that arrived after the disconnect)
    # go once they expire: wait one expiry and the sweeper's pass.
    await asyncio.sleep(args.expiry + 5)
    sample("end")
    out.close()
    await layer.close()


def render(out: Path, minutes: float) -> str:
    rows = [json.loads(line) for line in (out / "samples.jsonl").open()]
    lines = [
        "# Soak report",
        "",
        f"{minutes:g} minutes, 2 worker processes, {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores; `python -m bench.soak --minutes {minutes:g}`.",
        "",
        "| worker | RSS baseline MiB | RSS at 10% MiB | RSS max MiB | RSS end MiB |"
        " growth after warm-up | sent | received | connections opened |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = [
        "subscriptions",
        "buffers",
        "buffered",
        "groups",
        "members_local",
        "members_seen",
        "rooms_seen",
        "sequence_state",
    ]
    table2 = [
        "",
        "Own counts at baseline / maximum during churn / end:",
        "",
        "| worker | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for w in sorted({r["worker"] for r in rows}):
        mine = [r for r in rows if r["worker"] == w]
        base = mine[0]
        end = mine[-1]
        warm = next(r for r in mine if r["t"] >= end["t"] * 0.1)
        peak = max(r["rss_mib"] for r in mine)
        lines.append(
            f"| {w} | {base['rss_mib']:.1f} | {warm['rss_mib']:.1f} | {peak:.1f} "
            f"| {end['rss_mib']:.1f} | {end['rss_mib'] - warm['rss_mib']:+.1f} MiB "
            f"| {end['sent']} | {end['received']} | {end['opened']} |"
        )
        cells = [f"{base[k]} / {max(r[k] for r in mine)} / {end[k]}" for k in keys]
        table2.append(f"| {w} | " + " | ".join(cells) + " |")
        drops = {
            k: v
            for k, v in end["stats"].items()
            if isinstance(v, int) and v and k.startswith(("dropped", "lost", "malf"))
        }
        table2.append(f"| {w} drops | {drops or 'none'} |" + " |" * (len(keys) - 1))
    text = "\n".join(lines + table2) + "\n\n![RSS over time](rss.png)\n"
    (out / "report.md").write_text(text)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        for w in sorted({r["worker"] for r in rows}):
            mine = [r for r in rows if r["worker"] == w]
            ax.plot([r["t"] for r in mine], [r["rss_mib"] for r in mine], label=f"{w}")
        ax.set_xlabel("seconds")
        ax.set_ylabel("RSS MiB")
        ax.set_title("channels_nats soak: RSS per worker process")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "rss.png", dpi=100)
    except ImportError:
        text += "\n(matplotlib missing: no plot; pip install -e '.[bench]')\n"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0, help="group_send/s")
    parser.add_argument(
        "--expiry", type=float, default=10.0, help="the layer's expiry (s)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/soak")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--samples", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args))
        return
    from channels_nats.testing import NatsServer

    args.out.mkdir(parents=True, exist_ok=True)
    samples = args.out / "samples.jsonl"
    samples.unlink(missing_ok=True)
    prefix = "soak" + uuid.uuid4().hex[:6]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with NatsServer(name="soak") as server:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.soak",
                    f"--worker=w{i}",
                    f"--url={server.url}",
                    f"--prefix={prefix}",
                    f"--samples={samples}",
                    f"--seconds={args.minutes * 60}",
                    f"--connections={args.connections}",
                    f"--rooms={args.rooms}",
                    f"--rate={args.rate}",
                    f"--expiry={args.expiry}",
                ],
                cwd=ROOT,
                env=env,
            )
            for i in (1, 2)
        ]
        codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a worker failed: exit codes {codes}")
    print(render(args.out, args.minutes))


if __name__ == "__main__":
    main()
