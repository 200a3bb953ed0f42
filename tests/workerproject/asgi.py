"""Workers for the runworker test: a SyncConsumer and an AsyncConsumer."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.consumer import AsyncConsumer, SyncConsumer
from channels.routing import ChannelNameRouter, ProtocolTypeRouter


class Thumbnailer(SyncConsumer):
    def thumbnail_make(self, event: dict) -> None:
        async_to_sync(self.channel_layer.send)(
            event["reply_to"], {"type": "done", "id": event["id"], "by": "sync"}
        )


class Reporter(AsyncConsumer):
    async def report_build(self, event: dict) -> None:
        await self.channel_layer.send(
            event["reply_to"], {"type": "done", "id": event["id"], "by": "async"}
        )


application = ProtocolTypeRouter(
    {
        "channel": ChannelNameRouter(
            {"thumbnails": Thumbnailer.as_asgi(), "reports": Reporter.as_asgi()}
        )
    }
)
