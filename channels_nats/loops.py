"""Which NATS connection each event loop uses, and where the subscriptions live.

Every long-lived event loop gets its own :class:`~channels_nats.link.Link`,
so the hot path never crosses a thread. The short-lived loops that
``async_to_sync`` makes for one call each (recognised through asgiref's own
registry) share the link of the layer's :class:`~channels_nats.iothread.IOThread`
instead of connecting per call.

The *home* link holds the process's subscriptions (its process subject, its
control subject, the broadcast subject and one subject per group with local
members). It is the link of the first long-lived loop that uses the layer,
or the I/O thread's when only short-lived loops do. When the home loop shuts
down, the subscriptions move to the I/O thread (the loop tells us through an
async generator it closes in ``shutdown_asyncgens()``, which ``asyncio.run``,
``asyncio.Runner`` and asgiref call), and the first ``receive()`` on a
long-lived loop moves them back, so channels outlive the loops that made
them. Subscriptions use the client id as queue group, so while both links
hold them during a move each message reaches exactly one of them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from ._compat import is_short_lived
from .config import LayerConfig
from .exceptions import LayerClosed
from .iothread import IOThread
from .link import Link, MessageHandler, SubjectHandler
from .stats import Stats

__all__ = ["Links", "runs_here"]

logger = logging.getLogger(__name__)

_get_ident = threading.get_ident


def runs_here(loop: asyncio.AbstractEventLoop) -> bool:
    """True if ``loop`` is the loop running the calling coroutine.

    ``loop is asyncio.get_running_loop()`` costs a ``getpid()`` system call
    on Python 3.10 and 3.11 (about 0.2 us here, more under load), several
    times per message on the hot paths. An asyncio loop records the thread
    that runs it, and a thread runs one loop at a time, so comparing that to
    the thread's id answers the same question without the call. Other loops
    (uvloop) take the plain comparison.
    """
    if isinstance(loop, asyncio.BaseEventLoop):
        return getattr(loop, "_thread_id", None) == _get_ident()
    return loop is asyncio.get_running_loop()


class Links:
    """The links of one layer in one process, and its home link."""

    def __init__(
        self,
        config: LayerConfig,
        client_id: str,
        stats: Stats,
        on_message: MessageHandler,
        *,
        wanted: Callable[[], list[str]],
        home_moved: Callable[[Link], None],
        dropped: Callable[[Link], bool],
        rewatch: Callable[[], Awaitable[None]],
        handlers: Mapping[str, SubjectHandler] | None = None,
        reconnected: Callable[[Link], None] | None = None,
    ) -> None:
        self._config = config
        self._client_id = client_id
        self._stats = stats
        self._on_message = on_message
        # What the home must subscribe to; told when the home moves; told
        # when a link goes away (True: something that lived on it must be
        # restarted, which ``rewatch`` does once the home has moved).
        self._wanted = wanted
        self._home_moved = home_moved
        self._dropped = dropped
        self._rewatch = rewatch
        self._handlers = handlers
        self._reconnected = reconnected
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self.by_loop: dict[asyncio.AbstractEventLoop, Link] = {}
        # thread id -> the link of the asyncio loop last seen running there
        # (checked on use: see current()).
        self._by_thread: dict[int, Link] = {}
        self._connecting: dict[asyncio.AbstractEventLoop, asyncio.Future[Link]] = {}
        self._watchers: dict[asyncio.AbstractEventLoop, AsyncIterator[None]] = {}
        self._closing_links: set[asyncio.Task[None]] = set()
        #: True while two links hold the subscriptions (a move under way).
        self.overlapping = False
        self._io: IOThread | None = None
        self._io_link: concurrent.futures.Future[Link] | None = None
        self._moving: concurrent.futures.Future[None] | None = None
        self.home: Link | None = None
        self.max_payload = 1024 * 1024
        self.closed = False

    # -- links -----------------------------------------------------------------

    def current(self) -> Link | None:
        """The link of the running loop, or None if it has none (yet).

        Same as ``by_loop.get(asyncio.get_running_loop())``, without the
        system call in the common case (see :func:`runs_here`).
        """
        link = self._by_thread.get(_get_ident())
        if (
            link is not None
            and runs_here(link.loop)
            and self.by_loop.get(link.loop) is link
        ):
            return link
        loop = asyncio.get_running_loop()
        link = self.by_loop.get(loop)
        if link is not None and isinstance(loop, asyncio.BaseEventLoop):
            self._by_thread[_get_ident()] = link
        return link

    async def link(self) -> Link:
        """Return the link to use from the running loop, connecting if needed."""
        loop = asyncio.get_running_loop()
        link = self.by_loop.get(loop)
        if link is not None:
            if link.usable:
                return link
            # nats-py gave this connection up; replace it. (What lived on it
            # restarts at the next call that needs it.)
            self.by_loop.pop(loop, None)
            self._dropped(link)
            if not link.closed and not loop.is_closed():
                # Referenced until done: asyncio keeps only weak references.
                task = loop.create_task(link.close())
                self._closing_links.add(task)
                task.add_done_callback(self._closing_links.discard)
        if self.closed:
            raise LayerClosed("the layer is closed")
        if is_short_lived(loop):
            return await self.io_link()
        fut = self._connecting.get(loop)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = self._connecting[loop] = loop.create_future()
        try:
            link = await self._open(loop, f"loop-{id(loop):x}")
            if loop not in self._watchers:
                await self._watch(loop)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                fut.cancel()
            else:
                fut.set_exception(exc)
                fut.exception()
            raise
        else:
            fut.set_result(link)
            return link
        finally:
            self._connecting.pop(loop, None)

    async def _open(self, loop: asyncio.AbstractEventLoop, label: str) -> Link:
        link = Link(
            self._config,
            loop,
            queue=self._client_id,
            label=f"{self._client_id}/{label}",
            on_message=self._on_message,
            stats=self._stats,
            number=next(self._numbers),
            handlers=self._handlers,
            on_reconnected=self._reconnected,
        )
        await link.connect()
        self.max_payload = link.max_payload
        self.by_loop[loop] = link
        return link

    async def io_link(self) -> Link:
        """Return the I/O thread's link, starting the thread if needed."""
        cf = self._io_link
        if cf is not None and cf.done() and not cf.exception():
            link = cf.result()
            if link.usable:
                # No wrap_future here: for a finished concurrent future it
                # still costs a self-pipe write and a loop iteration, on
                # every async_to_sync call.
                return link
        with self._lock:
            if self.closed:
                raise LayerClosed("the layer is closed")
            if self._io is None or not self._io.alive:
                self._io = IOThread(f"channels_nats-{self._client_id}")
                self._io_link = None
            cf = self._io_link
            if cf is None or (
                cf.done() and (cf.exception() is not None or not cf.result().usable)
            ):
                io = self._io
                cf = self._io_link = io.submit(self._open(io.loop, "io-thread"))
        return await asyncio.wrap_future(cf)

    @property
    def io_loop(self) -> asyncio.AbstractEventLoop | None:
        io = self._io
        return io.loop if io is not None else None

    async def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Get told, while ``loop`` still runs, that it is shutting down."""

        async def watcher() -> AsyncIterator[None]:
            try:
                yield
            finally:
                await self._loop_ending(loop)

        agen = watcher()
        await agen.__anext__()
        self._watchers[loop] = agen

    async def _loop_ending(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watchers.pop(loop, None)
        link = self.by_loop.pop(loop, None)
        if link is None or self.closed:
            return
        restart = self._dropped(link)
        if self.home is link:
            try:
                await self.move_home(await self.io_link(), leaving=link)
                if restart:
                    await self._rewatch()
            except Exception:
                logger.warning(
                    "could not move subscriptions off a closing "
                    "event loop; messages to this process may be lost until the "
                    "next call",
                    exc_info=True,
                )
        await link.close()

    # -- home ------------------------------------------------------------------

    def current_home(self) -> Link | None:
        home = self.home
        return home if home is not None and home.usable else None

    async def get_home(self) -> Link:
        """Return the link holding the subscriptions, establishing it if needed."""
        home = self.home
        if home is not None and home.usable:
            return home
        await self.move_home(await self.link())
        home = self.home
        assert home is not None
        return home

    async def subscribe_on_home(self, subject: str) -> None:
        """Return once the home has the server's interest in ``subject``.

        The home may move while this waits; the subject is in the home's
        wanted set already, so a new home subscribes it too, and this checks
        again on it.
        """
        while True:
            home = await self.get_home()
            if subject not in home.confirmed:
                await home.run(home.ensure_subscribed, [subject])
            if self.home is home:
                return

    async def move_home(self, new: Link, leaving: Link | None = None) -> None:
        """Subscribe ``new`` to everything the home holds, then make it the home."""
        with self._lock:
            moving = self._moving
            if moving is None:
                mine = self._moving = concurrent.futures.Future()
        if moving is not None:
            await asyncio.wrap_future(moving)
            if self.home is not None and self.home.usable:
                return
            return await self.move_home(new, leaving)
        try:
            old = self.home
            if old is not new:
                # Until the old home's UNSUBs are confirmed both dispatch, and
                # one sender's frames can arrive out of order between them.
                self.overlapping = old is not None
                wanted = self._wanted()
                await new.run(new.ensure_subscribed, wanted)
                self.home = new
                extra = set(self._wanted()) - set(wanted)
                if extra:
                    await new.run(new.ensure_subscribed, extra)
                self._home_moved(new)
                if old is not None and old is not leaving and old.usable:
                    with contextlib.suppress(Exception):
                        await old.run(old.unsubscribe_all)
                    # The new home may still hold frames the server routed to
                    # it while both dispatched: they are reordered against the
                    # old home's, which are all in now. A round trip on the new
                    # connection lets them in before the overlap ends; after
                    # it, gap detection would take them for missing frames
                    # and ask for them again (a duplicate once both arrive).
                    with contextlib.suppress(Exception):
                        await new.run(new.barrier)
                logger.debug(
                    "subscriptions of %s now on %s",
                    self._client_id,
                    new.label,
                )
            mine.set_result(None)
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        finally:
            self.overlapping = False
            with self._lock:
                self._moving = None

    async def follow_receiver(self) -> None:
        """Bring the subscriptions to the running loop if they sit on the I/O thread.

        Called by ``receive()``: deliveries to a long-lived loop then skip the
        thread hop. Subscriptions held by another long-lived loop stay there.
        """
        home = self.home
        loop = asyncio.get_running_loop()
        if home is not None and home.usable:
            if home.loop is loop or is_short_lived(loop):
                return
            if home.loop is not self.io_loop:
                return
            await self.move_home(await self.link())
            return
        await self.get_home()

    # -- shutdown ----------------------------------------------------------------

    async def close(self) -> None:
        """Close every link (each on its own loop) and stop the I/O thread."""
        self.closed = True
        links = list(self.by_loop.values())
        self.by_loop.clear()
        self._by_thread.clear()
        self._watchers.clear()
        self.home = None
        for link in links:
            if not link.usable:
                continue
            try:
                await asyncio.wait_for(link.run(link.close), 10.0)
            except Exception as exc:
                logger.debug("closing %s: %r", link.label, exc)
        io, self._io = self._io, None
        if io is not None:
            await asyncio.get_running_loop().run_in_executor(None, io.stop)

    def close_at_exit(self) -> None:
        """Flush what plain-thread callers handed to the I/O thread (atexit)."""
        io = self._io
        if self.closed or io is None or not io.alive:
            return
        link = self.by_loop.get(io.loop)
        if link is not None:
            with contextlib.suppress(Exception):
                io.submit(link.close()).result(timeout=5.0)
        io.stop()

    def batched(self) -> int:
        """Frames the open links have joined to batches (closed ones count in stats)."""
        return sum(link.nc.batched for link in list(self.by_loop.values()) if link.nc)

    def open_count(self) -> int:
        return sum(1 for link in self.by_loop.values() if not link.closed)
