"""Parse and validate the ``CONFIG`` dict of a ``CHANNEL_LAYERS`` entry.

The configuration is parsed once into a frozen :class:`LayerConfig`. Every
problem raises :class:`~channels_nats.exceptions.InvalidChannelLayerError`
naming the key and saying how to fix it; :func:`problems` returns every
such finding as a string, for the Django system checks.
"""

from __future__ import annotations

import math
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .exceptions import InvalidChannelLayerError
from .security import TLS_KEYS, ssl_context

__all__ = ["DEFAULTS", "LayerConfig", "parse_config", "problems"]

_PREFIX_RE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_SERVER_RE = re.compile(r"(nats|tls|ws|wss)://\S+")

DEFAULTS: dict[str, Any] = {
    "servers": ["nats://127.0.0.1:4222"],
    "prefix": "asgi",
    "expiry": 60,
    "group_expiry": 86400,
    "capacity": 100,
    "channel_capacity": {},
    "symmetric_encryption_keys": None,
    "connect_timeout": 5.0,
    "request_timeout": 5.0,
    "reconnect_time_wait": 0.25,
    "ping_interval": 5.0,
    "max_outstanding_pings": 3,
    "pending_size": 8 * 1024 * 1024,
    "jetstream_storage": "file",
    "jetstream_replicas": 1,
    "redelivery_timeout": 30.0,
    "outage_buffer": 10.0,
    "credit_wait": 0.005,
    "batch_frames": True,
    "presence": None,  # validated by channels_nats.presence.settings
    # Options handed to nats-py's connect() unchanged.
    "name": None,
    "user": None,
    "password": None,
    "token": None,
    "tls": None,
    "tls_hostname": None,
    "user_credentials": None,
    "nkeys_seed": None,
    "nkeys_seed_str": None,
    "inbox_prefix": None,
    # Strings that build CONFIG['tls'] (channels_nats.security).
    "tls_ca_file": None,
    "tls_cert_file": None,
    "tls_key_file": None,
    "tls_key_password": None,
}

#: Keys passed through to ``nats.connect()`` as they are.
PASSTHROUGH = (
    "name",
    "user",
    "password",
    "token",
    "tls",
    "tls_hostname",
    "user_credentials",
    "nkeys_seed",
    "nkeys_seed_str",
    "inbox_prefix",
)


@dataclass(frozen=True)
class LayerConfig:
    """Validated, immutable configuration of one layer."""

    servers: tuple[str, ...]
    prefix: str
    expiry: float
    group_expiry: int
    capacity: int
    channel_capacity: Mapping[Any, int]
    symmetric_encryption_keys: tuple[bytes, ...]
    connect_timeout: float
    request_timeout: float
    reconnect_time_wait: float
    ping_interval: float
    max_outstanding_pings: int
    pending_size: int
    jetstream_storage: str
    jetstream_replicas: int
    redelivery_timeout: float
    outage_buffer: float = 10.0
    credit_wait: float = 0.005
    batch_frames: bool = True
    connect_options: Mapping[str, Any] = field(default_factory=dict)


def _number(
    key: str, value: Any, *, minimum: float, integer: bool = False
) -> float | int:
    kind = "an integer" if integer else "a finite number"
    label = key if key.startswith("CONFIG[") else f"CONFIG[{key!r}]"
    if (
        isinstance(value, bool)
        or not isinstance(value, (int,) if integer else (int, float))
        or not math.isfinite(value)
        or value < minimum
    ):
        raise InvalidChannelLayerError(
            f"{label} must be {kind} >= {minimum}, got {value!r}."
        )
    return value


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidChannelLayerError(
            f"CONFIG[{key!r}] must be True or False, got {value!r}."
        )
    return value


