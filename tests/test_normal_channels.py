"""Normal channels (no ``!``) over JetStream: buffered, bounded, one receiver each."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from channels_nats import ChannelFull, NatsChannelLayer, NormalChannelsUnavailable
from tests.peers import Peer
from tests.servers import await_until

RECEIVE_TIMEOUT = 5


async def recv(layer: NatsChannelLayer, channel: str) -> dict:
    return await asyncio.wait_for(layer.receive(channel), RECEIVE_TIMEOUT)


def layers_setting(url: str, prefix: str, **config: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "channels_nats.NatsChannelLayer",
            "CONFIG": {"servers": [url], "prefix": prefix, **config},
        }
    }


@pytest.fixture
async def peers(nats_server, prefix) -> AsyncIterator[Any]:
    started: list[Peer] = []

    async def start(**config: Any) -> Peer:
        peer = await Peer.start(layers_setting(nats_server.url, prefix, **config))
        started.append(peer)
        return peer

    yield start
    for peer in started:
        await peer.stop()


async def test_messages_sent_before_any_receiver_wait_and_arrive_in_order(layer, other):
    for i in range(10):
        await layer.send("thumbnails", {"type": "job", "i": i})
    got = [(await recv(other, "thumbnails"))["i"] for _ in range(10)]
    assert got == list(range(10))


async def test_capacity_refuses_the_fourth_send_until_one_is_received(
    make_layer,
):
    sender, receiver = make_layer(capacity=3), make_layer(capacity=3)
    for i in range(3):
        await sender.send("bounded", {"type": "m", "i": i})
    with pytest.raises(ChannelFull):
        await sender.send("bounded", {"type": "m", "i": 3})
    assert (await recv(receiver, "bounded"))["i"] == 0
    await sender.send("bounded", {"type": "m", "i": 3})
    assert [(await recv(receiver, "bounded"))["i"] for _ in range(3)] == [1, 2, 3]
    assert sender.stats()["refused_channel_full"] == 1


async def test_channel_capacity_applies_to_normal_channels(make_layer):
    layer = make_layer(capacity=50, channel_capacity={"tiny*": 1})
    await layer.send("tiny-queue", {"type": "m"})
    with pytest.raises(ChannelFull):
        await layer.send("tiny-queue", {"type": "m"})
    for _ in range(3):
        await layer.send("roomy-queue", {"type": "m"})


async def test_expired_messages_are_never_returned(make_layer):
    sender, receiver = make_layer(expiry=0.2), make_layer(expiry=0.2)
    await sender.send("stale", {"type": "old"})
    # The subject of this test is age: wait until the message is older than
    # expiry, measured on the same clock the layer uses.
    sent = time.time()
    await asyncio.sleep(max(0.0, sent + 0.3 - time.time()))
    await sender.send("stale", {"type": "fresh"})
    assert await recv(receiver, "stale") == {"type": "fresh"}


async def test_a_cancelled_receive_loses_no_message(layer, other):
    for _ in range(10):
        waiter = asyncio.create_task(other.receive("cancelme"))
        await asyncio.sleep(0.01)
        await layer.send("cancelme", {"type": "m"})
        waiter.cancel()
        try:
            result = await waiter
        except asyncio.CancelledError:
            result = await recv(other, "cancelme")
        assert result == {"type": "m"}


async def test_several_receivers_in_one_process_share_the_channel(layer, other):
    waiters = [asyncio.create_task(recv(other, "shared")) for _ in range(3)]
    for i in range(3):
        await layer.send("shared", {"type": "m", "i": i})
    got = await asyncio.gather(*waiters)
    assert sorted(m["i"] for m in got) == [0, 1, 2]


async def test_two_receiver_processes_get_each_message_exactly_once(peers, layer):
    p1, p2 = await peers(), await peers()
    total = 1000
    receivers = [
        asyncio.create_task(
            p.call("receive_until_idle", channel="work", idle=2, call_timeout=120)
        )
        for p in (p1, p2)
    ]
    for i in range(total):
        while True:
            try:
                await layer.send("work", {"type": "job", "i": i})
                break
            except ChannelFull:  # receivers catch up
                await asyncio.sleep(0.005)
    got1, got2 = await asyncio.gather(*receivers)
    counts = Counter(m["i"] for m in got1 + got2)
    assert len(got1) + len(got2) == total
    assert set(counts) == set(range(total))
    assert max(counts.values()) == 1
    assert got1 and got2  # both processes took part


async def test_message_held_by_a_killed_receiver_goes_to_another(peers, make_layer):
    holder = await peers(redelivery_timeout=1)
    sender = make_layer(redelivery_timeout=1)
    receiver = make_layer(redelivery_timeout=1)
    await sender.send("precious", {"type": "job", "n": 42})
    held = await holder.call("hold", channel="precious", timeout=5)
    assert held == {"type": "job", "n": 42}
    holder.proc.kill()  # SIGKILL before it acked
    await holder.proc.wait()
    assert await recv(receiver, "precious") == {"type": "job", "n": 42}


async def test_a_group_with_specific_and_normal_members_gets_every_message(
    layer, other
):
    specific = await layer.new_channel()
    await layer.group_add("mixed", specific)
    await layer.group_add("mixed", "mixed-queue")
    for i in range(5):
        await other.group_send("mixed", {"type": "m", "i": i})
    assert [(await recv(layer, specific))["i"] for _ in range(5)] == list(range(5))
    got = [(await recv(other, "mixed-queue"))["i"] for _ in range(5)]
    assert got == list(range(5))
    # Both layers forward (the adder and the receiving one watch the bucket);
    # JetStream kept one copy of each.
    await layer.send("mixed-queue", {"type": "marker"})
    assert await recv(other, "mixed-queue") == {"type": "marker"}


async def test_group_add_of_a_normal_channel_is_seen_by_other_processes(peers, layer):
    peer = await peers()
    await layer.group_add("jobs", "job-queue")
    # The peer never touched this group: it learns from the bucket and
    # forwards even after the adding process has gone.
    assert await peer.call("receive_until_idle", channel="job-queue", idle=0.5) == []
    await layer.close()
    await peer.call("group_send", group="jobs", message={"type": "via-peer"})
    got = await peer.call("receive", channel="job-queue", timeout=RECEIVE_TIMEOUT)
    assert got == {"type": "via-peer"}


async def test_group_discard_of_a_normal_channel_stops_delivery(layer, other):
    await layer.group_add("g", "q-discard")
    await layer.group_discard("g", "q-discard")
    await await_until(lambda: not other.transport.groups.has_members("g"), 3)
    await other.group_send("g", {"type": "dropped"})
    await layer.send("q-discard", {"type": "marker"})
    assert await recv(other, "q-discard") == {"type": "marker"}


async def test_flush_purges_queued_normal_messages(layer, other):
    for i in range(3):
        await layer.send("purge-me", {"type": "m", "i": i})
    await layer.flush()
    await layer.send("purge-me", {"type": "after"})
    assert await recv(other, "purge-me") == {"type": "after"}


async def test_without_jetstream_normal_channels_fail_clearly_and_specific_work(
    nats_server_nojs, prefix
):
    layer = NatsChannelLayer(servers=[nats_server_nojs.url], prefix=prefix)
    other = NatsChannelLayer(servers=[nats_server_nojs.url], prefix=prefix)
    try:
        with pytest.raises(NormalChannelsUnavailable, match="-js"):
            await layer.send("thumbnails", {"type": "m"})
        with pytest.raises(NormalChannelsUnavailable, match="-js"):
            await layer.receive("thumbnails")
        channel = await layer.new_channel()
        await layer.group_add("g", channel)
        await other.send(channel, {"type": "direct"})
        await other.group_send("g", {"type": "group"})
        assert await recv(layer, channel) == {"type": "direct"}
        assert await recv(layer, channel) == {"type": "group"}
    finally:
        await layer.close()
        await other.close()


async def test_a_process_receiving_from_two_loops_acks_each_message_once(layer, other):
    """Receivers on the test's loop and on async_to_sync loops share the inbox.

    Each message is acked on the connection that fetched it, whichever loop
    takes it; none is delivered twice or lost.
    """
    import threading

    from asgiref.sync import async_to_sync

    n = 20
    for i in range(n):
        await layer.send("two-loops", {"type": "m", "i": i})
    from_thread: list[int] = []
    errors: list[BaseException] = []

    def sync_receiver() -> None:
        try:
            for _ in range(n // 2):
                message = async_to_sync(other.receive)("two-loops")
                from_thread.append(message["i"])
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=sync_receiver)
    thread.start()
    from_loop = [(await recv(other, "two-loops"))["i"] for _ in range(n // 2)]
    await asyncio.to_thread(thread.join, 30)
    assert not errors
    assert sorted(from_loop + from_thread) == list(range(n))
    # Nothing is left over or redelivered: the next message is the marker.
    await layer.send("two-loops", {"type": "marker"})
    assert await recv(other, "two-loops") == {"type": "marker"}


async def consumer_waiting(url: str, stream: str, consumer: str) -> bool:
    """Whether ``consumer`` has a pull request waiting on the server."""
    import nats

    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info(stream, consumer)
        return bool(info.num_waiting)
    except Exception:
        return False
    finally:
        await nc.close()


async def test_a_receive_survives_its_consumer_being_deleted(nats_server, layer, other):
    """The fetcher binds again after a failed pull and delivers exactly once.

    A fetcher that fell through to the previous batch after rebinding died on
    its first pull (receivers waited forever) or re-delivered the last batch.
    """
    import nats

    from channels_nats.normal.jetstream import consumer_name

    channel = "rebind-q"
    stream = f"CHNATS_{layer.prefix}_C100"
    consumer = consumer_name(channel)
    for round_ in range(2):  # the first pull, then a pull after messages flowed
        # A pull already waiting sees the deletion at its expiry (FETCH_WAIT).
        waiting = asyncio.ensure_future(asyncio.wait_for(layer.receive(channel), 15))
        await await_until(
            lambda: consumer_waiting(nats_server.url, stream, consumer), 5
        )
        nc = await nats.connect(nats_server.url)
        try:
            await nc.jetstream().delete_consumer(stream, consumer)
        finally:
            await nc.close()
        sent = [{"type": "m", "round": round_, "i": i} for i in range(3)]
        for message in sent:
            await other.send(channel, message)
        got = [await waiting] + [await recv(layer, channel) for _ in range(2)]
        assert got == sent
    # No duplicate waits in front of the next message.
    await other.send(channel, {"type": "m", "i": "last"})
    assert await recv(layer, channel) == {"type": "m", "i": "last"}


async def test_a_receive_waits_through_jetstream_going_away_and_back(
    nats_server_fresh, prefix
):
    """Failed pulls (JetStream unavailable) make the fetcher bind again, not die.

    Restarting the server without JetStream makes every pull fail with an
    error; the fetcher must keep retrying, and deliver each message once
    when JetStream is back with the same store.
    """
    server = nats_server_fresh
    config = {"servers": [server.url], "prefix": prefix, "reconnect_time_wait": 0.05}
    receiver, sender = NatsChannelLayer(**config), NatsChannelLayer(**config)
    channel = "js-away"
    try:
        await sender.send(channel, {"type": "m", "i": -1})
        assert (await recv(receiver, channel))["i"] == -1
        waiting = asyncio.ensure_future(asyncio.wait_for(receiver.receive(channel), 30))
        server.jetstream = False
        await asyncio.to_thread(server.restart, graceful=False)
        # A pull failed, then a re-bind: the fetcher survived the failure.
        await await_until(lambda: receiver.stats()["pull_errors"] >= 2, 20)
        assert not waiting.done()
        server.jetstream = True
        await asyncio.to_thread(server.restart)
        await await_until(lambda: sender.stats()["reconnects"] >= 2, 10)
        for i in range(3):
            await sender.send(channel, {"type": "m", "i": i})
        got = [(await waiting)["i"]] + [
            (await recv(receiver, channel))["i"] for _ in range(2)
        ]
        assert got == [0, 1, 2]
        await sender.send(channel, {"type": "m", "i": "last"})
        assert (await recv(receiver, channel))["i"] == "last"
    finally:
        await receiver.close()
        await sender.close()
