"""The Channels layer contract for specific channels and groups (DESIGN section 2).

Two layer instances on one prefix behave like two processes as far as NATS is
concerned (each has its own client id and connection); the truly
cross-process cases are in test_cross_process.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from channels_nats import (
    ChannelFull,
    LayerClosed,
    MessageTooLarge,
    NatsChannelLayer,
)
from tests.servers import await_until

RECEIVE_TIMEOUT = 3


async def recv(layer: NatsChannelLayer, channel: str) -> dict:
    return await asyncio.wait_for(layer.receive(channel), RECEIVE_TIMEOUT)


async def test_new_channel_is_specific_and_owned_by_this_layer(layer):
    name = await layer.new_channel()
    assert name.startswith(f"specific.{layer.client_id}!")
    assert name != await layer.new_channel()
    named = await layer.new_channel(prefix="http.response")
    assert named.startswith(f"http.response.{layer.client_id}!")


async def test_send_to_own_channel_is_received(layer):
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "test.message", "text": "hi"})
    assert await recv(layer, channel) == {"type": "test.message", "text": "hi"}


async def test_send_reaches_a_channel_of_another_layer(layer, other):
    channel = await layer.new_channel()
    await other.send(channel, {"type": "x", "n": 1, "blob": b"\x00\x01"})
    assert await recv(layer, channel) == {"type": "x", "n": 1, "blob": b"\x00\x01"}


async def test_received_messages_are_copies(layer):
    channel = await layer.new_channel()
    message = {"type": "x", "items": [1]}
    await layer.send(channel, message)
    message["items"].append(2)
    assert await recv(layer, channel) == {"type": "x", "items": [1]}


async def test_fifo_per_sender_when_send_and_group_send_mix(layer, other):
    channel = await layer.new_channel()
    await layer.group_add("mix", channel)
    for i in range(60):
        if i % 3:
            await other.send(channel, {"type": "m", "i": i})
        else:
            await other.group_send("mix", {"type": "m", "i": i})
    got = [(await recv(layer, channel))["i"] for _ in range(60)]
    assert got == list(range(60))


async def test_several_receivers_on_one_channel_each_get_one_message(layer, other):
    channel = await layer.new_channel()
    waiters = [asyncio.create_task(layer.receive(channel)) for _ in range(3)]
    await await_until(lambda: layer.transport.inbox.waiting(channel) == 3, timeout=3)
    for i in range(3):
        await other.send(channel, {"type": "m", "i": i})
    results = await asyncio.wait_for(asyncio.gather(*waiters), RECEIVE_TIMEOUT)
    assert sorted(r["i"] for r in results) == [0, 1, 2]


async def test_cancelled_receive_loses_no_message(layer, other):
    channel = await layer.new_channel()
    for _ in range(20):
        waiter = asyncio.create_task(layer.receive(channel))
        await asyncio.sleep(0)
        await other.send(channel, {"type": "m"})
        # Cancel at whatever point the delivery has reached.
        waiter.cancel()
        try:
            result = await waiter
        except asyncio.CancelledError:
            assert await recv(layer, channel) == {"type": "m"}
        else:
            assert result == {"type": "m"}


async def test_local_capacity_raises_channel_full(make_layer):
    layer = make_layer(capacity=3)
    channel = await layer.new_channel()
    for i in range(3):
        await layer.send(channel, {"type": "m", "i": i})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "m", "i": 3})
    assert (await recv(layer, channel))["i"] == 0
    await layer.send(channel, {"type": "m", "i": 3})
    assert layer.stats()["refused_channel_full"] == 1


async def test_channel_capacity_overrides_by_glob(make_layer):
    layer = make_layer(capacity=100, channel_capacity={"tiny.*": 1})
    tiny = await layer.new_channel(prefix="tiny")
    await layer.send(tiny, {"type": "m"})
    with pytest.raises(ChannelFull):
        await layer.send(tiny, {"type": "m"})
    roomy = await layer.new_channel()
    for _ in range(5):
        await layer.send(roomy, {"type": "m"})


async def test_a_subclass_get_capacity_is_asked_on_every_send(nats_server, prefix):
    # The layer keeps Channels' answer per channel; a subclass's own rule
    # may change its mind, so it is not kept.
    class Adjustable(NatsChannelLayer):
        limit = 1

        def get_capacity(self, channel):
            return self.limit

    layer = Adjustable(servers=[nats_server.url], prefix=prefix, capacity=100)
    try:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "m"})
        with pytest.raises(ChannelFull):
            await layer.send(channel, {"type": "m"})
        layer.limit = 2
        await layer.send(channel, {"type": "m"})
        assert [await layer.receive(channel) for _ in range(2)] == [{"type": "m"}] * 2
    finally:
        await layer.close()


async def test_remote_sender_gets_channel_full_instead_of_loss(make_layer):
    receiver = make_layer(capacity=5)
    sender = make_layer(capacity=5)
    channel = await receiver.new_channel()
    for i in range(5):
        await sender.send(channel, {"type": "m", "i": i})
    started = time.monotonic()
    with pytest.raises(ChannelFull):
        await sender.send(channel, {"type": "m", "i": 5})
    # Refused after the bounded wait for credit (5 ms) and one PING, not
    # after a timeout; and the refused sender left no waiter behind.
    assert time.monotonic() - started < 1.0
    assert sender.stats()["credit_waits"] == 1
    assert not sender.transport.windows._waiters
    # Consuming returns credit to the sender (in a batch, after receive()).
    got = [(await recv(receiver, channel))["i"] for _ in range(5)]
    assert got == [0, 1, 2, 3, 4]

    async def can_send() -> bool:
        try:
            await sender.send(channel, {"type": "m", "i": 99})
        except ChannelFull:
            return False
        return True

    await await_until(can_send, timeout=3)
    assert (await recv(receiver, channel))["i"] == 99
    assert receiver.stats()["dropped_capacity"] == 0


async def test_fast_sender_loses_nothing_with_back_pressure(make_layer):
    receiver = make_layer(capacity=10)
    sender = make_layer(capacity=10)
    channel = await receiver.new_channel()
    total = 500

    async def produce() -> int:
        full = 0
        i = 0
        while i < total:
            try:
                await sender.send(channel, {"type": "m", "i": i})
                i += 1
            except ChannelFull:
                full += 1
                await asyncio.sleep(0.001)
        return full

    producer = asyncio.create_task(produce())
    got = [(await recv(receiver, channel))["i"] for _ in range(total)]
    full = await producer
    assert got == list(range(total))
    # The window was really exercised: the sender ran out of credit and
    # waited for more (a round trip), or was refused.
    assert full + sender.stats()["credit_waits"] > 0
    stats = receiver.stats()
    assert stats["dropped_capacity"] == 0 and stats["dropped_slow_consumer"] == 0


async def test_a_send_waits_for_credit_a_consumer_is_returning(make_layer):
    # The window of 4 runs out at once; a consumer that is taking messages
    # returns credit within the send's wait, so no send is refused. (A wait
    # longer than the default 5 ms: a loaded CI machine may take longer to
    # run the consumer and carry the credit back.)
    receiver = make_layer(capacity=4)
    sender = make_layer(capacity=4, credit_wait=2.0)
    channel = await receiver.new_channel()
    total = 200

    async def consume() -> list[int]:
        return [(await recv(receiver, channel))["i"] for _ in range(total)]

    consuming = asyncio.create_task(consume())
    for i in range(total):
        await sender.send(channel, {"type": "m", "i": i})
    assert await consuming == list(range(total))
    stats = sender.stats()
    assert stats["refused_channel_full"] == 0
    assert stats["credit_waits"] > 0  # the wait was taken
    assert not sender.transport.windows._waiters


async def test_a_send_from_another_thread_waits_for_credit_and_gets_it(make_layer):
    # async_to_sync runs the send on a short-lived loop in a worker thread;
    # the credit arrives on the home loop, which wakes it across threads.
    from asgiref.sync import async_to_sync

    receiver = make_layer(capacity=2)
    # A long wait, so that a consumer started after the wait began is in time.
    sender = make_layer(capacity=2, credit_wait=5.0)
    channel = await receiver.new_channel()
    await sender.new_channel()  # the sender's home (credits) is on this loop
    total = 40

    def produce() -> None:
        for i in range(total):
            async_to_sync(sender.send)(channel, {"type": "m", "i": i})

    producing = asyncio.get_running_loop().run_in_executor(None, produce)
    # Consume only once the producer waits: it has used up its window.
    await await_until(lambda: sender.stats()["credit_waits"] > 0, timeout=5)
    got = [(await recv(receiver, channel))["i"] for _ in range(total)]
    await asyncio.wait_for(producing, 10)
    assert got == list(range(total))
    assert sender.stats()["credit_waits"] > 0
    assert sender.stats()["refused_channel_full"] == 0


async def test_expired_messages_are_never_returned(make_layer, other):
    layer = make_layer(expiry=0.2)
    channel = await layer.new_channel()
    await other.send(channel, {"type": "old"})
    await layer.send(channel, {"type": "old-local"})
    # Wait past expiry: the deadline is the message age itself.
    await asyncio.sleep(0.3)
    await other.send(channel, {"type": "fresh"})
    assert await recv(layer, channel) == {"type": "fresh"}
    assert layer.stats()["dropped_expired"] == 2


async def test_group_send_reaches_members_in_every_layer(layer, other, make_layer):
    third = make_layer()
    a1, a2 = await layer.new_channel(), await layer.new_channel()
    b1 = await other.new_channel()
    await layer.group_add("room", a1)
    await layer.group_add("room", a2)
    await other.group_add("room", b1)
    await third.group_send("room", {"type": "hello"})
    assert await recv(layer, a1) == {"type": "hello"}
    assert await recv(layer, a2) == {"type": "hello"}
    assert await recv(other, b1) == {"type": "hello"}


async def test_group_send_delivers_locally_once_without_echo(layer, other):
    mine = await layer.new_channel()
    theirs = await other.new_channel()
    await layer.group_add("echo", mine)
    await other.group_add("echo", theirs)
    await layer.group_send("echo", {"type": "one"})
    await layer.group_send("echo", {"type": "two"})
    # Local members have it before any broker round trip.
    assert layer.transport.inbox.get  # the local buffer already holds both
    assert len(layer.transport.inbox) == 2
    assert [await recv(layer, mine), await recv(layer, mine)] == [
        {"type": "one"},
        {"type": "two"},
    ]
    assert [await recv(other, theirs), await recv(other, theirs)] == [
        {"type": "one"},
        {"type": "two"},
    ]
    # Its own publish came back to nobody: a third message must be next.
    await other.group_send("echo", {"type": "three"})
    assert await recv(layer, mine) == {"type": "three"}


async def test_group_send_is_one_publish_whatever_the_group_size(make_layer):
    receivers = [make_layer() for _ in range(3)]
    sender = make_layer()
    for r in receivers:
        for _ in range(5):
            await r.group_add("big", await r.new_channel())
    await sender.group_send("big", {"type": "x"})  # connects
    nc = sender.transport.links.by_loop[asyncio.get_running_loop()].nc
    # Written out: a frame still in the client's buffer would take the next
    # one into its batch (no new publish at all).
    await nc.flush()
    before = nc.stats["out_msgs"]
    await sender.group_send("big", {"type": "x"})
    assert nc.stats["out_msgs"] - before == 1


async def test_group_add_by_another_layer_is_confirmed_before_returning(layer, other):
    channel = await layer.new_channel()
    # other does not own the channel: a control request goes to its owner.
    await other.group_add("remote", channel)
    await other.group_send("remote", {"type": "first"})
    assert await recv(layer, channel) == {"type": "first"}
    await other.group_discard("remote", channel)
    await other.group_send("remote", {"type": "gone"})
    await layer.send(channel, {"type": "marker"})
    assert await recv(layer, channel) == {"type": "marker"}


async def test_group_add_is_confirmed_for_the_next_publish(layer, other):
    # Interest must be on the server when group_add returns: 50 fresh groups,
    # each sent to at once from another connection, all arrive.
    channel = await layer.new_channel()
    for i in range(50):
        await layer.group_add(f"g{i}", channel)
        await other.group_send(f"g{i}", {"type": "m", "i": i})
    got = sorted([(await recv(layer, channel))["i"] for _ in range(50)])
    assert got == list(range(50))


async def test_group_discard_stops_delivery(layer, other):
    a, b = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", a)
    await layer.group_add("g", b)
    await layer.group_discard("g", a)
    await other.group_send("g", {"type": "m"})
    assert await recv(layer, b) == {"type": "m"}
    await layer.send(a, {"type": "marker"})
    assert await recv(layer, a) == {"type": "marker"}
    await layer.group_discard("g", a)  # discarding twice is harmless


async def test_group_expiry_evicts_old_memberships(make_layer, other, monkeypatch):
    import channels_nats.groups

    layer = make_layer(group_expiry=60)
    stale, fresh = await layer.new_channel(), await layer.new_channel()
    real_time = channels_nats.groups.time.time
    await layer.group_add("g", stale)
    # A minute and more later (only time is faked), the other joins.
    monkeypatch.setattr(channels_nats.groups.time, "time", lambda: real_time() + 61)
    await layer.group_add("g", fresh)
    await other.group_send("g", {"type": "m"})
    assert await recv(layer, fresh) == {"type": "m"}
    await layer.send(stale, {"type": "marker"})
    assert await recv(layer, stale) == {"type": "marker"}


async def test_group_send_to_full_member_drops_for_that_member_only(make_layer, other):
    layer = make_layer(capacity=2)
    full, roomy = await layer.new_channel(), await layer.new_channel(prefix="roomy")
    await layer.group_add("g", full)
    await layer.group_add("g", roomy)
    for _ in range(2):
        await layer.send(full, {"type": "filler"})
    await other.group_send("g", {"type": "m"})
    assert await recv(layer, roomy) == {"type": "m"}
    await await_until(lambda: layer.stats()["dropped_capacity"] == 1, timeout=3)


async def test_prefix_isolates_layers_on_one_server(make_layer):
    a = make_layer(prefix="isolated-a")
    b = make_layer(prefix="isolated-b")
    ca, cb = await a.new_channel(), await b.new_channel()
    await a.group_add("same", ca)
    await b.group_add("same", cb)
    await a.group_send("same", {"type": "for-a"})
    await b.group_send("same", {"type": "for-b"})
    assert await recv(a, ca) == {"type": "for-a"}
    assert await recv(b, cb) == {"type": "for-b"}
    await a.flush()
    await b.flush()


async def test_flush_empties_queues_and_groups_everywhere(layer, other):
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    await layer.send(channel, {"type": "queued"})
    await other.flush()  # another process flushes the prefix
    await await_until(lambda: len(layer.transport.inbox) == 0, timeout=3)
    await await_until(lambda: layer.transport.groups.names() == [], timeout=3)
    await other.group_send("g", {"type": "after-flush"})
    await layer.send(channel, {"type": "marker"})
    assert await recv(layer, channel) == {"type": "marker"}


async def test_close_wakes_waiting_receive_with_clear_error(make_layer):
    layer = make_layer()
    channel = await layer.new_channel()
    waiter = asyncio.create_task(layer.receive(channel))
    await await_until(lambda: layer.transport.inbox.waiting(channel) == 1, timeout=3)
    await layer.close()
    with pytest.raises(LayerClosed):
        await asyncio.wait_for(waiter, RECEIVE_TIMEOUT)


async def test_layer_is_usable_again_after_close(make_layer, other):
    layer = make_layer()
    first = await layer.new_channel()
    await layer.close()
    second = await layer.new_channel()
    assert second.split("!")[0] == first.split("!")[0]  # the same client id
    await other.send(second, {"type": "m"})
    assert await recv(layer, second) == {"type": "m"}
    await other.send(first, {"type": "old"})  # made before the close
    assert await recv(layer, first) == {"type": "old"}


async def test_close_drains_published_messages(layer, make_layer):
    sender = make_layer()
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    for i in range(100):
        await sender.group_send("g", {"type": "m", "i": i})
    await sender.close()
    got = [(await recv(layer, channel))["i"] for _ in range(100)]
    assert got == list(range(100))


@pytest.mark.parametrize(
    "name", ["", "has space", "ümlaut", "a" * 100, "bad*char", None, 1, b"bytes"]
)
async def test_invalid_names_raise_type_error_like_channels(layer, name):
    with pytest.raises(TypeError):
        await layer.send(name, {"type": "m"})
    with pytest.raises(TypeError):
        await layer.group_send(name, {"type": "m"})
    with pytest.raises(TypeError):
        await layer.group_add(name, "x!y")
    with pytest.raises(TypeError):
        await layer.receive(name)


@pytest.mark.parametrize("group", ["a..b", ".x", "x.", "a-b_c.d"])
async def test_unusual_but_valid_names_work(layer, other, group):
    channel = await layer.new_channel(prefix=group)
    await layer.group_add(group, channel)
    await other.group_send(group, {"type": "m"})
    assert await recv(layer, channel) == {"type": "m"}


async def test_bad_messages_raise_before_publishing(layer, other):
    channel = await layer.new_channel()
    with pytest.raises(TypeError):
        await other.send(channel, ["not", "a", "dict"])
    with pytest.raises(TypeError):
        await other.send(channel, {"type": "m", "obj": object()})
    with pytest.raises(TypeError):
        await other.group_send("g", {1: "non-str key"})
    with pytest.raises(ValueError, match="__asgi_channel__"):
        await other.send(channel, {"type": "m", "__asgi_channel__": "x"})
    with pytest.raises(MessageTooLarge):
        await other.send(channel, {"type": "m", "blob": b"x" * (1024 * 1024 + 1)})
    with pytest.raises(MessageTooLarge):
        await other.group_send("g", {"type": "m", "blob": b"x" * (1024 * 1024 + 1)})
    # Nothing was sent, the credit window is intact and the connection lives.
    await other.send(channel, {"type": "ok"})
    assert await recv(layer, channel) == {"type": "ok"}
    assert len(layer.transport.inbox) == 0


async def test_encrypted_layers_exchange_messages(make_layer):
    a = make_layer(symmetric_encryption_keys=["new", "old"])
    b = make_layer(symmetric_encryption_keys=["old"])
    channel = await b.new_channel()
    await b.group_add("secret", channel)
    # b decrypts with "old" only: a encrypts with "new", so this one fails...
    await a.group_send("secret", {"type": "rotated"})
    # ...and is counted, while b's own key round trips.
    c = make_layer(symmetric_encryption_keys=["old"])
    await c.group_send("secret", {"type": "ok"})
    assert await recv(b, channel) == {"type": "ok"}
    assert b.stats()["malformed_frames"] == 1


async def test_stats_exposes_counters(layer):
    stats = layer.stats()
    for key in ("dropped_capacity", "dropped_expired", "malformed_frames", "buffered"):
        assert stats[key] == 0


async def test_receive_on_many_channels_at_once_is_fast_enough_to_be_correct(
    layer, other
):
    channels = [await layer.new_channel() for _ in range(50)]
    started = time.monotonic()
    for i, channel in enumerate(channels):
        await other.send(channel, {"type": "m", "i": i})
    got = [(await recv(layer, channel))["i"] for channel in channels]
    assert got == list(range(50))
    assert time.monotonic() - started < RECEIVE_TIMEOUT


async def test_close_keeps_channels_their_messages_and_memberships(make_layer):
    # channels_redis's test_double_receive: close_pools() between calls
    # leaves the channels and what was sent to them in place.
    receiver, sender = make_layer(), make_layer()
    a, b = await receiver.new_channel(), await receiver.new_channel()
    await receiver.group_add("kept", b)
    await sender.send(a, {"n": 1})
    await sender.send(b, {"n": 2})
    await await_until(lambda: receiver.stats()["buffered"] == 2, timeout=5)
    client_id = receiver.client_id
    await receiver.close()
    assert await recv(receiver, a) == {"n": 1}  # used again: same channels
    assert receiver.client_id == client_id
    await sender.send(b, {"n": 3})
    await sender.group_send("kept", {"n": 4})
    assert [(await recv(receiver, b))["n"] for _ in range(3)] == [2, 3, 4]
    # flush() is what empties everything.
    await sender.send(a, {"n": 5})
    await await_until(lambda: receiver.stats()["buffered"] == 1, timeout=5)
    await receiver.flush()
    assert receiver.stats()["buffered"] == 0


async def test_a_body_near_max_payload_with_a_long_name_is_refused(layer, other):
    """The size check counts the name's bytes; only small bodies skip it."""
    mine = await layer.new_channel()
    head = mine.split("!", 1)[0] + "!"
    channel = head + "ü" * (99 - len(head))  # 99 characters, ~170 bytes
    await other.send(mine, {"type": "connect"})  # connects, learns max_payload
    limit = other.transport.links.max_payload
    body = b"x" * (limit - 150)
    with pytest.raises(MessageTooLarge):
        await other.send(channel, {"b": body})
    with pytest.raises(MessageTooLarge):
        await other.group_send("g", {"b": body + b"x" * 100})
    await other.send(mine, {"b": b"x" * (limit - 2000)})  # well below: it goes
    assert await recv(layer, mine) == {"type": "connect"}
    assert len((await recv(layer, mine))["b"]) == limit - 2000


async def test_a_local_send_over_max_payload_is_refused_like_a_remote_one(
    make_layer,
):
    layer = make_layer()
    channel = await layer.new_channel()
    with pytest.raises(MessageTooLarge):
        await layer.send(channel, {"blob": b"x" * (2 * 1024 * 1024)})
    assert layer.stats()["buffered"] == 0
