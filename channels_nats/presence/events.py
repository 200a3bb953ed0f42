"""Signals and ``presence.diff`` events of the tracker's roster changes.

Changes are recorded under the lock as they happen; signals are fired and
diffs flushed (every ``diff_window``) from tasks on the home loop, never from
a NATS handler or with the lock held.
"""

from __future__ import annotations

import asyncio
import builtins
import logging

from asgiref.sync import sync_to_async
from channels.exceptions import ChannelFull

from ..exceptions import ConnectionUnavailable, NatsLayerError
from . import signals
from .nodes import Change
from .state import NodeState

__all__ = ["Events"]

logger = logging.getLogger(__name__)


class Events(NodeState):
    """Queue and deliver the signals and diffs of roster changes."""

    def _record(self, changes: builtins.list[Change]) -> None:
        """Note changes for the diff events (called with the lock held)."""
        if not changes or not (self._diff_sessions or self._diff_listeners):
            return
        everything = bool(self._diff_listeners)
        for change in changes:
            if everything or change.member.room in self._diff_sessions:
                self._diffs.record(change)
        if self._diffs:
            self._schedule_diffs()

    def _schedule_diffs(self) -> None:
        # Called with the lock held.
        if self._diff_scheduled:
            return
        self._diff_scheduled = True
        try:
            self.hub.spawn(self._flush_diffs())
        except ConnectionUnavailable:
            self._diff_scheduled = False

    async def _flush_diffs(self) -> None:
        try:
            await asyncio.sleep(self.settings.diff_window)
        except asyncio.CancelledError:
            with self._lock:
                self._diff_scheduled = False
            raise
        with self._lock:
            self._diff_scheduled = False
            diffs = self._diffs.take(self._roster)
            sessions = {
                room: list(self._diff_sessions.get(room, ())) for room, _, _ in diffs
            }
            listeners = list(self._diff_listeners)
        for room, joins, leaves in diffs:
            event = {
                "type": "presence.diff",
                "room": room,
                "joins": joins,
                "leaves": leaves,
            }
            for session in sessions[room]:
                try:
                    await self.layer.send(session, event)
                except ChannelFull:
                    self.hub.stats.drop(
                        "presence_diffs_dropped",
                        "a presence.diff for %s was dropped: its channel is full",
                        session,
                    )
                except NatsLayerError as exc:
                    self.hub.stats.drop(
                        "presence_diffs_dropped",
                        "a presence.diff for %s failed: %r",
                        session,
                        exc,
                    )
            for listener in listeners:
                try:
                    listener(room, joins, leaves)
                except Exception:
                    logger.exception("a presence diff listener raised")

    def _dispatch(self, changes: builtins.list[Change]) -> None:
        """Queue the signals of ``changes`` (never from inside the lock)."""
        if not changes or not signals.has_receivers():
            return
        with self._lock:
            self._signal_queue.extend(changes)
            if self._pumping:
                return
            self._pumping = True
        self._kick_pump(already_marked=True)

    def _kick_pump(self, already_marked: bool = False) -> None:
        if not already_marked:
            with self._lock:
                if self._pumping:
                    return
                self._pumping = True
        try:
            self.hub.spawn(self._pump())
        except ConnectionUnavailable:
            with self._lock:
                self._pumping = False

    async def _pump(self) -> None:
        try:
            while True:
                with self._lock:
                    if not self._signal_queue:
                        self._pumping = False
                        return
                    batch = list(self._signal_queue)
                    self._signal_queue.clear()
                await sync_to_async(signals.fire)(self, batch)
        except BaseException:
            with self._lock:
                self._pumping = False
            raise
