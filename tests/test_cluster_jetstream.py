"""Normal channels on a 3-node cluster with replicated (R3) streams."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from channels_nats import NatsChannelLayer
from channels_nats.subjects import token

pytestmark = pytest.mark.cluster

TIMEOUT = 20  # a stream leader election after a node loss takes a few seconds


@pytest.fixture
async def r3_layers(nats_cluster, prefix):
    made = []

    def make(*urls: str) -> NatsChannelLayer:
        layer = NatsChannelLayer(
            servers=list(urls),
            prefix=prefix,
            jetstream_replicas=3,
            reconnect_time_wait=0.1,
        )
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.close()


async def stream_leader(url: str, stream: str) -> str:
    import nats

    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(stream)
        return info.cluster.leader
    finally:
        await nc.close()


async def test_normal_channel_across_nodes_survives_losing_the_stream_leader(
    nats_cluster, r3_layers, prefix
):
    n1, n2, n3 = nats_cluster.nodes
    # Each layer starts on its own node and knows the others for failover.
    sender = r3_layers(n1.url, n2.url, n3.url)
    receiver = r3_layers(n2.url, n3.url, n1.url)
    for i in range(5):
        await sender.send("cluster-q", {"type": "m", "i": i})
    got = [
        (await asyncio.wait_for(receiver.receive("cluster-q"), TIMEOUT))["i"]
        for _ in range(5)
    ]
    assert got == list(range(5))

    # Kill the node that leads the stream: JetStream elects another leader
    # (about 3 s) while the layer retries, and the layer connected to that
    # node, if any, reconnects to another.
    leader_name = await stream_leader(n1.url, f"CHNATS_{token(prefix)}_C100")
    leader = next(node for node in nats_cluster.nodes if node.name == leader_name)
    await asyncio.to_thread(leader.kill)
    try:
        for i in range(5, 10):
            await sender.send("cluster-q", {"type": "m", "i": i})
        got = [
            (await asyncio.wait_for(receiver.receive("cluster-q"), TIMEOUT))["i"]
            for _ in range(5)
        ]
        assert got == list(range(5, 10))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(leader.restart)
        await asyncio.to_thread(nats_cluster.wait_until_formed, 30)


async def test_a_waiting_receive_gets_each_message_once_after_the_leader_dies(
    nats_cluster, r3_layers, prefix
):
    """A pull that fails while the stream leader is re-elected binds again.

    The fetcher used to fall through to the previous batch after rebinding: it
    died on a first pull or accepted the last batch twice.
    """
    n1, n2, n3 = nats_cluster.nodes
    sender = r3_layers(n1.url, n2.url, n3.url)
    receiver = r3_layers(n2.url, n3.url, n1.url)
    channel = "cluster-wait"
    await sender.send(channel, {"type": "m", "i": -1})  # creates the stream
    assert (await asyncio.wait_for(receiver.receive(channel), TIMEOUT))["i"] == -1
    waiting = asyncio.ensure_future(
        asyncio.wait_for(receiver.receive(channel), 2 * TIMEOUT)
    )
    await asyncio.sleep(0)  # let the receive start pulling
    leader_name = await stream_leader(n1.url, f"CHNATS_{token(prefix)}_C100")
    leader = next(node for node in nats_cluster.nodes if node.name == leader_name)
    await asyncio.to_thread(leader.kill)
    try:
        for i in range(5):
            await sender.send(channel, {"type": "m", "i": i})
        got = [(await waiting)["i"]] + [
            (await asyncio.wait_for(receiver.receive(channel), TIMEOUT))["i"]
            for _ in range(4)
        ]
        assert got == list(range(5))
        await sender.send(channel, {"type": "m", "i": "last"})
        last = await asyncio.wait_for(receiver.receive(channel), TIMEOUT)
        assert last["i"] == "last"  # no duplicate waited in front of it
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(leader.restart)
        await asyncio.to_thread(nats_cluster.wait_until_formed, 30)
