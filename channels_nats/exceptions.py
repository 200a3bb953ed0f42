"""Errors raised by channels_nats.

The tree::

    Exception
     ├── channels.exceptions.InvalidChannelLayerError
     │    └── InvalidChannelLayerError    bad CHANNEL_LAYERS CONFIG (names the key)
     ├── channels.exceptions.ChannelFull  re-exported: target channel over capacity
     └── NatsLayerError                   base of the runtime errors of this package
          ├── ConnectionUnavailable      no NATS server answered within
          │                              connect_timeout (also a ConnectionError)
          ├── LayerClosed                the layer was closed (while receive()
          │                              waited, or before a call)
          ├── MessageTooLarge            encoded message over the server's
          │                              max_payload (also a ValueError)
          ├── NoResponders               a request found nobody subscribed to its
          │                              subject (the server said so at once)
          ├── RequestTimeout             a request got no reply in time (also a
          │                              TimeoutError)
          └── NormalChannelsUnavailable  a normal (non-``!``) channel was used
                                         where the layer cannot serve it
"""

from __future__ import annotations

from channels.exceptions import ChannelFull
from channels.exceptions import InvalidChannelLayerError as _ChannelsInvalidLayer

__all__ = [
    "ChannelFull",
    "ConnectionUnavailable",
    "InvalidChannelLayerError",
    "LayerClosed",
    "MessageTooLarge",
    "NatsLayerError",
    "NoResponders",
    "NormalChannelsUnavailable",
    "RequestTimeout",
]


class InvalidChannelLayerError(_ChannelsInvalidLayer):  # type: ignore[misc]
    """The layer's configuration is invalid; the message names the key and a fix."""


class NatsLayerError(Exception):
    """Base class of the runtime errors raised by channels_nats."""


class ConnectionUnavailable(NatsLayerError, ConnectionError):
    """No NATS server could be reached within ``connect_timeout``."""


class LayerClosed(NatsLayerError):
    """The layer was closed; pending ``receive()`` calls end with this error."""


class MessageTooLarge(NatsLayerError, ValueError):
    """The encoded message exceeds the server's ``max_payload``; nothing was sent."""


class NormalChannelsUnavailable(NatsLayerError, NotImplementedError):
    """A normal channel (a name without ``!``) was used but cannot be served."""


class NoResponders(NatsLayerError):
    """Nobody is subscribed to a request's subject: the server answered at once."""


class RequestTimeout(NatsLayerError, TimeoutError):
    """A request got no reply within its timeout."""
