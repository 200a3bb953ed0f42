"""Turn benchmark records into a Markdown report, target verdicts and plots."""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path
from typing import Any

SEND_METRICS = [
    ("rate", "msgs/s", True),
    ("lost", "lost", False),
    ("channel_full", "ChannelFull back-offs", False),
    ("channel_full_per_10k", "ChannelFull per 10k sends", False),
    ("producer_cpu_us", "producer CPU µs/msg", False),
    ("consumer_cpu_us", "consumer CPU µs/msg", False),
    ("server_cpu_us", "nats-server CPU µs/msg", False),
    ("nats_msgs_per_100", "NATS msgs per 100 sent", False),
]

# scenario -> [(metric, label, higher is better)]
METRICS: dict[str, list[tuple[str, str, bool]]] = {
    "rtt": [
        ("p50_us", "p50 µs", False),
        ("p90_us", "p90 µs", False),
        ("p99_us", "p99 µs", False),
    ],
    "send": SEND_METRICS,
    "send_1000": SEND_METRICS,
    "send_unbounded": SEND_METRICS,
    "fanout": [
        ("deliveries_per_s", "deliveries/s", True),
        ("p50_us", "p50 µs", False),
        ("p99_us", "p99 µs", False),
        ("lost", "lost", False),
    ],
    "rooms": [
        ("deliveries_per_s", "deliveries/s", True),
        ("p99_us", "p99 µs", False),
        ("lost", "lost", False),
    ],
    "rooms_rate": [
        ("p50_us", "p50 µs", False),
        ("p99_us", "p99 µs", False),
        ("lost", "lost", False),
    ],
    "sync": [
        ("call_p50_us", "group_send p50 µs", False),
        ("floor_p50_us", "empty async_to_sync p50 µs", False),
        ("x_floor", "x floor", False),
    ],
    "churn": [
        ("add_per_s_c1", "group_add/s sequential", True),
        ("add_per_s_c100", "group_add/s 100 callers", True),
        ("discard_per_s_c100", "group_discard/s 100 callers", True),
    ],
    "websocket": [
        ("delivered_per_s", "delivered/s", True),
        ("p99_us", "p99 µs", False),
        ("lost", "lost", False),
    ],
    "presence": [
        ("join_p50_ms", "join visible p50 ms", False),
        ("join_p99_ms", "join visible p99 ms", False),
        ("signal_p99_ms", "member_joined signal p99 ms", False),
        ("sigkill_cleanup_s", "SIGKILL cleanup s", False),
        ("sigstop_cleanup_s", "SIGSTOP cleanup s (ttl 10)", False),
        ("sync_10k_s", "first sync, 10k members s", False),
        ("fetch_10k_s", "roster fetch, 10k members s", False),
        ("heartbeat_bps_empty", "heartbeat B/s, 0 members", False),
        ("heartbeat_bps_10k", "heartbeat B/s, 10k members", False),
        ("memory_observer_mib_per_10k", "observer MiB per 10k members", False),
        ("memory_owner_bytes_per_member", "owner bytes/member", False),
    ],
}

TITLES = {
    "rtt": "rtt: ping-pong over specific channels (2 processes)",
    "send": "send: one producer to one consumer's channel, capacity 100 (default)",
    "send_1000": "send_1000: the same at capacity 1000",
    "send_unbounded": (
        "send_unbounded: the same at capacity 1,000,000 (credit never runs out)"
    ),
    "fanout": "fanout: 4 processes x 250 channels in one group, one sender",
    "rooms": "rooms: 500 groups x 4 members over 2 processes, open loop",
    "rooms_rate": "rooms at a fixed rate (1000 group_send/s)",
    "sync": "sync: async_to_sync(group_send) from a plain thread",
    "churn": "churn: group_add + group_discard, distinct groups",
    "websocket": "websocket: broadcast through daphne to WebSocket clients",
    "presence": "presence: 3+ processes, default settings (heartbeat 1 s, ttl 10 s)",
}


def ratio_target(
    scenario: str, metric: str, peer: str, op: str, bound: float, label: str
) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "metric": metric,
        "peer": peer,
        "op": op,
        "bound": bound,
        "label": label,
    }


