"""Minimal ASGI application served by daphne in the ``websocket`` scenario.

Configures Django itself at import; the channel layer comes from the JSON in
the environment variable ``BENCH_CHANNEL_LAYERS`` (set by ``bench.websocket``).
Every client of ``ws/room/<room>/`` joins group ``room-<room>``; a message
``{"sent": t, "seq": n}`` it sends is broadcast to all members of its room.
"""

from __future__ import annotations

import json
import os
from typing import Any

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="channels-nats-bench-not-secret",
        INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS=json.loads(os.environ.get("BENCH_CHANNEL_LAYERS", "{}")),
        USE_TZ=True,
    )
django.setup()

from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class RoomConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.group = f"room-{self.scope['url_route']['kwargs']['room']}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.channel_layer.group_send(
            self.group,
            {"type": "chat.message", "sent": content["sent"], "seq": content["seq"]},
        )

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"sent": event["sent"], "seq": event["seq"]})

    async def disconnect(self, code: int) -> None:
        group = getattr(self, "group", None)
        if group is not None:
            await self.channel_layer.group_discard(group, self.channel_name)


application = ProtocolTypeRouter(
    {"websocket": URLRouter([path("ws/room/<str:room>/", RoomConsumer.as_asgi())])}
)
