"""Pure mapping of Channels names onto NATS subjects.

A Channels name may hold ``.``, empty segments and ``!`` (``a..b`` and ``x.``
are valid names); a NATS token may not. :func:`token` encodes any name into
one token, reversibly: ASCII letters, digits and ``-`` stay, ``_`` becomes
``__``, ``.`` becomes ``_d``, ``!`` becomes ``_b`` and any other character
becomes ``_x`` plus six hex digits of its code point.

Subjects of one layer, below its ``prefix``:

============================  ==============================================
``<prefix>.p.<client_id>``    messages for the specific channels of a process
``<prefix>.g.<token(group)>`` messages to a group
``<prefix>.ctl.<client_id>``  control requests to one process
``<prefix>.bc``               control broadcast to every process (flush)
============================  ==============================================
"""

from __future__ import annotations

import re
import string

__all__ = ["Subjects", "owner_of", "token", "untoken"]

_KEEP = frozenset(string.ascii_letters + string.digits + "-")
_NAMED = {"_": "__", ".": "_d", "!": "_b"}
_UNNAMED = {"_": "_", "d": ".", "b": "!"}
_HEX6 = re.compile(r"0[0-9a-f]{5}|10[0-9a-f]{4}")


_PLAIN = re.compile(r"[A-Za-z0-9-]+")


def token(name: str) -> str:
    """Encode ``name`` into a single valid, non-empty NATS subject token."""
    if _PLAIN.fullmatch(name):
        return name
    if not name:
        return "_e"
    out = []
    for ch in name:
        if ch in _KEEP:
            out.append(ch)
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        else:
            out.append(f"_x{ord(ch):06x}")
    return "".join(out)


def untoken(tok: str) -> str:
    """Invert :func:`token`; raise ``ValueError`` on a string it cannot produce."""
    if tok == "_e":
        return ""
    if not tok:
        raise ValueError("an empty string is not a channels_nats token")
    out = []
    i, n = 0, len(tok)
    while i < n:
        ch = tok[i]
        if ch != "_":
            if ch not in _KEEP:
                raise ValueError(f"not a channels_nats token: {tok!r}")
            out.append(ch)
            i += 1
            continue
        code = tok[i + 1 : i + 2]
        if code in _UNNAMED:
            out.append(_UNNAMED[code])
            i += 2
        elif code == "x" and _HEX6.fullmatch(tok, i + 2, i + 8):
            ch = chr(int(tok[i + 2 : i + 8], 16))
            if ch in _KEEP or ch in _NAMED:  # token() writes these another way
                raise ValueError(f"not a channels_nats token: {tok!r}")
            out.append(ch)
            i += 8
        else:
            raise ValueError(f"not a channels_nats token: {tok!r}")
    return "".join(out)


def owner_of(channel: str) -> str:
    """Return the client id that owns the specific channel ``channel``.

    Specific channel names are ``<anything>.<client_id>!<local part>``; the
    owner is the last dot-separated segment before the ``!``.
    """
    head = channel.split("!", 1)[0]
    return head.rsplit(".", 1)[-1]


class Subjects:
    """The subjects of one layer ``prefix``."""

    __slots__ = ("broadcast", "prefix", "_group", "_process", "_control", "_cache")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._process = f"{prefix}.p."
        self._group = f"{prefix}.g."
        self._control = f"{prefix}.ctl."
        self.broadcast = f"{prefix}.bc"
        # Subjects of recently used names; bounded, cleared when full.
        self._cache: dict[tuple[int, str], str] = {}

    def _subject(self, kind: int, base: str, name: str) -> str:
        key = (kind, name)
        subject = self._cache.get(key)
        if subject is None:
            if len(self._cache) >= 8192:
                self._cache.clear()
            subject = self._cache[key] = base + token(name)
        return subject

    def process(self, client_id: str) -> str:
        return self._subject(0, self._process, client_id)

    def control(self, client_id: str) -> str:
        return self._subject(1, self._control, client_id)

    def group(self, group: str) -> str:
        return self._subject(2, self._group, group)
