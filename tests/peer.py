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
    if op == "group_send_many":
        # n group messages as fast as possible, numbered.
        for i in range(cmd["n"]):
            await layer.group_send(cmd["group"], {"type": "m", "i": i})
        return cmd["n"]
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
    if op == "traffic":
        # About `rate` calls/s for `duration` s, alternating group_send to
        # `group` and send to `channel`; every call's outcome is recorded.
        return await traffic(layer, cmd)
    if op == "collect":
        # Receive until both end markers arrived and nothing came for `idle`
        # seconds, or `deadline` seconds passed.
        return await collect(layer, cmd)
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


async def traffic(layer: Any, cmd: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    interval = 1.0 / cmd["rate"]
    start = loop.time()
    ok: dict[str, list[int]] = {"g": [], "d": []}
    errors: dict[str, list[int]] = {}
    i = 0
    while loop.time() - start < cmd["duration"]:
        kind = "g" if i % 2 == 0 else "d"
        message = {"type": "t", "k": kind, "i": i}
        try:
            if kind == "g":
                await layer.group_send(cmd["group"], message)
            else:
                await layer.send(cmd["channel"], message)
            ok[kind].append(i)
        except Exception as exc:
            errors.setdefault(type(exc).__name__, []).append(i)
        i += 1
        pause = start + i * interval - loop.time()
        if pause > 0:
            await asyncio.sleep(pause)
    for kind in ("g", "d"):
        end = {"type": "t", "k": kind, "end": True}
        for _ in range(200):  # the markers must arrive; retry through errors
            try:
                if kind == "g":
                    await layer.group_send(cmd["group"], end)
                else:
                    await layer.send(cmd["channel"], end)
                break
            except Exception:
                await asyncio.sleep(0.05)
    return {"ok": ok, "errors": errors, "calls": i}


async def collect(layer: Any, cmd: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cmd["deadline"]
    got: dict[str, list[int]] = {"g": [], "d": []}
    ends: set[str] = set()
    last_at: float | None = None
    max_silence = 0.0
    while loop.time() < deadline:
        wait = cmd["idle"] if len(ends) == 2 else deadline - loop.time()
        try:
            message = await asyncio.wait_for(layer.receive(cmd["channel"]), wait)
        except asyncio.TimeoutError:
            if len(ends) == 2:
                break
            continue
        now = loop.time()
        if last_at is not None and len(ends) < 2:
            max_silence = max(max_silence, now - last_at)
        last_at = now
        if message.get("end"):
            ends.add(message["k"])
        else:
            got[message["k"]].append(message["i"])
    return {
        "got": got,
        "ends": sorted(ends),
        "stats": layer.stats(),
        "max_silence": max_silence,
    }


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
