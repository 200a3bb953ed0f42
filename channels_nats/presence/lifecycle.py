"""The tracker's lifecycle: start once, resync after a reconnect, say bye.

Starting subscribes the presence subjects through the layer's hub (so they
move with the home and come back after a reconnect), starts the ticker and
runs a first sync round. ``close()`` of the layer sends a bye, which removes
the node's members everywhere at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging

from ..exceptions import ConnectionUnavailable, NatsLayerError
from . import protocol as P
from .liveness import Liveness

__all__ = ["Lifecycle"]

logger = logging.getLogger(__name__)


class Lifecycle(Liveness):
    """Start, reconnect, home moves and the bye at close."""

    async def _ensure_started(self) -> bool:
        """Start the node once; return True in the call that started it."""
        if self.started:
            if self.closed:
                raise ConnectionUnavailable(
                    "this presence tracker's layer was closed; call get_presence() "
                    "again for the new one"
                )
            return False
        with self._lock:
            if self.closed:
                raise ConnectionUnavailable("this presence tracker was closed")
            starting = self._starting
            owner = starting is None
            if starting is None:
                starting = self._starting = concurrent.futures.Future()
        if not owner:
            await asyncio.wrap_future(starting)
            return False
        try:
            await self._start_up()
        except BaseException as exc:
            with self._lock:
                self._starting = None
            if isinstance(exc, Exception):
                starting.set_exception(exc)
            else:
                starting.set_exception(
                    ConnectionUnavailable("the presence start was cancelled")
                )
            raise
        self.started = True
        starting.set_result(None)
        return True

    async def _start_up(self) -> None:
        hub = self.hub
        await hub.start()
        for subject in (
            self.subjects.node(self.node),
            self.subjects.nodes,
            self.subjects.rooms,
        ):
            await hub.subscribe(subject, self._handler)
        if not self._removers:
            self._removers = [
                hub.on_reconnected(self._on_reconnected),
                hub.on_home_moved(self._on_home_moved),
                hub.on_close(self._on_close),
            ]
        hub.run_on_home(f"presence:{self.node}", self._ticker)
        await self._sync_round()
        logger.info(
            "node %s (alias %s) started, %d other node(s)",
            self.node,
            self.alias,
            len(self._roster.nodes),
        )

    async def _on_close(self) -> None:
        """Say bye while the connection still works (a hook of layer.close())."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            nv = self._roster.local
            frame = P.encode_bye(self.node, nv.inc, nv.seq)
        with contextlib.suppress(NatsLayerError):
            self.hub.publish(self.subjects.nodes, frame)
        for remove in self._removers:
            remove()
        logger.info("node %s said bye", self.node)

    def _on_reconnected(self) -> None:
        """After an outage every copy is suspect and others may have lost ours."""
        now = self._clock()
        self._grace_until = now + self.settings.reconnect_grace
        with self._lock:
            self._roster.refresh_all(now)
        self._beat()
        self._spawn(self._resync("reconnect"))

    def _on_home_moved(self) -> None:
        # Tasks on the old home loop may be gone: restart the pumps.
        with self._lock:
            self._pumping = False
            self._diff_scheduled = False
            signals_waiting = bool(self._signal_queue)
            diffs_waiting = bool(self._diffs)
        if signals_waiting:
            self._kick_pump()
        if diffs_waiting:
            with self._lock:
                self._schedule_diffs()
