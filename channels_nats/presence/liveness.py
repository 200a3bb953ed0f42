"""Heartbeats and failure detection, on a ticker on the home loop.

A heartbeat every ``heartbeat_interval`` carries the node's sequence number
and roster digest. A late heartbeat makes the observer ask the node's
liveness subject: "no responders" means its connection is gone, so its
members go now (``node_down``); a timeout is retried once, then the node goes
after ``ttl`` (``expired``). A stall of this process itself leads to a resync.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging

from ..exceptions import (
    ConnectionUnavailable,
    NatsLayerError,
    NoResponders,
    RequestTimeout,
)
from . import protocol as P
from .inbound import Inbound
from .nodes import Change

__all__ = ["Liveness"]

logger = logging.getLogger(__name__)


class Liveness(Inbound):
    """Send heartbeats; probe late nodes, expire silent ones."""

    def _beat(self) -> None:
        with self._lock:
            nv = self._roster.local
            frame = P.encode_heartbeat(
                self.node, nv.inc, nv.seq, nv.digest, len(nv.members)
            )
            with contextlib.suppress(ConnectionUnavailable):
                self.hub.publish(self.subjects.nodes, frame)

    async def _probe(self, node: str) -> None:
        self.hub.stats.incr("presence_probes")
        changes: builtins.list[Change] = []
        try:
            answer = await self.hub.request(
                self.subjects.node(node),
                P.encode_ping(self.node),
                self.settings.probe_timeout,
            )
        except NoResponders:
            outcome = "gone"
        except RequestTimeout:
            outcome = "timeout"
        except NatsLayerError:
            outcome = "unknown"  # we are cut off ourselves: no verdict
        else:
            outcome = "alive"
            try:
                pong = P.decode(answer)
                if not isinstance(pong, P.Pong) or pong.node != node:
                    raise P.MalformedFrame("not a pong of that node")
            except P.MalformedFrame as exc:
                self._malformed(f"a liveness answer of {node}", exc)
            else:
                with self._lock:
                    changes = self._roster.apply_pong(pong, self._clock())
                    self._record(changes)
        now = self._clock()
        with self._lock:
            gone = self._roster.probe_done(
                node, outcome, now, grace=now < self._grace_until
            )
            self._record(gone)
        if gone:
            self.hub.stats.incr("presence_nodes_down")
            logger.info(
                "node %s is gone (no responders); %d member(s) removed",
                node,
                sum(1 for c in gone if c.kind == "leave"),
            )
        self._dispatch(changes + gone)

    async def _ticker(self) -> None:
        """Heartbeats and failure detection; runs on the home loop."""
        s = self.settings
        tick = min(0.1, s.heartbeat_interval / 4)
        stall = max(3 * s.heartbeat_interval, s.ttl / 2)
        last = self._clock()
        next_beat = last
        while True:
            now = self._clock()
            if now - last > stall:
                # This process was frozen or its loop blocked: the silence of
                # the others says nothing, and they may have dropped us.
                logger.warning(
                    "node %s stalled for %.1fs; resyncing",
                    self.node,
                    now - last,
                )
                with self._lock:
                    self._roster.refresh_all(now)
                self._spawn(self._resync("a stall"))
            last = now
            if now >= next_beat:
                self._beat()
                next_beat = now + s.heartbeat_interval
            self._check(now)
            await asyncio.sleep(tick)

    def _check(self, now: float) -> None:
        with self._lock:
            actions = self._roster.due(now)
        for action, node in actions:
            if action == "expire":
                with self._lock:
                    changes = self._roster.drop_node(node, "expired", now)
                    self._record(changes)
                self.hub.stats.incr("presence_nodes_expired")
                logger.info(
                    "node %s expired (no heartbeat for %.1fs); %d member(s) removed",
                    node,
                    self.settings.ttl,
                    sum(1 for c in changes if c.kind == "leave"),
                )
                self._dispatch(changes)
            elif action == "probe":
                self._spawn(self._probe(node))
            elif action == "fetch":
                self._spawn(self._fetch(node))
