"""NATS connections of a layer: one :class:`Link` per event loop, and an I/O thread.

A :class:`Link` is one nats-py connection bound to one event loop. Calls from
a long-lived loop (daphne's, a worker's, a test's) use that loop's own link,
so the hot path never crosses a thread. Calls from the short-lived loops that
``async_to_sync`` makes in plain threads use the link of the layer's
:class:`IOThread` instead of opening a TCP connection per call; their
publishes are handed over without waiting (:meth:`Link.publish_threadsafe`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from .config import LayerConfig
from .exceptions import ConnectionUnavailable, NatsLayerError
from .security import fatal_cause, permission_violation
from .sequence import Sequencer
from .serializers import pack_data
from .stats import Stats

__all__ = ["IOThread", "Link"]

logger = logging.getLogger("channels_nats")

T = TypeVar("T")
MessageHandler = Callable[[str, bytes, str, "Link"], None]
#: A handler of one subscription: (subject, data, reply), called from the read loop.
SubjectHandler = Callable[[str, bytes, str], None]


class _GuardedClient(Client):
    """A nats-py client with inline dispatch and a read loop that survives bad frames.

    Messages of the subscriptions registered in :attr:`direct` are handed to
    their handler straight from the read loop, in wire order, with no header
    parsing, no per-subscription queue and no task switch. That keeps a
    process's direct and group messages in the order the server delivered
    them (FIFO per sender across ``send`` and ``group_send``) and takes a
    queue hop off every delivery.

    For other subscriptions (nats-py's request/reply inbox) the client's own
    path runs, guarded: nats-py 2.16 parses headers inside its read loop, and
    a header block such as ``NATS/1.0`` without a line ending raises there,
    killing the read loop silently. Such a frame is counted and dropped.
    """

    def __init__(self, on_bad_frame: Callable[[bytes, BaseException], None]) -> None:
        super().__init__()
        self._on_bad_frame = on_bad_frame
        self.direct: dict[int, Callable[[str, bytes, str], None]] = {}

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        handler = self.direct.get(sid)
        try:
            if handler is not None:
                self.stats["in_msgs"] += 1
                self.stats["in_bytes"] += len(data)
                handler(subject.decode(), data, reply.decode() if reply else "")
            else:
                await super()._process_msg(sid, subject, reply, data, headers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._on_bad_frame(subject, exc)


class Link:
    """One NATS connection on one event loop, with this layer's subscriptions."""

    def __init__(
        self,
        config: LayerConfig,
        loop: asyncio.AbstractEventLoop,
        *,
        queue: str,
        label: str,
        on_message: MessageHandler,
        stats: Stats,
        stream: int = 0,
        handlers: Mapping[str, SubjectHandler] | None = None,
        on_reconnected: Callable[[Link], None] | None = None,
    ) -> None:
        self.loop = loop
        #: Number of this connection among the process's, carried in its frames.
        self.stream = stream
        self.sequencer = Sequencer()
        self.label = label
        self._config = config
        self._queue = queue
        self._on_message = on_message
        # Subjects with a handler of their own (the hub's extension
        # subscriptions); every other subject goes to on_message.
        # The hub's table itself, even while empty: it fills in later.
        self._handlers: Mapping[str, SubjectHandler] = (
            {} if handlers is None else handlers
        )
        self._on_reconnected = on_reconnected
        self._stats = stats
        self.nc: _GuardedClient | None = None
        self._subs: dict[str, Subscription] = {}
        self.confirmed: set[str] = set()
        self._barrier: asyncio.Future[None] | None = None
        self._outbox: deque[tuple[str, bytes, str]] = deque()
        self._outbox_lock = threading.Lock()
        self._outbox_scheduled = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    # -- lifecycle -----------------------------------------------------------

    async def connect(self) -> None:
        cfg = self._config
        nc = _GuardedClient(self._bad_frame)
        wait = cfg.reconnect_time_wait
        # nats-py retries a first connect for about two minutes; bound it.
        attempts = max(1, math.ceil(cfg.connect_timeout / max(wait, 0.05)))
        options: dict[str, Any] = {
            "servers": list(cfg.servers),
            "no_echo": True,
            "reconnect_time_wait": wait,
            "max_reconnect_attempts": attempts,
            "connect_timeout": min(2.0, cfg.connect_timeout),
            "ping_interval": cfg.ping_interval,
            "max_outstanding_pings": cfg.max_outstanding_pings,
            "pending_size": cfg.pending_size,
            "error_cb": self._error_cb,
            "disconnected_cb": self._disconnected_cb,
            "reconnected_cb": self._reconnected_cb,
            "closed_cb": self._closed_cb,
        }
        options.update(cfg.connect_options)
        options.setdefault("name", f"channels_nats {self.label}")
        # nats-py retries a refused secret or certificate like a down server;
        # give up at the first such refusal, naming it.
        refused: asyncio.Future[tuple[str, BaseException]] = self.loop.create_future()

        async def first_connect_error_cb(exc: Exception) -> None:
            cause = fatal_cause(exc)
            if cause is not None and not refused.done():
                refused.set_result((cause, exc))
            await self._error_cb(exc)

        options["error_cb"] = first_connect_error_cb
        connecting = self.loop.create_task(nc.connect(**options))
        timed_out = True
        try:
            await asyncio.wait(
                (connecting, refused),
                timeout=cfg.connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            timed_out = not connecting.done() and not refused.done()
        finally:
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await connecting
        if refused.done() and not nc.is_connected:
            cause, err = refused.result()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 1.0)
            raise ConnectionUnavailable(
                f"NATS at {', '.join(cfg.servers)} refused the connection: {cause}. "
                "Fix the credentials or TLS settings in CONFIG (user/password, "
                "token, nkeys_seed, user_credentials, tls_*)."
            ) from err
        try:
            if timed_out:
                raise asyncio.TimeoutError
            connecting.result()
        except (asyncio.TimeoutError, OSError, nats.errors.Error) as exc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 1.0)
            raise ConnectionUnavailable(
                f"No NATS server answered at {', '.join(cfg.servers)} within "
                f"connect_timeout={cfg.connect_timeout}s ({type(exc).__name__}: "
                f"{exc}). Start nats-server (with -js for normal channels) or fix "
                "CONFIG['servers']."
            ) from exc
        # Once connected, never give up reconnecting.
        nc.options["max_reconnect_attempts"] = -1
        self.nc = nc
        self._stats.incr("connections_opened")
        logger.info(
            "channels_nats: %s connected to %s",
            self.label,
            nc.connected_url.netloc if nc.connected_url else "?",
        )

    @property
    def usable(self) -> bool:
        """Whether this link can still carry traffic.

        A connection nats-py has closed for good (the server refused it, or a
        protocol error) makes the link unusable; the next call opens another.
        """
        nc = self.nc
        return (
            not self.closed
            and not self.loop.is_closed()
            and (nc is None or not nc.is_closed)
        )

    @property
    def max_payload(self) -> int:
        assert self.nc is not None
        return int(self.nc.max_payload)

    async def close(self) -> None:
        """Flush what was published, stop owned tasks, close the connection."""
        if self.closed:
            return
        # Publishes handed over by other threads go out before the close.
        with self._outbox_lock:
            queued = list(self._outbox)
            self._outbox.clear()
        for subject, payload, reply in queued:
            with contextlib.suppress(NatsLayerError):
                await self.publish(subject, payload, reply)
        # A PING/PONG round trip proves the server has read every publish.
        # Closing without it can lose the tail of a burst: a socket closed
        # with unread frames in it (credits sent back to us) is reset by the
        # kernel, and the server drops what it had not read yet.
        if self.nc is not None and self.nc.is_connected:
            try:
                await self.barrier()
            except NatsLayerError as exc:
                logger.warning(
                    "%s: could not confirm the last publishes: %s", self.label, exc
                )
        self.closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        # Their own cancellation is expected; a cancellation of close() itself
        # still propagates out of gather().
        await asyncio.gather(*tasks, return_exceptions=True)
        nc, self.nc = self.nc, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), 5.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("channels_nats: %s close: %r", self.label, exc)
        self._subs.clear()
        self.confirmed.clear()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task owned by this link (cancelled on close)."""
        task: asyncio.Task[Any] = self.loop.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "channels_nats: background task of %s failed",
                self.label,
                exc_info=task.exception(),
            )

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``fn(*args)`` on this link's loop, from any loop."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - always called from a loop
            running = None
        if running is self.loop:
            return await fn(*args)
        if self.loop.is_closed():
            raise NatsLayerError(f"the event loop of {self.label} is closed")
        fut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            fn(*args),  # type: ignore[arg-type]
            self.loop,
        )
        return await asyncio.wrap_future(fut)

    # -- publishing ----------------------------------------------------------

    def _require_nc(self) -> _GuardedClient:
        nc = self.nc
        if nc is None or nc.is_closed:
            raise ConnectionUnavailable(
                f"the NATS connection of {self.label} is closed"
            )
        return nc

    async def publish(self, subject: str, payload: bytes, reply: str = "") -> None:
        nc = self._require_nc()
        try:
            await nc.publish(subject, payload, reply)
        except nats.errors.Error as exc:
            raise NatsLayerError(f"publish to {subject} failed: {exc!r}") from exc

    async def publish_data(
        self,
        subject: str,
        kind: int,
        origin: str,
        target: str,
        sent_at: float,
        body: bytes,
    ) -> int:
        """Number and publish a data frame; return its sequence number.

        Call it on this link's loop: nats-py appends to its buffer before it
        can yield, so numbers go out in the order they were given.
        """
        nc = self._require_nc()
        seq = self.sequencer.next(target)
        frame = pack_data(kind, origin, target, sent_at, body, seq, self.stream)
        try:
            await nc.publish(subject, frame)
        except nats.errors.Error as exc:
            raise NatsLayerError(f"publish to {subject} failed: {exc!r}") from exc
        return seq

    def publish_data_threadsafe(
        self,
        subject: str,
        kind: int,
        origin: str,
        target: str,
        sent_at: float,
        body: bytes,
    ) -> int:
        """:meth:`publish_data` from any thread, without waiting for the write."""
        self._require_nc()
        with self._outbox_lock:
            # Number and queue under one lock: queue order is wire order.
            seq = self.sequencer.next(target)
            frame = pack_data(kind, origin, target, sent_at, body, seq, self.stream)
            self._enqueue(subject, frame, "")
        return seq

    def publish_threadsafe(self, subject: str, payload: bytes, reply: str = "") -> None:
        """Queue a publish from any thread; it goes out in order, unawaited."""
        self._require_nc()
        with self._outbox_lock:
            self._enqueue(subject, payload, reply)

    def _enqueue(self, subject: str, payload: bytes, reply: str) -> None:
        # Called with _outbox_lock held.
        self._outbox.append((subject, payload, reply))
        if self._outbox_scheduled:
            return
        self._outbox_scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._start_outbox)
        except RuntimeError as exc:
            self._outbox.pop()
            self._outbox_scheduled = False
            raise ConnectionUnavailable(
                f"the event loop of {self.label} is closed"
            ) from exc

    def _start_outbox(self) -> None:
        self.spawn(self._drain_outbox())

    async def _drain_outbox(self) -> None:
        while True:
            with self._outbox_lock:
                if not self._outbox:
                    self._outbox_scheduled = False
                    return
                batch = list(self._outbox)
                self._outbox.clear()
            for subject, payload, reply in batch:
                try:
                    await self.publish(subject, payload, reply)
                except NatsLayerError as exc:
                    self._stats.drop(
                        "dropped_publish_failed",
                        "channels_nats: a publish to %s was lost: %s",
                        subject,
                        exc,
                    )

    async def barrier(self) -> None:
        """Return once the server has processed everything written before the call.

        Concurrent callers share one PING/PONG round trip: a caller joins the
        next flush that has not been written yet.
        """
        fut = self._barrier
        if fut is None:
            fut = self._barrier = self.loop.create_future()
            self.loop.call_soon(self._start_barrier)
        await asyncio.shield(fut)

    def _start_barrier(self) -> None:
        fut, self._barrier = self._barrier, None
        assert fut is not None

        async def flush() -> None:
            try:
                await self._require_nc().flush(
                    timeout=self._config.request_timeout  # type: ignore[arg-type]
                )
            except Exception as exc:
                if not fut.done():
                    fut.set_exception(
                        NatsLayerError(f"NATS flush of {self.label} failed: {exc!r}")
                    )
                    fut.exception()  # mark retrieved: callers may all be gone
            else:
                if not fut.done():
                    fut.set_result(None)

        self.spawn(flush())

    async def request(self, subject: str, payload: bytes, timeout: float) -> bytes:
        nc = self._require_nc()
        msg = await nc.request(subject, payload, timeout=timeout)
        return bytes(msg.data)

    async def gather(
        self, subject: str, payload: bytes, timeout: float, expected: int | None
    ) -> list[bytes]:
        """Publish with a fresh reply subject; collect replies until ``timeout``.

        Returns early with ``expected`` replies. Empty payloads (a "no
        responders" status arrives as one) are not replies.
        """
        nc = self._require_nc()
        inbox = nc.new_inbox()
        replies: list[bytes] = []
        enough = self.loop.create_future()

        def on_reply(_subject: str, data: bytes, _reply: str) -> None:
            if not data:
                return
            replies.append(data)
            full = expected is not None and len(replies) >= expected
            if full and not enough.done():
                enough.set_result(None)

        sub = await nc.subscribe(inbox)
        nc.direct[sub._id] = on_reply
        try:
            await nc.publish(subject, payload, inbox)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(enough, timeout)
        finally:
            nc.direct.pop(sub._id, None)
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return list(replies)

    # -- subscriptions -------------------------------------------------------

    async def ensure_subscribed(self, subjects: Iterable[str]) -> None:
        """Subscribe (once) and return when the server has the interest."""
        todo = [s for s in subjects if s not in self.confirmed]
        if not todo:
            return
        nc = self._require_nc()
        for subject in todo:
            if subject not in self._subs:
                sub = await nc.subscribe(subject, queue=self._queue)
                nc.direct[sub._id] = self._handlers.get(subject, self._dispatch)
                self._subs[subject] = sub
        await self.barrier()
        self.confirmed.update(s for s in todo if s in self._subs)

    async def unsubscribe(self, subject: str) -> None:
        await self.unsubscribe_many([subject])

    async def unsubscribe_all(self) -> None:
        await self.unsubscribe_many(list(self._subs))

    async def unsubscribe_many(self, subjects: Iterable[str]) -> None:
        """Unsubscribe, delivering what the server sent before it processed it.

        The server may have routed messages to these subscriptions before it
        reads the UNSUB; they arrive afterwards, and nats-py skips messages of
        a subscription it has forgotten. Our handlers stay registered until a
        flush round trip proves the server has processed the UNSUBs (TCP keeps
        the order), so those messages are delivered, not lost. This matters
        when the subscriptions move to another connection.
        """
        nc = self.nc
        gone = []
        for subject in subjects:
            sub = self._subs.pop(subject, None)
            self.confirmed.discard(subject)
            if sub is None or nc is None:
                continue
            gone.append(sub._id)
            if not nc.is_closed:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
        if not gone or nc is None:
            return
        if not nc.is_closed:
            with contextlib.suppress(NatsLayerError):
                await self.barrier()
        for sid in gone:
            nc.direct.pop(sid, None)

    def _dispatch(self, subject: str, data: bytes, reply: str) -> None:
        self._on_message(subject, data, reply, self)

    # -- callbacks -----------------------------------------------------------

    def _bad_frame(self, subject: bytes, exc: BaseException) -> None:
        self._stats.drop(
            "malformed_frames",
            "channels_nats: dropped a malformed NATS frame on %r: %r",
            subject,
            exc,
        )

    async def _error_cb(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            self._stats.drop(
                "dropped_slow_consumer",
                "channels_nats: NATS client dropped a message on %s: subscription "
                "over its pending limits (slow consumer)",
                exc.subject,
            )
        elif (denied := permission_violation(exc)) is not None:
            # The connection stays up; only this publish or subscription failed.
            self._stats.drop(
                "permission_violations",
                "channels_nats: %s: the NATS server refused %s (check the "
                "user's publish/subscribe permissions for this prefix)",
                self.label,
                denied,
            )
        elif isinstance(exc, (OSError, nats.errors.Error, asyncio.TimeoutError)):
            # Connection trouble is reported once per state change by the
            # callbacks below; each retry is only worth a DEBUG line.
            logger.debug("channels_nats: %s: %r", self.label, exc)
        else:
            logger.warning("channels_nats: %s: %r", self.label, exc)

    async def _disconnected_cb(self) -> None:
        if not self.closed:
            self._stats.incr("disconnects")
            logger.warning("channels_nats: %s disconnected from NATS", self.label)

    async def _reconnected_cb(self) -> None:
        self._stats.incr("reconnects")
        nc = self.nc
        url = nc.connected_url.netloc if nc is not None and nc.connected_url else "?"
        logger.info("channels_nats: %s reconnected to %s", self.label, url)
        if self._on_reconnected is not None and not self.closed:
            self._on_reconnected(self)

    async def _closed_cb(self) -> None:
        logger.info("channels_nats: %s connection closed", self.label)


class IOThread:
    """A daemon thread running an event loop owned by the layer.

    It hosts the link used by short-lived loops, and the process's
    subscriptions while no long-lived loop of the process holds them, so
    channels outlive the loops that created them.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                pending = asyncio.all_tasks(self.loop)
                for task in pending:
                    task.cancel()
                if pending:
                    self.loop.run_until_complete(
                        asyncio.gather(*pending, return_exceptions=True)
                    )
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.loop.stop)
            if threading.current_thread() is not self._thread:
                self._thread.join(timeout)
