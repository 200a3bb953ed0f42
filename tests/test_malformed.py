"""Hostile frames on a layer's subjects never silence a process and are counted.

Everything here talks to a real nats-server: the hostile frames are published
with a raw nats-py client or written as raw protocol over plain TCP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import nats
import pytest

from channels_nats import NatsChannelLayer
from channels_nats.serializers import (
    CREDIT,
    DIRECT,
    GROUP_ADD,
    pack_control,
    pack_data,
)
from channels_nats.subjects import Subjects
from tests.servers import NatsServer, await_until

RECEIVE_TIMEOUT = 5.0


@pytest.fixture
async def layers(
    nats_server: NatsServer, prefix: str
) -> AsyncIterator[Callable[..., NatsChannelLayer]]:
    made: list[NatsChannelLayer] = []

    def make(**opts: Any) -> NatsChannelLayer:
        layer = NatsChannelLayer(servers=[nats_server.url], prefix=prefix, **opts)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.close()


async def _receive(layer: NatsChannelLayer, channel: str) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(layer.receive(channel), RECEIVE_TIMEOUT)
    except asyncio.TimeoutError:
        home = layer.transport.links.home
        nc = home.nc if home is not None else None
        raise AssertionError(
            f"{channel} received nothing within {RECEIVE_TIMEOUT}s; NATS "
            f"connection closed: {nc is None or nc.is_closed}; "
            f"stats: {layer.stats()}"
        ) from None


def _listened_subjects(layer: NatsChannelLayer, group: str) -> list[str]:
    subjects = Subjects(layer.prefix)
    return [
        subjects.process(layer.client_id),
        subjects.control(layer.client_id),
        subjects.broadcast,
        subjects.group(group),
    ]


def _undecodable_frames() -> list[bytes]:
    """Frames that the envelope decoder must reject as soon as they arrive."""
    frames = [random.Random(seed).randbytes(64) for seed in (1, 2, 3)]
    frames += [
        b"",
        msgpack.packb({"a": 1}),
        # DIRECT frames for a channel of some other process.
        msgpack.packb([1, 0, "other", "x!y", 1.0, b"\xc1"]),
        pack_data(DIRECT, "other", "specific.other!y", 1.0, msgpack.packb({})),
        # A kind no version of the layer defines.
        msgpack.packb([1, 99, "someone", "a", "b"]),
        msgpack.packb([1, 99, "someone"]),
    ]
    return frames


def _dropped(stats: dict[str, int]) -> int:
    """Frames dropped on arrival, whichever counter says why."""
    return stats["malformed_frames"] + stats["unknown_frames"] + stats["refused_direct"]


def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info is not None
    ]
    assert not bad, [r.getMessage() for r in bad]


async def _raw_protocol(port: int, commands: bytes) -> list[bytes]:
    """Speak the NATS client protocol over plain TCP; return the server's lines."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = []
    try:
        info = await asyncio.wait_for(reader.readline(), RECEIVE_TIMEOUT)
        assert info.startswith(b"INFO "), info
        connect = {
            "verbose": False,
            "pedantic": False,
            "headers": True,
            "no_responders": True,
            "protocol": 1,
        }
        writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\n")
        writer.write(commands + b"PING\r\n")
        await writer.drain()
        while True:
            line = await asyncio.wait_for(reader.readline(), RECEIVE_TIMEOUT)
            lines.append(line)
            if not line or line.startswith(b"PONG"):
                return lines
    finally:
        writer.close()
        await writer.wait_closed()


def _hpub(subject: str, headers: bytes, payload: bytes) -> bytes:
    head = f"HPUB {subject} {len(headers)} {len(headers) + len(payload)}\r\n"
    return head.encode() + headers + payload + b"\r\n"