def _servers(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidChannelLayerError(
            "CONFIG['servers'] must be a NATS URL or a non-empty list of them, "
            "for example ['nats://127.0.0.1:4222']."
        )
    out = []
    for url in value:
        if not isinstance(url, str) or not _SERVER_RE.fullmatch(url):
            raise InvalidChannelLayerError(
                f"CONFIG['servers'] has {url!r}: each server must be a URL such "
                "as 'nats://host:4222' (schemes nats, tls, ws, wss)."
            )
        out.append(url)
    return tuple(out)


def _channel_capacity(value: Any) -> dict[Any, int]:
    if not isinstance(value, Mapping):
        raise InvalidChannelLayerError(
            "CONFIG['channel_capacity'] must be a dict of glob pattern (or compiled "
            "regex) to capacity, for example {'http.request': 200}."
        )
    out: dict[Any, int] = {}
    for pattern, cap in value.items():
        if not isinstance(pattern, str) and not hasattr(pattern, "match"):
            raise InvalidChannelLayerError(
                f"CONFIG['channel_capacity'] key {pattern!r} must be a glob string "
                "or a compiled regex."
            )
        out[pattern] = int(
            _number(
                f"CONFIG['channel_capacity'][{pattern!r}]", cap, minimum=1, integer=True
            )
        )
    return out


def _keys(value: Any) -> tuple[bytes, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)):
        raise InvalidChannelLayerError(
            "CONFIG['symmetric_encryption_keys'] must be a list of keys, even if "
            "there is only one: ['my-secret']."
        )
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidChannelLayerError(
            "CONFIG['symmetric_encryption_keys'] must be a non-empty list of "
            "str or bytes secrets; the first encrypts, all decrypt."
        )
    keys = []
    for key in value:
        if isinstance(key, str):
            key = key.encode("utf-8")
        if not isinstance(key, bytes) or not key:
            raise InvalidChannelLayerError(
                "CONFIG['symmetric_encryption_keys'] entries must be non-empty str "
                "or bytes."
            )
        keys.append(key)
    try:
        import cryptography  # noqa: F401
    except ImportError as exc:
        raise InvalidChannelLayerError(
            "CONFIG['symmetric_encryption_keys'] needs the cryptography package: "
            "pip install 'channels-nats-layer[crypto]'."
        ) from exc
    return tuple(keys)


def _tls_files(merged: Mapping[str, Any]) -> ssl.SSLContext | None:
    """Build the TLS context from the ``tls_*`` file keys, if any is set."""
    given = {key: merged[key] for key in TLS_KEYS if merged[key] is not None}
    if not given:
        return None
    for key, value in given.items():
        if not isinstance(value, str) or not value:
            raise InvalidChannelLayerError(
                f"CONFIG[{key!r}] must be a file path (str), got {value!r}."
            )
    if merged["tls"] is not None:
        raise InvalidChannelLayerError(
            f"CONFIG['tls'] and {', '.join(map(repr, given))} were both given: "
            "use either an ssl.SSLContext in 'tls' or the file keys, not both."
        )
    if ("tls_key_file" in given or "tls_key_password" in given) and (
        "tls_cert_file" not in given
    ):
        raise InvalidChannelLayerError(
            "CONFIG['tls_key_file'] needs CONFIG['tls_cert_file'] (the client "
            "certificate for mutual TLS)."
        )
    try:
        return ssl_context(*(merged[key] for key in TLS_KEYS))
    except (OSError, ssl.SSLError) as exc:
        keys = ", ".join(f"CONFIG[{key!r}]={value!r}" for key, value in given.items())
        raise InvalidChannelLayerError(
            f"Cannot build the TLS context from {keys}: {exc}. Give readable PEM "
            "files (a CA bundle; a client certificate and its private key)."
        ) from exc


