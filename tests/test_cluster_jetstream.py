"""Normal channels on a 3-node cluster with replicated (R3) streams."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats.js.errors
import pytest

from channels_nats import NatsChannelLayer
from channels_nats.normal.jetstream import ERR_NO_SUITABLE_PEERS
from channels_nats.subjects import token
from channels_nats.testing import NatsCluster
from channels_nats.testing.waiting import await_until

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


async def test_a_stream_waits_for_its_replicas_while_a_node_joins(prefix, caplog):
    """R3 placement refused for lack of servers is retried, not raised.

    Two of three nodes run: the server refuses to place three replicas ("no
    suitable peers for placement", 10005), which happens for real while a
    cluster forms or a restarted node catches up. The send waits; once the
    third node joins, the stream is placed and the message goes through.
    """
    caplog.set_level(logging.DEBUG, logger="channels_nats.normal.jetstream")
    cluster = NatsCluster(3)
    n1, n2, n3 = cluster.nodes
    layer = None
    try:
        await asyncio.to_thread(n1.start)
        await asyncio.to_thread(n2.start)
        layer = NatsChannelLayer(
            servers=[n1.url, n2.url], prefix=prefix, jetstream_replicas=3
        )
        sending = asyncio.ensure_future(
            layer.send("joining-q", {"type": "m", "text": "placed"})
        )

        def refused_for_placement() -> bool:
            if sending.done():
                sending.result()  # raises what the send raised
            return any(
                isinstance(arg, nats.js.errors.BadRequestError)
                and arg.err_code == ERR_NO_SUITABLE_PEERS
                for record in caplog.records
                if record.getMessage().endswith("retrying")
                for arg in (record.args or ())
            )

        await await_until(refused_for_placement, TIMEOUT)
        assert not sending.done(), "the send must wait for placement"
        await asyncio.to_thread(n3.start)
        await asyncio.wait_for(sending, TIMEOUT)
        got = await asyncio.wait_for(layer.receive("joining-q"), TIMEOUT)
        assert got == {"type": "m", "text": "placed"}
    finally:
        if layer is not None:
            await layer.close()
        await asyncio.to_thread(cluster.close)
