"""Convergence: sync rounds with every node and fetches of one node's roster.

A sync round asks every node for its summary at once and fetches the rosters
that differ; it runs at start, after every reconnect and after a stall. A
fetch asks one node for its roster, which arrives in chunks below
``max_payload`` (see :mod:`.inbound`).
"""

from __future__ import annotations

import asyncio
import builtins
import logging

from ..exceptions import ConnectionUnavailable, NatsLayerError
from . import protocol as P
from .events import Events
from .nodes import Change
from .state import Assembly

__all__ = ["Sync"]

logger = logging.getLogger(__name__)


class Sync(Events):
    """Sync rounds and roster fetches."""

    async def _sync_round(self) -> None:
        with self._lock:
            own = self._roster.local.summary()
            known = len(self._roster.nodes) if self._converged else 0
        replies = await self.hub.gather(
            self.subjects.nodes,
            P.encode_sync(own),
            timeout=self.settings.sync_window,
            expected=known or None,
        )
        now = self._clock()
        changes: builtins.list[Change] = []
        fetch: builtins.list[str] = []
        for data in replies:
            try:
                frame = P.decode(data)
                if not isinstance(frame, P.SyncFrame) or frame.kind != P.SUMMARY:
                    raise P.MalformedFrame(f"{type(frame).__name__} as a sync answer")
            except P.MalformedFrame as exc:
                self._malformed("a sync answer", exc)
                continue
            s = frame.summary
            if s.node == self.node:
                continue
            with self._lock:
                found, need = self._roster.apply_summary(s, now)
                if need:
                    self._roster.fetch_started(s.node, now)
                self._record(found)
            changes += found
            if need:
                fetch.append(s.node)
        self._dispatch(changes)
        if fetch:
            await asyncio.gather(*(self._fetch(node) for node in fetch))
        self._converged = True
        self.last_sync = self._clock()
        self.hub.stats.incr("presence_syncs")

    async def _resync(self, why: str) -> None:
        try:
            await self._sync_round()
        except NatsLayerError as exc:
            logger.warning(
                "sync after %s failed: %r (the next heartbeats repair the roster)",
                why,
                exc,
            )

    async def _fetch(self, node: str) -> bool:
        """Ask ``node`` for its roster; True once it arrived and was applied."""
        request_id = next(self._request_ids)
        assembly = Assembly(node)
        with self._lock:
            self._fetches[request_id] = assembly
        ok = False
        try:
            self.hub.publish(
                self.subjects.node(node),
                P.encode_roster_request(self.node, request_id),
            )
            ok = await asyncio.wait_for(
                asyncio.wrap_future(assembly.future), self.settings.fetch_timeout
            )
        except (asyncio.TimeoutError, ConnectionUnavailable):
            pass
        finally:
            with self._lock:
                self._fetches.pop(request_id, None)
                self._roster.fetch_done(node, ok, self._clock())
        self.hub.stats.incr("presence_resyncs")
        return ok
