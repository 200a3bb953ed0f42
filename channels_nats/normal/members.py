"""Group memberships of normal channels: the bucket, its watcher, forwarding.

Memberships live in a key-value bucket watched by every process that uses
normal channels. Each of them forwards the group's messages to the channel's
stream with a ``Nats-Msg-Id`` made of the sender's id, link number and
sequence, so JetStream keeps exactly one copy however many processes forward
it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import nats.js.errors

from ..exceptions import ChannelFull
from ..inbox import Entry
from ..link import Link
from ..serializers import DIRECT, pack_data
from ..subjects import token, untoken
from ..wakeup import fail, wake
from .context import NormalContext
from .jetstream import Address, JetStream, retry

__all__ = ["Members"]


class Members:
    """Record, follow and forward to group memberships of normal channels."""

    def __init__(self, ctx: NormalContext, jetstream: JetStream) -> None:
        self._ctx = ctx
        self._jetstream = jetstream
        self._lock = threading.Lock()
        self._watching: Link | None = None
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
            self._forwards.setdefault(channel, deque()).append(item)
            if channel in self._forwarding:
                return
            self._forwarding.add(channel)
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
        """Start following the membership bucket on the home link (once)."""
        watching = self._watching
        if watching is not None and watching.usable:
            return
        home = await self._ctx.home()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._watching is not None and self._watching.usable:
                return
            self._watching = home

        def done(exc: BaseException | None) -> None:
            if exc is None:
                wake(ready)
            else:
                fail(ready, exc)

        home.loop.call_soon_threadsafe(home.spawn, self._watch_forever(home, done))
        await ready

    async def _watch_forever(
        self, home: Link, started: Callable[[BaseException | None], None]
    ) -> None:
        try:
            kv = await self._jetstream.bucket_of(home)
            watcher = await kv.watchall()
        except BaseException as exc:
            with self._lock:
                if self._watching is home:
                    self._watching = None
            started(exc)
            raise
        initial = True
        try:
            async for entry in watcher:
                if entry is None:  # end of the initial values
                    if initial:
                        initial = False
                        started(None)
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
