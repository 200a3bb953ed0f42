"""What normal channels need from the rest of the layer, and nothing more."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..config import LayerConfig
from ..inbox import Inbox
from ..link import Link
from ..stats import Stats

__all__ = ["NormalContext"]


@dataclass(frozen=True)
class NormalContext:
    """The narrow view of a layer's process side that normal channels use."""

    config: LayerConfig
    client_id: str
    #: Fetched messages wait here, keyed by channel name (a normal name
    #: never clashes with a specific one).
    inbox: Inbox
    stats: Stats
    capacity_of: Callable[[str], int]
    #: Raise MessageTooLarge if a frame of (body, target) cannot be sent.
    check_size: Callable[[bytes, str], None]
    #: The link for the running loop.
    link: Callable[[], Awaitable[Link]]
    #: The link holding the process's subscriptions, established if needed.
    home: Callable[[], Awaitable[Link]]
    current_home: Callable[[], Link | None]
    #: Follow a membership of a normal channel recorded by any process.
    add_member: Callable[[str, str], None]
    discard_member: Callable[[str, str], None]
