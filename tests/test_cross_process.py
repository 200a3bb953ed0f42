"""The core guarantees between OS processes.

Each peer is a separate Python process that builds its layer from a
``CHANNEL_LAYERS`` setting through ``channels.layers.get_channel_layer()``;
the test process holds a layer of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from channels_nats import NatsChannelLayer
from tests.peers import Peer

BACKEND = "channels_nats.NatsChannelLayer"


def channel_layers(url: str, prefix: str, **config: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": BACKEND,
            "CONFIG": {"servers": [url], "prefix": prefix, **config},
        }
    }


StartPeer = Callable[..., Awaitable[Peer]]


@pytest.fixture
async def start_peer(nats_server, prefix) -> AsyncIterator[StartPeer]:
    peers: list[Peer] = []

    async def start(**config: Any) -> Peer:
        config.setdefault("prefix", prefix)
        peer = await Peer.start(channel_layers(nats_server.url, **config))
        peers.append(peer)
        return peer

    yield start
    await asyncio.gather(*(p.stop() for p in peers))


async def test_specific_channels_between_processes(start_peer, layer):
    peer = await start_peer()
    theirs = await peer.call("new_channel")
    mine = await layer.new_channel()
    await layer.send(theirs, {"type": "ping", "n": 1})
    assert await peer.call("receive", channel=theirs, timeout=5) == {
        "type": "ping",
        "n": 1,
    }
    await peer.call("send", channel=mine, message={"type": "pong", "n": 2})
    assert await asyncio.wait_for(layer.receive(mine), 5) == {"type": "pong", "n": 2}


async def test_group_fan_out_reaches_members_in_every_process(start_peer, layer):
    p1, p2 = await start_peer(), await start_peer()
    c1a, c1b = await p1.call("new_channel"), await p1.call("new_channel")
    c2 = await p2.call("new_channel")
    mine = await layer.new_channel()
    for peer, channel in ((p1, c1a), (p1, c1b), (p2, c2)):
        await peer.call("group_add", group="room", channel=channel)
    await layer.group_add("room", mine)

    await p2.call("group_send", group="room", message={"type": "chat", "text": "hi"})
    expected = {"type": "chat", "text": "hi"}
    got = await asyncio.gather(
        p1.call("receive", channel=c1a, timeout=5),
        p1.call("receive", channel=c1b, timeout=5),
        p2.call("receive", channel=c2, timeout=5),
        asyncio.wait_for(layer.receive(mine), 5),
    )
    assert got == [expected] * 4
    # The sender's local member got it exactly once (no echo).
    await p1.call("send", channel=c2, message={"type": "marker"})
    assert await p2.call("receive", channel=c2, timeout=5) == {"type": "marker"}


async def test_group_add_of_a_channel_owned_by_another_process(start_peer, layer):
    peer = await start_peer()
    theirs = await peer.call("new_channel")
    await layer.group_add("remote", theirs)  # control request to its owner
    await layer.group_send("remote", {"type": "m"})
    assert await peer.call("receive", channel=theirs, timeout=5) == {"type": "m"}
    await layer.group_discard("remote", theirs)
    await layer.group_send("remote", {"type": "after-discard"})
    await layer.send(theirs, {"type": "marker"})
    assert await peer.call("receive", channel=theirs, timeout=5) == {"type": "marker"}


async def test_fast_sender_process_gets_channel_full_and_loses_nothing(
    start_peer, make_layer
):
    layer = make_layer(capacity=10)
    peer = await start_peer(capacity=10)
    mine = await layer.new_channel()
    # Nobody receives yet: the peer's window for this channel runs out.
    sent = await peer.call("send_many", channel=mine, n=50)
    assert sent == 10
    got = [(await asyncio.wait_for(layer.receive(mine), 5))["i"] for _ in range(10)]
    assert got == list(range(10))
    assert layer.stats()["dropped_capacity"] == 0
    assert len(layer.transport.inbox) == 0  # nothing beyond the window arrived

    # Credit comes back: the peer can send again, and those arrive too.
    async def resend() -> int:
        return await peer.call("send_many", channel=mine, n=1)

    for _ in range(200):
        if await resend() == 1:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the sender never got credit back")
    assert (await asyncio.wait_for(layer.receive(mine), 5))["i"] == 0


async def test_prefix_isolates_processes_on_one_server(start_peer, layer, prefix):
    peer = await start_peer(prefix=prefix + "-other")
    theirs = await peer.call("new_channel")
    mine = await layer.new_channel()
    await peer.call("group_add", group="same", channel=theirs)
    await layer.group_add("same", mine)
    await layer.group_send("same", {"type": "mine-only"})
    await peer.call("group_send", group="same", message={"type": "theirs-only"})
    assert await asyncio.wait_for(layer.receive(mine), 5) == {"type": "mine-only"}
    assert await peer.call("receive", channel=theirs, timeout=5) == {
        "type": "theirs-only"
    }
    # A flush in one prefix leaves the other alone.
    await layer.flush()
    await peer.call("group_send", group="same", message={"type": "still-here"})
    assert await peer.call("receive", channel=theirs, timeout=5) == {
        "type": "still-here"
    }


async def test_layer_from_channel_layers_setting_matches_direct_construction(
    start_peer, nats_server, prefix
):
    peer = await start_peer()
    stats = await peer.call("stats")
    assert stats["connections"] == 0  # lazily connected
    direct = NatsChannelLayer(servers=[nats_server.url], prefix=prefix)
    try:
        channel = await direct.new_channel()
        await peer.call("send", channel=channel, message={"type": "m"})
        assert await asyncio.wait_for(direct.receive(channel), 5) == {"type": "m"}
    finally:
        await direct.close()


async def test_close_right_after_a_burst_delivers_everything(nats_server, prefix):
    """A process that sends a burst and closes at once loses none of it.

    Closing a socket with unread frames (returned credits) made the kernel
    reset it, and the server threw away publishes it had not read yet.
    """
    burst = 100_000
    settings = {
        "default": {
            "BACKEND": "channels_nats.NatsChannelLayer",
            "CONFIG": {
                "servers": [nats_server.url],
                "prefix": prefix,
                "capacity": burst,
            },
        }
    }
    receiver = NatsChannelLayer(
        servers=[nats_server.url], prefix=prefix, capacity=burst
    )
    try:
        for run in range(3):
            channel = await receiver.new_channel()
            sender = await Peer.start(settings)
            sent = await sender.call("send_many", channel=channel, n=burst)
            await sender.stop()  # layer.close(), then the process exits
            assert sent == burst
            got = 0
            while got < burst:
                message = await asyncio.wait_for(receiver.receive(channel), 10)
                assert message["i"] == got, f"run {run}: a gap before {got}"
                got += 1
        assert receiver.stats()["lost_in_transit"] == 0
    finally:
        await receiver.close()
