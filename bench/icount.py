"""Instructions per message of the send and receive paths, under callgrind.

``python -m bench.icount`` (needs ``valgrind``) starts its own nats-server and
a consumer process, then runs this module under ``valgrind --tool=callgrind``
for 2,000 and 6,000 messages of each mode and prints the difference per
message, so start-up cancels out:

- ``send``: ``layer.send`` to a channel of the consumer process;
- ``round``: one layer sending to a channel of a second layer in the same
  process, which receives it, in bursts of 50 (the delivery, the batch path
  and ``receive()`` are counted too).

Capacity is large enough that no send waits for credit. The figures repeat
to about 1 % between runs, where wall-clock ones on a shared 2-core machine
swing by 20 %: use it to compare two trees (``PYTHONPATH=other/tree``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile

from channels_nats import NatsChannelLayer
from channels_nats.testing import NatsServer

CAPACITY = 10**6
BURST = 50
MESSAGE = {"type": "m", "text": "hello"}


async def consume(url: str) -> None:
    layer = NatsChannelLayer(servers=[url], capacity=CAPACITY, prefix="icount")
    channel = await layer.new_channel()
    print(channel, flush=True)
    while True:
        await layer.receive(channel)


async def drive(mode: str, n: int, url: str, target: str) -> None:
    layer = NatsChannelLayer(servers=[url], capacity=CAPACITY, prefix="icount")
    if mode == "send":
        await layer.send(target, MESSAGE)  # the link and the route, once
        for _ in range(n):
            await layer.send(target, MESSAGE)
    else:
        other = NatsChannelLayer(servers=[url], capacity=CAPACITY, prefix="icount")
        channel = await other.new_channel()
        await layer.send(channel, MESSAGE)
        await other.receive(channel)
        for _ in range(n // BURST):
            for _ in range(BURST):
                await layer.send(channel, MESSAGE)
            for _ in range(BURST):
                await other.receive(channel)
        await other.close()
    await layer.close()


def instructions(mode: str, n: int, url: str, target: str, workdir: str) -> int:
    out = os.path.join(workdir, f"cg.{mode}.{n}")
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "bench.icount",
        "--drive",
        mode,
        str(n),
        url,
        target,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no callgrind summary:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    if sys.argv[1:2] == ["--drive"]:
        mode, n, url, target = sys.argv[2:6]
        asyncio.run(drive(mode, int(n), url, target))
        return
    if sys.argv[1:2] == ["--consume"]:
        asyncio.run(consume(sys.argv[2]))
        return
    if shutil.which("valgrind") is None:
        sys.exit("bench.icount needs valgrind (apt-get install valgrind)")
    server = NatsServer(jetstream=False)
    server.start()
    consumer = subprocess.Popen(
        [sys.executable, "-m", "bench.icount", "--consume", server.url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert consumer.stdout is not None
        target = consumer.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as workdir:
            for mode in ("send", "round"):
                low = instructions(mode, 2000, server.url, target, workdir)
                high = instructions(mode, 6000, server.url, target, workdir)
                print(f"{mode:6} {(high - low) / 4000:9.0f} instructions/message")
    finally:
        consumer.kill()
        consumer.wait()
        server.close()


if __name__ == "__main__":
    main()
