"""Publishes handed to a link from other threads, written in order on its loop.

Callers on short-lived loops (``async_to_sync`` in plain threads) use the I/O
thread's link. They queue their publish and return without waiting; one task
on the link's loop writes the queue out per wake-up, in order. A publish that
fails then is counted (``dropped_publish_failed``): its caller is gone.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from .exceptions import ConnectionUnavailable, NatsLayerError
from .stats import Stats

__all__ = ["Outbox"]

Publish = Callable[[str, bytes, str], Awaitable[None]]


class Outbox:
    """The queue of one link; :attr:`lock` orders numbering and queueing."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        label: str,
        publish: Publish,
        spawn: Callable[[Awaitable[Any]], Any],
        stats: Stats,
    ) -> None:
        self.loop = loop
        self.label = label
        self.lock = threading.Lock()
        self._publish = publish
        self._spawn = spawn
        self._stats = stats
        self._items: deque[tuple[str, bytes, str]] = deque()
        self._scheduled = False

    def put(self, subject: str, payload: bytes, reply: str) -> None:
        """Queue one publish; call it with :attr:`lock` held."""
        self._items.append((subject, payload, reply))
        if self._scheduled:
            return
        self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._start)
        except RuntimeError as exc:
            self._items.pop()
            self._scheduled = False
            raise ConnectionUnavailable(
                f"the event loop of {self.label} is closed"
            ) from exc

    def take_all(self) -> list[tuple[str, bytes, str]]:
        """Remove and return what is queued (the link is closing)."""
        with self.lock:
            items = list(self._items)
            self._items.clear()
        return items

    def _start(self) -> None:
        self._spawn(self._drain())

    async def _drain(self) -> None:
        while True:
            with self.lock:
                if not self._items:
                    self._scheduled = False
                    return
                batch = list(self._items)
                self._items.clear()
            for subject, payload, reply in batch:
                try:
                    await self._publish(subject, payload, reply)
                except NatsLayerError as exc:
                    self._stats.drop(
                        "dropped_publish_failed",
                        "a publish to %s was lost: %s",
                        subject,
                        exc,
                    )
