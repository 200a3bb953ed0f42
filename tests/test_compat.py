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
