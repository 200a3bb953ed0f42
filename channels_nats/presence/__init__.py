"""Presence over NATS: who is connected to which room, cluster-wide.

Add ``"channels_nats.presence"`` to ``INSTALLED_APPS`` (app label
``nats_presence``) for the admin page, the ``presence`` management command
and the system checks; the API below works without it::

    from channels_nats.presence import PresenceMixin, get_presence

See the README section "Presence".
"""

from __future__ import annotations

from .api import ConsumerPresence, PresenceMixin, get_presence
from .exceptions import NotJoined, PresenceError, RoomFull
from .nodes import RoomCount
from .protocol import Member
from .settings import PresenceSettings
from .signals import (
    member_joined,
    member_left,
    member_updated,
    user_offline,
    user_online,
)
from .tracker import PresenceTracker

__all__ = [
    "ConsumerPresence",
    "Member",
    "NotJoined",
    "PresenceError",
    "PresenceMixin",
    "PresenceSettings",
    "PresenceTracker",
    "RoomCount",
    "RoomFull",
    "get_presence",
    "member_joined",
    "member_left",
    "member_updated",
    "user_offline",
    "user_online",
]
