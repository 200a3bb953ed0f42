"""Resolve asyncio futures from any thread.

The layer's state is shared by every event loop of the process: a future is
resolved directly when the caller runs on its loop, and through
``call_soon_threadsafe`` otherwise. A future already done (for example one
whose waiter was cancelled) is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

__all__ = ["fail", "wake"]


def _set_result(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _set_exception(fut: asyncio.Future[None], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _on_loop_of(fut: asyncio.Future[None], fn: Callable[..., None], *args: Any) -> None:
    loop = fut.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        fn(fut, *args)
    else:
        # RuntimeError: that loop is closed, so nobody waits there any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(fn, fut, *args)


def wake(fut: asyncio.Future[None]) -> None:
    """Resolve ``fut`` with None, from any thread."""
    _on_loop_of(fut, _set_result)


def fail(fut: asyncio.Future[None], exc: BaseException) -> None:
    """Fail ``fut`` with ``exc``, from any thread."""
    _on_loop_of(fut, _set_exception, exc)