TARGETS = [
    ratio_target("rtt", "p50_us", "raw", "<=", 1.1, "rtt p50 <= 1.1 x raw nats-py"),
    ratio_target("send", "rate", "raw", ">=", 0.7, "send >= 0.7 x raw nats-py"),
    ratio_target(
        "send_1000", "rate", "raw", ">=", 0.9, "send, capacity 1000 >= 0.9 x raw"
    ),
    ratio_target(
        "fanout",
        "deliveries_per_s",
        "redis-pubsub",
        ">=",
        1.5,
        "fanout >= 1.5 x RedisPubSubChannelLayer",
    ),
    ratio_target(
        "fanout",
        "deliveries_per_s",
        "redis",
        ">=",
        10,
        "fanout >= 10 x RedisChannelLayer",
    ),
    ratio_target(
        "rooms",
        "deliveries_per_s",
        "redis",
        ">=",
        10,
        "rooms >= 10 x RedisChannelLayer",
    ),
    ratio_target(
        "rooms_rate",
        "p99_us",
        "redis-pubsub",
        "<=",
        1.0,
        "rooms at fixed rate: p99 <= RedisPubSubChannelLayer",
    ),
    ratio_target(
        "churn",
        "add_per_s_c100",
        "redis-pubsub",
        ">=",
        1.0,
        "confirmed group_add, 100 callers >= RedisPubSub",
    ),
]
ABSOLUTE = [
    ("send", "lost", "==", 0, "send: 0 messages lost"),
    ("send_1000", "lost", "==", 0, "send, capacity 1000: 0 messages lost"),
    (
        "send",
        "channel_full_per_10k",
        "<=",
        1,
        "send: ChannelFull < 1 per 10,000 sends (consumer keeps up)",
    ),
    ("rooms", "lost", "==", 0, "rooms: 0 lost"),
    ("sync", "x_floor", "<=", 1.3, "sync p50 <= 1.3 x empty async_to_sync"),
    ("presence", "join_p99_ms", "<=", 50, "presence: join visible p99 < 50 ms"),
    ("presence", "sigkill_cleanup_s", "<=", 3, "presence: SIGKILL cleanup < 3 s"),
    ("presence", "sigstop_over_ttl_s", "<=", 1, "presence: frozen node <= TTL + 1 s"),
    ("presence", "sync_10k_s", "<=", 1, "presence: sync of 10k members < 1 s"),
    (
        "presence",
        "heartbeat_growth_bps",
        "<=",
        16,
        "presence: heartbeat B/s at 10k members - at 0 <= 16 (integer widths only)",
    ),
]


def _values(
    records: list[dict[str, Any]], scenario: str, impl: str, metric: str
) -> dict[int, float]:
    return {
        r["rep"]: float(r[metric])
        for r in records
        if r["scenario"] == scenario
        and r["impl"] == impl
        and metric in r
        and r[metric] is not None
        and not math.isnan(float(r[metric]))
    }


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.0f}"
    return f"{x:.2f}"


def _spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    med = statistics.median(values)
    if len(values) == 1 or min(values) == max(values):
        return _fmt(med)
    return f"{_fmt(med)} [{_fmt(min(values))}-{_fmt(max(values))}]"


def _check(value: float, op: str, bound: float) -> bool:
    return {"<=": value <= bound, ">=": value >= bound, "==": value == bound}[op]


