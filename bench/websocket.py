"""The ``websocket`` scenario: group broadcast through daphne to WebSocket clients.

Starts two daphne processes serving ``bench.wsapp`` with the channel layer
under test, then one ``bench.wsclient`` process whose WebSocket clients are
spread over both daphnes and over the rooms, so every broadcast crosses
processes through the layer. See ``bench.wsclient`` for what is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Any

from bench.agent import percentiles
from channels_nats.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 20.0


def channel_layers(impl: str, servers: dict[str, Any], prefix: str) -> dict[str, Any]:
    if impl == "nats":
        backend = "channels_nats.NatsChannelLayer"
        config: dict[str, Any] = {"servers": [servers["nats"]], "prefix": prefix}
    elif impl == "redis":
        backend = "channels_redis.core.RedisChannelLayer"
        config = {"hosts": [servers["redis"]], "prefix": prefix}
    elif impl == "redis-pubsub":
        backend = "channels_redis.pubsub.RedisPubSubChannelLayer"
        config = {"hosts": [servers["redis"]], "prefix": prefix}
    else:
        raise ValueError(f"no channel layer for {impl!r}")
    return {"default": {"BACKEND": backend, "CONFIG": config}}


class Daphne:
    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "bench.wsapp:application",
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    async def wait_ready(self, deadline: float) -> None:
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"daphne on port {self.port} exited with {self.proc.returncode}:"
                    f"\n{self.output()}"
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"daphne did not accept connections on port {self.port} "
                        f"within {START_TIMEOUT:.0f} s:\n{self.output()}"
                    ) from None
                await asyncio.sleep(0.05)
            else:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()

    def stop(self) -> None:
        self.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


async def run(
    impl: str, servers: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any]:
    prefix = "ws" + uuid.uuid4().hex[:10]
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    env["BENCH_CHANNEL_LAYERS"] = json.dumps(channel_layers(impl, servers, prefix))
    daphnes: list[Daphne] = []
    try:
        for _ in range(2):
            daphnes.append(Daphne(env))
        deadline = time.monotonic() + START_TIMEOUT
        await asyncio.gather(*(d.wait_ready(deadline) for d in daphnes))
        client_params = {**params, "ports": [d.port for d in daphnes]}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.wsclient",
            json.dumps(client_params),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(), params["timeout"] + 30
            )
        except BaseException as exc:  # timeout or cancelled: do not leave it running
            proc.kill()
            await proc.wait()
            if isinstance(exc, TimeoutError):
                raise RuntimeError("websocket client did not finish in time") from None
            raise
        if proc.returncode != 0:
            logs = "\n".join(f"daphne :{d.port}:\n{d.output()}" for d in daphnes)
            raise RuntimeError(
                f"websocket client failed ({proc.returncode}).\n{logs}\n"
                f"client:\n{err.decode(errors='replace')[-4000:]}"
            )
        result = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        for d in daphnes:
            d.terminate()
        for d in daphnes:
            d.stop()
    delivered = result["delivered"]
    window = result["last"] - result["first"]
    return {
        "delivered_per_s": delivered / window if delivered and window > 0 else 0.0,
        "lost": result["expected"] - delivered,
        "duplicates": result["duplicates"],
        **percentiles(result["latency"]),
    }
