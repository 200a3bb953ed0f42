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
Django 5.0 or later). They run in order, after the change is in the local
roster, from a worker thread (``sync_to_async``: one thread hop per batch of
queued changes, not per signal; async receivers run back on the tracker's
event loop). A receiver that raises is logged and does not stop the others.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.dispatch import Signal

from .nodes import Change

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


def fire(tracker: Any, changes: list[Change]) -> None:
    """Send the signals of ``changes`` in order; log what receivers raise.

    Called in a worker thread (``sync_to_async``) for a whole batch, so a
    burst of changes costs one thread hop, not one per signal; Django runs
    async receivers through ``async_to_sync`` on the caller's loop.
    """
    sender = type(tracker)
    for change in changes:
        signal = _BY_KIND[change.kind]
        if not signal.has_listeners():
            continue
        for receiver, result in signal.send_robust(
            sender, **arguments(tracker, change)
        ):
            if isinstance(result, Exception):
                logger.error(
                    "a receiver of presence %s (%r) raised",
                    change.kind,
                    receiver,
                    exc_info=result,
                )