async def test_garbage_on_every_subject_is_counted_and_delivery_continues(
    nats_server: NatsServer,
    layers: Callable[..., NatsChannelLayer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="channels_nats")
    victim, sender = layers(), layers()
    channel = await victim.new_channel()
    await victim.group_add("room", channel)
    before = _dropped(victim.stats())

    subjects = _listened_subjects(victim, "room")
    frames = _undecodable_frames()
    # Well-formed envelope for a channel of the victim, body not msgpack: it
    # is buffered and only found out when the consumer takes it.
    bad_body = pack_data(DIRECT, "someone", channel, time.time(), b"\xc1\xc1")
    nc = await nats.connect(nats_server.url, allow_reconnect=False)
    try:
        for subject in subjects:
            for frame in frames:
                await nc.publish(subject, frame)
            await nc.publish(subject, bad_body)
        await nc.flush()
    finally:
        await nc.close()

    at_arrival = len(subjects) * len(frames)
    await await_until(
        lambda: _dropped(victim.stats()) - before >= at_arrival,
        RECEIVE_TIMEOUT,
        message="every undecodable frame counted on arrival",
    )
    await await_until(
        lambda: victim.stats()["buffered"] >= len(subjects),
        RECEIVE_TIMEOUT,
        message="the frames with an undecodable body are buffered",
    )

    await sender.send(channel, {"type": "direct"})
    assert await _receive(victim, channel) == {"type": "direct"}
    await sender.group_send("room", {"type": "group"})
    assert await _receive(victim, channel) == {"type": "group"}

    stats = victim.stats()
    assert _dropped(stats) - before >= at_arrival + len(subjects)
    # Each kind of garbage has its own counter.
    assert stats["unknown_frames"] >= 2 * len(subjects)
    assert stats["refused_direct"] >= len(subjects)
    assert stats["buffered"] == 0
    _no_errors_logged(caplog)


async def test_malformed_nats_header_blocks_do_not_make_the_layer_deaf(
    nats_server: NatsServer,
    layers: Callable[..., NatsChannelLayer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="channels_nats")
    victim, sender = layers(), layers()
    channel = await victim.new_channel()
    await victim.group_add("room", channel)
    before = victim.stats()["malformed_frames"]

    subjects = Subjects(victim.prefix)
    targets = [subjects.process(victim.client_id), subjects.group("room")]
    header_blocks = [
        b"\r\n\r\n",
        b"NATS/1.0",  # no line ending: nats-py 2.16 raises in its read loop
        b"NATS/1.0\r\nno-colon-here\r\n\r\n",
    ]
    commands = b"".join(
        _hpub(subject, block, b"payload")
        for subject in targets
        for block in header_blocks
    )
    lines = await _raw_protocol(nats_server.port, commands)
    assert not any(line.startswith(b"-ERR") for line in lines), lines

    await await_until(
        lambda: victim.stats()["malformed_frames"] - before >= 1,
        RECEIVE_TIMEOUT,
        message="malformed header frames counted",
    )
    # The real check: the victim's read loop is alive.
    for i in range(3):
        await sender.send(channel, {"type": "direct", "i": i})
        assert await _receive(victim, channel) == {
            "type": "direct",
            "i": i,
        }
    await sender.group_send("room", {"type": "group"})
    assert await _receive(victim, channel) == {"type": "group"}
    _no_errors_logged(caplog)


async def test_group_add_request_with_oversized_group_name_does_not_silence_process(
    nats_server: NatsServer,
    layers: Callable[..., NatsChannelLayer],
) -> None:
    """A control frame asking to join a group whose subject is longer than the
    server's control line limit must be refused, not subscribed to."""
    victim, sender = layers(), layers(request_timeout=2)
    channel = await victim.new_channel()
    control = Subjects(victim.prefix).control(victim.client_id)
    frame = pack_control(GROUP_ADD, "someone", "g" * 5000, channel)

    nc = await nats.connect(nats_server.url, allow_reconnect=False)
    try:
        await nc.publish(control, frame)
        await nc.flush()
        # Whatever the victim makes of the request, it has answered or
        # dropped it once a group_add of its own channel round-trips.
        await sender.group_add("room", channel)
    finally:
        await nc.close()

    await sender.send(channel, {"type": "direct"})
    assert await _receive(victim, channel) == {"type": "direct"}
    await sender.group_send("room", {"type": "group"})
    assert await _receive(victim, channel) == {"type": "group"}
    # A refused request is counted as such, not as a malformed frame.
    await await_until(
        lambda: victim.stats()["refused_membership"] == 1,
        RECEIVE_TIMEOUT,
        message="the oversized request was refused and counted",
    )
    assert victim.stats()["malformed_frames"] == 0


async def test_spoofed_credit_frames_do_not_block_a_sender(
    nats_server: NatsServer,
    layers: Callable[..., NatsChannelLayer],
) -> None:
    """Credit frames with a count that is not a positive int are dropped and
    counted; they must not shrink the sender's window (ChannelFull)."""
    receiver, sender = layers(), layers(capacity=5)
    channel = await receiver.new_channel()
    await sender.send(channel, {"i": 0})  # the sender now holds a window
    before = sender.stats()["refused_credits"]

    control = Subjects(sender.prefix).control(sender.client_id)
    nc = await nats.connect(nats_server.url, allow_reconnect=False)
    try:
        for n in (-1000, "many"):
            await nc.publish(control, pack_control(CREDIT, "someone", channel, n))
        await nc.flush()
    finally:
        await nc.close()
    # One subscription handles its frames in order: once the last one (a str
    # count, which fails any arithmetic) is counted, both were handled.
    await await_until(
        lambda: sender.stats()["refused_credits"] - before >= 1,
        RECEIVE_TIMEOUT,
        message="the hostile credit frames were handled",
    )

    # Four more fit in the window of 5 that the hostile frames left alone.
    for i in range(1, 5):
        await sender.send(channel, {"i": i})
    for i in range(5):
        assert await _receive(receiver, channel) == {"i": i}
    assert sender.stats()["refused_channel_full"] == 0
    assert sender.stats()["refused_credits"] - before >= 2
    assert sender.stats()["malformed_frames"] == 0
