"""With ``symmetric_encryption_keys``, nothing readable crosses the wire.

A raw nats-py client subscribed to ``>`` on a private server records every
payload while two OS processes (layer plus presence tracker each) exchange
group messages, direct messages, normal-channel messages and presence joins
with metadata. Then key rotation across two processes with different key
lists: the process that has the new key first and the old one second still
reads what the old-key process sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.peers import Peer

SCRIPT = Path(__file__).with_name("presence_peer.py")
BACKEND = "channels_nats.NatsChannelLayer"
MARKERS = ("MSG-PLAINTEXT-1", "DIRECT-PLAINTEXT-2", "QUEUE-PLAINTEXT-3")
META_MARKER = "META-PLAINTEXT-4"
USER_MARKER = "USER-PLAINTEXT-5"


def layers(url: str, prefix: str, keys: list[str]) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": BACKEND,
            "CONFIG": {
                "servers": [url],
                "prefix": prefix,
                "symmetric_encryption_keys": keys,
            },
        }
    }


@pytest.fixture
async def wiretap(nats_server_fresh: Any) -> AsyncIterator[list[bytes]]:
    """Every payload (and header block) the server routes, as raw bytes."""
    seen: list[bytes] = []
    nc = await nats.connect(nats_server_fresh.url)

    async def record(msg: Any) -> None:
        seen.append(bytes(msg.data))
        if msg.headers:
            seen.append(repr(msg.headers).encode())

    await nc.subscribe(">", cb=record)
    await nc.flush()
    yield seen
    await nc.close()


async def test_a_subscriber_on_every_subject_sees_no_plaintext(
    nats_server_fresh: Any, wiretap: list[bytes], prefix: str
) -> None:
    config = layers(nats_server_fresh.url, prefix, ["the-secret"])
    a = await Peer.start(config, SCRIPT)
    b = await Peer.start(config, SCRIPT)
    try:
        channel = await a.call("new_channel")
        await a.call("group_add", group="room", channel=channel)
        await b.call("group_send", group="room", message={"type": "m", "t": MARKERS[0]})
        await b.call("send", channel=channel, message={"type": "m", "t": MARKERS[1]})
        got = await a.call("receive_many", channel=channel, n=2, timeout=10)
        assert [m["t"] for m in got] == list(MARKERS[:2])
        await b.call("send", channel="jobs", message={"type": "m", "t": MARKERS[2]})
        assert (await a.call("receive", channel="jobs", timeout=10))["t"] == MARKERS[2]

        await a.call(
            "presence_join",
            room="lobby",
            session=channel,
            user=USER_MARKER,
            meta={"note": META_MARKER},
        )
        await b.call("presence_wait", room="lobby", connections=1, timeout=10)
        listed = await b.call("presence_list", room="lobby")
        assert listed[USER_MARKER]["metas"][0]["note"] == META_MARKER
        # A process started now gets the roster by sync (chunked replies).
        c = await Peer.start(config, SCRIPT)
        try:
            await c.call("presence_wait", room="lobby", connections=1, timeout=10)
        finally:
            await c.stop()
        for peer in (a, b):
            assert (await peer.call("stats"))["malformed_frames"] == 0
    finally:
        await asyncio.gather(a.stop(), b.stop())

    assert len(wiretap) > 10  # the tap did see the traffic
    wire = b"\n".join(wiretap)
    for marker in (*MARKERS, META_MARKER, USER_MARKER):
        assert marker.encode() not in wire, marker


async def test_rotation_between_processes_with_different_key_lists(
    nats_server: Any, prefix: str
) -> None:
    """The rolling-deploy step: one process encrypts with the new key, the
    other still with the old one; each reads the other's messages and
    presence. A process that has only the old key cannot read the new one:
    counted as malformed, never raised."""
    rotated = await Peer.start(layers(nats_server.url, prefix, ["new", "old"]), SCRIPT)
    legacy = await Peer.start(layers(nats_server.url, prefix, ["old", "new"]), SCRIPT)
    stale = await Peer.start(layers(nats_server.url, prefix, ["old"]), SCRIPT)
    try:
        mine = await rotated.call("new_channel")
        theirs = await legacy.call("new_channel")
        for peer, channel in ((rotated, mine), (legacy, theirs)):
            await peer.call("group_add", group="room", channel=channel)
        await legacy.call("group_send", group="room", message={"type": "m", "n": 1})
        await legacy.call("send", channel=mine, message={"type": "m", "n": 2})
        got = await rotated.call("receive_many", channel=mine, n=2, timeout=10)
        assert got == [{"type": "m", "n": 1}, {"type": "m", "n": 2}]
        await rotated.call("group_send", group="room", message={"type": "m", "n": 3})
        assert await legacy.call("receive_many", channel=theirs, n=2, timeout=10) == [
            {"type": "m", "n": 1},
            {"type": "m", "n": 3},
        ]
        # Presence both ways: joins, and the rosters a sync fetches.
        await legacy.call("presence_join", room="lobby", session=theirs)
        await rotated.call("presence_join", room="lobby", session=mine)
        for peer in (rotated, legacy):
            await peer.call("presence_wait", room="lobby", connections=2, timeout=10)
            assert (await peer.call("stats"))["malformed_frames"] == 0

        old_only = await stale.call("new_channel")
        await rotated.call("send", channel=old_only, message={"type": "m", "n": 4})
        await legacy.call("send", channel=old_only, message={"type": "m", "n": 5})
        assert await stale.call("receive", channel=old_only, timeout=10) == {
            "type": "m",
            "n": 5,
        }
        # Whatever else is buffered (the unreadable frame) is never returned.
        assert await stale.call("receive_until_idle", channel=old_only, idle=0.5) == []
        assert (await stale.call("stats"))["malformed_frames"] >= 1
    finally:
        await asyncio.gather(rotated.stop(), legacy.stop(), stale.stop())
