"""The ``prometheus`` extra: every layer.stats() entry and the tracker's gauges.

Scraped with ``prometheus_client.generate_latest`` from a private registry,
and over HTTP from ``start_http_server``; the package itself never imports
``prometheus_client``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from channels.exceptions import ChannelFull
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from channels_nats.presence.api import tracker_for
from channels_nats.prometheus import GAUGES, LayerCollector, PresenceCollector
from channels_nats.testing import await_until, free_port

ROOT = Path(__file__).resolve().parent.parent


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[Any, ...]], float]:
    out: dict[tuple[str, tuple[Any, ...]], float] = {}
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_every_layer_stat_is_exported_with_its_value(make_layer: Any) -> None:
    layer = make_layer(capacity=1)
    other = make_layer(capacity=1)
    channel = await other.new_channel()
    await layer.send(channel, {"type": "a"})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "b"})
    await layer.group_add("g", await layer.new_channel())

    registry = CollectorRegistry()
    registry.register(LayerCollector({"default": lambda: layer}))
    metrics = await asyncio.to_thread(scrape, registry)
    stats = layer.stats()
    assert stats["refused_channel_full"] == 1 and stats["groups"] == 1
    label = (("alias", "default"),)
    for key, value in stats.items():
        if key == "client_id":
            info = ("channels_nats_layer_info", (*label, ("client_id", value)))
            assert metrics[info] == 1.0
        elif key in GAUGES:
            assert metrics[(f"channels_nats_{key}", label)] == value, key
        else:
            assert metrics[(f"channels_nats_{key}_total", label)] == value, key


async def test_presence_gauges_over_an_http_scrape(make_layer: Any) -> None:
    layer, other = make_layer(), make_layer()
    mine, theirs = tracker_for(layer), tracker_for(other)
    await mine.join("lobby", await layer.new_channel(), "u1")
    await mine.join("kitchen", await layer.new_channel(), "u1")
    await theirs.join("lobby", await other.new_channel(), "u2")
    await await_until(
        lambda: _connections(mine, "lobby"), 10, message="lobby has 2 members"
    )

    registry = CollectorRegistry()
    registry.register(LayerCollector({"default": lambda: layer}))
    registry.register(PresenceCollector({"default": lambda: mine}))
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        body = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    label = (("alias", "default"),)
    assert samples[("channels_nats_presence_members", label)] == 3
    assert samples[("channels_nats_presence_local_members", label)] == 2
    assert samples[("channels_nats_presence_rooms", label)] == 2
    assert samples[("channels_nats_presence_users", label)] == 3  # 2 lobby + 1
    assert samples[("channels_nats_presence_nodes", (*label, ("state", "self")))] == 1
    alive = [v for (n, lab), v in samples.items() if n.endswith("_nodes") and v]
    assert sum(alive) == 2
    assert samples[("channels_nats_presence_last_sync_age_seconds", label)] >= 0
    assert ("channels_nats_presence_syncs_total", label) in samples


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


async def _connections(tracker: Any, room: str) -> bool:
    return bool((await tracker.count(room)).connections == 2)


def test_the_package_does_not_import_prometheus_client() -> None:
    """Layer, presence and checks work without the extra being imported."""
    code = (
        "import sys, json, channels_nats, channels_nats.presence, "
        "channels_nats.checks\n"
        "from channels_nats import NatsChannelLayer\n"
        "NatsChannelLayer().stats()\n"
        "print(json.dumps('prometheus_client' in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout) is False, out.stderr
