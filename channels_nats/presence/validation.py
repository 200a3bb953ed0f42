"""Checks of the arguments of the presence API, before anything is published.

Pure functions: each returns the value as the roster keeps it, or raises
``TypeError`` (a room or session that is not a Channels name, a user of the
wrong type) or ``ValueError`` (a bad value) with a message saying what is
allowed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from . import protocol as P

__all__ = ["check_frame", "check_room", "check_session", "check_user", "meta_text"]

#: Metadata keys that presence itself sets in every ``metas`` entry.
RESERVED = frozenset(("session", "node", "joined_at"))


def check_room(room: Any) -> str:
    if not P.valid_room(room):
        raise TypeError(
            "Room name must be a valid unicode string with length < 100 "
            "containing only ASCII alphanumerics, hyphens, underscores, or "
            f"periods (the rules of group names), not {room!r:.120}"
        )
    return str(room)


def check_session(session: Any) -> str:
    if not P.valid_session(session):
        raise TypeError(
            "Session must be a channel name (the consumer's channel_name), "
            f"not {session!r:.120}"
        )
    return str(session)


def check_user(user: Any) -> str | None:
    if user is None:
        return None
    if isinstance(user, bool) or not isinstance(user, (str, int)):
        raise TypeError(f"user must be a str, an int or None, not {user!r:.80}")
    key = str(user)
    if not 0 < len(key) <= P.USER_MAX:
        raise ValueError(f"user keys are 1 to {P.USER_MAX} characters, got {len(key)}")
    return key


def meta_text(meta: Any, cap: int) -> str:
    """The compact JSON text of ``meta``, at most ``cap`` bytes of UTF-8."""
    if meta is None:
        return "{}"
    if not isinstance(meta, Mapping):
        raise ValueError(
            f"meta must be a JSON object (a dict), not {type(meta).__name__}"
        )
    reserved = RESERVED.intersection(meta)
    if reserved:
        raise ValueError(
            f"meta keys {sorted(reserved)} are reserved: presence sets them"
        )
    try:
        text = json.dumps(
            dict(meta),
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            sort_keys=True,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta is not JSON-serializable: {exc}") from None
    size = len(text.encode("utf-8"))
    if size > cap:
        raise ValueError(
            f"meta is {size} bytes of JSON; the limit is meta_max_bytes={cap} "
            "(CONFIG['presence']['meta_max_bytes'])"
        )
    return text


def check_frame(frame: bytes, limit: int) -> None:
    """Refuse a frame longer than the server's ``max_payload`` (``limit``)."""
    if len(frame) > limit:
        raise ValueError(
            f"the presence frame would be {len(frame)} bytes; the NATS server "
            f"accepts at most max_payload={limit}"
        )
