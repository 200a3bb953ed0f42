"""Counters of what the layer dropped or refused, and rate-limited warnings.

Nothing is dropped silently: each drop increments a counter readable through
``NatsChannelLayer.stats()`` and logs a WARNING, at most once per interval per
kind so that a flood of drops cannot flood the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

logger = logging.getLogger(__name__)

#: Counter names, documented in the README ("Observability").
COUNTERS = (
    "dropped_capacity",  # group message to a full channel buffer
    "dropped_expired",  # message older than ``expiry`` when it was to be received
    "dropped_slow_consumer",  # nats-py dropped a message: subscription over limits
    "dropped_flushed",  # queued messages discarded by flush()
    "dropped_credits",  # credits for another process's sends that could not be sent
    "dropped_publish_failed",  # a handed-over publish failed after the call returned
    "lost_in_transit",  # frames another process sent that never arrived (seq gap)
    "resent",  # frames this process published again for a receiver that missed them
    "malformed_frames",  # frames or messages from the wire that could not be decoded
    "unknown_frames",  # well-formed frames of a kind this version does not know
    "refused_direct",  # direct frames for a channel not of this process
    "refused_credits",  # credit frames with a count that is not 1..capacity
    "refused_membership",  # group_add/group_discard requests refused (invalid)
    "refused_resend",  # resend-protocol frames with wrong types or ranges
    "handler_errors",  # a hub subscription's handler raised (message dropped)
    "refused_channel_full",  # send() raised ChannelFull
    "credit_waits",  # a send found its window used up and waited for credit
    "batched_frames",  # frames sent inside a batch, not as a NATS message of their own
    "refused_link_down",  # send()/group_send() raised LinkDown (outage too long)
    "stalls",  # a link's liveness PING went unanswered (frozen server or network)
    "pull_errors",  # failed JetStream pulls and re-binds (the fetcher retries)
    "permission_violations",  # the server refused a publish or subscribe
    "connections_opened",  # TCP connections to NATS this layer has opened
    "reconnects",
    "disconnects",
)


class Stats:
    """Thread-safe counters plus a rate-limited WARNING per counter."""

    def __init__(self, warn_interval: float = 10.0) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter({name: 0 for name in COUNTERS})
        self._warn_interval = warn_interval
        self._last_warn: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def incr(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def drop(self, name: str, msg: str, *args: object, n: int = 1) -> None:
        """Count ``n`` drops of kind ``name`` and log a rate-limited WARNING."""
        now = time.monotonic()
        with self._lock:
            self._counts[name] += n
            last = self._last_warn.get(name)
            if last is not None and now - last < self._warn_interval:
                self._suppressed[name] += n
                return
            self._last_warn[name] = now
            suppressed = self._suppressed.pop(name, 0)
        logger.warning(msg, *args)
        if suppressed:
            logger.warning(
                "%d more %s since the previous warning",
                suppressed,
                name,
            )

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
