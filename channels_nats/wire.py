"""Reading the ``MSG`` frames of our own subscriptions off the wire.

nats-py's parser matches a regex per frame, fills a dict and awaits a
coroutine to deliver each message. For the subscriptions a link dispatches
inline (``GuardedClient.direct``), :class:`FastParser` reads whole runs of
``MSG`` frames from the buffer it was given with plain index arithmetic and
calls their handler directly, in wire order, then deletes the run from the
buffer once. Anything else (``PING``, ``INFO``, ``-ERR``, ``HMSG``, a frame of
another subscription, a line it does not recognise) goes to nats-py's own
parser, which then reads the rest of the buffer as it always did. About 1 µs
less per delivered frame (design notes section 8); the private parts it uses
are checked by :mod:`channels_nats._compat`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from nats.protocol.parser import AWAITING_CONTROL_LINE, MAX_CONTROL_LINE_SIZE, Parser

if TYPE_CHECKING:
    from .client import GuardedClient

__all__ = ["FastParser"]

Handler = Callable[[str, bytes, str], None]


class FastParser(Parser):
    """nats-py's parser with a fast path for frames of inline subscriptions."""

    nc: GuardedClient

    async def parse(self, data: bytes = b"") -> None:
        buf = self.buf
        buf.extend(data)
        if self.state == AWAITING_CONTROL_LINE and self._take_direct(buf):
            return  # all read, or the rest of one of our frames is on its way
        if self.buf:
            await super().parse(b"")

    #: (b"MSG <subject> <sid> ", subject, sid, handler) of the last frame.
    _last: tuple[bytes, str, int, Handler] | None = None

    def _take_direct(self, buf: bytearray) -> bool:
        """Deliver the run of inline frames at the start of ``buf``.

        Return True when nothing is left for nats-py's parser: the buffer is
        empty, or it ends in one of our frames not yet complete.
        """
        nc = self.nc
        stats = nc.stats
        size = len(buf)
        pos = 0
        view = memoryview(buf)
        try:
            while buf.startswith(b"MSG ", pos):
                end = buf.find(b"\r\n", pos, pos + MAX_CONTROL_LINE_SIZE)
                if end < 0:
                    return True  # the line is not complete yet
                # Most frames repeat the subject and sid of the one before:
                # then only the length is left to read.
                last = self._last
                reply = ""
                handler: Handler
                try:
                    if (
                        last is None
                        or not buf.startswith(last[0], pos)
                        or nc.direct.get(last[2]) is not last[3]  # unsubscribed
                    ):
                        raise ValueError
                    length = int(buf[pos + len(last[0]) : end])
                    subject, handler = last[1], last[3]
                except ValueError:
                    found = self._read_line(buf, pos, end)
                    if found is None:
                        return False  # not ours, or not valid: nats-py's path
                    subject, handler, reply, length = found
                start = end + 2
                stop = start + length
                if stop + 2 > size:
                    return True  # the payload is not complete yet
                payload = view[start:stop].tobytes()
                pos = stop + 2
                stats["in_msgs"] += 1
                stats["in_bytes"] += length
                try:
                    handler(subject, payload, reply)
                except Exception as exc:  # counted and logged by the link
                    nc.bad_frame(subject.encode(), exc)
            return pos == size
        finally:
            view.release()
            if pos:
                del buf[:pos]

    def _read_line(
        self, buf: bytearray, pos: int, end: int
    ) -> tuple[str, Handler, str, int] | None:
        """(subject, handler, reply, length) of a MSG line of ours, else None."""
        parts = buf[pos + 4 : end].split()
        try:
            if len(parts) == 3:
                subject, sid, length = parts
                reply = ""
            elif len(parts) == 4:
                subject, sid, raw_reply, length = parts
                reply = raw_reply.decode()
            else:
                return None
            number = int(sid)
            handler = self.nc.direct.get(number)
            if handler is None:
                return None
            n = int(length)
        except (ValueError, UnicodeDecodeError):
            return None
        text = subject.decode()
        if not reply:
            self._last = (
                b"MSG %b %b " % (bytes(subject), bytes(sid)),
                text,
                number,
                handler,
            )
        return text, handler, reply, n
