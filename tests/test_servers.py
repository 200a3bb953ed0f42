"""Smoke tests of the server fixtures, using raw nats-py (not channels_nats)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import ServiceUnavailableError

from tests.servers import NatsCluster, NatsServer, await_until, wait_for


def _assert_2_15(nc: Client) -> None:
    version = nc.connected_server_version
    assert (version.major, version.minor) == (2, 15), str(version)


async def test_pub_sub(nats_server: NatsServer, prefix: str) -> None:
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    assert nats_server.port != 4222
    nc = await nats.connect(nats_server.url, allow_reconnect=False)
    try:
        _assert_2_15(nc)
        sub = await nc.subscribe(f"{prefix}.hello")
        await nc.publish(f"{prefix}.hello", b"world")
        msg = await sub.next_msg(timeout=2)
        assert msg.data == b"world"
        # JetStream is on for this fixture.
        info = await nc.jetstream().account_info()
        assert info.limits is not None
    finally:
        await nc.close()


async def test_nojs_server_has_no_jetstream(nats_server_nojs: NatsServer) -> None:
    nc = await nats.connect(nats_server_nojs.url, allow_reconnect=False)
    try:
        _assert_2_15(nc)
        with pytest.raises((ServiceUnavailableError, asyncio.TimeoutError)):
            await nc.jetstream(timeout=1).account_info()
    finally:
        await nc.close()


@pytest.mark.cluster
async def test_cluster_routes_between_nodes(
    nats_cluster: NatsCluster, prefix: str
) -> None:
    assert len(nats_cluster.urls) == 3
    assert len(set(nats_cluster.urls)) == 3
    subject = f"{prefix}.routed"
    pub = await nats.connect(nats_cluster.urls[0], allow_reconnect=False)
    sub_nc = await nats.connect(nats_cluster.urls[2], allow_reconnect=False)
    try:
        _assert_2_15(pub)
        assert pub.connected_url is not None
        assert sub_nc.connected_url is not None
        assert pub.connected_url.port == nats_cluster.nodes[0].port
        assert sub_nc.connected_url.port == nats_cluster.nodes[2].port
        received: list[bytes] = []

        async def on_msg(msg: Msg) -> None:
            received.append(msg.data)

        await sub_nc.subscribe(subject, cb=on_msg)
        await sub_nc.flush()

        # Interest propagates to node 1 asynchronously: publish until it lands.
        async def delivered() -> bool:
            await pub.publish(subject, b"ping")
            await pub.flush()
            await asyncio.sleep(0.02)
            return bool(received)

        await await_until(delivered, timeout=10, message="message routed n1 -> n3")
        assert received[0] == b"ping"
    finally:
        await pub.close()
        await sub_nc.close()


async def test_restart_same_port_client_reconnects(
    nats_server_fresh: NatsServer, prefix: str
) -> None:
    server = nats_server_fresh
    port = server.port
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    nc = await nats.connect(
        server.url,
        reconnect_time_wait=0.2,
        max_reconnect_attempts=-1,
        reconnected_cb=on_reconnect,
    )
    try:
        sub = await nc.subscribe(f"{prefix}.after")
        await nc.flush()

        await asyncio.to_thread(server.restart)
        assert server.port == port
        await asyncio.wait_for(reconnected.wait(), timeout=10)

        # The subscription was replayed to the restarted server.
        await nc.publish(f"{prefix}.after", b"again")
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"again"
        _assert_2_15(nc)
    finally:
        await nc.close()


def test_kill_then_start_keeps_port(nats_server_fresh: NatsServer) -> None:
    port = nats_server_fresh.port
    nats_server_fresh.kill()
    assert not nats_server_fresh.running
    assert nats_server_fresh.start().running
    assert nats_server_fresh.port == port
    assert f"127.0.0.1:{port}" in nats_server_fresh.log_text()


def test_wait_for_times_out_with_message() -> None:
    with pytest.raises(AssertionError, match="never true"):
        wait_for(lambda: False, timeout=0.05, message="never true")
    assert wait_for(lambda: 42, timeout=0.05) == 42


async def test_await_until_accepts_sync_and_async() -> None:
    async def async_true() -> str:
        return "ok"

    assert await await_until(async_true, timeout=0.1) == "ok"
    assert await await_until(lambda: 1, timeout=0.1) == 1
    with pytest.raises(AssertionError, match="within"):
        await await_until(lambda: None, timeout=0.05)


def test_testing_module_all_is_sorted_and_importable() -> None:
    import channels_nats.testing as testing

    names = list(testing.__all__)
    assert names == sorted(names)
    for name in names:
        assert hasattr(testing, name)
    assert NatsServer is testing.NatsServer  # tests.servers re-exports it


def test_testing_module_needs_neither_pytest_nor_django_settings() -> None:
    code = (
        "import sys, channels_nats.testing; "
        "assert 'pytest' not in sys.modules, 'pytest imported'; "
        "print('ok')"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
