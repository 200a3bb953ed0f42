"""WebSocket consumers of the demo.

Every message a client sends goes through the channel layer (``group_send`` to
the room's group), also to clients of the same daphne process, so two browser
windows on the two daphne processes see each other's messages only if
channels_nats carries them across.

Protocol (JSON text frames), client to server:

- ``{"type": "message", "text": "..."}``: post to the room.
- ``{"type": "status", "status": "online" | "away" | "busy"}``: set one's
  status; acknowledged with ``{"type": "status.ack", "status": ...}``.

server to client:

- ``{"type": "hello", "user": ..., "server": ..., "room": ...}`` on connect;
- ``{"type": "message", "user": ..., "text": ..., "server": ..., "ts": ...}``;
- ``{"type": "notification", "text": ..., "user": ..., "server": ..., "ts": ...}``
  (from the sync view :func:`testproject.chat.views.notify` or
  ``manage.py notify``);
- ``{"type": "presence.state", "room": ..., "state": {user: {"metas": [...]}}}``
  once after ``hello``, then ``{"type": "presence.diff", "room": ..., "joins":
  {...}, "leaves": {...}}`` (``channels_nats.presence``, Phoenix's shapes;
  each meta is one open tab: ``status``, ``server``, ``since``, ``session``,
  ``node``, ``joined_at``);
- ``{"type": "error", "error": ...}``.

WebSocket close codes: 4401 not signed in, 4404 no such room.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from channels_nats.presence import PresenceMixin, get_presence
from testproject.chat.models import Room, room_group

STATUSES = ("online", "away", "busy")
MAX_TEXT = 2000


class RoomConsumer(PresenceMixin, AsyncJsonWebsocketConsumer):
    """One WebSocket connection of a signed-in user to a room."""

    presence_diffs = True  # "presence.diff" events of the rooms joined

    room: str
    group: str

    async def connect(self) -> None:
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close(code=4401)
            return
        self.room = self.scope["url_route"]["kwargs"]["slug"]
        if not await database_sync_to_async(
            Room.objects.filter(slug=self.room).exists
        )():
            await self.close(code=4404)
            return
        self.username = user.get_username()
        self.group = room_group(self.room)
        # Returns once a group_send from any process reaches this channel.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json(
            {
                "type": "hello",
                "user": self.username,
                "room": self.room,
                "server": settings.DEMO_SERVER_NAME,
            }
        )
        await self.join_presence()

    async def disconnect(self, code: int) -> None:
        if not hasattr(self, "group"):
            return
        # PresenceMixin leaves every room before this runs.
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "message":
            text = str(content.get("text", "")).strip()[:MAX_TEXT]
            if text:
                await self.channel_layer.group_send(
                    self.group,
                    {
                        "type": "chat.message",
                        "user": self.username,
                        "text": text,
                        "server": settings.DEMO_SERVER_NAME,
                        "ts": time.time(),
                    },
                )
        elif kind == "status":
            status = content.get("status")
            if status not in STATUSES:
                await self.send_json(
                    {"type": "error", "error": f"status must be one of {STATUSES}"}
                )
                return
            await self.set_status(status)
            await self.send_json({"type": "status.ack", "status": status})
        else:
            await self.send_json({"type": "error", "error": f"unknown type {kind!r}"})

    # -- handlers of group messages ----------------------------------------

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({**event, "type": "message"})

    async def chat_notification(self, event: dict[str, Any]) -> None:
        await self.send_json({**event, "type": "notification"})

    # -- presence -----------------------------------------------------------
    # The page keeps its "who's here" list from one presence.state on connect
    # and the presence.diff events after it (PresenceMixin's default handler
    # forwards them as they are); it never polls.

    def presence_user(self) -> str | None:
        """Key members by username: the page and the admin show it as is."""
        return str(self.username)

    def status_meta(self, status: str) -> dict[str, Any]:
        # "since" lets the page show the status set last when a user has
        # several tabs; "server" which daphne holds this connection.
        return {
            "status": status,
            "server": settings.DEMO_SERVER_NAME,
            "since": time.time(),
        }

    async def join_presence(self) -> None:
        """Track this connection in the room and send the current members."""
        await self.presence.join(self.room, meta=self.status_meta("online"))
        await self.send_json(
            {
                "type": "presence.state",
                "room": self.room,
                "state": await self.presence.list(self.room),
            }
        )

    async def set_status(self, status: str) -> None:
        """Replace this connection's metadata: everyone gets a diff."""
        await self.presence.update(self.room, self.status_meta(status))


class LobbyConsumer(AsyncJsonWebsocketConsumer):
    """The lobby page's connection: live member counts per room.

    It sends ``{"type": "presence", "counts": {slug: users}, "connections":
    {slug: n}}`` on connect and again after every presence diff of any room
    (``PresenceTracker.watch``: coalesced, so a burst is one message).
    """

    async def connect(self) -> None:
        self.tracker = get_presence()
        self.loop = asyncio.get_running_loop()
        self.pending = False
        self.tasks: set[asyncio.Task[None]] = set()
        await self.accept()
        await self.send_json({"type": "hello", "server": settings.DEMO_SERVER_NAME})
        # The listener runs on the tracker's loop and must not block: it only
        # asks this consumer's loop to send fresh counts.
        self.unwatch = self.tracker.watch(self.on_diff)
        await self.send_counts()

    def on_diff(self, room: str, joins: Any, leaves: Any) -> None:
        if self.pending or self.loop.is_closed():
            return
        self.pending = True
        self.loop.call_soon_threadsafe(self.schedule_counts)

    def schedule_counts(self) -> None:
        task = self.loop.create_task(self.send_counts())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def send_counts(self) -> None:
        self.pending = False
        slugs = await database_sync_to_async(
            lambda: list(Room.objects.values_list("slug", flat=True))
        )()
        counts = {slug: await self.tracker.count(slug) for slug in slugs}
        await self.send_json(
            {
                "type": "presence",
                "counts": {slug: c.users for slug, c in counts.items()},
                "connections": {slug: c.connections for slug, c in counts.items()},
            }
        )

    async def disconnect(self, code: int) -> None:
        unwatch = getattr(self, "unwatch", None)
        if unwatch is not None:
            unwatch()
        for task in list(self.tasks):
            task.cancel()
