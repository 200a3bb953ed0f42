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

__all__ = ["Sequencer"]

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
        # acquire/release rather than ``with``: 0.1 µs less on the send path.
        state.lock.acquire()
        try:
            current = state.current
            seq = current.get(target)
            if seq is None:
                seq = state.previous.pop(target, 0)
            seq += 1
            current[target] = seq
            return seq
        finally:
            state.lock.release()

    def undo(self, target: str, seq: int) -> None:
        """Take back number ``seq`` if it is still the last one given out."""
        state = self._state
        with state.lock:
            if state.current.get(target) == seq:
                state.current[target] = seq - 1

    def sweep(self) -> None:
        self._state.sweep()
