"""Presence settings: validation like the layer's CONFIG, and the system checks."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.checks import run_checks

from channels_nats import InvalidChannelLayerError
from channels_nats.config import parse_config
from channels_nats.presence.settings import PresenceSettings, parse_presence, problems


def test_defaults() -> None:
    s = parse_presence(None)
    assert s == PresenceSettings()
    assert (s.heartbeat_interval, s.ttl, s.meta_max_bytes) == (1.0, 10.0, 1024)
    assert s.diff_window == 0.1 and s.room_max_members is None


def test_layer_config_accepts_the_presence_key() -> None:
    parse_config({"presence": {"ttl": 5}})


def test_valid_settings_are_parsed() -> None:
    s = parse_presence(
        {"heartbeat_interval": 0.5, "ttl": 3, "room_max_members": 50, "diff_window": 0}
    )
    assert s.ttl == 3.0 and s.room_max_members == 50 and s.late_after == 0.75


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("fast", "must be a dict"),
        ({"tll": 3}, "Unknown CONFIG\\['presence'\\] key\\(s\\) 'tll'"),
        ({"ttl": 0}, "CONFIG\\['presence'\\]\\['ttl'\\] must be a number"),
        ({"ttl": 1.5}, "at least twice heartbeat_interval"),
        ({"heartbeat_interval": True}, "heartbeat_interval"),
        ({"heartbeat_interval": float("nan")}, "heartbeat_interval"),
        ({"meta_max_bytes": 1.5}, "must be an integer"),
        ({"meta_max_bytes": 10**6}, "at most 65536"),
        ({"room_max_members": 0}, "room_max_members"),
        ({"probe_timeout": "1"}, "probe_timeout"),
    ],
)
def test_bad_settings_name_the_key(raw: Any, message: str) -> None:
    with pytest.raises(InvalidChannelLayerError, match=message):
        parse_presence(raw)
    assert problems(raw)


def _presence_checks() -> list[Any]:
    return [m for m in run_checks() if (m.id or "").startswith("nats_presence.")]


def test_check_reports_bad_presence_settings(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_nats.NatsChannelLayer",
            "CONFIG": {"presence": {"ttl": -1}},
        }
    }
    [found] = _presence_checks()
    assert found.id == "nats_presence.E001"
    assert "CHANNEL_LAYERS['default']['CONFIG']" in found.msg
    assert "ttl" in found.msg


def test_check_passes_valid_settings(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_nats.NatsChannelLayer",
            "CONFIG": {"presence": {"ttl": 5}},
        }
    }
    assert _presence_checks() == []


def test_check_warns_without_a_nats_layer(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    }
    assert [m.id for m in _presence_checks()] == ["nats_presence.W001"]
