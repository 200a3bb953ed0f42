"""Normal channels (names without ``!``) over JetStream.

Messages to a normal channel wait in a JetStream stream until one receiver,
in any process, takes them:

* one work-queue stream per ``prefix`` and distinct capacity,
  ``<PREFIX>_C<capacity>`` on subjects ``<prefix>.c.<capacity>.>``, with
  ``max_age = expiry`` and ``max_msgs_per_subject = capacity`` plus
  ``discard_new_per_subject``: a publish to a full channel is refused with
  error 10077, which :meth:`NormalChannels.send` raises as ``ChannelFull``;
* one durable pull consumer per channel, shared by all its receivers (a
  work-queue stream refuses a second consumer on the same subject), with
  explicit acks: a message is acked just before ``receive()`` returns it, so a
  receiver cancelled or killed before that leaves it for another receiver
  (redelivered after ``redelivery_timeout``, at once if cancelled);
* group memberships of normal channels in a key-value bucket, watched by every
  process that uses normal channels. Each of them forwards the group's
  messages to the channel's stream with a ``Nats-Msg-Id`` made of the
  sender's id and sequence, so JetStream keeps exactly one copy however many
  processes forward it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import nats.errors
import nats.js.errors
from nats.js import api

from ..exceptions import ChannelFull, NatsLayerError, NormalChannelsUnavailable
from ..inbox import Entry
from ..link import Link
from ..serializers import DIRECT, MalformedFrame, pack_data, unpack_frame
from ..subjects import token, untoken
from ..wakeup import fail, wake

if TYPE_CHECKING:
    from ..transport import Transport

__all__ = ["NormalChannels"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

ERR_MAX_MSGS_PER_SUBJECT = 10077
ERR_STREAM_NAME_IN_USE = 10058
ERR_CONSUMER_NOT_FOUND = 10014
ERR_STREAM_NOT_FOUND = 10059
FETCH_WAIT = 5.0
CONSUMER_INACTIVE = 3600.0
SETUP_DEADLINE = 15.0
REBIND_DELAY = 0.1
MAX_REBIND_DELAY = 2.0

_TRANSIENT = (
    nats.js.errors.NoStreamResponseError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
)


def _consumer_name(channel: str) -> str:
    tok = token(channel)
    if len(tok) > 200:  # keep JetStream names short; collisions need sha256 ones
        tok = hashlib.sha256(channel.encode()).hexdigest()
    return "q_" + tok


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _TRANSIENT):
        return True
    # 503 without an error code: no JetStream leader yet (cluster elections).
    return (
        isinstance(exc, nats.js.errors.ServiceUnavailableError)
        and exc.err_code != ERR_MAX_MSGS_PER_SUBJECT
    )


async def _retry(fn: Callable[[], Awaitable[T]], what: str) -> T:
    """Run ``fn`` until it succeeds, retrying transient JetStream errors.

    Streams and consumers are set up right after a server start or a leader
    loss in a cluster, when JetStream answers "no responders" or times out
    for a few seconds (NATS-FACTS section 3).
    """
    deadline = time.monotonic() + SETUP_DEADLINE
    delay = 0.05
    while True:
        try:
            return await fn()
        except Exception as exc:
            if not _is_transient(exc) or time.monotonic() > deadline:
                raise
            logger.debug("%s: %r; retrying", what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


class _Fetched(NamedTuple):
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


class _Puller:
    """The pull subscription of one channel's consumer on one link.

    While receivers wait (``demand``) and fewer messages are buffered, its
    fetcher task pulls messages, unacked, into the inbox. A receiver acks the
    message it takes. Messages nobody took within a short grace are nak'ed,
    so JetStream hands them to another receiver at once.
    """

    def __init__(
        self,
        owner: NormalChannels,
        link: Link,
        psub: Any,
        channel: str,
        stream: str,
        subject: str,
    ) -> None:
        self.owner = owner
        self.link = link
        self.psub = psub
        self.channel = channel
        self.stream = stream
        self.subject = subject
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
        return self._demand - self.owner.inbox.count(self.channel)

    async def _fetch(self) -> None:
        grace = min(1.0, self.owner.ack_wait / 4)
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
                        self.owner.stats.incr("pull_errors")
                        unbound = True
                    continue
                except (nats.js.errors.Error, nats.errors.NoRespondersError) as exc:
                    # The consumer was deleted, its leader changed (a node of
                    # the cluster died) or JetStream is away: bind again while
                    # receivers wait, instead of leaving them waiting.
                    logger.debug("pull on %s: %r", self.channel, exc)
                    self.owner.stats.incr("pull_errors")
                    unbound = True
                    await asyncio.sleep(delay)
                    continue
                for msg in msgs:
                    self.owner.accept(self.channel, _Fetched(msg, self.link))
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
            psub = await self.owner.bind(
                self.link, self.stream, self.subject, self.channel
            )
        except Exception as exc:
            # Still no consumer (no stream leader yet, JetStream away): the
            # caller tries again after a delay.
            logger.debug("rebinding %s: %r", self.channel, exc)
            self.owner.stats.incr("pull_errors")
            return False
        old, self.psub = self.psub, psub
        with contextlib.suppress(Exception):
            await old.unsubscribe()
        return True

    def release(self) -> None:
        """Nak the messages fetched here that no receiver took."""
        for entry in self.owner.inbox.take_all(self.channel):
            if entry.handle is not None:
                entry.handle.settle(ack=False)


class NormalChannels:
    """Send, receive and group membership of normal channels over JetStream."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        cfg = self._config = transport.config
        self._prefix = cfg.prefix
        self._stream_base = "CHNATS_" + token(cfg.prefix)
        self._bucket = self._stream_base + "_members"
        self._storage = (
            api.StorageType.MEMORY
            if cfg.jetstream_storage == "memory"
            else api.StorageType.FILE
        )
        self._lock = threading.Lock()
        self._streams: set[str] = set()
        self._pullers: dict[tuple[int, str], _Puller] = {}
        self._watching: Link | None = None
        self._kv: dict[int, Any] = {}
        # Fetched normal-channel messages wait in the process inbox, keyed
        # by channel name (a normal name never clashes with a specific one).
        self.inbox = transport.inbox
        self._forwards: dict[str, deque[tuple[str, str, bytes, str]]] = {}
        self._forwarding: set[str] = set()
        self.ack_wait = transport.config.redelivery_timeout
        self.stats = transport.stats

    # -- names -------------------------------------------------------------------

    def _stream(self, capacity: int) -> str:
        return f"{self._stream_base}_C{capacity}"

    def subject(self, channel: str) -> tuple[str, str]:
        """Return (stream name, subject) of ``channel``."""
        capacity = self._transport.capacity_of(channel)
        return (
            self._stream(capacity),
            f"{self._prefix}.c.{capacity}.{token(channel)}",
        )

    # -- setup -------------------------------------------------------------------

    def _js(self, link: Link) -> Any:
        nc = link._require_nc()
        if not nc._server_info.get("jetstream"):
            raise NormalChannelsUnavailable(
                f"The NATS server at {', '.join(self._config.servers)} has no "
                "JetStream, which normal channels (names without '!') need. Start "
                "it with -js (or a 'jetstream {}' block in its configuration); "
                "specific channels and groups work without it."
            )
        return nc.jetstream(timeout=self._transport.config.request_timeout)

    async def _ensure_stream(self, link: Link, stream: str) -> None:
        if stream in self._streams:
            return
        await link.run(self._create_stream, link, stream)
        with self._lock:
            self._streams.add(stream)

    async def _create_stream(self, link: Link, stream: str) -> None:
        js = self._js(link)
        capacity = int(stream.rsplit("_C", 1)[1])
        cfg = self._transport.config
        config = api.StreamConfig(
            name=stream,
            subjects=[f"{self._prefix}.c.{capacity}.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            max_age=cfg.expiry,
            max_msgs_per_subject=capacity,
            discard=api.DiscardPolicy.NEW,
            discard_new_per_subject=True,
            storage=self._storage,
            num_replicas=cfg.jetstream_replicas,
            duplicate_window=min(cfg.expiry, 120.0),
        )

        async def create() -> None:
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != ERR_STREAM_NAME_IN_USE:
                    raise
                await js.update_stream(config)  # expiry or replicas changed

        await _retry(create, f"creating stream {stream}")

    def forget_stream(self, stream: str) -> None:
        with self._lock:
            self._streams.discard(stream)

    async def _puller(self, link: Link, channel: str) -> _Puller:
        key = (id(link), channel)
        puller = self._pullers.get(key)
        if puller is not None and puller.link is link and not puller.broken:
            return puller
        stream, subject = self.subject(channel)
        await self._ensure_stream(link, stream)
        puller = await link.run(self._subscribe, link, stream, subject, channel)
        existing = self._pullers.get(key)
        if existing is not None and existing.link is link and not existing.broken:
            # A concurrent receive subscribed first: use that one.
            with contextlib.suppress(Exception):
                await link.run(puller.psub.unsubscribe)
            return existing
        self._pullers[key] = puller
        return puller

    async def _subscribe(
        self, link: Link, stream: str, subject: str, channel: str
    ) -> _Puller:
        psub = await self.bind(link, stream, subject, channel)
        return _Puller(self, link, psub, channel, stream, subject)

    async def bind(self, link: Link, stream: str, subject: str, channel: str) -> Any:
        """Create (or update) the channel's durable consumer; bind to it."""
        js = self._js(link)
        consumer = _consumer_name(channel)
        config = api.ConsumerConfig(
            durable_name=consumer,
            filter_subject=subject,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=-1,
            inactive_threshold=max(
                CONSUMER_INACTIVE, self._transport.config.expiry * 2
            ),
        )

        async def create() -> Any:
            try:
                await js.add_consumer(stream, config)
            except nats.js.errors.NotFoundError as exc:
                if exc.err_code != ERR_STREAM_NOT_FOUND:
                    raise
                self.forget_stream(stream)
                await self._create_stream(link, stream)
                await js.add_consumer(stream, config)
            return await js.pull_subscribe_bind(durable=consumer, stream=stream)

        return await _retry(create, f"creating the consumer of {channel}")

    # -- send and receive --------------------------------------------------------

    async def send(self, channel: str, body: bytes, now: float) -> None:
        stream, subject = self.subject(channel)
        payload = pack_data(DIRECT, self._transport.client_id, channel, now, body)
        link = await self._transport.link()
        self._transport.check_size(body, channel)
        await self._ensure_stream(link, stream)
        try:
            await link.run(self._publish, link, stream, subject, payload, None)
        except ChannelFull:
            self._transport.stats.incr("refused_channel_full")
            raise ChannelFull(channel) from None

    async def _publish(
        self,
        link: Link,
        stream: str,
        subject: str,
        payload: bytes,
        msg_id: str | None,
    ) -> None:
        js = self._js(link)
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None

        async def publish() -> None:
            try:
                await js.publish(subject, payload, headers=headers)
            except nats.js.errors.NoStreamResponseError:
                # The stream is gone (flushed with a server, or deleted):
                # re-create it, then publish again.
                self.forget_stream(stream)
                await self._create_stream(link, stream)
                with self._lock:
                    self._streams.add(stream)
                await js.publish(subject, payload, headers=headers)

        try:
            await _retry(publish, f"publishing to {subject}")
        except nats.js.errors.APIError as exc:
            if exc.err_code == ERR_MAX_MSGS_PER_SUBJECT:
                raise ChannelFull(subject) from None
            raise NatsLayerError(f"JetStream refused a message: {exc}") from exc

    def accept(self, channel: str, fetched: _Fetched) -> None:
        """Buffer a fetched message for the receivers of ``channel``."""
        msg = fetched.msg
        try:
            frame = unpack_frame(msg.data)
            if frame.kind != DIRECT:
                raise MalformedFrame("not a direct frame")
        except MalformedFrame as exc:
            self._transport.stats.drop(
                "malformed_frames",
                "dropped a malformed message on %s: %s",
                channel,
                exc,
            )
            fetched.link.spawn(msg.term())
            return
        _target, sent_at, body, _seq, _link = frame.args
        entry = Entry(sent_at, body, "", fetched, time.monotonic())
        self.inbox.put(channel, entry, enforce_capacity=False)

    async def receive(self, channel: str) -> Entry:
        """Take the next message of ``channel`` and ack it to JetStream."""
        link = await self._transport.link()
        puller = await self._puller(link, channel)
        puller.want(1)
        try:
            while True:
                if puller.broken:
                    puller.want(-1)
                    puller = await self._puller(link, channel)
                    puller.want(1)
                entry = await self.inbox.get(channel)
                handle = entry.handle
                if handle is None:  # put back by a receive cancelled while acking
                    return entry
                if time.monotonic() - entry.fetched_at > self.ack_wait * 0.8:
                    # JetStream may have handed it to another receiver by
                    # now: let it decide rather than risk a duplicate.
                    handle.settle(ack=False)
                    continue
                await self._confirm(channel, entry)
                return entry
        finally:
            puller.want(-1)

    async def _confirm(self, channel: str, entry: Entry) -> None:
        """Ack ``entry`` and wait for JetStream to confirm it.

        Once confirmed the message has left the stream, so the channel has
        room again when ``receive()`` returns, as with channels_redis. If the
        receive is cancelled meanwhile, the message goes back to this
        process's buffer for the next receiver instead of being lost.
        """
        fetched: _Fetched = entry.handle
        timeout = self._transport.config.request_timeout
        future = asyncio.run_coroutine_threadsafe(
            fetched.msg.ack_sync(timeout=timeout), fetched.link.loop
        )
        waiter = asyncio.wrap_future(future)
        try:
            await asyncio.shield(waiter)
        except asyncio.CancelledError:
            kept = entry._replace(handle=None)

            def put_back(done: asyncio.Future[Any]) -> None:
                if not done.cancelled() and done.exception() is None:
                    self.inbox.put(channel, kept, enforce_capacity=False)

            waiter.add_done_callback(put_back)
            raise
        except Exception as exc:
            # Not confirmed: JetStream may deliver it again (at-least-once).
            logger.debug("ack on %s not confirmed: %r", channel, exc)

    # -- groups ------------------------------------------------------------------

    def forward(
        self, group: str, channel: str, entry: Entry, sender: tuple[str, int, int]
    ) -> None:
        """Queue a group message for normal channel ``channel`` (fire and forget).

        Forwards to one channel go out one after another, in order: with
        each forwarding process keeping its order, the copies JetStream keeps
        (the first of each message id) are in order too.
        """
        origin, sender_link, seq = sender
        home = self._transport.current_home()
        if home is None:
            self._transport.stats.drop(
                "dropped_publish_failed",
                "no connection to forward a group message to %s",
                channel,
            )
            return
        stream, subject = self.subject(channel)
        item = (
            stream,
            subject,
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
        try:
            while True:
                with self._lock:
                    queue = self._forwards.get(channel)
                    if not queue:
                        self._forwards.pop(channel, None)
                        return
                    stream, subject, payload, msg_id = queue.popleft()
                try:
                    await self._ensure_stream(link, stream)
                    await self._publish(link, stream, subject, payload, msg_id)
                except ChannelFull:
                    self._transport.stats.drop(
                        "dropped_capacity",
                        "a group message for %s was dropped: the "
                        "channel is at capacity",
                        channel,
                    )
                except Exception as exc:
                    self._transport.stats.drop(
                        "dropped_publish_failed",
                        "could not forward a group message to %s: %r",
                        channel,
                        exc,
                    )
        finally:
            with self._lock:
                self._forwarding.discard(channel)

    def _member_key(self, group: str, channel: str) -> str:
        return f"{token(group)}.{token(channel)}"

    async def _bucket_of(self, link: Link) -> Any:
        kv = self._kv.get(id(link))
        if kv is not None:
            return kv
        js = self._js(link)
        cfg = self._transport.config

        async def create() -> Any:
            return await js.create_key_value(
                bucket=self._bucket,
                history=1,
                ttl=float(cfg.group_expiry),
                storage=self._storage,
                replicas=cfg.jetstream_replicas,
            )

        kv = await _retry(create, f"creating bucket {self._bucket}")
        self._kv[id(link)] = kv
        return kv

    async def membership(self, add: bool, group: str, channel: str) -> None:
        """Record (or remove) a normal channel's membership cluster-wide."""
        link = await self._transport.link()
        await self.watch()
        await link.run(self._write_membership, link, add, group, channel)

    async def _write_membership(
        self, link: Link, add: bool, group: str, channel: str
    ) -> None:
        kv = await self._bucket_of(link)
        key = self._member_key(group, channel)
        if add:
            await _retry(lambda: kv.put(key, b""), f"recording {key}")
        else:
            with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                await _retry(lambda: kv.delete(key), f"removing {key}")

    async def watch(self) -> None:
        """Start following the membership bucket on the home link (once)."""
        watching = self._watching
        if watching is not None and watching.usable:
            return
        home = await self._transport.home()
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
            kv = await self._bucket_of(home)
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
            self._transport.discard_normal_member(group, channel)
        else:
            self._transport.add_normal_member(group, channel)

    # -- housekeeping ------------------------------------------------------------

    async def flush(self, link: Link) -> None:
        """Purge this prefix's queued messages and normal-channel memberships."""
        await link.run(self._purge_all, link)

    async def _purge_all(self, link: Link) -> None:
        nc = link.nc
        if nc is None or not nc._server_info.get("jetstream"):
            return
        js = nc.jetstream(timeout=self._transport.config.request_timeout)
        try:
            streams = await js.streams_info()
        except Exception as exc:
            logger.debug("flush could not list streams: %r", exc)
            return
        ours = ("KV_" + self._bucket, self._stream_base + "_C")
        for info in streams:
            name = info.config.name or ""
            if name == ours[0] or name.startswith(ours[1]):
                await js.purge_stream(name)

    def forget_link(self, link: Link) -> bool:
        """Drop the state bound to ``link``; return whether it held the watcher."""
        with self._lock:
            for key in [k for k, p in self._pullers.items() if p.link is link]:
                del self._pullers[key]
            self._kv.pop(id(link), None)
            if self._watching is link:
                self._watching = None
                return True
            return False
