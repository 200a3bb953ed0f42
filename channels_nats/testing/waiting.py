"""Polling with a deadline: what tests use instead of sleeping."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["await_until", "wait_for"]


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    interval: float = 0.01,
    message: str | None = None,
) -> Any:
    """Call ``predicate`` until it returns a truthy value; return that value.

    Raises ``AssertionError`` if ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(
                f"condition not met within {timeout:.2f}s: {what} "
                f"(last value: {result!r})"
            )
        time.sleep(interval)


async def await_until(
    predicate: Callable[[], Any | Awaitable[Any]],
    timeout: float,
    interval: float = 0.01,
    message: str | None = None,
) -> Any:
    """Async twin of :func:`wait_for`; ``predicate`` may be sync or async."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() >= deadline:
            what = message or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(
                f"condition not met within {timeout:.2f}s: {what} "
                f"(last value: {result!r})"
            )
        await asyncio.sleep(interval)
