"""``manage.py runworker`` against NatsChannelLayer, in a separate process."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def worker(nats_server, prefix):
    layers = {
        "default": {
            "BACKEND": "channels_nats.NatsChannelLayer",
            "CONFIG": {"servers": [nats_server.url], "prefix": prefix},
        }
    }
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.workerproject.settings",
        "CHANNEL_LAYERS": json.dumps(layers),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "django",
        "runworker",
        "thumbnails",
        "reports",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    yield proc
    proc.terminate()
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert b"Traceback" not in stderr, stderr.decode(errors="replace")


async def test_runworker_serves_sync_and_async_consumers(worker, layer):
    reply_to = await layer.new_channel()
    # Sent before the worker necessarily listens: normal channels wait.
    await layer.send(
        "thumbnails", {"type": "thumbnail.make", "id": 1, "reply_to": reply_to}
    )
    await layer.send("reports", {"type": "report.build", "id": 2, "reply_to": reply_to})
    got = [await asyncio.wait_for(layer.receive(reply_to), 30) for _ in range(2)]
    assert sorted(got, key=lambda m: m["id"]) == [
        {"type": "done", "id": 1, "by": "sync"},
        {"type": "done", "id": 2, "by": "async"},
    ]


async def test_runworker_channel_as_a_group_member(worker, layer):
    reply_to = await layer.new_channel()
    await layer.group_add("jobs", "thumbnails")
    await layer.group_send(
        "jobs", {"type": "thumbnail.make", "id": 3, "reply_to": reply_to}
    )
    assert await asyncio.wait_for(layer.receive(reply_to), 30) == {
        "type": "done",
        "id": 3,
        "by": "sync",
    }
