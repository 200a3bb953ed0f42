"""Per-call CPU of the layer's hot paths, without the network in the way.

``python -m bench.micro`` starts its own nats-server and prints, best of 7
rounds of 20,000 calls each, in microseconds per call:

- ``deliver``: a data frame from the wire to the channel's buffer
  (``Transport.on_message``, what the read loop calls);
- ``receive``: taking a buffered message (``layer.receive``);
- ``send``: ``layer.send`` to a channel of another process (into nats-py's
  buffer, written by its flusher);
- ``parse``: nats-py's protocol parser against ours (``wire.FastParser``)
  for 500-frame chunks cut in two reads, as a socket delivers them.

Run it on the same machine before and after a change; the figures are
steadier than the end-to-end benchmark's, which two cores shared by three
processes make noisy.
"""

from __future__ import annotations

import asyncio
import time

from nats.protocol.parser import Parser

from channels_nats import NatsChannelLayer
from channels_nats.client import GuardedClient
from channels_nats.serializers import DIRECT, Serializer, pack_data
from channels_nats.testing import NatsServer

N = 20_000
ROUNDS = 7


async def layer_paths(url: str) -> dict[str, float]:
    rx = NatsChannelLayer(servers=[url], prefix="micro", capacity=10**6)
    tx = NatsChannelLayer(servers=[url], prefix="micro", capacity=10**6)
    try:
        channel = await rx.new_channel()
        transport = rx.transport
        link = await transport.links.get_home()
        subject = transport.subjects.process(transport.client_id)
        body = Serializer().dumps({"type": "m", "pad": "x" * 64})
        message = {"type": "m", "pad": "x" * 64}
        best = {"deliver": 1e9, "receive": 1e9, "send": 1e9}
        seq = 0
        for n in range(ROUNDS):
            frames = []
            for _ in range(N):
                seq += 1
                frames.append(
                    pack_data(DIRECT, "other", channel, time.time(), body, seq, 1)
                )
            t0 = time.perf_counter()
            for frame in frames:
                transport.on_message(subject, frame, "", link)
            t1 = time.perf_counter()
            for _ in range(N):
                await rx.receive(channel)
            t2 = time.perf_counter()
            target = f"micro.abcdefabcdefabcd!{n}"  # nobody's: credit never ends
            for _ in range(N):
                await tx.send(target, message)
            t3 = time.perf_counter()
            await (await tx.transport.links.link()).barrier()
            for key, dt in (
                ("deliver", t1 - t0),
                ("receive", t2 - t1),
                ("send", t3 - t2),
            ):
                best[key] = min(best[key], dt / N * 1e6)
        return best
    finally:
        await rx.close()
        await tx.close()


async def parse_paths() -> dict[str, float]:
    frame = b"MSG asgi.p.abcdef0123456789 7 130\r\n" + b"x" * 130 + b"\r\n"
    chunk = frame * 500
    cut = len(chunk) // 2 + 17
    best = {}
    for name in ("parse nats-py", "parse ours"):
        nc = GuardedClient(lambda subject, exc: None)
        nc.direct[7] = lambda subject, data, reply: None
        parser = Parser(nc) if name == "parse nats-py" else nc._ps
        result = 1e9
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            for _ in range(40):
                await parser.parse(chunk[:cut])
                await parser.parse(chunk[cut:])
            result = min(result, (time.perf_counter() - t0) / (40 * 500) * 1e6)
        best[name] = result
    return best


def main() -> None:
    server = NatsServer(name="micro").start()
    try:
        figures = asyncio.run(layer_paths(server.url))
    finally:
        server.stop()
    figures.update(asyncio.run(parse_paths()))
    for name, us in figures.items():
        print(f"{name:14s} {us:5.2f} µs per call")


if __name__ == "__main__":
    main()
