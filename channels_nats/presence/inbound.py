"""Incoming presence frames, handled inline from the NATS read loop.

Deltas on the room subjects, heartbeats, byes and sync requests on the nodes
subject, and the requests to this node (liveness pings, roster requests and
the chunks of a roster this node asked for). A malformed frame is counted
and dropped.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import logging
from collections.abc import Callable

from ..exceptions import ConnectionUnavailable
from . import protocol as P
from .nodes import Change
from .sync import Sync

__all__ = ["Inbound"]

logger = logging.getLogger(__name__)


class Inbound(Sync):
    """Apply the frames of other nodes and answer their requests."""

    @functools.cached_property
    def _handler(self) -> Callable[[str, bytes, str], None]:
        """One object for every subscription: the hub compares handlers."""
        return self._on_frame

    def _on_frame(self, subject: str, data: bytes, reply: str) -> None:
        try:
            frame = P.decode(data)
        except P.MalformedFrame as exc:
            self._malformed(subject, exc)
            return
        try:
            self._handle(subject, frame, reply)
        except P.MalformedFrame as exc:
            self._malformed(subject, exc)

    def _handle(self, subject: str, frame: P.Frame, reply: str) -> None:
        now = self._clock()
        changes: builtins.list[Change] = []
        subjects = self.subjects
        if isinstance(frame, P.Delta):
            if frame.node == self.node:
                return
            if subject != subjects.room(frame.room):
                raise P.MalformedFrame(
                    f"a delta of {frame.room!r} on the wrong subject"
                )
            with self._lock:
                changes = self._roster.apply_delta(frame, now)
                self._record(changes)
        elif subject == subjects.nodes:
            changes = self._on_node_traffic(frame, reply, now)
        elif subject == subjects.node(self.node):
            changes = self._on_request(frame, reply, now)
        else:
            raise P.MalformedFrame(f"frame {type(frame).__name__} on the wrong subject")
        self._dispatch(changes)

    def _on_node_traffic(
        self, frame: P.Frame, reply: str, now: float
    ) -> builtins.list[Change]:
        if isinstance(frame, P.Heartbeat):
            if frame.node == self.node:
                return []
            with self._lock:
                changes = self._roster.apply_heartbeat(frame, now)
                self._record(changes)
            return changes
        if isinstance(frame, P.Bye):
            if frame.node == self.node:
                return []
            with self._lock:
                changes = self._roster.drop_if(frame.node, frame.inc, "node_down", now)
                self._record(changes)
            logger.info(
                "node %s said bye (%d member(s) left)",
                frame.node,
                sum(1 for c in changes if c.kind == "leave"),
            )
            return changes
        if isinstance(frame, P.SyncFrame) and frame.kind == P.SYNC:
            s = frame.summary
            if s.node == self.node:
                return []
            with self._lock:
                own = self._roster.local.summary()
                changes, fetch = self._roster.apply_summary(s, now)
                if fetch:
                    fetch = not self._roster.nodes[s.node].fetching
                    self._roster.fetch_started(s.node, now)
                self._record(changes)
            if reply:
                with contextlib.suppress(ConnectionUnavailable):
                    self.hub.publish(reply, P.encode_summary(own))
            if fetch:
                self._spawn(self._fetch(s.node))
            return changes
        raise P.MalformedFrame(f"{type(frame).__name__} on the node subject")

    def _on_request(
        self, frame: P.Frame, reply: str, now: float
    ) -> builtins.list[Change]:
        if isinstance(frame, P.Ping):
            if reply:
                with self._lock:
                    nv = self._roster.local
                    pong = P.encode_pong(self.node, nv.inc, nv.seq)
                with contextlib.suppress(ConnectionUnavailable):
                    self.hub.publish(reply, pong)
            return []
        if isinstance(frame, P.RosterRequest):
            self._send_roster(frame)
            return []
        if isinstance(frame, P.RosterChunk):
            return self._take_chunk(frame, now)
        raise P.MalformedFrame(f"{type(frame).__name__} on a node's own subject")

    def _send_roster(self, request: P.RosterRequest) -> None:
        with self._lock:
            summary = self._roster.local.summary()
            members = list(self._roster.local.members.values())
        frames = P.encode_roster(
            summary, request.request_id, members, self.hub.max_payload
        )
        target = self.subjects.node(request.node)
        with contextlib.suppress(ConnectionUnavailable):
            for frame in frames:
                self.hub.publish(target, frame)
        self.hub.stats.incr("presence_rosters_sent")

    def _take_chunk(self, chunk: P.RosterChunk, now: float) -> builtins.list[Change]:
        with self._lock:
            assembly = self._fetches.get(chunk.request_id)
            if assembly is None or assembly.node != chunk.summary.node:
                return []  # late: that fetch gave up already
            try:
                members = assembly.add(chunk)
                if members is None:
                    return []
                changes = self._roster.apply_snapshot(chunk.summary, members, now)
            except P.MalformedFrame:
                del self._fetches[chunk.request_id]
                assembly.future.set_result(False)
                raise
            del self._fetches[chunk.request_id]
            self._record(changes)
        assembly.future.set_result(True)
        return changes
