"""The nats-py client of a :class:`~channels_nats.link.Link`: inline dispatch, a
read loop that survives bad frames, how it connects, and its event callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.aio.client import Client

from ._compat import set_option, subscription_id
from .config import LayerConfig
from .exceptions import ConnectionUnavailable
from .security import fatal_cause, permission_violation
from .serializers import MAX_BATCH
from .stats import Stats
from .wire import FastParser

__all__ = ["GuardedClient", "gather", "open_client"]

logger = logging.getLogger(__name__)

MAX_HEADS = 4096
#: Largest payload a batch grows to (design notes section 8): big enough
#: that a burst takes few NATS messages, small enough that a receiver
#: delivers one without holding its loop for long.
BATCH_BYTES = 64 * 1024


class GuardedClient(Client):
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
        #: Called as bad_frame(subject, exc) for a frame a handler choked on.
        self.bad_frame = on_bad_frame
        self.direct: dict[int, Callable[[str, bytes, str], None]] = {}
        self._ps = FastParser(self)
        #: subject -> b"PUB <subject> " (bounded), for publish_now().
        self._heads: dict[str, bytes] = {}
        self._kick: asyncio.Future[None] | None = None
        # The PUB at the tail of the pending buffer, if it is a data frame
        # that publish_frame() may join more frames to: its subject, the
        # buffer's last element as publish_frame() put it there, and the
        # lone frame's payload (None once it has become a batch).
        self._tail_subject = ""
        self._tail: bytes | None = None
        self._tail_frame: bytes | None = None
        # ... and, once it is a batch (the buffer then ends in its PUB line,
        # its payload and its line end): the payload, the line's length, the
        # payload's size and frames, and the size it may grow to.
        self._tail_body: bytearray | None = None
        self._tail_line_size = 0
        self._tail_size = 0
        self._tail_count = 0
        self._tail_limit = 0
        #: Frames joined to a batch since the client was made.
        self.batched = 0

    def publish_now(self, subject: str, payload: bytes) -> bool:
        """Buffer a PUB exactly as ``publish()`` does, without its three coroutines.

        Returns False, having done nothing, where ``publish()`` has more to do
        (not connected, the flusher gone, the pending buffer at its limit):
        the caller then awaits ``publish()``. Call it on the client's loop.
        ``subject`` must be one of ours (built from validated names): nats-py's
        subject check is skipped. About 1 µs less per publish (design notes
        section 8); the private parts it uses are checked by ``_compat``.
        """
        queue = self._flush_queue
        flusher = self._flusher_task
        if (
            self._status != Client.CONNECTED
            or queue is None
            or flusher is None
            or flusher.done()
        ):
            return False
        if len(payload) > self._max_payload:
            return False  # publish() raises MaxPayloadError
        head = self._heads.get(subject)
        if head is None:
            if len(self._heads) >= MAX_HEADS:
                self._heads.clear()
            head = self._heads[subject] = b"PUB " + subject.encode() + b" "
        cmd = b"%b%d\r\n%b\r\n" % (head, len(payload), payload)
        size = self._pending_data_size + len(cmd)
        if 0 < self._max_pending_size < size:
            return False  # publish() waits for a flush first
        self._pending.append(cmd)
        self._pending_data_size = size
        stats = self.stats
        stats["out_msgs"] += 1
        stats["out_bytes"] += len(payload)
        if queue.empty():
            # Wake the flusher, as publish() does. It resolves the future it
            # takes unless done already, so one done future serves every kick.
            kick = self._kick
            if kick is None:
                kick = self._kick = asyncio.get_running_loop().create_future()
                kick.set_result(None)
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(kick)
        return True

    def publish_frame(self, subject: str, frame: bytes, head: bytes) -> bool:
        """:meth:`publish_now` for a data frame; joins it to a batch if it can.

        Frames published one after another to one subject, while nats-py's
        flusher has not yet written them, go out as one NATS message: the
        batch ``[1, BATCH, origin, *frames]`` (``head`` is what follows its
        array header, :func:`~.serializers.batch_head`). Nothing else can
        come between two frames of a batch: a frame joins only the PUB at the
        very end of the pending buffer, and a batch the flusher has taken is
        never touched again (the flusher replaces the buffer's list as it
        writes it). So the wire order is the publish order, and a frame
        waits no longer than it would alone. Returns False, having done
        nothing, where :meth:`publish_now` would.
        """
        pending = self._pending
        if (
            pending
            and pending[-1] is self._tail
            and subject == self._tail_subject
            and self._status == Client.CONNECTED
        ):
            body = self._tail_body
            if body is None:
                if self._start_batch(pending, subject, frame, head):
                    return True
            else:
                size = self._tail_size + len(frame)
                count = self._tail_count + 1
                grown = self._pending_data_size + len(frame) + 1
                if (
                    size <= self._tail_limit
                    and count <= MAX_BATCH
                    and not 0 < self._max_pending_size < grown
                ):
                    body += frame
                    length = count + 3
                    body[1] = length >> 8
                    body[2] = length & 0xFF
                    # A new line, not the old one rewritten: a third cheaper.
                    line = b"%b%d\r\n" % (self._heads[subject], size)
                    pending[-3] = line
                    old = self._tail_line_size
                    self._tail_line_size = len(line)
                    self._pending_data_size = grown - 1 + len(line) - old
                    self._tail_size = size
                    self._tail_count = count
                    self.batched += 1
                    self.stats["out_bytes"] += len(frame)
                    return True
        if not self.publish_now(subject, frame):
            return False
        self._tail_subject = subject
        self._tail = self._pending[-1]
        self._tail_body = None
        self._tail_frame = frame
        return True

    def _start_batch(
        self, pending: list[Any], subject: str, frame: bytes, head: bytes
    ) -> bool:
        """Make the lone frame at the tail of ``pending`` a batch with ``frame``.

        nats-py's buffer then ends in the batch's PUB line, its payload and
        its line end, a fresh object whose identity marks the tail.
        """
        lone = self._tail_frame
        assert lone is not None
        limit = min(BATCH_BYTES, self._max_payload)
        size = 3 + len(head) + len(lone) + len(frame)
        line = b"%b%d\r\n" % (self._heads[subject], size)
        old = len(pending[-1])
        grown = self._pending_data_size - old + len(line) + size + 2
        if size > limit or 0 < self._max_pending_size < grown:
            return False
        body = bytearray(b"\xdc\x00\x05")
        body += head
        body += lone
        body += frame
        end = bytes(bytearray(b"\r\n"))  # a new object: the tail's identity
        pending[-1] = line
        pending.append(body)
        pending.append(end)
        self._pending_data_size = grown
        self._tail = end
        self._tail_body = body
        self._tail_frame = None
        self._tail_line_size = len(line)
        self._tail_size = size
        self._tail_count = 2
        self._tail_limit = limit
        self.batched += 2
        self.stats["out_bytes"] += len(frame)
        return True

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
            self.bad_frame(subject, exc)


async def open_client(
    config: LayerConfig,
    label: str,
    stats: Stats,
    *,
    closing: Callable[[], bool],
    reconnected: Callable[[], None],
    disconnected: Callable[[], None],
) -> GuardedClient:
    """Connect a client within ``connect_timeout``; reconnect forever after.

    ``closing()`` says whether the link is being closed (a disconnect then is
    no news); ``disconnected()`` and ``reconnected()`` are called as the
    connection goes and comes back.
    """
    cfg = config

    def bad_frame(subject: bytes, exc: BaseException) -> None:
        stats.drop(
            "malformed_frames",
            "dropped a malformed NATS frame on %r: %r",
            subject,
            exc,
        )

    async def error_cb(exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            stats.drop(
                "dropped_slow_consumer",
                "NATS client dropped a message on %s: subscription "
                "over its pending limits (slow consumer)",
                exc.subject,
            )
        elif (denied := permission_violation(exc)) is not None:
            # The connection stays up; only this publish or subscription failed.
            stats.drop(
                "permission_violations",
                "%s: the NATS server refused %s (check the user's "
                "publish/subscribe permissions for this prefix)",
                label,
                denied,
            )
        elif isinstance(exc, (OSError, nats.errors.Error, asyncio.TimeoutError)):
            # Connection trouble is reported once per state change by the
            # callbacks below; each retry is only worth a DEBUG line.
            logger.debug("%s: %r", label, exc)
        else:
            logger.warning("%s: %r", label, exc)

    async def disconnected_cb() -> None:
        if not closing():
            stats.incr("disconnects")
            logger.warning("%s disconnected from NATS", label)
            disconnected()

    async def reconnected_cb() -> None:
        stats.incr("reconnects")
        url = nc.connected_url.netloc if nc.connected_url else "?"
        logger.info("%s reconnected to %s", label, url)
        reconnected()

    async def closed_cb() -> None:
        logger.info("%s connection closed", label)

    nc = GuardedClient(bad_frame)
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
        "error_cb": error_cb,
        "disconnected_cb": disconnected_cb,
        "reconnected_cb": reconnected_cb,
        "closed_cb": closed_cb,
    }
    options.update(cfg.connect_options)
    options.setdefault("name", f"channels_nats {label}")
    # nats-py retries a refused secret or certificate like a down server;
    # give up at the first such refusal, naming it.
    loop = asyncio.get_running_loop()
    refused: asyncio.Future[tuple[str, BaseException]] = loop.create_future()

    async def first_connect_error_cb(exc: Exception) -> None:
        cause = fatal_cause(exc)
        if cause is not None and not refused.done():
            refused.set_result((cause, exc))
        await error_cb(exc)

    options["error_cb"] = first_connect_error_cb
    connecting = loop.create_task(nc.connect(**options))
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
    set_option(nc, "max_reconnect_attempts", -1)
    return nc


async def gather(
    nc: GuardedClient,
    subject: str,
    payload: bytes,
    timeout: float,
    expected: int | None,
) -> list[bytes]:
    """Publish with a fresh reply subject; collect replies until ``timeout``.

    Returns early with ``expected`` replies. Empty payloads (a "no
    responders" status arrives as one) are not replies.
    """
    inbox = nc.new_inbox()
    replies: list[bytes] = []
    enough = asyncio.get_running_loop().create_future()

    def on_reply(_subject: str, data: bytes, _reply: str) -> None:
        if not data:
            return
        replies.append(data)
        full = expected is not None and len(replies) >= expected
        if full and not enough.done():
            enough.set_result(None)

    sub = await nc.subscribe(inbox)
    nc.direct[subscription_id(sub)] = on_reply
    try:
        await nc.publish(subject, payload, inbox)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(enough, timeout)
    finally:
        nc.direct.pop(subscription_id(sub), None)
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
    return list(replies)
