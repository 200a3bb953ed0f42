"""The layer survives the failures a NATS deployment has: no server at start,
server restarts and outages, oversized messages, cluster nodes dying."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from channels_nats import (
    ConnectionUnavailable,
    MessageTooLarge,
    NatsChannelLayer,
    NatsLayerError,
)
from tests.servers import NatsCluster, NatsServer, await_until, free_port

RECEIVE_TIMEOUT = 5.0
FAST_RECONNECT = {"reconnect_time_wait": 0.1}

LayerFactory = Callable[..., NatsChannelLayer]


@pytest.fixture
async def make_layer(prefix: str) -> AsyncIterator[LayerFactory]:
    """Build layers on the test's prefix; all are closed when the test ends."""
    made: list[NatsChannelLayer] = []

    def make(servers: Sequence[str], **opts: Any) -> NatsChannelLayer:
        layer = NatsChannelLayer(servers=list(servers), prefix=prefix, **opts)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.close()


async def receive_matching(
    layer: NatsChannelLayer,
    channel: str,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float,
) -> dict[str, Any]:
    """Receive until a message satisfies ``predicate``; skip stale ones."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(
                f"no matching message on {channel} within {timeout}s; "
                f"stats: {layer.stats()}"
            )
        try:
            message = await asyncio.wait_for(layer.receive(channel), left)
        except asyncio.TimeoutError:
            continue
        if predicate(message):
            return message


async def send_until_received(
    send: Callable[[dict[str, Any]], Awaitable[None]],
    layer: NatsChannelLayer,
    channel: str,
    tag: str,
    timeout: float = 10.0,
    per_try: float = 0.2,
) -> dict[str, Any]:
    """Send tagged messages until ``layer`` receives one on ``channel``.

    For when the route to the receiver is still being (re)established, so a
    message sent now may legitimately find no subscriber yet.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for attempt in itertools.count():
        await send({"tag": tag, "attempt": attempt})
        try:
            return await receive_matching(
                layer, channel, lambda m: m.get("tag") == tag, per_try
            )
        except AssertionError:
            if loop.time() >= deadline:
                raise AssertionError(
                    f"{tag!r} never reached {channel} in {timeout}s "
                    f"({attempt + 1} sends); receiver stats: {layer.stats()}"
                ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _no_drops(layer: NatsChannelLayer) -> None:
    stats = layer.stats()
    dropped = {k: v for k, v in stats.items() if k.startswith("dropped_") and v}
    assert not dropped, stats
    assert stats["malformed_frames"] == 0, stats


# -- first connect -----------------------------------------------------------


async def test_first_connect_without_server_fails_fast_with_actionable_error(
    make_layer: LayerFactory,
) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    layer = make_layer([url], connect_timeout=1)

    started = time.monotonic()
    with pytest.raises(ConnectionUnavailable) as info:
        await layer.new_channel()
    elapsed = time.monotonic() - started

    assert elapsed < 5, f"first connect took {elapsed:.1f}s with connect_timeout=1"
    assert isinstance(info.value, ConnectionError)
    assert isinstance(info.value, NatsLayerError)
    text = str(info.value)
    assert url in text
    assert "nats-server" in text
    assert "CONFIG['servers']" in text

    # Every entry point is bounded the same way, and nothing stays open.
    started = time.monotonic()
    with pytest.raises(ConnectionUnavailable):
        await layer.group_send("room", {"type": "x"})
    assert time.monotonic() - started < 5
    assert layer.stats()["connections"] == 0


# -- single server restarts and outages ------------------------------------------


async def test_server_restart_keeps_group_memberships_and_specific_channels(
    nats_server_fresh: NatsServer, make_layer: LayerFactory
) -> None:
    a = make_layer([nats_server_fresh.url], **FAST_RECONNECT)
    b = make_layer([nats_server_fresh.url], **FAST_RECONNECT)
    channel = await a.new_channel()
    await a.group_add("room", channel)
    await b.send(channel, {"tag": "before"})
    assert await asyncio.wait_for(a.receive(channel), RECEIVE_TIMEOUT) == {
        "tag": "before"
    }

    await asyncio.to_thread(nats_server_fresh.restart)

    await send_until_received(
        lambda m: b.group_send("room", m), a, channel, "group-after-restart"
    )
    await send_until_received(
        lambda m: b.send(channel, m), a, channel, "direct-after-restart"
    )
    assert a.stats()["reconnects"] >= 1
    assert a.stats()["disconnects"] >= 1

    # A membership made by another process after the restart works too.
    await b.group_add("room2", channel)
    await send_until_received(
        lambda m: b.group_send("room2", m), a, channel, "new-group-after-restart"
    )
    _no_drops(a)


async def test_remote_group_add_while_owner_reconnects_is_not_silently_lost(
    nats_server_fresh: NatsServer, make_layer: LayerFactory
) -> None:
    """group_add must either raise or take effect: returning normally while
    the owner missed the request loses the membership without a trace."""
    # The owner waits 2 s between reconnect attempts, the other process 0.1 s:
    # right after the restart only the other one is connected.
    owner = make_layer([nats_server_fresh.url], reconnect_time_wait=2.0)
    other = make_layer([nats_server_fresh.url], **FAST_RECONNECT)
    channel = await owner.new_channel()
    await other.send(channel, {"tag": "before"})
    assert await asyncio.wait_for(owner.receive(channel), RECEIVE_TIMEOUT) == {
        "tag": "before"
    }

    await asyncio.to_thread(nats_server_fresh.restart)
    await await_until(lambda: other.stats()["reconnects"] >= 1, RECEIVE_TIMEOUT)
    assert owner.stats()["reconnects"] == 0, "owner reconnected too early"

    try:
        await other.group_add("late", channel)
    except NatsLayerError:
        return  # refused loudly: the caller knows the membership is missing
    await await_until(lambda: owner.stats()["reconnects"] >= 1, RECEIVE_TIMEOUT)
    await send_until_received(
        lambda m: other.group_send("late", m),
        owner,
        channel,
        "late-membership",
        timeout=3.0,
    )


async def test_group_send_during_outage_is_delivered_or_counted_as_lost(
    nats_server_fresh: NatsServer, make_layer: LayerFactory
) -> None:
    a = make_layer([nats_server_fresh.url], **FAST_RECONNECT)
    b = make_layer([nats_server_fresh.url], **FAST_RECONNECT)
    channel = await a.new_channel()
    await a.group_add("room", channel)
    await b.group_send("room", {"tag": "before"})
    assert await asyncio.wait_for(a.receive(channel), RECEIVE_TIMEOUT) == {
        "tag": "before"
    }

    await asyncio.to_thread(nats_server_fresh.stop)
    await await_until(
        lambda: a.stats()["disconnects"] >= 1 and b.stats()["disconnects"] >= 1,
        RECEIVE_TIMEOUT,
        message="both layers noticed the outage",
    )
    for i in range(3):
        await b.group_send("room", {"tag": "outage", "i": i})  # buffered
    await asyncio.to_thread(nats_server_fresh.start)

    # nats-py sends b's buffered publishes as soon as b is back; core NATS
    # drops those that reach the server before a has re-subscribed. Whether
    # that happens is a race, but no message may vanish unnoticed: every frame
    # b sent after "before" must be delivered or counted as lost_in_transit.
    delivered: list[int] = []
    probes_sent = probes_seen = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10

    async def drain(idle: float) -> None:
        nonlocal probes_seen
        while True:
            try:
                message = await asyncio.wait_for(a.receive(channel), idle)
            except asyncio.TimeoutError:
                return
            if message.get("tag") == "outage":
                delivered.append(message["i"])
            elif message.get("tag") == "probe":
                probes_seen += 1
            elif message.get("tag") == "final":
                return

    while probes_seen == 0:  # until a's subscription is back
        assert loop.time() < deadline, a.stats()
        await b.group_send("room", {"tag": "probe"})
        probes_sent += 1
        await drain(0.2)
    # One more frame that surely arrives, so any gap before it is counted.
    await b.group_send("room", {"tag": "final"})
    await drain(RECEIVE_TIMEOUT)

    lost = a.stats()["lost_in_transit"]
    assert len(delivered) + probes_seen + lost == 3 + probes_sent, (
        delivered,
        probes_seen,
        probes_sent,
        a.stats(),
    )
    assert delivered == sorted(delivered)
    assert a.stats()["reconnects"] >= 1
    assert b.stats()["reconnects"] >= 1


# -- max_payload ---------------------------------------------------------------


async def test_message_over_max_payload_raises_and_connection_survives(
    nats_server: NatsServer, make_layer: LayerFactory
) -> None:
    a = make_layer([nats_server.url])
    b = make_layer([nats_server.url])
    channel = await a.new_channel()
    await a.group_add("room", channel)
    huge = {"type": "big", "blob": b"x" * 1_100_000}  # default max_payload 1 MiB

    with pytest.raises(MessageTooLarge) as info:
        await b.send(channel, huge)
    assert isinstance(info.value, ValueError)
    assert "max_payload=1048576" in str(info.value)
    with pytest.raises(MessageTooLarge):
        await b.group_send("room", huge)
    # Also refused when the sender has a local member: nothing is delivered.
    with pytest.raises(MessageTooLarge):
        await a.group_send("room", huge)

    await b.send(channel, {"type": "small"})
    assert await asyncio.wait_for(a.receive(channel), RECEIVE_TIMEOUT) == {
        "type": "small"
    }
    await b.group_send("room", {"type": "small-group"})
    assert await asyncio.wait_for(a.receive(channel), RECEIVE_TIMEOUT) == {
        "type": "small-group"
    }
    for layer in (a, b):
        _no_drops(layer)
        assert layer.stats()["disconnects"] == 0
        assert layer.stats()["refused_channel_full"] == 0


async def test_max_payload_limit_is_the_servers_not_a_constant(
    tmp_path: Path, make_layer: LayerFactory
) -> None:
    conf = tmp_path / "small.conf"
    conf.write_text("max_payload: 4096\n")
    with NatsServer(
        name="small", jetstream=False, extra_args=["-c", str(conf)]
    ) as server:
        a = make_layer([server.url])
        b = make_layer([server.url])
        channel = await a.new_channel()
        with pytest.raises(MessageTooLarge) as info:
            await b.send(channel, {"blob": b"x" * 5000})
        assert "max_payload=4096" in str(info.value)
        await b.send(channel, {"blob": b"x" * 3000})
        message = await asyncio.wait_for(a.receive(channel), RECEIVE_TIMEOUT)
        assert message == {"blob": b"x" * 3000}
        _no_drops(a)
        await a.close()
        await b.close()


# -- cluster ---------------------------------------------------------------------


@pytest.mark.cluster
async def test_cluster_delivers_between_layers_on_different_nodes(
    nats_cluster: NatsCluster, make_layer: LayerFactory
) -> None:
    url1, url2, url3 = nats_cluster.urls
    a = make_layer([url1])
    b = make_layer([url2])
    c = make_layer([url3])
    channel = await a.new_channel()

    # Interest crosses the routes asynchronously: retry until it has.
    await send_until_received(lambda m: b.send(channel, m), a, channel, "direct")
    # Remote control request crossing nodes.
    await b.group_add("room", channel)
    await send_until_received(
        lambda m: b.group_send("room", m), a, channel, "group-from-2"
    )
    await send_until_received(
        lambda m: c.group_send("room", m), a, channel, "group-from-3"
    )
    _no_drops(a)


@pytest.mark.cluster
async def test_cluster_node_death_fails_over_with_group_membership(
    nats_cluster: NatsCluster, make_layer: LayerFactory
) -> None:
    d = make_layer(nats_cluster.urls, **FAST_RECONNECT)
    channel = await d.new_channel()
    await d.group_add("fo", channel)

    home = d.transport.links.home
    assert home is not None and home.nc is not None
    ports = [node.port for node in nats_cluster.nodes]
    victim = ports.index(home.nc.connected_url.port)
    killed = nats_cluster.nodes[victim]
    sender = make_layer([nats_cluster.urls[(victim + 1) % len(ports)]])

    await send_until_received(
        lambda m: sender.group_send("fo", m), d, channel, "before"
    )
    try:
        await asyncio.to_thread(killed.kill)
        await send_until_received(
            lambda m: sender.group_send("fo", m),
            d,
            channel,
            "after-failover",
            timeout=15.0,
        )
        assert d.stats()["reconnects"] >= 1
        assert home.nc.connected_url.port != killed.port
    finally:
        if not killed.running:
            await asyncio.to_thread(killed.start)
        await asyncio.to_thread(nats_cluster.wait_until_formed, 30.0)
