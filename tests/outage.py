"""Fault scenarios that count every message: broker restart, stall, failover.

A sender process makes about ``rate`` calls/s for ``duration`` s, alternating
``group_send`` to a group and ``send`` to a specific channel of a receiver
process (which is in the group); a fault hits the server meanwhile. The
result says, per kind, what was sent (accepted), delivered, errored (by
exception type) and lost, and what was delivered twice or out of order.

``python -m tests.outage [restart|stall|...]`` prints the table; the tests in
``tests/test_outage.py`` assert on the same figures.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from channels_nats.testing import NatsCluster, NatsServer
from tests.peers import Peer

Fault = Callable[[], Awaitable[None]]


def layers_for(urls: list[str], prefix: str, **config: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "channels_nats.NatsChannelLayer",
            "CONFIG": {
                "servers": urls,
                "prefix": prefix,
                "reconnect_time_wait": 0.1,
                **config,
            },
        }
    }


async def run_traffic(
    sender_urls: list[str],
    receiver_urls: list[str],
    fault: Fault,
    *,
    prefix: str = "outage",
    rate: float = 100.0,
    duration: float = 10.0,
    fault_at: float = 3.0,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    config = config or {}
    receiver = await Peer.start(layers_for(receiver_urls, prefix, **config))
    sender = await Peer.start(layers_for(sender_urls, prefix, **config))
    try:
        channel = await receiver.call("new_channel")
        await receiver.call("group_add", group="room", channel=channel)
        collecting = asyncio.create_task(
            receiver.call(
                "collect",
                channel=channel,
                idle=3.0,
                deadline=duration + 40,
                call_timeout=duration + 60,
            )
        )
        sending = asyncio.create_task(
            sender.call(
                "traffic",
                rate=rate,
                duration=duration,
                group="room",
                channel=channel,
                call_timeout=duration + 60,
            )
        )
        await asyncio.sleep(fault_at)  # the fault's moment in the traffic
        await fault()
        sent = await sending
        received = await collecting
        sender_stats = await sender.call("stats")
    finally:
        await sender.stop()
        await receiver.stop()
    return summarize(sent, received, sender_stats)


def summarize(
    sent: dict[str, Any], received: dict[str, Any], sender_stats: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "calls": sent["calls"],
        "errors": {name: len(ids) for name, ids in sent["errors"].items()},
        "ends": received["ends"],
        # The longest time without a delivery: the outage as the receiver
        # saw it, from the last message before to the first one after.
        "max_silence": received["max_silence"],
        "receiver_stats": received["stats"],
        "sender_stats": sender_stats,
    }
    for kind in ("g", "d"):
        accepted = sent["ok"][kind]
        got = received["got"][kind]
        counts = Counter(got)
        out[kind] = {
            "sent": len(accepted),
            "delivered": len(counts),
            "lost": len(set(accepted) - set(counts)),
            "duplicated": sum(n - 1 for n in counts.values() if n > 1),
            "unexpected": len(set(counts) - set(accepted)),
            "in_order": got == sorted(got),
        }
    return out


def restart_fault(server: NatsServer, down_for: float) -> Fault:
    async def fault() -> None:
        await asyncio.to_thread(server.kill)
        await asyncio.sleep(down_for)
        await asyncio.to_thread(server.start)

    return fault


def stall_fault(server: NatsServer, stalled_for: float) -> Fault:
    async def fault() -> None:
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(stalled_for)
        finally:
            os.kill(server.pid, signal.SIGCONT)

    return fault


def kill_fault(node: NatsServer) -> Fault:
    async def fault() -> None:
        await asyncio.to_thread(node.kill)

    return fault


def table(name: str, result: dict[str, Any]) -> str:
    rows = []
    for kind, label in (("g", "group_send"), ("d", "send")):
        r = result[kind]
        rows.append(
            f"{name:10} {label:10} sent={r['sent']:5} delivered={r['delivered']:5} "
            f"lost={r['lost']:4} dup={r['duplicated']} in_order={r['in_order']}"
        )
    rows.append(
        f"{'':10} errors={result['errors']} ends={result['ends']} "
        f"max_silence={result['max_silence']:.2f}s "
        f"lost_in_transit={result['receiver_stats'].get('lost_in_transit')} "
        f"dropped_capacity={result['receiver_stats'].get('dropped_capacity')} "
        f"stalls={result['sender_stats'].get('stalls')} "
        f"receiver_reconnects={result['receiver_stats'].get('reconnects')} "
        f"sender_reconnects={result['sender_stats'].get('reconnects')}"
    )
    return "\n".join(rows)


async def _main(which: list[str]) -> None:
    for name in which:
        if name.startswith("failover"):
            # "failover": the receiver's node dies; "failover-sender": the
            # sender's. Each process knows the other nodes from the cluster.
            with NatsCluster(3, jetstream=False) as cluster:
                cluster.wait_until_formed(timeout=30)
                receiver_node, sender_node = cluster.nodes[0], cluster.nodes[1]
                victim = sender_node if name == "failover-sender" else receiver_node
                result = await run_traffic(
                    [sender_node.url], [receiver_node.url], kill_fault(victim)
                )
                print(table(name, result), flush=True)
            continue
        with NatsServer(jetstream=False) as server:
            fault = (
                restart_fault(server, 3.0)
                if name == "restart"
                else stall_fault(server, 5.0)
            )
            result = await run_traffic([server.url], [server.url], fault)
            print(table(name, result), flush=True)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1:] or ["restart", "stall"]))
