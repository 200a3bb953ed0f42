"""A channel-layer process driven over stdin/stdout, for cross-process tests.

Run as ``python tests/peer.py '<CHANNEL_LAYERS json>'``. The child configures
Django with that ``CHANNEL_LAYERS``, takes the layer from
``channels.layers.get_channel_layer()`` (so the layer is built exactly as in
a project) and executes JSON commands, one per line, concurrently::

    {"id": 1, "op": "new_channel"}
    {"id": 2, "op": "receive", "channel": "...", "timeout": 5}

Each answer is one line ``{"id": 1, "ok": <result>}`` or
``{"id": 1, "error": "<ExceptionType>: <message>"}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any


def setup(layers: dict[str, Any]) -> None:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["channels", "channels_nats"],
        CHANNEL_LAYERS=layers,
        USE_TZ=True,
    )
    django.setup()


async def handle(layer: Any, cmd: dict[str, Any]) -> Any:
    op = cmd["op"]
    if op == "new_channel":
        return await layer.new_channel()
    if op == "send":
        await layer.send(cmd["channel"], cmd["message"])
        return None
    if op == "send_many":
        # Send n messages as fast as possible; stop at the first ChannelFull.
        from channels.exceptions import ChannelFull

        sent = 0
        try:
            for i in range(cmd["n"]):
                await layer.send(cmd["channel"], {"type": "m", "i": i})
                sent += 1
        except ChannelFull:
            pass
        return sent
    if op == "receive":
        return await asyncio.wait_for(layer.receive(cmd["channel"]), cmd["timeout"])
    if op == "receive_many":
        out = []
        for _ in range(cmd["n"]):
            out.append(
                await asyncio.wait_for(layer.receive(cmd["channel"]), cmd["timeout"])
            )
        return out
    if op == "receive_until_idle":
        # Receive until nothing arrives for `idle` seconds; return what came.
        got = []
        while True:
            try:
                got.append(
                    await asyncio.wait_for(layer.receive(cmd["channel"]), cmd["idle"])
                )
            except asyncio.TimeoutError:
                return got
    if op == "hold":
        # Take one message of a normal channel from JetStream without acking
        # it, as a receiver killed between fetch and ack would have.
        from channels_nats.serializers import unpack_frame

        transport = layer.transport
        link = await transport.link()
        puller = await transport.normal.puller(link, cmd["channel"])
        msgs = await puller.psub.fetch(1, timeout=cmd["timeout"])
        body = unpack_frame(msgs[0].data).args[2]
        return transport.serializer.loads(body)
    if op == "group_add":
        await layer.group_add(cmd["group"], cmd["channel"])
        return None
    if op == "group_discard":
        await layer.group_discard(cmd["group"], cmd["channel"])
        return None
    if op == "group_send":
        await layer.group_send(cmd["group"], cmd["message"])
        return None
    if op == "stats":
        return layer.stats()
    if op == "flush":
        await layer.flush()
        return None
    raise ValueError(f"unknown op {op!r}")


async def main() -> None:
    from channels.layers import get_channel_layer

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
    setup(json.loads(sys.argv[1]))
    asyncio.run(main())