def evaluate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target with the per-repetition ratios and its verdict."""
    rows = []
    for t in TARGETS:
        ours = _values(records, t["scenario"], "nats", t["metric"])
        peer = _values(records, t["scenario"], t["peer"], t["metric"])
        ratios = [ours[k] / peer[k] for k in sorted(ours) if k in peer and peer[k]]
        if not ratios:
            continue
        med = statistics.median(ratios)
        rows.append(
            {
                **t,
                "ratios": ratios,
                "median": med,
                "met": _check(med, t["op"], t["bound"]),
            }
        )
    for scenario, metric, op, bound, label in ABSOLUTE:
        values = list(_values(records, scenario, "nats", metric).values())
        if not values:
            continue
        med = statistics.median(values)
        worst = max(values) if op in ("<=", "==") else min(values)
        rows.append(
            {
                "label": label,
                "ratios": values,
                "median": med,
                "met": _check(worst if op == "==" else med, op, bound),
            }
        )
    return rows


def markdown(
    records: list[dict[str, Any]], machine: dict[str, Any], args: argparse.Namespace
) -> str:
    lines = [
        "# channels_nats benchmark",
        "",
        f"Command: `python -m bench{' --quick' if args.quick else ''}"
        f"{' --scenarios ' + args.scenarios if args.scenarios else ''}` "
        f"({args.reps} repetitions, interleaved). Machine: {machine['cpu']}, "
        f"{machine['cores']} cores, Python {machine['python']}, nats-py "
        f"{machine['nats_py']}, channels_redis {machine['channels_redis']}, "
        "nats-server 2.15.1 and redis-server started by the harness on loopback.",
        "Cells: median [min-max] over the repetitions. Ratios are taken within "
        "each repetition, then the median and spread of those ratios.",
        "",
        "## Targets",
        "",
        "| target | measured | spread | met |",
        "|---|---|---|---|",
    ]
    for row in evaluate(records):
        spread = ", ".join(_fmt(r) for r in row["ratios"])
        lines.append(
            f"| {row['label']} | {_fmt(row['median'])} | {spread} | "
            f"{'yes' if row['met'] else '**no**'} |"
        )
    scenarios = [s for s in METRICS if any(r["scenario"] == s for r in records)]
    for scenario in scenarios:
        impls = list(
            dict.fromkeys(r["impl"] for r in records if r["scenario"] == scenario)
        )
        metrics = METRICS[scenario]
        lines += [
            "",
            f"## {TITLES[scenario]}",
            "",
            "| impl | " + " | ".join(label for _, label, _ in metrics) + " |",
            "|---|" + "---|" * len(metrics),
        ]
        for impl in impls:
            cells = [
                _spread(list(_values(records, scenario, impl, m).values()))
                for m, _, _ in metrics
            ]
            errors = [
                r["error"]
                for r in records
                if r["scenario"] == scenario and r["impl"] == impl and "error" in r
            ]
            if errors:
                cells.append(f"errors: {errors[0][:80]}")
            lines.append(f"| {impl} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def plot(out: Path, records: list[dict[str, Any]]) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    for scenario, metrics in METRICS.items():
        impls = list(
            dict.fromkeys(r["impl"] for r in records if r["scenario"] == scenario)
        )
        if not impls:
            continue
        shown = [(m, label, up) for m, label, up in metrics if m != "lost"]
        fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.2))
        if len(shown) == 1:
            axes = [axes]
        for ax, (metric, label, higher) in zip(axes, shown, strict=True):
            medians, lows, highs = [], [], []
            for impl in impls:
                values = list(_values(records, scenario, impl, metric).values())
                med = statistics.median(values) if values else 0.0
                medians.append(med)
                lows.append(med - (min(values) if values else 0.0))
                highs.append((max(values) if values else 0.0) - med)
            colors = ["#2a7ab0" if i == "nats" else "#9aa5ad" for i in impls]
            ax.bar(impls, medians, yerr=[lows, highs], color=colors, capsize=3)
            positive = [m for m in medians if m > 0]
            if positive and max(positive) / min(positive) > 20:
                ax.set_yscale("log")  # raw nats-py and Redis are far apart
            ax.set_title(
                f"{label} ({'higher' if higher else 'lower'} is better)", fontsize=9
            )
            ax.tick_params(axis="x", labelsize=8, rotation=20)
        fig.suptitle(TITLES[scenario], fontsize=10)
        fig.tight_layout()
        path = out / f"{scenario}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def write(
    out: Path,
    records: list[dict[str, Any]],
    machine: dict[str, Any],
    args: argparse.Namespace,
    profile: dict[str, Any],
) -> None:
    text = markdown(records, machine, args)
    plots = plot(out, records)
    if plots:
        text += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n"
    (out / "report.md").write_text(text)
