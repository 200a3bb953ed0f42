"""The checks of channels_nats._compat: a dependency missing a private part we
rely on fails at import with a message naming it and the tested versions."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import AsyncToSync
from nats.aio.client import Client

from channels_nats import _compat


def test_the_installed_versions_pass_the_checks() -> None:
    _compat._check()  # what importing the package did already


def test_a_changed_process_msg_fails_naming_it_and_the_tested_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def _process_msg(self: Any, sid: int, subject: bytes, data: bytes) -> None:
        return None

    monkeypatch.setattr(Client, "_process_msg", _process_msg)
    with pytest.raises(ImportError) as info:
        _compat._check()
    message = str(info.value)
    assert "Client._process_msg(sid, subject, reply, data, headers)" in message
    low, high = _compat.TESTED["nats-py"]
    assert f"nats-py {low} to {high}" in message


def test_asgiref_without_its_loop_registry_fails_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(AsyncToSync, "loop_thread_executors")
    with pytest.raises(ImportError, match="AsyncToSync.loop_thread_executors"):
        _compat._check()


def test_a_changed_flusher_fails_naming_the_pending_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # publish_now() appends to nats-py's pending buffer and wakes its flusher
    # with a done future: a flusher that works otherwise must fail the import.
    async def _flusher(self: Any) -> None:
        return None

    monkeypatch.setattr(Client, "_flusher", _flusher)
    with pytest.raises(ImportError, match="pending buffer and flusher"):
        _compat._check()


async def test_publish_now_falls_back_to_publish_where_nats_py_has_more_to_do(
    nats_server: Any,
) -> None:
    # Connected: buffered at once, and delivered. At the pending limit, or
    # disconnected: nothing done, publish() is the caller's path.
    import nats

    from channels_nats.client import GuardedClient

    nc = GuardedClient(lambda subject, exc: None)
    await nc.connect(nats_server.url, pending_size=1024, allow_reconnect=False)
    try:
        sub = await nc.subscribe("compat.fast")
        await nc.flush()
        assert nc.publish_now("compat.fast", b"one")
        msg = await sub.next_msg(timeout=5)
        assert (msg.subject, msg.data) == ("compat.fast", b"one")
        assert not nc.publish_now("compat.fast", b"x" * 2048)  # over pending_size
        with pytest.raises(nats.errors.Error):
            await nc.publish("compat.fast", b"x" * (nc.max_payload + 1))
        assert not nc.publish_now("compat.fast", b"x" * (nc.max_payload + 1))
    finally:
        await nc.close()
    assert not nc.publish_now("compat.fast", b"closed")
