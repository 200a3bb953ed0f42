"""The presence node's state: what the tracker's parts share, and its lock.

:class:`NodeState` holds the roster of this process's copy of every node, the
queues of signals and diffs, the roster fetches in flight and the lifecycle
flags. It is touched from NATS handlers (the home loop) and from API calls
(any loop or thread) under one short lock; nothing awaits while holding it.
The tracker's other parts (:mod:`.events`, :mod:`.sync`, :mod:`.inbound`,
:mod:`.liveness`, :mod:`.lifecycle`) build on it, one layer each, and
:class:`~.tracker.PresenceTracker` adds the API on top.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import contextlib
import itertools
import math
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..exceptions import ConnectionUnavailable
from . import protocol as P
from .diffs import DiffBuffer
from .nodes import Change
from .roster import Roster
from .settings import PresenceSettings

__all__ = ["Assembly", "DiffListener", "NodeState"]

#: ``callback(room, joins, leaves)``, called on the home loop; must not block.
DiffListener = Callable[[str, dict[str, Any], dict[str, Any]], None]


def _new_incarnation() -> int:
    """Milliseconds since the epoch and 16 random bits: later is larger."""
    return (time.time_ns() // 1_000_000) << 16 | secrets.randbits(16)


class Assembly:
    """The chunks of one requested roster as they arrive."""

    __slots__ = ("chunks", "future", "node", "summary", "total")

    def __init__(self, node: str) -> None:
        self.node = node
        #: True once the roster is applied, False if it was malformed.
        self.future: concurrent.futures.Future[bool] = concurrent.futures.Future()
        self.chunks: dict[int, list[P.Member]] = {}
        self.summary: P.Summary | None = None
        self.total = 0

    def add(self, chunk: P.RosterChunk) -> list[P.Member] | None:
        """Add a chunk; return all members once every chunk is there."""
        if self.summary is None:
            self.summary, self.total = chunk.summary, chunk.total
        elif chunk.summary != self.summary or chunk.total != self.total:
            raise P.MalformedFrame("chunks of one roster disagree")
        self.chunks[chunk.part] = chunk.members
        if len(self.chunks) < self.total:
            return None
        return [m for i in range(self.total) for m in self.chunks[i]]


class NodeState:
    """The state of this process's presence node for one channel layer."""

    def __init__(
        self,
        layer: Any,
        settings: PresenceSettings | None = None,
        *,
        alias: str = "default",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.layer = layer
        self.hub: Any = layer.hub
        self.alias = alias
        self.settings = settings or PresenceSettings()
        self.node: str = self.hub.client_id
        self.incarnation = _new_incarnation()
        self.subjects = P.Subjects(self.hub.prefix)
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._roster = Roster(
            self.node,
            self.incarnation,
            self.settings,
            host=socket.gethostname()[: P.HOST_MAX],
            pid=os.getpid(),
            started=wall(),
            now=clock(),
        )
        self._diffs = DiffBuffer()
        self._diff_sessions: dict[str, set[str]] = {}
        self._diff_listeners: builtins.list[DiffListener] = []
        self._diff_scheduled = False
        self._signal_queue: deque[Change] = deque()
        self._pumping = False
        self._fetches: dict[int, Assembly] = {}
        self._request_ids = itertools.count(1)
        self._starting: concurrent.futures.Future[None] | None = None
        self._removers: builtins.list[Callable[[], None]] = []
        self._grace_until = -math.inf
        self._converged = False
        self.last_sync: float | None = None
        self.started = False
        self.closed = False

    def _spawn(self, coro: Any) -> None:
        with contextlib.suppress(ConnectionUnavailable):  # it closed the coroutine
            self.hub.spawn(coro)

    def _malformed(self, where: str, exc: Exception) -> None:
        self.hub.stats.drop(
            "presence_malformed",
            "dropped a malformed frame on %s: %s",
            where,
            exc,
        )
