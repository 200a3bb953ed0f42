"""Per-target sequence numbers, so that messages lost in transit are noticed.

Core NATS delivers at most once: a message published while its receiver is
not subscribed (for example in the moment after a server restart, before the
receiver's subscriptions are restored) is dropped by the server, and nobody
is told. Each connection of a sender numbers its data frames per target
(channel or group) in the order it writes them; a receiver that sees a number
jump counts the missing frames as ``lost_in_transit`` and logs a WARNING, so
such loss is never silent.

State on both sides is forgotten after ``idle`` seconds without traffic; a
sender that starts again at 1 is taken as a fresh start, not as a gap.
"""

from __future__ import annotations

import threading
import time

__all__ = ["GapDetector", "Sequencer"]


class Sequencer:
    """Sender side: the next number per target, for one connection."""

    def __init__(self, idle: float) -> None:
        self._idle = idle
        self._lock = threading.Lock()
        self._next: dict[str, list[float]] = {}  # target -> [last seq, last use]

    def next(self, target: str) -> int:
        now = time.monotonic()
        with self._lock:
            state = self._next.get(target)
            if state is None:
                state = self._next[target] = [0, now]
            state[0] += 1
            state[1] = now
            return int(state[0])

    def sweep(self) -> None:
        deadline = time.monotonic() - self._idle
        with self._lock:
            for target in [t for t, s in self._next.items() if s[1] < deadline]:
                del self._next[target]


class GapDetector:
    """Receiver side: the last number seen per (sender, connection, target)."""

    def __init__(self, idle: float) -> None:
        self._idle = idle
        self._lock = threading.Lock()
        self._last: dict[tuple[str, int, str], list[float]] = {}

    def observe(self, origin: str, stream: int, target: str, seq: int) -> int:
        """Record ``seq``; return how many frames before it never arrived."""
        key = (origin, stream, target)
        now = time.monotonic()
        with self._lock:
            state = self._last.get(key)
            if state is None:
                self._last[key] = [seq, now]
                return 0
            last = int(state[0])
            state[0], state[1] = seq, now
        if seq > last + 1:
            return seq - last - 1
        return 0  # next in line, a restart at 1, or a duplicate

    def sweep(self) -> None:
        deadline = time.monotonic() - self._idle
        with self._lock:
            for key in [k for k, s in self._last.items() if s[1] < deadline]:
                del self._last[key]
