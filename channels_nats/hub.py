"""The extension surface of a layer's process side.

Features that live beside the channel layer in each process (the layer's own
housekeeping, :mod:`channels_nats.presence`) plug in here instead of reaching
into connections: they subscribe subjects with a handler of their own, publish
from any loop or thread, send requests and gather replies, keep tasks running
wherever the process's subscriptions live, and hear when those move, when the
connection comes back after an outage, and when the layer closes.

Subscriptions made here belong to the *home* link (see :mod:`.loops`): they
move with it between event loops, and nats-py restores them after a
reconnect. Their handlers run inline in the NATS read loop of the home's
event loop, which may be the layer's I/O thread; a handler must not block
(hand slow work to :meth:`Hub.spawn`) and what it raises is counted as
``handler_errors`` and logged, never propagated into the read loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import nats.errors

from .exceptions import ConnectionUnavailable, NoResponders, RequestTimeout
from .link import Link, SubjectHandler
from .sealing import Sealer, UnsealError
from .stats import Stats

if TYPE_CHECKING:
    from .loops import Links

__all__ = ["Hub"]

logger = logging.getLogger(__name__)

Service = Callable[[], Coroutine[Any, Any, None]]
CLOSE_HOOK_TIMEOUT = 2.0


class Hub:
    """Subscribe, publish, request and run tasks on a layer's connections."""

    def __init__(
        self,
        client_id: str,
        prefix: str,
        stats: Stats,
        sealer: Sealer | None = None,
        node: str | None = None,
    ) -> None:
        self.client_id = client_id
        #: Names this transport among the process's incarnations of the layer:
        #: the client id, until a closed layer is used again (its channels
        #: keep the client id; features such as presence start a new node).
        self.node = client_id if node is None else node
        #: Encrypts every payload published and decrypts every one received
        #: (``symmetric_encryption_keys``); None when the layer has no keys.
        self.sealer = sealer
        self.prefix = prefix
        self.stats = stats
        #: Subject -> guarded handler; the home subscribes each of them.
        self.handlers: dict[str, SubjectHandler] = {}
        self._user_handlers: dict[str, SubjectHandler] = {}
        self._lock = threading.Lock()
        self._services: dict[str, Service] = {}
        self._running: dict[str, tuple[Link, asyncio.Task[None]]] = {}
        self._moved: list[Callable[[], None]] = []
        self._reconnected: list[Callable[[], None]] = []
        self._closing: list[Callable[[], Awaitable[None]]] = []
        self.closed = False
        self._links: Links | None = None

    def attach(self, links: Links) -> None:
        """Bind the hub to the links it works through (done once, by the transport)."""
        self._links = links

    @property
    def links(self) -> Links:
        links = self._links
        if links is None:  # pragma: no cover - attach() runs in Transport.__init__
            raise RuntimeError("the hub is not attached to a transport")
        return links

    @property
    def max_payload(self) -> int:
        """The largest payload a feature may publish (known once connected).

        The server's ``max_payload``, less the encryption overhead when the
        payloads are sealed.
        """
        limit = self.links.max_payload
        return limit if self.sealer is None else self.sealer.room(limit)

    async def start(self) -> None:
        """Connect and establish the process's subscriptions (idempotent)."""
        await self.links.get_home()

    # -- subscriptions -------------------------------------------------------

    def subjects(self) -> list[str]:
        """The subjects subscribed through the hub (part of what the home holds)."""
        return list(self.handlers)

    async def subscribe(self, subject: str, handler: SubjectHandler) -> None:
        """Subscribe ``subject``; return once the server has the interest.

        ``handler(subject, data, reply)`` runs in the read loop of the home
        link. Subscribing a subject again with the same handler does nothing;
        with another handler it raises ``ValueError`` (unsubscribe first).
        """
        with self._lock:
            known = self._user_handlers.get(subject)
            if known is not None and known is not handler:
                raise ValueError(f"{subject} is subscribed with another handler")
            self._user_handlers[subject] = handler
            self.handlers[subject] = self._guard(subject, handler)
        await self.links.subscribe_on_home(subject)

    async def unsubscribe(self, subject: str) -> None:
        with self._lock:
            self._user_handlers.pop(subject, None)
            if self.handlers.pop(subject, None) is None:
                return
        home = self.links.current_home()
        if home is not None:
            await home.run(home.unsubscribe, subject)

    def _guard(self, subject: str, handler: SubjectHandler) -> SubjectHandler:
        stats = self.stats
        sealer = self.sealer

        def guarded(subj: str, data: bytes, reply: str) -> None:
            if sealer is not None:
                try:
                    data = sealer.unseal(data)
                except UnsealError as exc:
                    stats.drop(
                        "malformed_frames",
                        "channels_nats: dropped a frame on %s: %s",
                        subj,
                        exc,
                    )
                    return
            try:
                handler(subj, data, reply)
            except Exception as exc:
                stats.drop(
                    "handler_errors",
                    "the handler of %s raised %r; the message was dropped",
                    subject,
                    exc,
                )

        return guarded

    # -- publishing and requests -------------------------------------------

    def _link_for_caller(self) -> Link:
        links = self.links
        try:
            link = links.by_loop.get(asyncio.get_running_loop())
        except RuntimeError:
            link = None
        if link is None or not link.usable:
            link = links.current_home()
        if link is None:
            raise ConnectionUnavailable(
                "the layer has no NATS connection yet: await hub.start() first"
            )
        return link

    def publish(
        self, subject: str, payload: bytes, reply: str = "", *, raw: bool = False
    ) -> None:
        """Publish from any loop or thread without waiting; FIFO per caller.

        The payload is sealed when the layer has encryption keys, unless
        ``raw`` (the layer's own control frames, read by the layer itself).
        """
        if self.sealer is not None and not raw:
            payload = self.sealer.seal(payload)
        self._link_for_caller().publish_threadsafe(subject, payload, reply)

    async def publish_confirmed(self, subject: str, payload: bytes) -> None:
        """Publish, and return once the server has processed the publish.

        Never sealed: only the layer's own broadcast frames use it.
        """
        link = await self.links.link()
        await link.run(_publish_and_sync, link, subject, payload)

    async def request(
        self, subject: str, payload: bytes, timeout: float, *, raw: bool = False
    ) -> bytes:
        """Send a request and return the first reply's payload (sealing as publish)."""
        link = await self.links.link()
        sealer = None if raw else self.sealer
        if sealer is not None:
            payload = sealer.seal(payload)
        try:
            reply = await link.run(link.request, subject, payload, timeout)
            return reply if sealer is None else self._unseal_reply(reply)
        except nats.errors.NoRespondersError as exc:
            raise NoResponders(f"nobody is subscribed to {subject}") from exc
        except nats.errors.TimeoutError as exc:
            raise RequestTimeout(f"no reply from {subject} within {timeout}s") from exc

    async def gather(
        self,
        subject: str,
        payload: bytes,
        *,
        timeout: float,
        expected: int | None = None,
    ) -> list[bytes]:
        """Publish a request and collect every reply until ``timeout``.

        Returns early once ``expected`` replies have arrived. Empty replies
        are ignored (that is what a "no responders" status looks like here).
        """
        link = await self.links.link()
        if self.sealer is None:
            return await link.run(link.gather, subject, payload, timeout, expected)
        sealed = self.sealer.seal(payload)
        replies = await link.run(link.gather, subject, sealed, timeout, expected)
        return [r for r in map(self._unseal_reply, replies) if r]

    def _unseal_reply(self, reply: bytes) -> bytes:
        # An undecryptable reply counts as malformed and reads as no reply.
        assert self.sealer is not None
        if not reply:
            return reply
        try:
            return self.sealer.unseal(reply)
        except UnsealError as exc:
            self.stats.drop(
                "malformed_frames", "channels_nats: dropped a reply: %s", exc
            )
            return b""

    # -- tasks ----------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task on the home's loop (from any thread)."""
        home = self.links.current_home()
        if home is None:
            coro.close()
            raise ConnectionUnavailable("the layer has no home connection")
        try:
            if asyncio.get_running_loop() is home.loop:
                home.spawn(coro)
                return
        except RuntimeError:
            pass
        try:
            home.loop.call_soon_threadsafe(home.spawn, coro)
        except RuntimeError as exc:
            coro.close()
            raise ConnectionUnavailable("the home's event loop is closed") from exc

    def run_on_home(self, name: str, factory: Service) -> None:
        """Keep ``factory()`` running as a task on the home's loop.

        It starts now if there is a home (else when there is one), is
        cancelled and started again on the new home when the home moves, and
        is cancelled when the layer closes. A second call with the same
        ``name`` replaces the first.
        """
        with self._lock:
            self._services[name] = factory
        home = self.links.current_home()
        if home is not None:
            self._start_service(home, name)

    def stop_service(self, name: str) -> None:
        with self._lock:
            self._services.pop(name, None)
            running = self._running.pop(name, None)
        if running is not None:
            _cancel(*running)

    def _start_service(self, home: Link, name: str) -> None:
        def start() -> None:
            with self._lock:
                factory = self._services.get(name)
                old = self._running.pop(name, None)
            if old is not None:
                _cancel(*old)
            if factory is None or self.closed or self.links.home is not home:
                return
            task = home.spawn(factory())
            with self._lock:
                self._running[name] = (home, task)

        with contextlib.suppress(RuntimeError):  # that loop closed: it moves again
            home.loop.call_soon_threadsafe(start)

    # -- listeners ------------------------------------------------------------

    def on_home_moved(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after the subscriptions moved; return a remover."""
        return _listen(self._moved, callback)

    def on_reconnected(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` on the home's loop after it reconnected to NATS."""
        return _listen(self._reconnected, callback)

    def on_close(self, callback: Callable[[], Awaitable[None]]) -> Callable[[], None]:
        """Await ``callback()`` when the layer closes, before its links close."""
        return _listen(self._closing, callback)

    def home_moved(self, home: Link) -> None:
        """Restart the services on ``home`` and tell the listeners (from Links)."""
        with self._lock:
            names = list(self._services)
        for name in names:
            self._start_service(home, name)
        _notify(self._moved, "home moved")

    def link_reconnected(self, link: Link) -> None:
        """Tell the listeners when the home's connection is back (from Link)."""
        if link is self.links.home:
            _notify(self._reconnected, "reconnected")

    async def close(self) -> None:
        """Run the close hooks, then stop the services (before links close)."""
        for callback in list(self._closing):
            try:
                await asyncio.wait_for(callback(), CLOSE_HOOK_TIMEOUT)
            except Exception:
                logger.warning("a close hook failed", exc_info=True)
        self.closed = True
        with self._lock:
            running = list(self._running.values())
            self._running.clear()
            self._services.clear()
        for link, task in running:
            _cancel(link, task)


async def _publish_and_sync(link: Link, subject: str, payload: bytes) -> None:
    await link.publish(subject, payload)
    await link.barrier()


def _cancel(link: Link, task: asyncio.Task[None]) -> None:
    with contextlib.suppress(RuntimeError):  # loop closed: the task is gone
        link.loop.call_soon_threadsafe(task.cancel)


def _listen(listeners: list[Any], callback: Any) -> Callable[[], None]:
    listeners.append(callback)

    def remove() -> None:
        with contextlib.suppress(ValueError):
            listeners.remove(callback)

    return remove


def _notify(listeners: list[Callable[[], None]], what: str) -> None:
    for callback in list(listeners):
        try:
            callback()
        except Exception:
            logger.warning("a %s listener failed", what, exc_info=True)
