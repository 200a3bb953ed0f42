"""Resending what core NATS dropped: a sender's recent frames, a receiver's gaps.

Core NATS drops a message that reaches a server while its receiver is not
subscribed there: a receiver whose node died and who is reconnecting to
another, or a sender whose backlog goes out the moment it is back, before the
receiver is. The per-target sequence numbers show the gap; this module closes
it:

- **Sender** (:class:`Retained`, one per connection): the frames it published
  in the last ``max_age`` seconds, at most ``max_bytes`` of bodies and
  ``max_frames`` frames, oldest forgotten first. While the connection is
  down nothing ages (receivers cannot have asked yet); once it is back, what
  it kept meanwhile stays for another ``max_age``.
- **Receiver** (:class:`Reassembly`): the next number expected per
  (sender, connection, target). A frame past a gap is held back, together
  with those after it, and the sender is asked for the missing range; the
  resent frames fill the gap and everything goes out in order. What the
  sender no longer has (it says so), or what does not come within
  ``wait`` seconds, is counted lost and the held frames go out.
- **Tails**: a lost frame that no later frame follows leaves no gap. A
  sender announces its last numbers (a *mark*) when its connection is back
  and when another process says its subscriptions are back; a receiver
  behind a mark asks for the difference.

Both sides are plain data structures with a lock: the transport feeds them
frames and sends what they ask for. Duplicates (a resent frame that arrived
anyway, a second resend) are dropped by number, so delivery stays exactly
once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["Kept", "Reassembly", "Retained"]

#: Frames a sender keeps at most, whatever their size.
MAX_FRAMES = 100_000
#: Seconds a sender keeps its frames at least: receivers ask once they are
#: back from a failover, which takes a moment even when outage_buffer is small.
MIN_RETAIN = 5.0


#: A sender looks at the age of its oldest frame once every this many frames.
AGE_EVERY = 64


class Kept(NamedTuple):
    """One published data frame, as the sender can publish it again."""

    at: float  # time.monotonic() when it was published
    kind: int
    target: str
    subject: str
    sent_at: float
    body: bytes
    seq: int


class Retained:
    """Sender side: the recent frames of one connection."""

    def __init__(
        self,
        max_age: float,
        max_bytes: int,
        max_frames: int = MAX_FRAMES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.max_frames = max_frames
        self._frames: deque[tuple[Any, ...]] = deque()  # Kept's fields
        self._bytes = 0
        self._countdown = AGE_EVERY
        self._lock = threading.Lock()
        # Frames count as kept no earlier than this (the end of an outage);
        # None while an outage lasts: then nothing ages at all.
        self._floor: float | None = float("-inf")

    def pause(self) -> None:
        """The connection is down: stop ageing what is kept."""
        self._floor = None

    def resume(self) -> None:
        """The connection is back: what is kept ages from now on."""
        self._floor = self.clock()

    def __len__(self) -> int:
        return len(self._frames)

    def keep(
        self,
        at: float,
        kind: int,
        target: str,
        subject: str,
        sent_at: float,
        body: bytes,
        seq: int,
    ) -> None:
        frames = self._frames
        lock = self._lock
        lock.acquire()  # not ``with``: 0.1 µs less on the send path
        try:
            # A plain tuple (a Kept's fields, in order): building a Kept
            # costs a call more. find() and latest() hand out Kept.
            frames.append((at, kind, target, subject, sent_at, body, seq))
            self._bytes += len(body)
            if self._bytes > self.max_bytes or len(frames) > self.max_frames:
                # A sender at its limit would trim one frame per send; going
                # a sixteenth below the limits trims once per many sends.
                self._trim(at, self.max_bytes // 16, self.max_frames // 16)
            else:
                # Age is looked at every AGE_EVERY frames: a few frames
                # kept a little longer cost nothing (find() and latest()
                # trim by age first), a look per send costs 0.1 µs.
                self._countdown -= 1
                if self._countdown <= 0:
                    self._countdown = AGE_EVERY
                    self._trim(at)
        finally:
            lock.release()

    def _trim(self, now: float, bytes_below: int = 0, frames_below: int = 0) -> None:
        # Lock held.
        frames = self._frames
        floor = self._floor
        oldest = now - self.max_age
        # Below a limit only when over it.
        max_bytes = self.max_bytes
        if self._bytes > max_bytes:
            max_bytes -= bytes_below
        max_frames = self.max_frames
        if len(frames) > max_frames:
            max_frames -= frames_below
        while frames and (
            self._bytes > max_bytes
            or len(frames) > max_frames
            or (floor is not None and max(frames[0][0], floor) < oldest)
        ):
            self._bytes -= len(frames.popleft()[5])

    def find(self, target: str, first: int, last: int) -> list[Kept]:
        """The kept frames of ``target`` numbered ``first`` to ``last``, in order."""
        with self._lock:
            self._trim(self.clock())
            return [
                Kept._make(kept)
                for kept in self._frames
                if kept[2] == target and first <= kept[6] <= last
            ]

    def latest(self) -> list[Kept]:
        """The last kept frame of each target (what a mark announces)."""
        with self._lock:
            self._trim(self.clock())
            last: dict[str, tuple[Any, ...]] = {}
            for kept in self._frames:
                last[kept[2]] = kept
        return [Kept._make(kept) for kept in last.values()]

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._bytes = 0


Key = tuple[str, int, str]  # (origin, connection number, target)


class _Gap:
    __slots__ = ("missing", "filled", "held", "high", "deadline")

    def __init__(self, first: int, last: int, deadline: float) -> None:
        self.missing = set(range(first, last + 1))
        self.filled: dict[int, Any] = {}
        self.held: list[tuple[int, Any]] = []
        self.high = last  # highest number this gap knows of
        self.deadline = deadline


class Reassembly:
    """Receiver side: in-order, exactly-once delivery per sender and target.

    ``ask(origin, stream, target, first, last)`` requests a resend;
    ``deliver(item)`` hands over a frame released from a gap (live frames
    with no gap are delivered by the caller itself, see :meth:`observe`);
    ``lost(origin, target, n)`` reports frames given up on. ``deliver`` is
    called with the lock held, so released frames keep their order; it must
    not call back into this object.
    """

    def __init__(
        self,
        ask: Callable[[str, int, str, int, int], None],
        deliver: Callable[[Any], None],
        lost: Callable[[str, str, int], None],
        wait: float,
        max_gap: int = MAX_FRAMES,
        max_missing: int = MAX_FRAMES,
        overlapping: Callable[[], bool] = lambda: False,
    ) -> None:
        #: Whether two of our connections deliver at once (a home move): then
        #: frames out of line are reordering between them, not loss.
        self._overlapping = overlapping
        #: Frames one gap, and all open gaps together, may wait for: beyond
        #: that they are counted lost at once (no sender keeps more, and a
        #: hostile frame cannot make us allocate or ask for more).
        self.max_gap = max_gap
        self.max_missing = max_missing
        self._missing = 0
        self._ask = ask
        self._deliver = deliver
        self._lost = lost
        self.wait = wait
        self._lock = threading.Lock()
        # Last number delivered (or, while a gap is open, the highest seen)
        # per key, in two generations like the sender's numbering: a key
        # unused for two sweeps is forgotten.
        self._current: dict[Key, int] = {}
        self._previous: dict[Key, int] = {}
        self._gaps: dict[Key, _Gap] = {}
        self.duplicates = 0

    def _last(self, key: Key) -> int | None:
        value = self._current.get(key)
        if value is None:
            value = self._previous.pop(key, None)
            if value is not None:
                self._current[key] = value
        return value

    # -- frames ------------------------------------------------------------------

    def observe(
        self, origin: str, stream: int, target: str, seq: int, item: Any
    ) -> bool:
        """A live frame arrived: True means deliver it now.

        False means this object took it: held behind a gap (delivered later
        through ``deliver``).
        """
        key = (origin, stream, target)
        ask: tuple[str, int, str, int, int] | None = None
        too_wide = 0
        with self._lock:
            gap = self._gaps.get(key) if self._gaps else None
            if gap is None:
                last = self._last(key)
                if last is None or seq == last + 1 or seq <= last:
                    # Next in line, first seen, or numbering started again
                    # (a sender forgets idle targets): one connection's
                    # frames arrive in order, so a live frame is never a
                    # duplicate. Resent frames come through resent().
                    if last is None or seq > last or not self._overlapping():
                        self._current[key] = seq
                    return True
                if self._overlapping():
                    # Reordered between our two connections: deliver now.
                    self._current[key] = seq
                    return True
                if not self._room(seq - last - 1):
                    # More than any sender keeps: count it, do not ask.
                    self._current[key] = seq
                    too_wide = seq - last - 1
                else:
                    gap = self._gaps[key] = _Gap(
                        last + 1, seq - 1, time.monotonic() + self.wait
                    )
                    self._missing += seq - last - 1
                    ask = (origin, stream, target, last + 1, seq - 1)
            elif seq <= gap.high:
                return self._refill(key, gap, seq, item)
            elif not self._room(seq - gap.high - 1):
                too_wide = seq - gap.high - 1
            elif seq > gap.high + 1:
                gap.missing.update(range(gap.high + 1, seq))
                self._missing += seq - gap.high - 1
                ask = (origin, stream, target, gap.high + 1, seq - 1)
            if gap is not None:
                gap.high = seq
                gap.held.append((seq, item))
                self._current[key] = seq
        if too_wide:
            self._lost(origin, target, too_wide)
            if gap is None:
                return True
        if ask is not None:
            self._ask(*ask)
        return False

    def observe_run(
        self, origin: str, stream: int, target: str, first: int, last: int
    ) -> bool:
        """Live frames ``first..last`` in a row arrived: True means deliver them all.

        The batch fast path: true only where :meth:`observe` would have said
        True to each in turn without asking anything (no gap open, the run
        next in line or the first seen). False changes nothing: the caller
        then observes each frame.
        """
        key = (origin, stream, target)
        with self._lock:
            if self._gaps and key in self._gaps:
                return False
            seen = self._last(key)
            if seen is not None and first != seen + 1:
                return False
            self._current[key] = last
            return True

    def resent(
        self, origin: str, stream: int, target: str, seq: int, item: Any
    ) -> None:
        """A frame the sender published again arrived."""
        key = (origin, stream, target)
        with self._lock:
            gap = self._gaps.get(key)
            if gap is None:
                self.duplicates += 1
                return
            self._refill(key, gap, seq, item)

    def _refill(self, key: Key, gap: _Gap, seq: int, item: Any) -> bool:
        # Lock held.
        if seq not in gap.missing:
            self.duplicates += 1
            return False
        gap.missing.discard(seq)
        self._missing -= 1
        gap.filled[seq] = item
        if not gap.missing:
            self._release(key, gap)
        return False

    def gone(
        self, origin: str, stream: int, target: str, first: int, last: int
    ) -> None:
        """The sender has resent all it still had of ``first``..``last``."""
        key = (origin, stream, target)
        with self._lock:
            gap = self._gaps.get(key)
            if gap is None:
                return
            given_up = {seq for seq in gap.missing if first <= seq <= last}
            if not given_up:
                return
            gap.missing -= given_up
            self._missing -= len(given_up)
            if not gap.missing:
                self._release(key, gap)
        self._lost(origin, target, len(given_up))

    def mark(self, origin: str, stream: int, target: str, seq: int) -> None:
        """The sender says its last frame to ``target`` was number ``seq``."""
        key = (origin, stream, target)
        with self._lock:
            last = self._last(key)
            if last is None or seq <= last:
                return  # nothing missing, or a sender we never heard from
            gap = self._gaps.get(key)
            if gap is not None:
                if seq <= gap.high or not self._room(seq - gap.high):
                    return
                first = gap.high + 1
                gap.missing.update(range(first, seq + 1))
                gap.high = seq
            else:
                if not self._room(seq - last):
                    return  # junk, or more than we could wait for
                first = last + 1
                gap = _Gap(first, seq, time.monotonic() + self.wait)
                self._gaps[key] = gap
            self._missing += seq - first + 1
            self._current[key] = seq
        self._ask(origin, stream, target, first, seq)

    def _room(self, width: int) -> bool:
        # Lock held.
        return width <= self.max_gap and self._missing + width <= self.max_missing

    def _release(self, key: Key, gap: _Gap) -> None:
        # Lock held: deliver what the gap holds, in number order.
        del self._gaps[key]
        ready = sorted([*gap.filled.items(), *gap.held], key=lambda pair: pair[0])
        for _, item in ready:
            self._deliver(item)

    # -- housekeeping --------------------------------------------------------------

    def expire(self, now: float | None = None) -> int:
        """Give up on gaps past their deadline; return how many frames were lost."""
        now = time.monotonic() if now is None else now
        reports = []
        with self._lock:
            for key, gap in list(self._gaps.items()):
                if gap.deadline <= now:
                    reports.append((key, len(gap.missing)))
                    self._missing -= len(gap.missing)
                    gap.missing.clear()
                    self._release(key, gap)
        for (origin, _, target), n in reports:
            self._lost(origin, target, n)
        return sum(n for _, n in reports)

    def forget(self, target: str) -> None:
        """Forget every sender's numbers for ``target`` (a group we left).

        Frames published while nobody here was subscribed were not meant for
        this process; without this, joining the group again would look like
        a gap and have them resent to members that joined after them.
        """
        with self._lock:
            for table in (self._current, self._previous):
                for key in [k for k in table if k[2] == target]:
                    del table[key]
            for key in [k for k in self._gaps if k[2] == target]:
                self._missing -= len(self._gaps.pop(key).missing)

    @property
    def open_gaps(self) -> int:
        return len(self._gaps)

    def sweep(self) -> None:
        with self._lock:
            self._previous, self._current = self._current, {}
            # Keys with an open gap stay current.
            for key in self._gaps:
                value = self._previous.pop(key, None)
                if value is not None:
                    self._current[key] = value
