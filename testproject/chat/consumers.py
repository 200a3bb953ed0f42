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
- ``{"type": "error", "error": ...}``.

WebSocket close codes: 4401 not signed in, 4404 no such room.
"""

from __future__ import annotations

import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from testproject.chat.models import Room, room_group

STATUSES = ("online", "away", "busy")
MAX_TEXT = 2000
LOBBY_GROUP = "lobby"


class RoomConsumer(AsyncJsonWebsocketConsumer):
    """One WebSocket connection of a signed-in user to a room."""

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
        await self.presence_join()

    async def disconnect(self, code: int) -> None:
        if not hasattr(self, "group"):
            return
        await self.presence_leave()
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
            await self.presence_status(status)
            await self.send_json({"type": "status.ack", "status": status})
        else:
            await self.send_json({"type": "error", "error": f"unknown type {kind!r}"})

    # -- handlers of group messages ----------------------------------------

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({**event, "type": "message"})

    async def chat_notification(self, event: dict[str, Any]) -> None:
        await self.send_json({**event, "type": "notification"})

    # -- presence -----------------------------------------------------------
    # PRESENCE HOOK (issue 9, second part): channels_nats.presence fills
    # these in. presence_join tracks this connection in the room (key: the
    # user, meta: status and server) and sends the current state to the page;
    # presence_status updates this connection's meta; presence_leave untracks
    # it. The page renders state and diffs into <ul id="presence">. Until
    # then they do nothing, and a status change is only acknowledged.

    async def presence_join(self) -> None:
        """Track this connection in the room (hook, no-op for now)."""

    async def presence_status(self, status: str) -> None:
        """Record this connection's new status (hook, no-op for now)."""

    async def presence_leave(self) -> None:
        """Stop tracking this connection (hook, no-op for now)."""


class LobbyConsumer(AsyncJsonWebsocketConsumer):
    """The lobby page's connection: will carry live member counts per room.

    PRESENCE HOOK (issue 9, second part): with channels_nats.presence this
    consumer sends ``{"type": "presence", "counts": {slug: n}}`` whenever a
    room's membership changes; the lobby page already renders such messages
    into each room's ``[data-presence-count]``. For now it only says hello.
    """

    async def connect(self) -> None:
        await self.channel_layer.group_add(LOBBY_GROUP, self.channel_name)
        await self.accept()
        await self.send_json({"type": "hello", "server": settings.DEMO_SERVER_NAME})

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(LOBBY_GROUP, self.channel_name)

    async def presence_counts(self, event: dict[str, Any]) -> None:
        """Forward room member counts to the page (sent by presence later)."""
        await self.send_json({"type": "presence", "counts": event["counts"]})
