"""The private parts of nats-py and asgiref this package relies on, in one place.

Each is checked when the package is imported, so that a release of either
that changes one fails at once with a message naming it and the versions
tested, instead of misbehaving later:

- ``nats.aio.client.Client._process_msg(sid, subject, reply, data,
  headers)``: overridden to dispatch our subscriptions inline from the read
  loop (``client.GuardedClient``, design notes section 2);
- ``Client._send_command`` appends to its pending buffer before its first
  ``await``: publishes issued one after another on a loop go out in the
  order they were issued, which the sequence numbers rely on;
- ``Client._pending``, ``_pending_data_size``, ``_max_pending_size``,
  ``_max_payload``, ``_status``, ``_flush_queue`` and ``_flusher_task``, and a
  ``_flusher`` that takes a future from its queue, writes ``_pending`` and
  resolves the future unless done: ``GuardedClient.publish_now`` buffers a
  PUB as ``publish()`` does, without its coroutines; every write of
  ``_pending`` hands a copy of the list to the transport and replaces the
  list (``self._pending = []``), so ``GuardedClient.publish_frame`` may grow
  the batch at the tail of the list it finds and never touches one written;
- nats-py's ``Parser`` (``buf``, ``state``, ``AWAITING_CONTROL_LINE``,
  ``MAX_CONTROL_LINE_SIZE``), made by ``Client.__init__`` as ``self._ps``
  and fed by the read loop: ``wire.FastParser`` replaces it;
- ``Subscription._id``: the sid our inline dispatch table is keyed by;
- ``Client._server_info``: whether the server has JetStream, before using it;
- ``Client.options``, written after the first connect (reconnect forever);
- asgiref's ``AsyncToSync.loop_thread_executors``: recognising the
  short-lived loops ``async_to_sync`` makes in plain threads.
"""

from __future__ import annotations

import asyncio
import inspect
from importlib.metadata import version
from typing import Any

from asgiref.sync import AsyncToSync
from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.protocol.parser import Parser

__all__ = [
    "TESTED",
    "is_short_lived",
    "server_info",
    "set_option",
    "subscription_id",
]

#: The versions the test suite passes with (the tox matrix tests both ends).
#: nats-py 2.14 reads an nkeys seed file with its trailing newline and
#: refuses it ("invalid seed"); 2.15 strips it.
TESTED = {"nats-py": ("2.15.0", "2.16.0"), "asgiref": ("3.6.0", "3.13.0")}


def _fail(package: str, what: str) -> None:
    low, high = TESTED[package]
    raise ImportError(
        f"channels_nats needs {what} from {package}, which the installed "
        f"{package} {version(package)} does not have; it is tested with "
        f"{package} {low} to {high}. Install a version in that range."
    )


def _replaces_pending(source: str) -> bool:
    """Whether each write of ``_pending`` in ``source`` replaces the list."""
    writes = source.count("writelines(self._pending[:])")
    return source.count("self._pending = []") == writes


def _check() -> None:
    params = list(inspect.signature(Client._process_msg).parameters)
    if params != ["self", "sid", "subject", "reply", "data", "headers"]:
        _fail("nats-py", "Client._process_msg(sid, subject, reply, data, headers)")
    source = inspect.getsource(Client._send_command)
    append, first_await = source.find("_pending.append"), source.find("await ")
    if append < 0 or (0 <= first_await < append):
        _fail("nats-py", "a Client._send_command that buffers before it awaits")
    init = inspect.getsource(Client.__init__)
    fields = ["_pending", "_pending_data_size", "_max_pending_size", "_max_payload"]
    fields += ["_status", "_flush_queue", "_flusher_task"]
    flusher = inspect.getsource(Client._flusher)
    if (
        any(f"self.{name}" not in init for name in fields)
        or not hasattr(Client, "CONNECTED")
        or "self._flush_queue.get()" not in flusher
        or "self._pending" not in flusher
        or "future.done()" not in flusher
        or "writelines(self._pending[:])" not in flusher
        or not _replaces_pending(flusher)
        or not _replaces_pending(inspect.getsource(Client._flush_pending))
        or not _replaces_pending(inspect.getsource(Client._close))
    ):
        _fail("nats-py", "the pending buffer and flusher of Client (publish_now)")
    reset = inspect.getsource(Parser.reset)
    if (
        "self._ps" not in init
        or "self._ps.parse(" not in inspect.getsource(Client._read_loop)
        or "self.buf = bytearray()" not in reset
        or "self.state = AWAITING_CONTROL_LINE" not in reset
        or not inspect.iscoroutinefunction(Parser.parse)
    ):
        _fail("nats-py", "Client._ps, a Parser with buf and state (wire.FastParser)")
    if "self._id" not in inspect.getsource(Subscription.__init__):
        _fail("nats-py", "Subscription._id")
    if "self._server_info" not in init or "self.options" not in init:
        _fail("nats-py", "Client._server_info and Client.options")
    if not isinstance(getattr(AsyncToSync, "loop_thread_executors", None), dict):
        _fail("asgiref", "AsyncToSync.loop_thread_executors")


_check()


def subscription_id(sub: Subscription) -> int:
    """The sid nats-py gave ``sub`` (its inline dispatch key)."""
    return sub._id


def server_info(nc: Client) -> dict[str, Any]:
    """The INFO the server sent on connect."""
    return nc._server_info


def set_option(nc: Client, key: str, value: Any) -> None:
    """Change a connect option of a connected client (read on reconnect)."""
    nc.options[key] = value


def is_short_lived(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` is one that ``async_to_sync`` made for a plain thread."""
    return loop in AsyncToSync.loop_thread_executors
