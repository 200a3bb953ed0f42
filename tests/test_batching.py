"""Frames published together to one subject go out as one NATS message.

``GuardedClient.publish_frame`` joins a data frame to the PUB at the tail of
nats-py's pending buffer when that PUB is a frame (or batch) of ours to the
same subject; receivers take the batch apart (``Transport.on_batch``). These
tests read the wire with a plain nats-py subscriber, and check delivery,
order and echo suppression between OS processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import nats
import pytest

from channels_nats import NatsChannelLayer
from channels_nats.client import BATCH_BYTES, GuardedClient
from channels_nats.serializers import (
    BATCH,
    DIRECT,
    VERSION,
    Frame,
    batch_head,
    pack_data,
    unbatch,
    unpack_frame,
)
from channels_nats.testing.waiting import await_until
from tests.peers import Peer

ORIGIN = "0123456789ab"
SUBJECT = "batching.test"


def frame(i: int, body: bytes = b"x") -> bytes:
    return pack_data(DIRECT, ORIGIN, "specific.a!b", 1.0, body, i, 0)


def numbers(payload: bytes) -> list[int]:
    """The sequence numbers a NATS message carries, lone frame or batch."""
    decoded = unpack_frame(payload)
    if decoded.kind != BATCH:
        return [decoded.args[3]]
    frames, bad = unbatch(decoded)
    assert bad == 0
    return [f.args[3] for f in frames]


@pytest.fixture
async def wire(nats_server) -> AsyncIterator[tuple[GuardedClient, list[bytes]]]:
    """A GuardedClient publishing, and what a plain subscriber receives."""
    seen: list[bytes] = []
    reader = await nats.connect(nats_server.url)

    async def got(msg: Any) -> None:
        seen.append(msg.data)

    await reader.subscribe(SUBJECT, cb=got)
    await reader.flush()
    nc = GuardedClient(lambda subject, exc: None)
    await nc.connect(nats_server.url)
    try:
        yield nc, seen
    finally:
        await nc.close()
        await reader.close()


async def arrived(nc: GuardedClient, seen: list[bytes], frames: int) -> None:
    await nc.flush()
    await await_until(lambda: sum(len(numbers(p)) for p in seen) >= frames, 5)


async def test_frames_published_together_go_out_as_one_message(wire):
    nc, seen = wire
    head = batch_head(ORIGIN)
    for i in range(1, 6):
        assert nc.publish_frame(SUBJECT, frame(i), head)
    await arrived(nc, seen, 5)
    assert [numbers(p) for p in seen] == [[1, 2, 3, 4, 5]]
    assert nc.batched == 5
    assert nc.stats["out_msgs"] == 1


async def test_a_lone_frame_goes_out_as_it_is(wire):
    nc, seen = wire
    assert nc.publish_frame(SUBJECT, frame(1), batch_head(ORIGIN))
    await arrived(nc, seen, 1)
    assert seen == [frame(1)]
    assert nc.batched == 0


async def test_anything_published_in_between_ends_the_batch(wire):
    """Wire order is publish order: a frame never joins a batch before others."""
    nc, seen = wire
    head = batch_head(ORIGIN)
    nc.publish_frame(SUBJECT, frame(1), head)
    nc.publish_frame(SUBJECT, frame(2), head)
    await nc.publish(SUBJECT, frame(3))  # nats-py's own path, like a control frame
    nc.publish_frame(SUBJECT, frame(4), head)
    nc.publish_frame("batching.elsewhere", frame(5), head)  # another subject
    nc.publish_frame(SUBJECT, frame(6), head)
    nc.publish_frame(SUBJECT, frame(7), head)
    await arrived(nc, seen, 6)
    assert [numbers(p) for p in seen] == [[1, 2], [3], [4], [6, 7]]


async def test_a_batch_written_out_is_never_added_to(wire):
    nc, seen = wire
    head = batch_head(ORIGIN)
    nc.publish_frame(SUBJECT, frame(1), head)
    nc.publish_frame(SUBJECT, frame(2), head)
    await nc.flush()  # the flusher writes the batch and replaces its list
    nc.publish_frame(SUBJECT, frame(3), head)
    nc.publish_frame(SUBJECT, frame(4), head)
    await asyncio.sleep(0)  # the flusher alone, no PING
    nc.publish_frame(SUBJECT, frame(5), head)
    await arrived(nc, seen, 5)
    assert [numbers(p) for p in seen] == [[1, 2], [3, 4], [5]]


async def test_a_batch_stops_growing_at_its_size_limit(wire):
    nc, seen = wire
    head = batch_head(ORIGIN)
    body = b"y" * 1000
    count = 3 * BATCH_BYTES // len(frame(0, body))
    for i in range(1, count + 1):
        assert nc.publish_frame(SUBJECT, frame(i, body), head)
    await arrived(nc, seen, count)
    assert len(seen) >= 3
    assert all(len(p) <= BATCH_BYTES for p in seen)
    assert [n for p in seen for n in numbers(p)] == list(range(1, count + 1))


async def test_a_full_pending_buffer_refuses_instead_of_joining(nats_server):
    """publish_frame() refuses where publish_now() would; publish() then waits."""
    nc = GuardedClient(lambda subject, exc: None)
    await nc.connect(nats_server.url, pending_size=4096)
    try:
        head = batch_head(ORIGIN)
        body = b"z" * 1000
        results = [nc.publish_frame(SUBJECT, frame(i, body), head) for i in range(8)]
        assert results[:3] == [True] * 3
        assert results[-1] is False
        assert nc._pending_data_size <= 4096
        # What the caller does then: nats-py's publish, after a flush.
        await nc.publish(SUBJECT, frame(9, body))
        await nc.flush()
    finally:
        await nc.close()


def test_unbatch_keeps_the_valid_frames_in_order_and_counts_the_rest():
    good = [msgpack.unpackb(frame(i)) for i in (1, 2, 3)]
    other_origin = msgpack.unpackb(pack_data(DIRECT, "else", "a!b", 1.0, b"", 4))
    batch = Frame(BATCH, ORIGIN, (good[0], "junk", good[1], other_origin, [1], good[2]))
    frames, bad = unbatch(batch)
    assert [f.args[3] for f in frames] == [1, 2, 3]
    assert all(f.origin == ORIGIN and f.kind == DIRECT for f in frames)
    assert bad == 3


def test_a_batch_decodes_as_one_frame_of_its_kind():
    raw = b"\xdc\x00\x05" + batch_head(ORIGIN) + frame(1) + frame(2)
    decoded = unpack_frame(raw)
    assert (decoded.kind, decoded.origin, len(decoded.args)) == (BATCH, ORIGIN, 2)
    assert raw[3] == VERSION


# -- between processes ---------------------------------------------------------


def settings(url: str, prefix: str, **config: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "channels_nats.NatsChannelLayer",
            "CONFIG": {"servers": [url], "prefix": prefix, **config},
        }
    }


@pytest.mark.parametrize("batching", [True, False])
async def test_a_burst_between_processes_arrives_whole_and_in_order(
    nats_server, prefix, batching
):
    n = 20_000
    receiver = NatsChannelLayer(servers=[nats_server.url], prefix=prefix, capacity=n)
    sender = await Peer.start(
        settings(nats_server.url, prefix, capacity=n, batch_frames=batching)
    )
    try:
        channel = await receiver.new_channel()
        assert await sender.call("send_many", channel=channel, n=n) == n
        for i in range(n):
            message = await asyncio.wait_for(receiver.receive(channel), 10)
            assert message["i"] == i
        joined = (await sender.call("stats"))["batched_frames"]
        if batching:
            assert joined > n // 2  # a tight loop's sends mostly travel together
        else:
            assert joined == 0
        stats = receiver.stats()
        assert stats["malformed_frames"] == stats["lost_in_transit"] == 0
    finally:
        await sender.stop()
        await receiver.close()


async def test_group_batches_reach_every_process_once(nats_server, prefix):
    """A batch of group frames: each member once, the sender's own too (no echo)."""
    n = 5_000
    config = settings(nats_server.url, prefix, capacity=n)
    sender, member = await Peer.start(config), await Peer.start(config)
    mine = NatsChannelLayer(servers=[nats_server.url], prefix=prefix, capacity=n)
    try:
        theirs = await member.call("new_channel")
        local = await sender.call("new_channel")
        here = await mine.new_channel()
        await member.call("group_add", group="room", channel=theirs)
        await sender.call("group_add", group="room", channel=local)
        await mine.group_add("room", here)
        assert await sender.call("group_send_many", group="room", n=n) == n
        got = [(await asyncio.wait_for(mine.receive(here), 10))["i"] for _ in range(n)]
        assert got == list(range(n))
        for peer, channel in ((member, theirs), (sender, local)):
            received = await peer.call("receive_until_idle", channel=channel, idle=0.5)
            assert [m["i"] for m in received] == list(range(n))
        assert (await sender.call("stats"))["batched_frames"] > 0
        assert mine.stats()["malformed_frames"] == 0
    finally:
        await asyncio.gather(sender.stop(), member.stop())
        await mine.close()


