"""Presence in a Django project: the consumer mixin, the admin page, the command.

The "other process" is a real peer process (``tests/presence_peer.py``); this
test process plays a web process (ASGI consumers through
``WebsocketCommunicator``, or sync views and commands as under WSGI).
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from channels_nats.presence import PresenceMixin, get_presence
from tests.peers import SyncPeer
from tests.servers import NatsServer, await_until, free_port, wait_for

SCRIPT = Path(__file__).with_name("presence_peer.py")


def layer_settings(url: str, prefix: str, **presence: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "channels_nats.NatsChannelLayer",
            "CONFIG": {
                "servers": [url],
                "prefix": prefix,
                "connect_timeout": 1.0,
                "presence": {"diff_window": 0.05, **presence},
            },
        }
    }


def _close_default_layer() -> None:
    layer = channel_layers.backends.get("default")
    if layer is not None:
        async_to_sync(layer.close)()


@pytest.fixture
def project(settings: Any, nats_server: NatsServer, prefix: str) -> Iterator[None]:
    """This process uses the NATS layer as a project would, from settings."""
    settings.CHANNEL_LAYERS = layer_settings(nats_server.url, prefix)
    yield
    _close_default_layer()


@pytest.fixture
def other_process(nats_server: NatsServer, prefix: str) -> Iterator[SyncPeer]:
    peer = SyncPeer(layer_settings(nats_server.url, prefix), script=SCRIPT)
    peer.call("presence_node")
    yield peer
    peer.stop()


# -- the consumer mixin -----------------------------------------------------


class FakeUser:
    is_authenticated = True

    def __init__(self, pk: int) -> None:
        self.pk = pk


class Chat(PresenceMixin, AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    presence_diffs = True

    async def connect(self) -> None:
        await self.accept()
        await self.presence.join("lobby", meta={"status": "online"})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.presence.update("lobby", content)


def with_user(app: Any, pk: int | None) -> Callable[..., Any]:
    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if pk is not None:
            scope = {**scope, "user": FakeUser(pk)}
        return await app(scope, receive, send)

    return wrapped


async def next_diff(comm: WebsocketCommunicator, check: Callable[[Any], bool]) -> Any:
    """The next presence.diff the client gets for which ``check`` holds."""
    deadline = time.monotonic() + 5
    while True:
        event = await comm.receive_json_from(
            timeout=max(0.1, deadline - time.monotonic())
        )
        assert event["type"] == "presence.diff"
        if check(event):
            return event


@pytest.mark.django_db(transaction=True)
async def test_mixin_joins_on_connect_leaves_on_disconnect_and_sends_diffs(
    project: None, nats_server: NatsServer, prefix: str
) -> None:
    from tests.peers import Peer

    peer = await Peer.start(layer_settings(nats_server.url, prefix), script=SCRIPT)
    try:
        await peer.call("presence_node")
        app = Chat.as_asgi()
        ann = WebsocketCommunicator(with_user(app, 1), "/ws/")
        assert (await ann.connect())[0]
        own = await next_diff(ann, lambda e: "1" in e["joins"])
        assert own["room"] == "lobby"
        assert own["joins"]["1"]["metas"][0]["status"] == "online"

        # A member in another process shows up in the client's diffs.
        await peer.call("presence_join", room="lobby", session="s.z!1", user="zoe")
        theirs = await next_diff(ann, lambda e: "zoe" in e["joins"])
        assert theirs["leaves"] == {}

        anon = WebsocketCommunicator(with_user(app, None), "/ws/")
        assert (await anon.connect())[0]
        await next_diff(ann, lambda e: e["joins"] and "1" not in e["joins"])
        await peer.call("presence_wait", room="lobby", connections=3, timeout=5)

        await ann.send_json_to({"status": "away"})
        update = await next_diff(
            ann, lambda e: "1" in e["joins"] and "1" in e["leaves"]
        )
        assert update["joins"]["1"]["metas"][0]["status"] == "away"

        await anon.disconnect()
        await peer.call("presence_wait", room="lobby", connections=2, timeout=5)
        gone = await next_diff(ann, lambda e: bool(e["leaves"]))
        assert "1" not in gone["leaves"] and "zoe" not in gone["leaves"]
        await ann.disconnect()
        await peer.call("presence_wait", room="lobby", connections=1, timeout=5)

        async def left_with_disconnect() -> bool:
            found = await peer.call("presence_events")
            return [e["reason"] for e in found if e["signal"] == "member_left"] == [
                "disconnect",
                "disconnect",
            ]

        await await_until(left_with_disconnect, 5)
        listed = await get_presence().list("lobby")
        assert list(listed) == ["zoe"]
    finally:
        await peer.stop()


# -- the admin page ---------------------------------------------------------


def _staff(username: str, *, perm: bool = False, superuser: bool = False) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    if superuser:
        user.is_superuser = True
        user.save()
    if perm:
        user.user_permissions.add(
            Permission.objects.get(
                content_type__app_label="nats_presence", codename="view_roster"
            )
        )
    return user


@pytest.fixture
def admin_urls() -> tuple[str, str]:
    return (
        reverse("admin:nats_presence_roster_changelist"),
        reverse("admin:nats_presence_roster_data"),
    )


@pytest.mark.django_db
def test_admin_sends_anonymous_users_to_the_login(
    project: None, admin_urls: tuple[str, str]
) -> None:
    page, data = admin_urls
    for url in (page, data):
        response = Client().get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.django_db
def test_admin_refuses_staff_without_the_permission(
    project: None, admin_urls: tuple[str, str]
) -> None:
    client = Client()
    client.force_login(_staff("plain"))
    page, data = admin_urls
    assert client.get(page).status_code == 403
    assert client.get(data).status_code == 403
    index = client.get(reverse("admin:index"))
    assert b"nats_presence" not in index.content


@pytest.mark.django_db
def test_admin_shows_members_of_another_process(
    project: None, other_process: SyncPeer, admin_urls: tuple[str, str]
) -> None:
    other_process.call(
        "presence_join", room="lobby", session="s.z!1", user="zoe", meta={"x": 1}
    )
    other_process.call("presence_join", room="games", session="s.z!2", user="zed")
    page, data = admin_urls
    for user in (_staff("viewer", perm=True), _staff("root", superuser=True)):
        client = Client()
        client.force_login(user)
        index = client.get(reverse("admin:index"))
        assert page.encode() in index.content  # "Presence > Roster" is listed
        response = client.get(page)
        assert response.status_code == 200
        assert b"presence-initial" in response.content
        assert "no-cache" in response["Cache-Control"]
        shown = response.context["data"]
        assert {m["user"] for m in shown["members"]} == {"zoe", "zed"}
        assert len(shown["nodes"]) == 2  # the peer and this (admin-only) process

        answer = client.get(data)
        assert answer.status_code == 200
        assert "no-cache" in answer["Cache-Control"]
        payload = answer.json()
        assert payload["members"] == shown["members"]
        assert payload["rooms"] == [
            {"room": "games", "connections": 1, "users": 1},
            {"room": "lobby", "connections": 1, "users": 1},
        ]
        only = client.get(data, {"user": "zo"}).json()
        assert [m["user"] for m in only["members"]] == ["zoe"]
        node = next(n["id"] for n in payload["nodes"] if n["members"])
        by_node = client.get(data, {"node": node}).json()
        assert len(by_node["members"]) == 2
        assert client.get(data, {"room": "lob"}).json()["rooms"][0]["room"] == "lobby"


@pytest.mark.django_db
def test_admin_page_follows_changes_made_elsewhere(
    project: None, other_process: SyncPeer, admin_urls: tuple[str, str]
) -> None:
    client = Client()
    client.force_login(_staff("root", superuser=True))
    _, data = admin_urls
    assert client.get(data).json()["members"] == []
    other_process.call("presence_join", room="lobby", session="s.z!1", user="zoe")

    def listed() -> bool:
        return bool(client.get(data).json()["members"])

    wait_for(listed, 5)


# -- the management command -------------------------------------------------


def test_command_prints_a_table_and_json(
    project: None, other_process: SyncPeer
) -> None:
    other_process.call(
        "presence_join", room="lobby", session="s.z!1", user="zoe", meta={"a": 1}
    )
    other_process.call("presence_join", room="lobby", session="s.y!1")
    out = io.StringIO()
    call_command("presence", stdout=out)
    text = out.getvalue()
    assert "ROOM" in text and "zoe" in text and "s.y!1" in text and '{"a": 1}' in text
    assert "1 room(s), 2 connection(s), 2 node(s)" in text

    out = io.StringIO()
    call_command("presence", "--json", "--room", "lobby", stdout=out)
    listed = json.loads(out.getvalue())
    assert set(listed) == {"zoe", "s.y!1"}
    assert listed["zoe"]["metas"][0]["a"] == 1

    out = io.StringIO()
    call_command("presence", "--json", stdout=out)
    assert set(json.loads(out.getvalue())["lobby"]) == {"zoe", "s.y!1"}


def test_command_watch_prints_diffs(project: None, other_process: SyncPeer) -> None:
    out = io.StringIO()
    errors: list[BaseException] = []

    def watch() -> None:
        try:
            call_command("presence", "--watch", "--seconds", "3", stdout=out)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=watch)
    thread.start()
    wait_for(lambda: "room(s)" in out.getvalue(), 10)
    other_process.call("presence_join", room="lobby", session="s.z!1", user="zoe")
    wait_for(lambda: "+ lobby  zoe  s.z!1" in out.getvalue(), 5)
    other_process.call("presence_leave", room="lobby", session="s.z!1")
    wait_for(lambda: "- lobby  zoe  s.z!1" in out.getvalue(), 5)
    thread.join(10)
    assert not errors


def test_command_without_nats_says_which_setting_to_fix(settings: Any) -> None:
    settings.CHANNEL_LAYERS = layer_settings(f"nats://127.0.0.1:{free_port()}", "x")
    try:
        with pytest.raises(CommandError, match=r"CONFIG'\]\['servers'\]"):
            call_command("presence", stdout=io.StringIO())
    finally:
        _close_default_layer()


def test_command_with_another_layer_backend(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    }
    with pytest.raises(CommandError, match="NatsChannelLayer"):
        call_command("presence", stdout=io.StringIO())
