"""The public surface of channels_nats.presence: the names of the contract."""

from __future__ import annotations

import channels_nats.presence as presence

CONTRACT = {
    "PresenceMixin",
    "get_presence",
    "member_joined",
    "member_left",
    "member_updated",
    "user_online",
    "user_offline",
}


def test_all_is_sorted_unique_and_holds_the_contract() -> None:
    names = list(presence.__all__)
    assert names == sorted(names)
    assert len(names) == len(set(names))
    assert set(names) >= CONTRACT


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from channels_nats.presence import *", namespace)
    assert {k for k in namespace if k != "__builtins__"} == set(presence.__all__)


def test_tracker_methods_of_the_contract_exist_and_are_coroutines() -> None:
    import inspect

    for name in ("join", "update", "leave", "list", "count", "rooms", "sync"):
        assert inspect.iscoroutinefunction(getattr(presence.PresenceTracker, name))


def test_errors_are_layer_errors() -> None:
    from channels_nats import NatsLayerError

    assert issubclass(presence.RoomFull, NatsLayerError)
    assert issubclass(presence.NotJoined, LookupError)
