"""Message encoding: msgpack bodies, optional Fernet encryption, wire envelopes.

A message body is the msgpack encoding of the message dict, encrypted with
the first of ``symmetric_encryption_keys`` when keys are configured (any key
decrypts, so keys can be rotated). Frames on the wire are msgpack arrays:

* data frame ``[1, kind, origin, target, sent_at, body, seq, link]`` with
  ``kind`` :data:`DIRECT` (``target`` is a channel) or :data:`GROUP` (a
  group); ``seq`` numbers the frames of one sender connection (``link``,
  its number within the sending process) per target, so receivers notice
  frames lost in transit, and names each group message uniquely when
  processes forward it to a normal channel;
  :data:`DIRECT_HELD` and :data:`GROUP_HELD` are the same frames published
  while the sender's link was down or stalled: the receiver takes them
  beyond capacity (the sender's ``outage_buffer`` bounds how many);
  :data:`DIRECT_RESENT` and :data:`GROUP_RESENT` are frames published again
  on a receiver's request (:mod:`channels_nats.recovery`);
* batch frame ``[1, 6, origin, *frames]``: data frames of that origin, each
  a whole data frame as above, consecutive publishes of one connection to
  one subject joined while they waited in the client's buffer
  (``client.GuardedClient``, design notes section 8). A lone frame is sent
  as it is. A version without batches counts one as a frame of unknown kind;
* control frame ``[1, kind, origin, *args]`` for credits, remote group
  membership, flush, and resends (RESEND, GONE, MARK, HELLO); a frame of
  another kind (a newer peer's) decodes with its arguments unchecked, and
  the receiver drops it as unknown.

Anything else is a :class:`MalformedFrame`, counted by the receiver and never
raised into a consumer.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgpack

__all__ = [
    "DIRECT",
    "GROUP",
    "DIRECT_HELD",
    "GROUP_HELD",
    "DIRECT_RESENT",
    "GROUP_RESENT",
    "RESEND",
    "GONE",
    "MARK",
    "HELLO",
    "BATCH",
    "CREDIT",
    "GROUP_ADD",
    "GROUP_DISCARD",
    "FLUSH",
    "Frame",
    "MalformedFrame",
    "Serializer",
    "pack_control",
    "batch_head",
    "pack_data",
    "unbatch",
    "unpack_frame",
]

VERSION = 1
DIRECT = 0
GROUP = 1
DIRECT_HELD = 2
GROUP_HELD = 3
#: Added to a data kind for a frame published during an outage.
HELD = 2
DIRECT_RESENT = 4
GROUP_RESENT = 5
#: Added to a data kind for a frame published again on request.
RESENT = 4
#: Data frames of one origin joined in one NATS message.
BATCH = 6
CREDIT = 10
GROUP_ADD = 11
GROUP_DISCARD = 12
FLUSH = 13
RESEND = 14
GONE = 15
MARK = 16
HELLO = 17

_DATA_KINDS = (DIRECT, GROUP, DIRECT_HELD, GROUP_HELD, DIRECT_RESENT, GROUP_RESENT)
_CONTROL_ARITY = {
    CREDIT: 2,
    GROUP_ADD: 2,
    GROUP_DISCARD: 2,
    FLUSH: 0,
    RESEND: 4,
    GONE: 4,
    MARK: 3,
    HELLO: 0,
}


class MalformedFrame(ValueError):
    """A frame from the wire that is not a valid channels_nats frame."""


class Frame(NamedTuple):
    kind: int
    origin: str
    args: tuple[Any, ...]


#: Upper bound of what a data frame adds to its body, origin and target.
DATA_OVERHEAD = 64


def pack_data(
    kind: int,
    origin: str,
    target: str,
    sent_at: float,
    body: bytes,
    seq: int = 0,
    link: int = 0,
) -> bytes:
    frame = [VERSION, kind, origin, target, sent_at, body, seq, link]
    return msgpack.packb(frame)  # type: ignore[no-any-return]


def pack_control(kind: int, origin: str, *args: Any) -> bytes:
    return msgpack.packb([VERSION, kind, origin, *args])  # type: ignore[no-any-return]


def unpack_frame(data: bytes) -> Frame:
    """Decode a wire frame; raise :class:`MalformedFrame` for anything invalid."""
    try:
        obj = msgpack.unpackb(data)
    except Exception as exc:  # msgpack raises several unrelated types
        raise MalformedFrame(f"not msgpack: {exc}") from None
    # Fast path for the common case, a well-formed data frame.
    if (
        type(obj) is list
        and len(obj) == 8
        and obj[0] == VERSION
        and (obj[1] == DIRECT or obj[1] == GROUP)
        and type(obj[2]) is str
        and type(obj[3]) is str
        and type(obj[4]) is float
        and type(obj[5]) is bytes
        and type(obj[6]) is int
        and type(obj[7]) is int
    ):
        return Frame(obj[1], obj[2], (obj[3], obj[4], obj[5], obj[6], obj[7]))
    if not isinstance(obj, list) or len(obj) < 3 or obj[0] != VERSION:
        raise MalformedFrame("not a channels_nats v1 frame")
    kind, origin = obj[1], obj[2]
    if not isinstance(origin, str) or not isinstance(kind, int):
        raise MalformedFrame("bad frame header")
    args = tuple(obj[3:])
    if kind in _DATA_KINDS:
        if (
            len(args) != 5
            or not isinstance(args[0], str)
            or not isinstance(args[1], (int, float))
            or not isinstance(args[2], bytes)
            or not isinstance(args[3], int)
            or not isinstance(args[4], int)
        ):
            raise MalformedFrame("bad data frame")
    elif kind in _CONTROL_ARITY and (
        _CONTROL_ARITY[kind] != len(args)
        or not all(isinstance(a, (str, int)) for a in args)
    ):
        raise MalformedFrame(f"bad control frame of kind {kind!r}")
    # Any other kind is well-formed but unknown here (a newer peer): the
    # receiver counts it as such.
    return Frame(kind, origin, args)


#: Most frames a batch holds (its array's length is a 16-bit number).
MAX_BATCH = 0xFFFF - 3


def batch_head(origin: str) -> bytes:
    """What follows the array header in a batch of ``origin``'s data frames.

    A batch is the array ``[1, BATCH, origin, *frames]`` with a 16-bit
    length (``0xdc``, then the length, then these bytes, then the frames),
    so that its sender can add frames and rewrite the length in place.
    """
    return msgpack.packb(VERSION) + msgpack.packb(BATCH) + msgpack.packb(origin)  # type: ignore[no-any-return]


def unbatch(batch: Frame) -> tuple[list[Frame], int]:
    """The data frames of a decoded batch, in order, and how many were not valid.

    A member that is not a data frame of the batch's origin is counted and
    skipped; the others are delivered.
    """
    origin = batch.origin
    frames: list[Frame] = []
    bad = 0
    new = tuple.__new__
    for obj in batch.args:
        if (
            type(obj) is list
            and len(obj) == 8
            and obj[0] == VERSION
            and obj[1] in _DATA_KINDS
            and obj[2] == origin
            and type(obj[3]) is str
            and (type(obj[4]) is float or type(obj[4]) is int)
            and type(obj[5]) is bytes
            and type(obj[6]) is int
            and type(obj[7]) is int
        ):
            frames.append(new(Frame, (obj[1], origin, tuple(obj[3:]))))
        else:
            bad += 1
    return frames, bad


def _fernet_key(secret: bytes) -> bytes:
    # Same derivation as channels_redis, so a shared secret means the same key.
    return base64.urlsafe_b64encode(hashlib.sha256(secret).digest())


class Serializer:
    """Encode message dicts to bodies and back, encrypting when keys are set."""

    def __init__(self, keys: Sequence[bytes] = ()) -> None:
        self._crypter: Any = None
        if keys:
            from cryptography.fernet import Fernet, MultiFernet

            self._crypter = MultiFernet([Fernet(_fernet_key(k)) for k in keys])

    _local = threading.local()

    def dumps(self, message: Any) -> bytes:
        """Return the body for ``message``; raise ``TypeError`` if it cannot be sent."""
        if not isinstance(message, dict):
            raise TypeError(
                f"A channel layer message must be a dict, got {type(message).__name__}."
            )
        for key in message:
            if not isinstance(key, str):
                raise TypeError(
                    f"Message keys must be str, got {key!r} ({type(key).__name__})."
                )
        try:
            # A packer per thread: a dict subclass can run Python code
            # mid-pack, so one shared packer is not safe across threads.
            pack = self._local.pack
        except AttributeError:
            pack = self._local.pack = msgpack.Packer().pack
        try:
            body: bytes = pack(message)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(
                f"Message could not be serialized with msgpack: {exc}"
            ) from exc
        if self._crypter is not None:
            body = self._crypter.encrypt(body)
        return body

    def loads(self, body: bytes) -> dict[str, Any]:
        """Decode a body; raise :class:`MalformedFrame` if it is not a message."""
        try:
            if self._crypter is not None:
                body = self._crypter.decrypt(body)
            message = msgpack.unpackb(body, strict_map_key=False)
        except Exception as exc:
            raise MalformedFrame(
                f"undecodable message body: {type(exc).__name__}"
            ) from None
        if not isinstance(message, dict):
            raise MalformedFrame("message body is not a dict")
        return message
