"""Errors raised by the presence API.

The tree (below :class:`channels_nats.NatsLayerError`)::

    NatsLayerError
     └── PresenceError        base of the presence errors
          ├── RoomFull        the room has ``room_max_members`` connections
          └── NotJoined       update() of a session that is not in the room
                              (also a LookupError)

Invalid input raises the standard types: ``TypeError`` for an invalid room
or session name (as Channels does for group names), ``ValueError`` for
metadata over ``meta_max_bytes`` or not JSON-serializable.
"""

from __future__ import annotations

from ..exceptions import NatsLayerError

__all__ = ["NotJoined", "PresenceError", "RoomFull"]


class PresenceError(NatsLayerError):
    """Base class of the errors of :mod:`channels_nats.presence`."""


class RoomFull(PresenceError):
    """The room already holds ``room_max_members`` connections; nothing was sent."""


class NotJoined(PresenceError, LookupError):
    """The session is not a member of the room on this node."""
