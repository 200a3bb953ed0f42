"""Django signals of presence, fired in every process for every change it sees.

All are sent with ``sender`` the tracker class and these keyword arguments:

=================  =============================================================
``member_joined``  ``tracker, room, member, user, session, node, meta``
``member_left``    the same plus ``reason``: ``"leave"``, ``"disconnect"``,
                   ``"node_down"`` (its process is gone, or stopped
                   gracefully) or ``"expired"`` (no heartbeat for ``ttl``)
``member_updated`` the same plus ``previous`` (the member before)
``user_online``    ``tracker, user, member``: the user's first member anywhere
``user_offline``   ``tracker, user, member, reason``: their last one is gone
=================  =============================================================

``member`` is a :class:`~channels_nats.presence.Member`; ``meta`` its
metadata as a dict. Receivers may be sync or async (async receivers need
Django 5.0 or later). They run in order, one at a time, after the change is
in the local roster: async receivers on the tracker's event loop, sync ones
in a worker thread (``sync_to_async``). A receiver that raises is logged and
does not stop the others.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.dispatch import Signal

from .roster import Change

__all__ = [
    "member_joined",
    "member_left",
    "member_updated",
    "user_offline",
    "user_online",
]

logger = logging.getLogger(__name__)

member_joined = Signal()
member_left = Signal()
member_updated = Signal()
user_online = Signal()
user_offline = Signal()

_BY_KIND = {
    "join": member_joined,
    "leave": member_left,
    "update": member_updated,
    "online": user_online,
    "offline": user_offline,
}


def has_receivers() -> bool:
    """Whether any presence signal has a receiver (else changes are not queued)."""
    return any(signal.has_listeners() for signal in _BY_KIND.values())


def arguments(tracker: Any, change: Change) -> dict[str, Any]:
    m = change.member
    if change.kind in ("online", "offline"):
        named: dict[str, Any] = {"tracker": tracker, "user": m.user, "member": m}
        if change.kind == "offline":
            named["reason"] = change.reason
        return named
    named = {
        "tracker": tracker,
        "room": m.room,
        "member": m,
        "user": m.user,
        "session": m.session,
        "node": m.node,
        "meta": json.loads(m.meta),
    }
    if change.kind == "leave":
        named["reason"] = change.reason
    elif change.kind == "update":
        named["previous"] = change.previous
    return named


async def fire(tracker: Any, change: Change) -> None:
    """Send the signal of ``change``; log what its receivers raise."""
    signal = _BY_KIND[change.kind]
    if not signal.has_listeners():
        return
    named = arguments(tracker, change)
    sender = type(tracker)
    asend_robust = getattr(signal, "asend_robust", None)
    if asend_robust is not None:  # Django >= 5.0
        results = await asend_robust(sender, **named)
    else:  # pragma: no cover - Django 4.2: sync receivers only
        results = await sync_to_async(signal.send_robust)(sender, **named)
    for receiver, result in results:
        if isinstance(result, Exception):
            logger.error(
                "a receiver of presence %s (%r) raised",
                change.kind,
                receiver,
                exc_info=result,
            )
