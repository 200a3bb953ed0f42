"""Group memberships of normal channels: the bucket, its watcher, forwarding.

Memberships live in a key-value bucket watched by every process that uses
normal channels. Each of them forwards the group's messages to the channel's
stream with a ``Nats-Msg-Id`` made of the sender's id, link number and
sequence, so JetStream keeps exactly one copy however many processes forward
it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections import deque
from typing import Any

import nats.js.errors

from ..exceptions import ChannelFull, NatsLayerError
from ..inbox import Entry
from ..link import Link
from ..serializers import DIRECT, pack_data
from ..subjects import token, untoken
from .context import NormalContext
from .jetstream import Address, JetStream, retry

__all__ = ["Members"]


def _succeeded(fut: concurrent.futures.Future[None]) -> bool:
    return fut.done() and not fut.cancelled() and fut.exception() is None


def _failed(fut: concurrent.futures.Future[None]) -> bool:
    return fut.done() and (fut.cancelled() or fut.exception() is not None)


class Members:
    """Record, follow and forward to group memberships of normal channels."""

    def __init__(self, ctx: NormalContext, jetstream: JetStream) -> None:
        self._ctx = ctx
        self._jetstream = jetstream
        self._lock = threading.Lock()
        self._watching: Link | None = None
        # Done once the watcher has read the bucket's current values.
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._forwards: dict[str, deque[tuple[Address, bytes, str]]] = {}
        self._forwarding: set[str] = set()

    # -- forwarding --------------------------------------------------------------

    def forward(
        self, group: str, channel: str, entry: Entry, sender: tuple[str, int, int]
    ) -> None:
        """Queue a group message for normal channel ``channel`` (fire and forget).

        Forwards to one channel go out one after another, in order: with
        each forwarding process keeping its order, the copies JetStream keeps
        (the first of each message id) are in order too.
        """
        origin, sender_link, seq = sender
        home = self._ctx.current_home()
        if home is None:
            self._ctx.stats.drop(
                "dropped_publish_failed",
                "no connection to forward a group message to %s",
                channel,
            )
            return
        item = (
            self._jetstream.address(channel),
            pack_data(DIRECT, origin, channel, entry.sent_at, entry.body),
            f"{origin}.{sender_link}.{seq}.{token(group)}.{token(channel)}",
        )
        with self._lock:
            queue = self._forwards.setdefault(channel, deque())
            # A channel's stream holds at most its capacity: while JetStream
            # is slow or away, more queued forwards would only be refused
            # later, after holding memory (and a retry) each.
            full = len(queue) >= self._ctx.capacity_of(channel)
            if not full:
                queue.append(item)
                if channel in self._forwarding:
                    return
                self._forwarding.add(channel)
        if full:
            self._ctx.stats.drop(
                "dropped_capacity",
                "a group message for %s was dropped: %d forwards to it are "
                "waiting already (its capacity)",
                channel,
                len(queue),
            )
            return
        try:
            home.loop.call_soon_threadsafe(
                home.spawn, self._drain_forwards(home, channel)
            )
        except RuntimeError:
            with self._lock:
                self._forwarding.discard(channel)

    async def _drain_forwards(self, link: Link, channel: str) -> None:
        jetstream, stats = self._jetstream, self._ctx.stats
        try:
            while True:
                with self._lock:
                    queue = self._forwards.get(channel)
                    if not queue:
                        self._forwards.pop(channel, None)
                        return
                    address, payload, msg_id = queue.popleft()
                try:
                    await jetstream.ensure_stream(link, address.stream)
                    await jetstream.publish(link, address, payload, msg_id)
                except ChannelFull:
                    stats.drop(
                        "dropped_capacity",
                        "a group message for %s was dropped: the channel is at "
                        "capacity",
                        channel,
                    )
                except Exception as exc:
                    stats.drop(
                        "dropped_publish_failed",
                        "could not forward a group message to %s: %r",
                        channel,
                        exc,
                    )
        finally:
            with self._lock:
                self._forwarding.discard(channel)

    # -- the bucket --------------------------------------------------------------

    async def record(self, add: bool, group: str, channel: str) -> None:
        """Record (or remove) a normal channel's membership cluster-wide."""
        link = await self._ctx.link()
        await self.watch()
        await link.run(self._write, link, add, group, channel)

    async def _write(self, link: Link, add: bool, group: str, channel: str) -> None:
        kv = await self._jetstream.bucket_of(link)
        key = f"{token(group)}.{token(channel)}"
        if add:
            await retry(lambda: kv.put(key, b""), f"recording {key}")
        else:
            with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                await retry(lambda: kv.delete(key), f"removing {key}")

    async def watch(self) -> None:
        """Follow the membership bucket on the home link; return once it is read.

        Concurrent callers wait for the same start. A start that does not
        finish within ``max(request_timeout, 5)`` seconds (the watcher died
        with its link, or JetStream does not answer) raises
        :class:`NatsLayerError`, and the next call starts afresh.
        """
        watching, ready = self._watching, self._ready
        if watching is not None and watching.usable and _succeeded(ready):
            return  # the common case: watching already
        home = await self._ctx.home()
        with self._lock:
            if (
                self._watching is not None
                and self._watching.usable
                and not _failed(self._ready)
            ):
                ready, start = self._ready, False  # join the start under way
            else:
                self._watching = home
                self._ready = ready = concurrent.futures.Future()
                start = True
        if start:
            home.loop.call_soon_threadsafe(home.spawn, self._watch_forever(home, ready))
        timeout = max(self._ctx.config.request_timeout, 5.0)
        try:
            # Shielded: a caller that is cancelled (a receive() given up)
            # must not cancel the start the others wait for.
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(ready)), timeout)
        except asyncio.TimeoutError:
            with self._lock:
                if self._ready is ready:
                    self._watching = None
            raise NatsLayerError(
                "the membership bucket of normal channels could not be read "
                f"within {timeout:g}s"
            ) from None

    async def _watch_forever(
        self, home: Link, ready: concurrent.futures.Future[None]
    ) -> None:
        try:
            kv = await self._jetstream.bucket_of(home)
            watcher = await kv.watchall()
            if home.closed:
                # Closed while the watch started: nats-py can swallow the
                # cancellation inside subscribe(), so check for ourselves.
                with contextlib.suppress(Exception):
                    await watcher.stop()
                raise asyncio.CancelledError
        except BaseException as exc:
            with self._lock:
                if self._watching is home:
                    self._watching = None
            if not ready.done():
                # Never a CancelledError: a future cannot carry one.
                ready.set_exception(
                    NatsLayerError(f"the membership watcher stopped: {exc!r}")
                    if isinstance(exc, asyncio.CancelledError)
                    else exc
                )
            raise
        initial = True
        try:
            async for entry in watcher:
                if entry is None:  # end of the initial values
                    if initial:
                        initial = False
                        if not ready.done():
                            ready.set_result(None)
                    continue
                self._apply(entry)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    def _apply(self, entry: Any) -> None:
        group_tok, _, channel_tok = entry.key.partition(".")
        try:
            group, channel = untoken(group_tok), untoken(channel_tok)
        except ValueError:
            return
        if entry.operation in ("DEL", "PURGE"):
            self._ctx.discard_member(group, channel)
        else:
            self._ctx.add_member(group, channel)

    def forget_link(self, link: Link) -> bool:
        """Drop the watcher if ``link`` held it; return whether it did."""
        with self._lock:
            if self._watching is link:
                self._watching = None
                return True
            return False
