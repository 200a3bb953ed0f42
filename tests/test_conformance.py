"""What a channels_redis user's test suite expects, run against NatsChannelLayer.

The cases follow the behaviours channels_redis documents and tests (send and
receive on normal and specific channels, ordering, capacity, expiry, groups,
cancellation, several event loops, repeated ``async_to_sync``), rewritten for
this project's fixtures.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from asgiref.sync import async_to_sync

from channels_nats import ChannelFull, NatsChannelLayer

TIMEOUT = 5


async def recv(layer: NatsChannelLayer, channel: str) -> dict:
    return await asyncio.wait_for(layer.receive(channel), TIMEOUT)


@pytest.fixture
async def channel_layer(make_layer) -> NatsChannelLayer:
    """A layer with capacity 3, as channels_redis's own test fixture uses."""
    layer = make_layer(capacity=3)
    yield layer
    await layer.flush()


@pytest.fixture
def sync_layer(nats_server):
    layer = NatsChannelLayer(
        servers=[nats_server.url], prefix="c" + uuid.uuid4().hex[:10], capacity=3
    )
    yield layer
    async_to_sync(layer.flush)()
    async_to_sync(layer.close)()


async def test_send_receive_on_a_normal_channel(channel_layer):
    await channel_layer.send("test-channel-1", {"type": "test.message", "text": "Ahoy"})
    message = await recv(channel_layer, "test-channel-1")
    assert message == {"type": "test.message", "text": "Ahoy"}


async def test_send_receive_on_a_process_local_channel(channel_layer):
    name = await channel_layer.new_channel()
    await channel_layer.send(name, {"type": "test.message", "text": "Local only"})
    assert (await recv(channel_layer, name))["text"] == "Local only"


def test_receive_from_two_event_loops(sync_layer):
    one = async_to_sync(sync_layer.new_channel)()
    two = async_to_sync(sync_layer.new_channel)()
    async_to_sync(sync_layer.send)(one, {"type": "test.message.1"})
    async_to_sync(sync_layer.send)(two, {"type": "test.message.2"})

    async def listen(channel: str) -> str:
        return (await recv(sync_layer, channel))["type"]

    assert async_to_sync(listen)(two) == "test.message.2"
    assert async_to_sync(listen)(one) == "test.message.1"


def test_repeated_async_to_sync_send_and_receive_on_a_normal_channel(sync_layer):
    for i in range(10):
        async_to_sync(sync_layer.send)("sync-normal", {"type": "m", "i": i})
        assert async_to_sync(sync_layer.receive)("sync-normal") == {"type": "m", "i": i}


def test_one_layer_used_from_successive_asyncio_run_loops(sync_layer):
    async def make() -> str:
        return await sync_layer.new_channel()

    channel = asyncio.run(make())

    async def send() -> None:
        await sync_layer.send(channel, {"type": "m"})

    async def receive() -> dict:
        return await recv(sync_layer, channel)

    asyncio.run(send())
    assert asyncio.run(receive()) == {"type": "m"}


async def test_send_capacity_on_a_normal_channel(channel_layer):
    for _ in range(3):
        await channel_layer.send("test-channel-1", {"type": "test.message"})
    with pytest.raises(ChannelFull):
        await channel_layer.send("test-channel-1", {"type": "test.message"})


async def test_channel_capacity_for_one_name(make_layer):
    layer = make_layer(capacity=3, channel_capacity={"one": 1})
    await layer.send("one", {"type": "test.message"})
    with pytest.raises(ChannelFull):
        await layer.send("one", {"type": "test.message"})


async def test_ordering_of_overlapping_sends(make_layer):
    layer = make_layer()
    for n in (1, 2, 3):
        await layer.send("test-channel-3", {"type": f"message.{n}"})
    got = [(await recv(layer, "test-channel-3"))["type"] for _ in range(3)]
    assert got == ["message.1", "message.2", "message.3"]


async def test_bad_channel_names_are_rejected(channel_layer):
    with pytest.raises(TypeError):
        await channel_layer.send("=+135!", {"type": "foom"})
    with pytest.raises(TypeError):
        await channel_layer.receive("=+135!")


