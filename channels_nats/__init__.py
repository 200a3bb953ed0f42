"""Django Channels channel layer over NATS."""

from __future__ import annotations

from .exceptions import (
    ChannelFull,
    ConnectionUnavailable,
    InvalidChannelLayerError,
    LayerClosed,
    LinkDown,
    MessageTooLarge,
    NatsLayerError,
    NoResponders,
    NormalChannelsUnavailable,
    RequestTimeout,
)
from .layer import NatsChannelLayer

__version__ = "0.1.0"

__all__ = [
    "ChannelFull",
    "ConnectionUnavailable",
    "InvalidChannelLayerError",
    "LayerClosed",
    "LinkDown",
    "MessageTooLarge",
    "NatsChannelLayer",
    "NatsLayerError",
    "NoResponders",
    "NormalChannelsUnavailable",
    "RequestTimeout",
    "__version__",
]
