"""One NATS connection of a layer bound to one event loop: :class:`Link`.

A :class:`Link` is one nats-py connection bound to one event loop. Calls from
a long-lived loop (daphne's, a worker's, a test's) use that loop's own link,
so the hot path never crosses a thread. Calls from the short-lived loops that
``async_to_sync`` makes in plain threads use the link of the layer's
:class:`~channels_nats.iothread.IOThread` instead of opening a TCP
connection per call; their publishes are handed over without waiting
(:meth:`Link.publish_threadsafe`). The nats-py client itself, and how it
connects, is :mod:`channels_nats.client`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

import msgpack
import nats
import nats.errors
from nats.aio.subscription import Subscription

from ._compat import subscription_id
from .client import GuardedClient, gather, open_client
from .config import LayerConfig
from .exceptions import ConnectionUnavailable, NatsLayerError
from .outage import LinkHealth
from .outbox import Outbox
from .resend import MIN_RETAIN, Retained
from .sequence import Sequencer
from .serializers import HELD, VERSION, batch_head
from .stats import Stats
from .tasks import cancel_and_wait

__all__ = ["Link", "MessageHandler", "SubjectHandler"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

MessageHandler = Callable[[str, bytes, str, "Link"], None]
#: A handler of one subscription: (subject, data, reply), called from the read loop.
SubjectHandler = Callable[[str, bytes, str], None]


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
        number: int = 0,
        handlers: Mapping[str, SubjectHandler] | None = None,
        on_reconnected: Callable[[Link], None] | None = None,
    ) -> None:
        self.loop = loop
        #: Number of this connection among the process's, carried in its frames.
        self.number = number
        self.sequencer = Sequencer()
        # Reused packers (a third of the cost of msgpack.packb): one for this
        # link's loop, one for other threads, used under the outbox lock.
        self._pack = msgpack.Packer().pack
        self._pack_locked = msgpack.Packer().pack
        #: Whether data frames published together to a subject are joined
        #: (CONFIG["batch_frames"]), and the batch head of their origin.
        self._batching = config.batch_frames
        self._batch_origin = ""
        self._batch_head = b""
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
        self.nc: GuardedClient | None = None
        self._subs: dict[str, Subscription] = {}
        self.confirmed: set[str] = set()
        self._barrier: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False
        self.outbox = Outbox(loop, label, self.publish, self.spawn, stats)
        #: Recent data frames, for receivers that missed some (.resend).
        self.retained = Retained(
            max(config.outage_buffer, MIN_RETAIN), config.pending_size
        )
        #: Whether the connection carries traffic (see .outage).
        self.health = LinkHealth(
            loop,
            label,
            config.outage_buffer,
            stats,
            self.barrier,
            self.spawn,
            recovered=self._reconnected,
            retained=self.retained,
        )

    # -- lifecycle -----------------------------------------------------------

    async def connect(self) -> None:
        self.nc = nc = await open_client(
            self._config,
            self.label,
            self._stats,
            closing=lambda: self.closed,
            reconnected=self._back,
            disconnected=lambda: self.health.disconnected(),
        )
        self._stats.incr("connections_opened")
        logger.info(
            "%s connected to %s",
            self.label,
            nc.connected_url.netloc if nc.connected_url else "?",
        )

    def _back(self) -> None:
        self.health.reconnected()
        self._reconnected()

    def _reconnected(self) -> None:
        # After a reconnect, and when a stall ends: credits may have been
        # lost, and receivers may have missed frames (marks go out).
        if self._on_reconnected is not None and not self.closed:
            self._on_reconnected(self)

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
        for subject, payload, reply in self.outbox.take_all():
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
        await cancel_and_wait(self._tasks, self.label)
        nc, self.nc = self.nc, None
        if nc is not None and nc.batched:
            self._stats.incr("batched_frames", nc.batched)
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), 5.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("%s close: %r", self.label, exc)
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
                "background task of %s failed",
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

    def _require_nc(self) -> GuardedClient:
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

    def publish_data(
        self,
        subject: str,
        kind: int,
        origin: str,
        target: str,
        sent_at: float,
        body: bytes,
    ) -> int | Coroutine[Any, Any, int]:
        """Number and publish a data frame; return its sequence number.

        Where nats-py's buffer takes the frame at once (nearly always), this
        is done without a coroutine and the number is returned; else what is
        returned is a coroutine to await, which publishes the frame through
        nats-py's ``publish()`` and returns the number. Call it on this
        link's loop: nats-py appends to its buffer before it can yield, so
        numbers go out in the order they were given.
        """
        nc = self._require_nc()
        now = time.monotonic()
        held = self.health.held(now)  # raises LinkDown past outage_buffer
        seq = self.sequencer.next(target)
        wire_kind = kind + HELD if held else kind
        frame = self._pack(
            [VERSION, wire_kind, origin, target, sent_at, body, seq, self.number]
        )
        if origin != self._batch_origin:
            self._batch_origin = origin
            self._batch_head = batch_head(origin)
        if not (
            nc.publish_frame(subject, frame, self._batch_head)
            if self._batching
            else nc.publish_now(subject, frame)
        ):
            return self._publish_data_later(
                nc, subject, frame, kind, target, sent_at, body, seq, now
            )
        self.retained.keep(now, kind, target, subject, sent_at, body, seq)
        return seq

    async def _publish_data_later(
        self,
        nc: GuardedClient,
        subject: str,
        frame: bytes,
        kind: int,
        target: str,
        sent_at: float,
        body: bytes,
        seq: int,
        now: float,
    ) -> int:
        """The rest of :meth:`publish_data` where nats-py's ``publish()`` is needed."""
        try:
            await nc.publish(subject, frame)
        except nats.errors.Error as exc:
            # nats-py raises before it buffers anything: take the number
            # back, so that no receiver waits for (or is resent) this frame.
            self.sequencer.undo(target, seq)
            if isinstance(exc, nats.errors.OutboundBufferLimitError):
                raise self.health.buffer_full(subject) from None
            raise NatsLayerError(f"publish to {subject} failed: {exc!r}") from exc
        self.retained.keep(now, kind, target, subject, sent_at, body, seq)
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
        now = time.monotonic()
        held = self.health.held_elsewhere(now)
        with self.outbox.lock:
            # Number and queue under one lock: queue order is wire order.
            seq = self.sequencer.next(target)
            self.retained.keep(now, kind, target, subject, sent_at, body, seq)
            wire_kind = kind + HELD if held else kind
            frame = self._pack_locked(
                [VERSION, wire_kind, origin, target, sent_at, body, seq, self.number]
            )
            self.outbox.put(subject, frame, "")
        return seq

    def publish_threadsafe(self, subject: str, payload: bytes, reply: str = "") -> None:
        """Queue a publish from any thread; it goes out in order, unawaited."""
        self._require_nc()
        with self.outbox.lock:
            self.outbox.put(subject, payload, reply)

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
        """Publish a request; collect replies until ``timeout`` or ``expected``."""
        return await gather(self._require_nc(), subject, payload, timeout, expected)

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
                nc.direct[subscription_id(sub)] = self._handlers.get(
                    subject, self._dispatch
                )
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
            gone.append(subscription_id(sub))
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