async def test_groups_basic_with_discard(make_layer):
    layer = make_layer()
    c1 = await layer.new_channel(prefix="test-gr-chan-1")
    c2 = await layer.new_channel(prefix="test-gr-chan-2")
    c3 = await layer.new_channel(prefix="test-gr-chan-3")
    for channel in (c1, c2, c3):
        await layer.group_add("test-group", channel)
    await layer.group_discard("test-group", c2)
    await layer.group_send("test-group", {"type": "message.1"})
    assert (await recv(layer, c1))["type"] == "message.1"
    assert (await recv(layer, c3))["type"] == "message.1"
    await layer.send(c2, {"type": "marker"})
    assert (await recv(layer, c2))["type"] == "marker"  # it never got message.1


async def test_group_send_ignores_channel_full(channel_layer):
    await channel_layer.group_add("test-group", "test-gr-chan-1")
    for _ in range(5):
        await channel_layer.group_send("test-group", {"type": "message.1"})
    got = [await recv(channel_layer, "test-gr-chan-1") for _ in range(3)]
    assert got == [{"type": "message.1"}] * 3


async def test_group_members_with_the_same_prefix(make_layer):
    layer = make_layer()
    channels = [await layer.new_channel(prefix="same") for _ in range(3)]
    for channel in channels:
        await layer.group_add("same-prefix", channel)
    await layer.group_send("same-prefix", {"type": "message.1"})
    for channel in channels:
        assert (await recv(layer, channel))["type"] == "message.1"


@pytest.mark.parametrize("kind", ["normal", "specific"])
async def test_earliest_message_expires_first(make_layer, kind):
    layer = make_layer(expiry=0.2)
    channel = "expiry-q" if kind == "normal" else await layer.new_channel()
    await layer.send(channel, {"type": "message.1"})
    await asyncio.sleep(0.3)  # the message's age is what is tested
    await layer.send(channel, {"type": "message.2"})
    assert (await recv(layer, channel))["type"] == "message.2"


async def test_group_messages_expire_too(make_layer):
    layer = make_layer(expiry=0.2)
    channel = await layer.new_channel()
    await layer.group_add("expiring", channel)
    await layer.group_send("expiring", {"type": "message.1"})
    await asyncio.sleep(0.3)  # the message's age is what is tested
    await layer.group_send("expiring", {"type": "message.2"})
    assert (await recv(layer, channel))["type"] == "message.2"


@pytest.mark.parametrize("kind", ["normal", "specific"])
async def test_receive_cancelled_repeatedly_keeps_every_message(make_layer, kind):
    layer = make_layer(capacity=30)
    channel = "cancel-q" if kind == "normal" else await layer.new_channel()
    received = []
    for i in range(10):
        # A waiting receive on the channel times out (is cancelled)...
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(channel), 0.05)
        # ...and the next message still reaches the next receive.
        await layer.send(channel, {"type": "m", "i": i})
        received.append((await recv(layer, channel))["i"])
    assert received == list(range(10))


async def test_at_most_one_delivery_per_message(make_layer):
    sender, a, b = make_layer(), make_layer(), make_layer()
    for i in range(20):
        await sender.send("once", {"type": "m", "i": i})

    async def drain(layer: NatsChannelLayer) -> list[int]:
        got = []
        while True:
            try:
                got.append((await asyncio.wait_for(layer.receive("once"), 1))["i"])
            except asyncio.TimeoutError:
                return got

    one, two = await asyncio.gather(drain(a), drain(b))
    assert sorted(one + two) == list(range(20))


@pytest.mark.parametrize("size", [50_000, 500_000])
async def test_big_realistic_messages(make_layer, size):
    layer = make_layer()
    body = os.urandom(size)
    specific = await layer.new_channel()
    await layer.send(specific, {"type": "big", "data": body})
    await layer.send("big-q", {"type": "big", "data": body})
    assert (await recv(layer, specific))["data"] == body
    assert (await recv(layer, "big-q"))["data"] == body


async def test_layer_has_the_documented_extensions(channel_layer):
    assert set(channel_layer.extensions) == {"groups", "flush"}
