"""Stopping background tasks that may not stop when first asked."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["CANCEL_ROUNDS", "CANCEL_WAIT", "cancel_and_wait"]

logger = logging.getLogger(__name__)

#: A task that ignored its cancellation is cancelled again this many times,
#: with this many seconds of waiting after each, before it is given up on.
CANCEL_ROUNDS = 5
CANCEL_WAIT = 1.0


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], owner: str) -> None:
    """Cancel ``tasks`` and wait until they end, cancelling again if needed.

    nats-py swallows a cancellation that lands in its internal flush (a task
    cancelled inside ``subscribe()`` carries on as if nothing had happened),
    so one cancel is not always enough. A task still running after
    ``CANCEL_ROUNDS`` attempts is logged and left behind rather than hanging
    the caller. Their own cancellation is what the tasks end with; the
    caller's own cancellation still propagates.
    """
    pending = set(tasks)
    for _ in range(CANCEL_ROUNDS):
        if not pending:
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_WAIT)
    for task in pending:
        logger.warning(
            "%s: task %r ignored %d cancellations", owner, task, CANCEL_ROUNDS
        )
