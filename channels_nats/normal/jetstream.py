"""JetStream setup for normal channels: streams, consumers, publishes, the bucket.

* one work-queue stream per ``prefix`` and distinct capacity,
  ``<PREFIX>_C<capacity>`` on subjects ``<prefix>.c.<capacity>.>``, with
  ``max_age = expiry`` and ``max_msgs_per_subject = capacity`` plus
  ``discard_new_per_subject``: a publish to a full channel is refused with
  error 10077, raised here as ``ChannelFull``;
* one durable pull consumer per channel, shared by all its receivers (a
  work-queue stream refuses a second consumer on the same subject), with
  explicit acks;
* one key-value bucket of the group memberships of normal channels.

JetStream answers "no responders" or times out for a few seconds after a
server start or a leader loss in a cluster (NATS-FACTS section 3): setup
calls retry those errors for up to :data:`SETUP_DEADLINE` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

import nats.errors
import nats.js.errors
from nats.js import api

from .._compat import server_info
from ..config import LayerConfig
from ..exceptions import ChannelFull, NatsLayerError, NormalChannelsUnavailable
from ..link import Link
from ..subjects import token

__all__ = ["Address", "JetStream", "consumer_name", "retry"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

ERR_MAX_MSGS_PER_SUBJECT = 10077
ERR_NO_SUITABLE_PEERS = 10005  # replicas cannot be placed (yet)
ERR_STREAM_NAME_IN_USE = 10058
ERR_STREAM_NOT_FOUND = 10059
CONSUMER_INACTIVE = 3600.0
SETUP_DEADLINE = 15.0

_TRANSIENT = (
    nats.js.errors.NoStreamResponseError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
)


class Address(NamedTuple):
    """Where the messages of one normal channel are kept."""

    stream: str  # JetStream stream name
    subject: str


def consumer_name(channel: str) -> str:
    """The durable consumer name of normal channel ``channel``."""
    tok = token(channel)
    if len(tok) > 200:  # keep JetStream names short; collisions need sha256 ones
        tok = hashlib.sha256(channel.encode()).hexdigest()
    return "q_" + tok


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _TRANSIENT):
        return True
    # Too few servers to place the replicas on: a cluster forming, or a node
    # restarting and not yet current. Retried until SETUP_DEADLINE, then
    # raised: a cluster smaller than jetstream_replicas stays refused.
    if (
        isinstance(exc, nats.js.errors.BadRequestError)
        and exc.err_code == ERR_NO_SUITABLE_PEERS
    ):
        return True
    # 503 without an error code: no JetStream leader yet (cluster elections).
    return (
        isinstance(exc, nats.js.errors.ServiceUnavailableError)
        and exc.err_code != ERR_MAX_MSGS_PER_SUBJECT
    )


async def retry(fn: Callable[[], Awaitable[T]], what: str) -> T:
    """Run ``fn`` until it succeeds, retrying transient JetStream errors."""
    deadline = time.monotonic() + SETUP_DEADLINE
    delay = 0.05
    while True:
        try:
            return await fn()
        except Exception as exc:
            if not _is_transient(exc) or time.monotonic() > deadline:
                raise
            # str(): nats-py's JetStream errors show their code only there.
            logger.debug("%s: %s; retrying", what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


class JetStream:
    """The streams, consumers and bucket of one layer's normal channels.

    Methods taking a ``link`` run on that link's loop (``link.run``).
    """

    def __init__(self, config: LayerConfig, capacity_of: Callable[[str], int]):
        self._config = config
        self._capacity_of = capacity_of
        self._prefix = config.prefix
        self._stream_base = "CHNATS_" + token(config.prefix)
        self.bucket = self._stream_base + "_members"
        self._storage = (
            api.StorageType.MEMORY
            if config.jetstream_storage == "memory"
            else api.StorageType.FILE
        )
        self.ack_wait = config.redelivery_timeout
        self._lock = threading.Lock()
        self._streams: set[str] = set()
        self._kv: dict[Link, Any] = {}  # by the link itself, never its id()

    # -- names -------------------------------------------------------------------

    def address(self, channel: str) -> Address:
        """Return the stream and subject of normal channel ``channel``."""
        capacity = self._capacity_of(channel)
        return Address(
            f"{self._stream_base}_C{capacity}",
            f"{self._prefix}.c.{capacity}.{token(channel)}",
        )

    # -- streams -----------------------------------------------------------------

    def context(self, link: Link) -> Any:
        """The nats-py JetStream context of ``link``."""
        nc = link._require_nc()
        if not server_info(nc).get("jetstream"):
            raise NormalChannelsUnavailable(
                f"The NATS server at {', '.join(self._config.servers)} has no "
                "JetStream, which normal channels (names without '!') need. Start "
                "it with -js (or a 'jetstream {}' block in its configuration); "
                "specific channels and groups work without it."
            )
        return nc.jetstream(timeout=self._config.request_timeout)

    async def ensure_stream(self, link: Link, stream: str) -> None:
        if stream in self._streams:
            return
        await link.run(self._create_stream, link, stream)
        with self._lock:
            self._streams.add(stream)

    async def _create_stream(self, link: Link, stream: str) -> None:
        js = self.context(link)
        capacity = int(stream.rsplit("_C", 1)[1])
        cfg = self._config
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

        await retry(create, f"creating stream {stream}")

    def _forget_stream(self, stream: str) -> None:
        with self._lock:
            self._streams.discard(stream)

    # -- consumers ---------------------------------------------------------------

    async def bind(self, link: Link, address: Address, channel: str) -> Any:
        """Create (or update) the channel's durable consumer; bind to it."""
        js = self.context(link)
        stream = address.stream
        consumer = consumer_name(channel)
        config = api.ConsumerConfig(
            durable_name=consumer,
            filter_subject=address.subject,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=-1,
            inactive_threshold=max(CONSUMER_INACTIVE, self._config.expiry * 2),
        )

        async def create() -> Any:
            try:
                await js.add_consumer(stream, config)
            except nats.js.errors.NotFoundError as exc:
                if exc.err_code != ERR_STREAM_NOT_FOUND:
                    raise
                self._forget_stream(stream)
                await self._create_stream(link, stream)
                await js.add_consumer(stream, config)
            return await js.pull_subscribe_bind(durable=consumer, stream=stream)

        return await retry(create, f"creating the consumer of {channel}")

    # -- publishing --------------------------------------------------------------

    async def publish(
        self, link: Link, address: Address, payload: bytes, msg_id: str | None
    ) -> None:
        """Publish to a channel's stream; ChannelFull if the channel is full."""
        js = self.context(link)
        stream, subject = address
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None

        async def publish() -> None:
            try:
                await js.publish(subject, payload, headers=headers)
            except nats.js.errors.NoStreamResponseError:
                # The stream is gone (flushed with a server, or deleted):
                # re-create it, then publish again.
                self._forget_stream(stream)
                await self._create_stream(link, stream)
                with self._lock:
                    self._streams.add(stream)
                await js.publish(subject, payload, headers=headers)

        try:
            await retry(publish, f"publishing to {subject}")
        except nats.js.errors.APIError as exc:
            if exc.err_code == ERR_MAX_MSGS_PER_SUBJECT:
                raise ChannelFull(subject) from None
            raise NatsLayerError(f"JetStream refused a message: {exc}") from exc

    # -- the membership bucket ---------------------------------------------------

    async def bucket_of(self, link: Link) -> Any:
        """The membership key-value bucket, created if needed, as seen by ``link``."""
        kv = self._kv.get(link)
        if kv is not None:
            return kv
        js = self.context(link)
        cfg = self._config

        async def create() -> Any:
            return await js.create_key_value(
                bucket=self.bucket,
                history=1,
                ttl=float(cfg.group_expiry),
                storage=self._storage,
                replicas=cfg.jetstream_replicas,
            )

        kv = await retry(create, f"creating bucket {self.bucket}")
        self._kv[link] = kv
        return kv

    def forget_link(self, link: Link) -> None:
        with self._lock:
            self._kv.pop(link, None)

    # -- housekeeping ------------------------------------------------------------

    async def purge_all(self, link: Link) -> None:
        """Purge this prefix's queued messages and normal-channel memberships."""
        nc = link.nc
        if nc is None or not server_info(nc).get("jetstream"):
            return
        js = nc.jetstream(timeout=self._config.request_timeout)
        try:
            streams = await js.streams_info()
        except Exception as exc:
            logger.debug("flush could not list streams: %r", exc)
            return
        ours = ("KV_" + self.bucket, self._stream_base + "_C")
        for info in streams:
            name = info.config.name or ""
            if name == ours[0] or name.startswith(ours[1]):
                await js.purge_stream(name)
