"""Two apps on one NATS account, each confined to its prefix by permissions.

The server gives each user the permission set the README documents
("Running in production"); two processes of one app deliver specific,
group and normal-channel messages and presence through it, and what the
server refuses is logged with the subject and counted as
``permission_violations`` while the connection stays up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from channels_nats import NatsChannelLayer
from channels_nats.presence.api import tracker_for
from channels_nats.testing import NatsServer, await_until
from tests.peers import Peer
from tests.secure_servers import configured_server

SCRIPT = Path(__file__).with_name("presence_peer.py")
BACKEND = "channels_nats.NatsChannelLayer"


def permissions(prefix: str) -> str:
    """The minimal per-app set, in nats-server syntax (as in the README).

    ``$JS.ACK`` needs one entry per normal-channel stream: one per distinct
    capacity (``CHNATS_<prefix>_C<capacity>``; here only the default 100).
    """
    publish = [
        f"{prefix}.>",
        f"_INBOX_{prefix}.>",
        "$JS.API.>",
        f"$JS.ACK.CHNATS_{prefix}_C100.>",
        f"$KV.CHNATS_{prefix}_members.>",
    ]
    subscribe = [f"{prefix}.>", f"_INBOX_{prefix}.>"]

    def quoted(subjects: list[str]) -> str:
        return ", ".join(f'"{s}"' for s in subjects)

    return (
        f"{{ publish: {{ allow: [{quoted(publish)}] }}, "
        f"subscribe: {{ allow: [{quoted(subscribe)}] }} }}"
    )


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    users = ", ".join(
        f"{{ user: {p}, password: pw-{p}, permissions: {permissions(p)} }}"
        for p in ("app1", "app2")
    )
    srv = configured_server(f"authorization {{ users: [ {users} ] }}\n", name="perm")
    try:
        yield srv
    finally:
        srv.close()


def config(server: NatsServer, app: str) -> dict[str, Any]:
    return {
        "servers": [server.url],
        "prefix": app,
        "user": app,
        "password": f"pw-{app}",
        "inbox_prefix": f"_INBOX_{app}",
    }


async def test_an_app_works_across_two_processes_within_its_permissions(
    server: NatsServer,
) -> None:
    layers = {"default": {"BACKEND": BACKEND, "CONFIG": config(server, "app1")}}
    a = await Peer.start(layers, SCRIPT)
    b = await Peer.start(layers, SCRIPT)
    try:
        channel = await a.call("new_channel")
        await a.call("group_add", group="room", channel=channel)
        await b.call("group_send", group="room", message={"type": "m", "n": 1})
        await b.call("send", channel=channel, message={"type": "m", "n": 2})
        assert await a.call("receive_many", channel=channel, n=2, timeout=10) == [
            {"type": "m", "n": 1},
            {"type": "m", "n": 2},
        ]
        await b.call("send", channel="jobs", message={"type": "job"})
        assert await a.call("receive", channel="jobs", timeout=15) == {"type": "job"}
        await a.call("group_add", group="room", channel="jobs")  # KV membership
        await b.call("presence_join", room="lobby", session=channel + "x")
        await a.call("presence_wait", room="lobby", connections=1, timeout=10)
        for peer in (a, b):
            assert (await peer.call("stats"))["permission_violations"] == 0
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def test_a_refused_publish_is_logged_with_its_subject_counted_and_survived(
    server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="channels_nats")
    app1 = NatsChannelLayer(**config(server, "app1"))
    app2 = NatsChannelLayer(**config(server, "app2"))
    try:
        victim = await app1.new_channel()
        await app1.group_add("room", victim)
        tracker = tracker_for(app1)
        await tracker.join("lobby", victim)
        mine = await app2.new_channel()
        await app2.group_add("room", mine)

        # app2 writes into app1's prefix: the server refuses it.
        await app2.hub.start()
        app2.hub.publish("app1.g.room", b"intrusion")
        app2.hub.publish("app1.presence.nodes", b"intrusion")
        await await_until(
            lambda: app2.stats()["permission_violations"] >= 2,
            10,
            message="both refusals counted",
        )
        logged = " ".join(r.getMessage() for r in caplog.records)
        assert "publish to app1.g.room" in logged, logged
        # The WARNING is rate-limited per kind (10 s): the second is counted only.

        # The connection is still up and app2 still works in its own prefix.
        await app2.group_send("room", {"type": "own"})
        assert await asyncio.wait_for(app2.receive(mine), 5) == {"type": "own"}
        assert app2.stats()["disconnects"] == 0
        # Nothing reached app1.
        await app1.group_send("room", {"type": "marker"})
        assert await asyncio.wait_for(app1.receive(victim), 5) == {"type": "marker"}
        assert app1.stats()["malformed_frames"] == 0
        assert (await tracker.count("lobby")).connections == 1
    finally:
        await asyncio.gather(app1.close(), app2.close())
