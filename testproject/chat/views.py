"""Plain (synchronous) Django views of the demo."""

from __future__ import annotations

import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from testproject.chat.consumers import STATUSES
from testproject.chat.models import Room


def demo_context(request: HttpRequest) -> dict[str, Any]:
    """Template context on every page: which daphne process served it."""
    return {"demo_server_name": settings.DEMO_SERVER_NAME}


def lobby(request: HttpRequest) -> HttpResponse:
    return render(request, "chat/lobby.html", {"rooms": Room.objects.all()})


@login_required
def room(request: HttpRequest, slug: str) -> HttpResponse:
    room = get_object_or_404(Room, slug=slug)
    return render(
        request,
        "chat/room.html",
        {"room": room, "rooms": Room.objects.all(), "statuses": STATUSES},
    )


def send_notification(room: Room, text: str, user: str) -> None:
    """Post a notification to everyone in ``room``, from synchronous code.

    This is how a WSGI view, a management command or a Celery task talks to
    WebSocket clients: ``async_to_sync(channel_layer.group_send)``.
    """
    channel_layer = get_channel_layer()
    async_to_sync(channel_layer.group_send)(
        room.group,
        {
            "type": "chat.notification",
            "text": text,
            "user": user,
            "server": settings.DEMO_SERVER_NAME,
            "ts": time.time(),
        },
    )


@login_required
@require_POST
def notify(request: HttpRequest, slug: str) -> HttpResponse:
    """Post a notification to the room (the form under the message log).

    Answers JSON to the page's ``fetch`` and redirects back to the room when
    the form is submitted without JavaScript.
    """
    room = get_object_or_404(Room, slug=slug)
    text = request.POST.get("text", "").strip()[:200] or "Ping from a sync view"
    send_notification(room, text, request.user.get_username())
    if request.headers.get("Accept") == "application/json":
        return JsonResponse({"sent": True, "room": room.slug, "text": text})
    return redirect("room", slug=room.slug)
