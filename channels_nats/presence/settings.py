"""Parse and validate the presence configuration of a layer alias.

Presence is configured per layer, next to the layer's own keys::

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_nats.NatsChannelLayer",
            "CONFIG": {
                "servers": ["nats://127.0.0.1:4222"],
                "presence": {"ttl": 10, "heartbeat_interval": 1.0},
            },
        }
    }

The ``presence`` dict is parsed once into a frozen :class:`PresenceSettings`;
every problem raises :class:`~channels_nats.exceptions.InvalidChannelLayerError`
naming the key and a fix, and :func:`problems` returns the same findings for
``manage.py check`` (``nats_presence.E001``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ..exceptions import InvalidChannelLayerError

__all__ = ["META_HARD_MAX", "PresenceSettings", "parse_presence", "problems"]

#: No configuration may raise the metadata cap above this (64 KiB).
META_HARD_MAX = 65536


@dataclass(frozen=True)
class PresenceSettings:
    """Validated, immutable presence settings of one layer alias."""

    #: Seconds between two heartbeats of a node.
    heartbeat_interval: float = 1.0
    #: Seconds without a heartbeat after which a frozen or cut-off node's
    #: members are removed (reason ``expired``).
    ttl: float = 10.0
    #: Seconds a liveness request to a late node may take.
    probe_timeout: float = 0.5
    #: Seconds ``sync()`` collects the other nodes' answers when it cannot
    #: tell how many nodes there are (a fresh process).
    sync_window: float = 0.3
    #: Seconds over which ``presence.diff`` events are coalesced.
    diff_window: float = 0.1
    #: Largest metadata, in bytes of compact JSON.
    meta_max_bytes: int = 1024
    #: Largest number of connections in one room (``None``: no cap).
    room_max_members: int | None = None

    @property
    def late_after(self) -> float:
        """Heartbeat age after which an observer asks the node if it is alive."""
        return self.heartbeat_interval * 1.5

    @property
    def reorder_window(self) -> float:
        """How long a sequence gap may wait for a reordered frame."""
        return min(0.5, self.heartbeat_interval)

    @property
    def fetch_timeout(self) -> float:
        """How long a requested roster may take to arrive completely."""
        return max(2.0, 2 * self.heartbeat_interval)

    @property
    def reconnect_grace(self) -> float:
        """After a reconnect, "no responders" may mean "not back yet"."""
        return max(2.0, 2 * self.heartbeat_interval)


_DEFAULTS = {f.name: f.default for f in fields(PresenceSettings)}


def _label(key: str) -> str:
    return f"CONFIG['presence'][{key!r}]"


def _number(key: str, value: Any, *, minimum: float, integer: bool = False) -> Any:
    kind = "an integer" if integer else "a number"
    if (
        isinstance(value, bool)
        or not isinstance(value, int if integer else (int, float))
        or not math.isfinite(value)
        or value < minimum
    ):
        raise InvalidChannelLayerError(
            f"{_label(key)} must be {kind} >= {minimum}, got {value!r}."
        )
    return value


def parse_presence(raw: Any) -> PresenceSettings:
    """Return the validated :class:`PresenceSettings` for ``raw`` (a dict or None)."""
    if raw is None:
        return PresenceSettings()
    if not isinstance(raw, Mapping):
        raise InvalidChannelLayerError(
            "CONFIG['presence'] must be a dict of presence settings, for example "
            f"{{'ttl': 10}}, got {type(raw).__name__}."
        )
    unknown = sorted(set(raw) - set(_DEFAULTS), key=str)
    if unknown:
        raise InvalidChannelLayerError(
            f"Unknown CONFIG['presence'] key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys: {', '.join(_DEFAULTS)}."
        )
    merged = {**_DEFAULTS, **raw}
    heartbeat = float(
        _number("heartbeat_interval", merged["heartbeat_interval"], minimum=0.05)
    )
    ttl = float(_number("ttl", merged["ttl"], minimum=0.1))
    if ttl < 2 * heartbeat:
        raise InvalidChannelLayerError(
            f"{_label('ttl')} must be at least twice heartbeat_interval "
            f"({2 * heartbeat:g}s) or live nodes would expire, got {ttl:g}."
        )
    meta_max = int(
        _number("meta_max_bytes", merged["meta_max_bytes"], minimum=2, integer=True)
    )
    if meta_max > META_HARD_MAX:
        raise InvalidChannelLayerError(
            f"{_label('meta_max_bytes')} may be at most {META_HARD_MAX}: presence "
            "metadata is for a status and a name, not for data; got "
            f"{meta_max}."
        )
    cap = merged["room_max_members"]
    if cap is not None:
        cap = int(_number("room_max_members", cap, minimum=1, integer=True))
    return PresenceSettings(
        heartbeat_interval=heartbeat,
        ttl=ttl,
        probe_timeout=float(
            _number("probe_timeout", merged["probe_timeout"], minimum=0.01)
        ),
        sync_window=float(_number("sync_window", merged["sync_window"], minimum=0.01)),
        diff_window=float(_number("diff_window", merged["diff_window"], minimum=0.0)),
        meta_max_bytes=meta_max,
        room_max_members=cap,
    )


def problems(raw: Any) -> list[str]:
    """Return the problems of a ``presence`` dict (empty when valid)."""
    try:
        parse_presence(raw)
    except InvalidChannelLayerError as exc:
        return [str(exc)]
    return []
