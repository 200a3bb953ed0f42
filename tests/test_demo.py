"""The demo (``python -m testproject``): two daphne processes over one NATS.

Everything runs for real: the launcher, its nats-server, two daphne OS
processes; clients are the ``websockets`` package and urllib.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.demo import (
    ROOT,
    Client,
    Demo,
    launch,
    next_of_type,
    processes_with_token,
    start_demo,
)

ROOM = "/ws/rooms/general/"


def test_both_daphnes_serve_the_lobby(demo: Demo) -> None:
    assert len(set(demo.ports)) == 2
    for number, url in enumerate(demo.urls, 1):
        status, _, html = Client(url).request("/")
        assert status == 200
        assert "Lobby" in html
        assert f"daphne #{number} :{demo.ports[number - 1]}" in html
        assert 'data-presence-count="general"' in html  # live member counts
    log = demo.log()
    assert f"chat on daphne #2:  {demo.urls[1]}/rooms/general/" in log
    assert f"NATS_URL={demo.info['nats_url']} " in log
    assert "testproject/manage.py notify general" in log


async def test_message_sent_to_daphne_1_reaches_a_client_of_daphne_2(
    demo: Demo,
) -> None:
    one, two = demo.urls
    alice = Client(one).login("alice", "demo")
    bob = Client(two).login("bob", "demo")
    async with (
        alice.websocket(one, ROOM) as ws_alice,
        bob.websocket(two, ROOM) as ws_bob,
    ):
        hello = await next_of_type(ws_alice, "hello")
        assert hello["user"] == "alice"
        assert hello["server"].startswith("daphne #1")
        assert (await next_of_type(ws_bob, "hello"))["server"].startswith("daphne #2")

        text = f"hello bob {uuid.uuid4().hex[:6]}"
        await ws_alice.send(f'{{"type": "message", "text": "{text}"}}')
        got = await next_of_type(ws_bob, "message")
        assert (got["user"], got["text"]) == ("alice", text)
        assert got["server"].startswith("daphne #1")
        # The sender is in the group too.
        assert (await next_of_type(ws_alice, "message"))["text"] == text


async def test_status_change_is_acknowledged(demo: Demo) -> None:
    url = demo.urls[0]
    carol = Client(url).login("carol", "demo")
    async with carol.websocket(url, ROOM) as ws:
        await next_of_type(ws, "hello")
        await ws.send('{"type": "status", "status": "away"}')
        assert await next_of_type(ws, "status.ack") == {
            "type": "status.ack",
            "status": "away",
        }
        await ws.send('{"type": "status", "status": "asleep"}')
        assert "status must be one of" in (await next_of_type(ws, "error"))["error"]


async def test_signed_out_websocket_is_refused(demo: Demo) -> None:
    url = demo.urls[1]
    with pytest.raises(websockets.InvalidStatus) as info:
        async with Client(url).websocket(url, ROOM):
            pass
    assert info.value.response.status_code == 403


async def test_sync_notification_view_reaches_the_room(demo: Demo) -> None:
    one, two = demo.urls
    alice = Client(one).login("alice", "demo")
    bob = Client(two).login("bob", "demo")
    async with bob.websocket(two, ROOM) as ws_bob:
        await next_of_type(ws_bob, "hello")
        status, _, body = await asyncio.to_thread(
            alice.request,
            "/rooms/general/notify/",
            {"csrfmiddlewaretoken": alice.cookie("csrftoken"), "text": "deploy done"},
            headers={"Accept": "application/json"},
        )
        assert status == 200, body
        got = await next_of_type(ws_bob, "notification")
        assert (got["user"], got["text"]) == ("alice", "deploy done")
        assert got["server"].startswith("daphne #1")


async def test_manage_py_notify_from_a_plain_process_reaches_the_room(
    demo: Demo,
) -> None:
    url = demo.urls[1]
    bob = Client(url).login("bob", "demo")
    async with bob.websocket(url, ROOM) as ws_bob:
        await next_of_type(ws_bob, "hello")
        out = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "testproject/manage.py",
                "notify",
                "general",
                "nightly",
                "report",
                "--user",
                "cron",
            ],
            cwd=ROOT,
            env={**demo.env, "DEMO_SERVER_NAME": "manage.py"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        got = await next_of_type(ws_bob, "notification")
        assert (got["user"], got["text"], got["server"]) == (
            "cron",
            "nightly report",
            "manage.py",
        )


def test_second_run_reuses_setup_and_sigterm_leaves_no_process(
    demo: Demo, demo_dir: Path
) -> None:
    """A second launcher on the same database (the session's is still running
    there) starts, serves, and on SIGTERM stops its nats-server and both
    daphnes."""
    second = start_demo(demo_dir / "second", db=demo.db)
    try:
        assert second.info["nats_url"] != demo.info["nats_url"]
        pids = [second.info["nats_pid"], *(d["pid"] for d in second.info["daphnes"])]
        assert set(pids) <= set(processes_with_token(second.token))
        for url in second.urls:
            assert Client(url).request("/")[0] == 200
    finally:
        code = second.stop(signal.SIGTERM)
        left = second.kill_leftovers()
    assert code == 0, second.log()
    assert not left, f"left behind: {left}\n{second.log()}"
    assert "demo users already exist" in second.log()
    assert "SIGTERM: stopping" in second.log()


def test_check_mode_starts_verifies_and_exits_zero(tmp_path: Path) -> None:
    run = launch(tmp_path, env={"DEMO_EXIT_AFTER_READY": "1"})
    try:
        code = run.proc.wait(90)
    finally:
        left = run.kill_leftovers()
    log = run.log()
    assert code == 0, log
    assert not left, log
    assert "created users: alice, bob, carol, admin" in log
    assert log.count("serves the lobby, sign-in, admin, static files") == 2
    assert "check passed" in log


async def test_presence_state_and_diffs_cross_the_two_daphnes(demo: Demo) -> None:
    """A join, a status update and a leave on daphne #2 reach a client of
    daphne #1 as presence diffs, and the lobby's counts follow them."""
    one, two = demo.urls
    room = "/ws/rooms/random/"
    alice = Client(one).login("alice", "demo")
    bob = Client(two).login("bob", "demo")
    async with (
        Client(one).websocket(one, "/ws/lobby/") as lobby,
        alice.websocket(one, room) as ws_alice,
    ):
        await next_of_type(lobby, "presence")
        state = (await next_of_type(ws_alice, "presence.state"))["state"]
        assert "bob" not in state
        (meta,) = state["alice"]["metas"]
        assert meta["status"] == "online" and meta["server"].startswith("daphne #1")

        async def diff_with(key: str, side: str) -> dict[str, Any]:
            while True:
                diff = await next_of_type(ws_alice, "presence.diff")
                if key in diff[side]:
                    return diff

        async def lobby_count(n: int) -> None:
            while (await next_of_type(lobby, "presence"))["counts"]["random"] != n:
                pass

        async with bob.websocket(two, room) as ws_bob:
            joined = await diff_with("bob", "joins")
            (meta,) = joined["joins"]["bob"]["metas"]
            assert meta["server"].startswith("daphne #2")
            await lobby_count(2)
            await ws_bob.send('{"type": "status", "status": "busy"}')
            updated = await diff_with("bob", "joins")
            assert updated["leaves"]["bob"]["metas"][0]["status"] == "online"
            assert updated["joins"]["bob"]["metas"][0]["status"] == "busy"
        left = await diff_with("bob", "leaves")
        assert "bob" not in left["joins"]
        await lobby_count(1)
