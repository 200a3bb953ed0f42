"""The public entry points: :func:`get_presence` and :class:`PresenceMixin`."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .nodes import RoomCount
from .settings import PresenceSettings, parse_presence
from .tracker import PresenceTracker

__all__ = ["ConsumerPresence", "PresenceMixin", "get_presence", "tracker_for"]

_lock = threading.Lock()
_trackers: dict[int, PresenceTracker] = {}


def tracker_for(
    layer: Any,
    settings: PresenceSettings | Callable[[], PresenceSettings] | None = None,
    *,
    alias: str = "default",
) -> PresenceTracker:
    """The tracker of ``layer`` (a ``NatsChannelLayer``), made on first use.

    After ``layer.close()`` the layer starts afresh, and so does its tracker:
    the next call returns a new one.
    """
    with _lock:
        tracker = _trackers.get(id(layer))
        if (
            tracker is not None
            and tracker.layer is layer
            and not tracker.closed
            and not tracker.hub.closed
            and tracker.hub is layer.hub
        ):
            return tracker
        if callable(settings):
            settings = settings()
        tracker = _trackers[id(layer)] = PresenceTracker(layer, settings, alias=alias)
        return tracker


def _raw_settings(alias: str) -> Any:
    from django.conf import settings

    entry = (getattr(settings, "CHANNEL_LAYERS", None) or {}).get(alias) or {}
    return (entry.get("CONFIG") or {}).get("presence")


def get_presence(alias: str = "default") -> PresenceTracker:
    """This process's presence tracker for the channel layer ``alias``.

    Raises ``ImproperlyConfigured`` if that layer is not a
    ``channels_nats.NatsChannelLayer``, and ``InvalidChannelLayerError`` for an
    invalid ``CONFIG["presence"]``.
    """
    from channels.layers import get_channel_layer

    from ..layer import NatsChannelLayer

    layer = get_channel_layer(alias)
    if not isinstance(layer, NatsChannelLayer):
        raise ImproperlyConfigured(
            f"Presence needs CHANNEL_LAYERS[{alias!r}] to use "
            f"channels_nats.NatsChannelLayer, got {type(layer).__name__}."
        )
    return tracker_for(layer, lambda: parse_presence(_raw_settings(alias)), alias=alias)


class ConsumerPresence:
    """``consumer.presence``: the presence API bound to one consumer."""

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer
        #: Rooms this consumer joined.
        self.rooms: set[str] = set()

    @property
    def tracker(self) -> PresenceTracker:
        c = self._consumer
        return get_presence(c.presence_alias or c.channel_layer_alias)

    async def join(self, room: str, meta: Mapping[str, Any] | None = None) -> None:
        """Join ``room`` as the scope's user, with this consumer's channel name."""
        c = self._consumer
        await self.tracker.join(
            room,
            c.channel_name,
            user=c.presence_user(),
            meta=meta,
            diffs=bool(c.presence_diffs),
        )
        self.rooms.add(room)

    async def update(self, room: str, meta: Mapping[str, Any]) -> None:
        await self.tracker.update(room, self._consumer.channel_name, meta)

    async def leave(self, room: str) -> None:
        await self.tracker.leave(room, self._consumer.channel_name)
        self.rooms.discard(room)

    async def leave_all(self, reason: str = "disconnect") -> None:
        await self.tracker.leave_all(self._consumer.channel_name, reason=reason)
        self.rooms.clear()

    async def list(self, room: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
        return await self.tracker.list(room)

    async def count(self, room: str) -> RoomCount:
        return await self.tracker.count(room)


class PresenceMixin:
    """Presence for ``AsyncWebsocketConsumer`` and ``AsyncJsonWebsocketConsumer``.

    Put it first in the bases. ``self.presence.join(room, meta=...)`` joins
    as ``scope["user"]`` (its primary key; anonymous users join as None);
    every room is left automatically on disconnect (reason ``disconnect``).
    With ``presence_diffs = True`` the consumer gets coalesced
    ``{"type": "presence.diff", "room", "joins", "leaves"}`` events of the
    rooms it joined; the default handler sends them to the client as JSON.
    """

    presence_diffs: bool = False
    #: Channel layer alias of the tracker (default: the consumer's layer).
    presence_alias: str | None = None

    scope: Any
    channel_name: str
    channel_layer_alias: str

    @property
    def presence(self) -> ConsumerPresence:
        found = self.__dict__.get("_presence")
        if found is None:
            found = self.__dict__["_presence"] = ConsumerPresence(self)
        return found

    def presence_user(self) -> str | None:
        """The user key of this connection; override to use something else."""
        user = self.scope.get("user")
        if user is None or not getattr(user, "is_authenticated", False):
            return None
        return str(user.pk)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        try:
            if self.presence.rooms:
                await self.presence.leave_all("disconnect")
        finally:
            await super().websocket_disconnect(message)  # type: ignore[misc]

    async def presence_diff(self, event: dict[str, Any]) -> None:
        """Send the diff to the client as JSON (override to reshape it)."""
        send_json = getattr(self, "send_json", None)
        if send_json is not None:
            await send_json(event)
        else:
            await self.send(text_data=json.dumps(event))  # type: ignore[attr-defined]