async def test_a_batch_with_bad_members_delivers_the_rest(nats_server, prefix, layer):
    """Malformed members are counted; the valid ones around them are delivered."""
    channel = await layer.new_channel()
    origin = "feedfacecafe"
    subject = layer.transport.subjects.process(layer.transport.client_id)
    body = layer.transport.serializer.dumps

    def data(i: int) -> bytes:
        message = body({"type": "m", "i": i})
        return pack_data(DIRECT, origin, channel, time.time(), message, i)

    members = [data(1), msgpack.packb(["not", "a", "frame"]), data(2), data(3)]
    payload = b"\xdc\x00\x07" + batch_head(origin) + b"".join(members)
    before = layer.stats()["malformed_frames"]
    raw = await nats.connect(nats_server.url)
    try:
        await raw.publish(subject, payload)
        await raw.flush()
    finally:
        await raw.close()
    got = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(3)]
    assert [m["i"] for m in got] == [1, 2, 3]
    assert layer.stats()["malformed_frames"] - before == 1


@pytest.mark.parametrize("batching", [True, False])
async def test_sends_past_a_full_client_buffer_wait_for_it_in_order(
    make_layer, monkeypatch, batching
):
    """Where nats-py's buffer is full, a send awaits nats-py's publish instead."""
    from channels_nats.link import Link

    slow = 0
    later = Link._publish_data_later

    async def counted(self: Link, *args: Any) -> int:
        nonlocal slow
        slow += 1
        return await later(self, *args)

    monkeypatch.setattr(Link, "_publish_data_later", counted)
    receiver = make_layer(capacity=500)
    sender = make_layer(capacity=500, pending_size=4096, batch_frames=batching)
    channel = await receiver.new_channel()
    pad = "x" * 1000
    for i in range(300):  # about 1 KB each, no yield in between
        await sender.send(channel, {"type": "m", "i": i, "pad": pad})
    got = [
        (await asyncio.wait_for(receiver.receive(channel), 5))["i"] for _ in range(300)
    ]
    assert got == list(range(300))
    assert slow > 0  # the buffer filled, and those sends took the slow path
    assert receiver.stats()["lost_in_transit"] == 0
