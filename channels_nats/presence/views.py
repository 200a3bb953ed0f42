"""The JSON endpoint behind the admin page (polled every 2 s by plain fetch).

It is a sync view, so it works under WSGI as well as ASGI: the tracker of a
process that holds no consumers starts on the first request, syncs with
every node, then stays current through the heartbeats.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.http import HttpRequest, JsonResponse

from ..checks import _BACKENDS
from ..exceptions import NatsLayerError
from .api import get_presence

__all__ = ["nats_aliases", "roster_data", "roster_json"]

logger = logging.getLogger(__name__)


def nats_aliases() -> list[str]:
    """The CHANNEL_LAYERS aliases that use the NATS layer."""
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    return [
        alias
        for alias, entry in layers.items()
        if isinstance(entry, dict) and entry.get("BACKEND") in _BACKENDS
    ]


def roster_data(request: HttpRequest) -> tuple[int, dict[str, Any]]:
    """Status and payload for the admin page, filtered by the query string."""
    aliases = nats_aliases()
    alias = request.GET.get("alias") or ("default" if "default" in aliases else "")
    if alias not in aliases:
        return 404, {"error": f"no NATS channel layer {alias!r}", "aliases": aliases}
    tracker = get_presence(alias)
    try:
        data = async_to_sync(tracker.snapshot)(
            room=request.GET.get("room", "")[:200],
            user=request.GET.get("user", "")[:200],
            node=request.GET.get("node", "")[:100],
        )
    except NatsLayerError as exc:
        logger.warning("admin data unavailable: %r", exc)
        return 503, {"error": f"NATS is unreachable: {exc}", "aliases": aliases}
    data["aliases"] = aliases
    return 200, data


def roster_json(request: HttpRequest) -> JsonResponse:
    status, data = roster_data(request)
    return JsonResponse(data, status=status)
