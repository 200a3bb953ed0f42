"""Per-target sequence numbers, so that messages lost in transit are noticed.

Core NATS delivers at most once: a message published while its receiver is
not subscribed (for example in the moment after a server restart, before the
receiver's subscriptions are restored) is dropped by the server, and nobody
is told. Each connection of a sender numbers its data frames per target
(channel or group) in the order it writes them; a receiver that sees a number
jump counts the missing frames as ``lost_in_transit`` and logs a WARNING, so
such loss is never silent.

State on both sides is kept in two generations: :meth:`sweep` (called every
``idle`` seconds or so) drops what was not used since the previous sweep, so
per-message work is a dict lookup with no clock read. A sender that starts a
target again at 1 is taken as a fresh start, not as a gap.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

__all__ = ["GapDetector", "Sequencer"]

K = TypeVar("K")


class _Generations(Generic[K]):
    """A dict whose entries unused for a whole sweep interval are forgotten."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: dict[K, int] = {}
        self.previous: dict[K, int] = {}

    def get(self, key: K) -> int | None:
        # Called with the lock held.
        value = self.current.get(key)
        if value is None:
            value = self.previous.pop(key, None)
        return value

    def sweep(self) -> None:
        with self.lock:
            self.previous, self.current = self.current, {}


class Sequencer:
    """Sender side: the next number per target, for one connection."""

    def __init__(self) -> None:
        self._state: _Generations[str] = _Generations()

    def next(self, target: str) -> int:
        state = self._state
        with state.lock:
            seq = (state.get(target) or 0) + 1
            state.current[target] = seq
            return seq

    def sweep(self) -> None:
        self._state.sweep()


class GapDetector:
    """Receiver side: the last number seen per (sender, connection, target)."""

    def __init__(self) -> None:
        self._state: _Generations[tuple[str, int, str]] = _Generations()

    def observe(self, origin: str, link: int, target: str, seq: int) -> int:
        """Record ``seq``; return how many frames before it never arrived."""
        key = (origin, link, target)
        state = self._state
        with state.lock:
            last = state.get(key)
            state.current[key] = seq
        if last is not None and seq > last + 1:
            return seq - last - 1
        return 0  # first seen, next in line, a restart at 1, or a duplicate

    def sweep(self) -> None:
        self._state.sweep()
