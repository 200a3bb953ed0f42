"""What a JetStream stream capturing the layer's subjects would cost.

Issue 10 weighed two ways to replay what core NATS drops during an outage: a
bounded resend buffer in each sender (chosen), or a JetStream stream that
captures every group and process subject (memory storage, short max age) for
receivers to replay from. This measures the second one's price on the
delivery path: one publisher, one subscriber, small messages, with and
without a capture stream on the subjects, interleaved runs.

    python -m bench.capture [--n 50000] [--reps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import nats
from nats.js.api import StorageType, StreamConfig

from channels_nats.testing import NatsServer


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_run(url: str, pid: int, n: int, capture: bool) -> tuple[float, float]:
    pub = await nats.connect(url)
    sub_nc = await nats.connect(url)
    done = asyncio.get_running_loop().create_future()
    got = 0

    async def on_msg(msg: object) -> None:
        nonlocal got
        got += 1
        if got == n and not done.done():
            done.set_result(None)

    await sub_nc.subscribe("cap.p.x", cb=on_msg)
    await sub_nc.flush()
    js = pub.jetstream()
    if capture:
        await js.add_stream(
            StreamConfig(
                name="CAPTURE",
                subjects=["cap.>"],
                storage=StorageType.MEMORY,
                max_age=10.0,
                no_ack=True,
            )
        )
    payload = b"x" * 100
    cpu = cpu_seconds(pid)
    start = time.perf_counter()
    for i in range(n):
        await pub.publish("cap.p.x", payload)
        if i % 100 == 0:
            await asyncio.sleep(0)
    await asyncio.wait_for(done, 60)
    elapsed = time.perf_counter() - start
    server_us = (cpu_seconds(pid) - cpu) / n * 1e6
    if capture:
        await js.delete_stream("CAPTURE")
    await pub.close()
    await sub_nc.close()
    return n / elapsed, server_us


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    rates: dict[bool, list[float]] = {False: [], True: []}
    server_cpu: dict[bool, list[float]] = {False: [], True: []}
    with NatsServer(name="capture") as server:
        assert server.pid is not None
        for _ in range(args.reps):
            for capture in (False, True):
                rate, cpu = await one_run(server.url, server.pid, args.n, capture)
                rates[capture].append(rate)
                server_cpu[capture].append(cpu)
    for capture, label in ((False, "core NATS only"), (True, "with a capture stream")):
        print(
            f"{label:22} {statistics.median(rates[capture]):9,.0f} msgs/s   "
            f"server CPU {statistics.median(server_cpu[capture]):5.1f} us/msg   "
            f"runs: {', '.join(f'{r:,.0f}' for r in rates[capture])}"
        )
    ratio = statistics.median(server_cpu[True]) / statistics.median(server_cpu[False])
    print(f"server CPU ratio: {ratio:.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