def parse_config(config: Mapping[str, Any] | None = None, **kwargs: Any) -> LayerConfig:
    """Return the validated :class:`LayerConfig` for ``config`` and ``kwargs``."""
    raw = dict(config or {})
    raw.update(kwargs)
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise InvalidChannelLayerError(
            f"Unknown CONFIG key(s) {', '.join(map(repr, unknown))} for "
            f"channels_nats.NatsChannelLayer; valid keys: {', '.join(DEFAULTS)}."
        )
    merged = {**DEFAULTS, **raw}
    prefix = merged["prefix"]
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise InvalidChannelLayerError(
            f"CONFIG['prefix'] must be letters, digits, '_' or '-', optionally in "
            f"dot-separated parts such as 'myapp.asgi', got {prefix!r}."
        )
    tls = merged["tls"]
    if tls is not None and not isinstance(tls, ssl.SSLContext):
        raise InvalidChannelLayerError(
            "CONFIG['tls'] must be an ssl.SSLContext, for example "
            "ssl.create_default_context(cafile=...)."
        )
    tls_files = _tls_files(merged)
    storage = merged["jetstream_storage"]
    if storage not in ("file", "memory"):
        raise InvalidChannelLayerError(
            f"CONFIG['jetstream_storage'] must be 'file' or 'memory', got {storage!r}."
        )
    replicas = merged["jetstream_replicas"]
    if isinstance(replicas, bool) or replicas not in (1, 2, 3, 4, 5):
        raise InvalidChannelLayerError(
            "CONFIG['jetstream_replicas'] must be an integer from 1 to 5 (3 in a "
            f"3-node cluster for failover), got {replicas!r}."
        )
    connect_options = {
        key: merged[key] for key in PASSTHROUGH if merged[key] is not None
    }
    if tls_files is not None:
        connect_options["tls"] = tls_files
    return LayerConfig(
        servers=_servers(merged["servers"]),
        prefix=prefix,
        expiry=float(_number("expiry", merged["expiry"], minimum=0.001)),
        group_expiry=int(
            _number("group_expiry", merged["group_expiry"], minimum=1, integer=True)
        ),
        capacity=int(_number("capacity", merged["capacity"], minimum=1, integer=True)),
        channel_capacity=_channel_capacity(merged["channel_capacity"]),
        symmetric_encryption_keys=_keys(merged["symmetric_encryption_keys"]),
        connect_timeout=float(
            _number("connect_timeout", merged["connect_timeout"], minimum=0.1)
        ),
        request_timeout=float(
            _number("request_timeout", merged["request_timeout"], minimum=0.01)
        ),
        reconnect_time_wait=float(
            _number("reconnect_time_wait", merged["reconnect_time_wait"], minimum=0.0)
        ),
        ping_interval=float(
            _number("ping_interval", merged["ping_interval"], minimum=0.1)
        ),
        max_outstanding_pings=int(
            _number(
                "max_outstanding_pings",
                merged["max_outstanding_pings"],
                minimum=1,
                integer=True,
            )
        ),
        pending_size=int(
            _number("pending_size", merged["pending_size"], minimum=0, integer=True)
        ),
        jetstream_storage=storage,
        jetstream_replicas=replicas,
        redelivery_timeout=float(
            _number("redelivery_timeout", merged["redelivery_timeout"], minimum=0.5)
        ),
        outage_buffer=float(
            _number("outage_buffer", merged["outage_buffer"], minimum=0)
        ),
        credit_wait=float(_number("credit_wait", merged["credit_wait"], minimum=0)),
        batch_frames=_flag("batch_frames", merged["batch_frames"]),
        connect_options=connect_options,
    )


def problems(config: Any) -> list[str]:
    """Return every configuration problem of ``config`` (empty when valid)."""
    if config is not None and not isinstance(config, Mapping):
        return [f"CONFIG must be a dict, got {type(config).__name__}."]
    raw = dict(config or {})
    found = []
    unknown = {key: value for key, value in raw.items() if key not in DEFAULTS}
    # Each key is checked on its own (the others at their defaults), so one
    # bad key does not hide the next; then the whole, for checks across keys.
    parts = [unknown] if unknown else []
    parts.extend({key: value} for key, value in raw.items() if key in DEFAULTS)
    for part in parts:
        try:
            parse_config(part)
        except InvalidChannelLayerError as exc:
            found.append(str(exc))
    if not found:
        try:
            parse_config(raw)
        except InvalidChannelLayerError as exc:
            found.append(str(exc))
    return found
