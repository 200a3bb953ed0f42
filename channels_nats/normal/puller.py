"""The fetcher of one normal channel on one link: pull, hand over, rebind.

Messages are pulled unacked into the process inbox while receivers wait; the
receiver that takes one acks it (:mod:`.channels`). Messages nobody took
within a short grace are nak'ed, so JetStream hands them to another receiver
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import nats.errors
import nats.js.errors

from ..inbox import Inbox
from ..link import Link
from ..stats import Stats
from .jetstream import Address, JetStream

__all__ = ["Fetched", "Puller"]

logger = logging.getLogger(__name__)

FETCH_WAIT = 5.0
REBIND_DELAY = 0.1
MAX_REBIND_DELAY = 2.0


class Fetched(NamedTuple):
    """A message fetched from JetStream, and the connection that fetched it.

    Its ack and nak must be sent on that connection's event loop, whichever
    loop the receiver that takes it runs on.
    """

    msg: Any
    link: Link

    def settle(self, ack: bool) -> None:
        """Ack (or nak) without waiting, from any thread."""
        link = self.link
        coro = self.msg.ack() if ack else self.msg.nak()
        try:
            if asyncio.get_running_loop() is link.loop:
                link.spawn(coro)
                return
        except RuntimeError:
            pass
        try:
            link.loop.call_soon_threadsafe(link.spawn, coro)
        except RuntimeError:  # that loop is closed: JetStream redelivers
            coro.close()


class Puller:
    """The pull subscription of one channel's consumer on one link.

    While receivers wait (``demand``) and fewer messages are buffered, its
    fetcher task pulls messages, unacked, and hands each to ``accept``.
    """

    def __init__(
        self,
        jetstream: JetStream,
        inbox: Inbox,
        stats: Stats,
        accept: Callable[[str, Fetched], None],
        link: Link,
        psub: Any,
        channel: str,
        address: Address,
    ) -> None:
        self.jetstream = jetstream
        self.inbox = inbox
        self.stats = stats
        self.accept = accept
        self.link = link
        self.psub = psub
        self.channel = channel
        self.address = address
        self.broken = False
        self._demand = 0
        self._lock = threading.Lock()
        self._wake = asyncio.Event()  # lives on link.loop
        self._running = False

    def want(self, n: int) -> None:
        """Add ``n`` (±1) waiting receivers; start or wake the fetcher."""
        with self._lock:
            self._demand += n
            start = self._demand > 0 and not self._running
            if start:
                self._running = True
        try:
            if start:
                self.link.loop.call_soon_threadsafe(self.link.spawn, self._fetch())
            elif n > 0:
                self.link.loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the link's loop has closed
            self.broken = True

    def _shortfall(self) -> int:
        return self._demand - self.inbox.count(self.channel)

    async def _fetch(self) -> None:
        grace = min(1.0, self.jetstream.ack_wait / 4)
        unbound, delay = False, REBIND_DELAY
        try:
            while not self.broken:
                if self._shortfall() <= 0:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), grace)
                        continue
                    except asyncio.TimeoutError:
                        if self._demand <= 0:
                            return
                        continue
                if unbound:
                    if not await self._rebind():
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, MAX_REBIND_DELAY)
                        continue
                    unbound, delay = False, REBIND_DELAY
                try:
                    msgs = await self.psub.fetch(1, timeout=FETCH_WAIT)
                except nats.errors.TimeoutError:
                    # Also what nats-py raises when the server answers that
                    # the consumer was deleted (409): if it is gone, bind
                    # again, or receivers would wait forever.
                    if not await self._consumer_exists():
                        self.stats.incr("pull_errors")
                        unbound = True
                    continue
                except (nats.js.errors.Error, nats.errors.NoRespondersError) as exc:
                    # The consumer was deleted, its leader changed (a node of
                    # the cluster died) or JetStream is away: bind again while
                    # receivers wait, instead of leaving them waiting.
                    logger.debug("pull on %s: %r", self.channel, exc)
                    self.stats.incr("pull_errors")
                    unbound = True
                    await asyncio.sleep(delay)
                    continue
                for msg in msgs:
                    self.accept(self.channel, Fetched(msg, self.link))
        finally:
            with self._lock:
                self._running = False
            self.release()
            if not self.broken:
                self.want(0)  # restarts the fetcher if demand arrived meanwhile

    async def _consumer_exists(self) -> bool:
        try:
            await self.psub.consumer_info()
        except nats.js.errors.NotFoundError:
            return False
        except Exception as exc:  # unknown (e.g. no leader): try pulling again
            logger.debug("consumer of %s: %r", self.channel, exc)
        return True

    async def _rebind(self) -> bool:
        """Bind to the channel's consumer again; return whether it worked.

        The old pull subscription is kept until the new one exists, so a
        failed attempt leaves something to pull on for the next one.
        """
        try:
            psub = await self.jetstream.bind(self.link, self.address, self.channel)
        except Exception as exc:
            # Still no consumer (no stream leader yet, JetStream away): the
            # caller tries again after a delay.
            logger.debug("rebinding %s: %r", self.channel, exc)
            self.stats.incr("pull_errors")
            return False
        old, self.psub = self.psub, psub
        with contextlib.suppress(Exception):
            await old.unsubscribe()
        return True

    def release(self) -> None:
        """Nak the messages fetched here that no receiver took."""
        for entry in self.inbox.take_all(self.channel):
            if entry.handle is not None:
                entry.handle.settle(ack=False)
