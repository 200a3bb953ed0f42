"""CONFIG parsing, layer construction and Django system checks (no server)."""

from __future__ import annotations

import re
import ssl
from typing import Any

import channels.exceptions
import nats.aio.client
import pytest
from django.core.checks import Error, run_checks
from django.test import override_settings

import channels_nats
import channels_nats.layer
from channels_nats import InvalidChannelLayerError, NatsChannelLayer
from channels_nats.config import DEFAULTS, LayerConfig, parse_config, problems

BACKEND = "channels_nats.NatsChannelLayer"


# -- parse_config -----------------------------------------------------------


def test_parse_config_without_arguments_gives_the_defaults() -> None:
    cfg = parse_config()
    assert isinstance(cfg, LayerConfig)
    assert cfg.servers == ("nats://127.0.0.1:4222",)
    assert cfg.prefix == "asgi"
    assert cfg.expiry == 60.0
    assert cfg.group_expiry == 86400
    assert cfg.capacity == 100
    assert dict(cfg.channel_capacity) == {}
    assert cfg.symmetric_encryption_keys == ()
    assert cfg.connect_timeout == 5.0
    assert cfg.request_timeout == 5.0
    assert cfg.reconnect_time_wait == 0.25
    assert cfg.ping_interval == 5.0
    assert cfg.max_outstanding_pings == 3
    assert cfg.pending_size == 8 * 1024 * 1024
    assert cfg.credit_wait == 0.005
    assert cfg.batch_frames is True
    assert dict(cfg.connect_options) == {}


def test_parse_config_of_none_and_empty_dict_equal_defaults() -> None:
    assert parse_config(None) == parse_config({}) == parse_config()


def test_parse_config_does_not_mutate_defaults() -> None:
    before = dict(DEFAULTS)
    parse_config({"servers": "nats://h:1", "prefix": "p", "capacity": 3})
    assert before == DEFAULTS


def test_servers_given_as_str_becomes_a_one_tuple() -> None:
    assert parse_config({"servers": "nats://h:4222"}).servers == ("nats://h:4222",)


def test_servers_list_becomes_tuple_in_order() -> None:
    urls = ["nats://a:1", "tls://b:2", "ws://c:3", "wss://d:4"]
    assert parse_config({"servers": urls}).servers == tuple(urls)


def test_kwargs_override_config_dict() -> None:
    assert parse_config({"capacity": 5}, capacity=7).capacity == 7


def test_valid_non_default_values_are_kept() -> None:
    ctx = ssl.create_default_context()
    cfg = parse_config(
        {
            "prefix": "my-app.asgi_1",
            "expiry": 2,
            "capacity": 10,
            "group_expiry": 5,
            "channel_capacity": {"http.*": 3},
            "symmetric_encryption_keys": ["s", b"b"],
            "tls": ctx,
            "name": "proc",
            "user": "u",
            "password": "p",
        }
    )
    assert cfg.prefix == "my-app.asgi_1"
    assert cfg.expiry == 2.0 and isinstance(cfg.expiry, float)
    assert cfg.capacity == 10
    assert cfg.group_expiry == 5
    assert dict(cfg.channel_capacity) == {"http.*": 3}
    assert cfg.symmetric_encryption_keys == (b"s", b"b")
    assert dict(cfg.connect_options) == {
        "tls": ctx,
        "name": "proc",
        "user": "u",
        "password": "p",
    }


INVALID = [
    ("servers", []),
    ("servers", ()),
    ("servers", 5),
    ("servers", None),
    ("servers", ["http://x"]),
    ("servers", ["nats://a b"]),
    ("servers", ["nats://"]),
    ("servers", [5]),
    ("prefix", "a..b"),
    ("prefix", ""),
    ("prefix", "a b"),
    ("prefix", 5),
    ("prefix", ".a"),
    ("prefix", "a."),
    ("prefix", "a*"),
    ("prefix", "a>"),
    ("expiry", 0),
    ("expiry", -1),
    ("expiry", "x"),
    ("expiry", True),
    ("expiry", None),
    ("capacity", 0),
    ("capacity", 1.5),
    ("capacity", True),
    ("capacity", "10"),
    ("group_expiry", 0),
    ("group_expiry", 1.5),
    ("channel_capacity", {"x": 0}),
    ("channel_capacity", {"x": 1.5}),
    ("channel_capacity", {5: 1}),
    ("channel_capacity", []),
    ("channel_capacity", None),
    ("symmetric_encryption_keys", "single-string"),
    ("symmetric_encryption_keys", b"single-bytes"),
    ("symmetric_encryption_keys", []),
    ("symmetric_encryption_keys", [""]),
    ("symmetric_encryption_keys", [b""]),
    ("symmetric_encryption_keys", [5]),
    ("tls", "notacontext"),
    ("connect_timeout", 0),
    ("request_timeout", 0),
    ("ping_interval", 0),
    ("max_outstanding_pings", 0),
    ("pending_size", -1),
    ("reconnect_time_wait", -1),
    ("credit_wait", -0.001),
    ("credit_wait", "5ms"),
    ("batch_frames", 1),
    ("batch_frames", "false"),
]


# Values that slip past a naive check: Python's "$" matches before a final
# newline, and every comparison with NaN is False.
EDGE_INVALID = [
    ("servers", ["nats://host:4222\n"]),
    ("prefix", "asgi\n"),
    ("prefix", "a.b\n"),
    ("expiry", float("nan")),
]


def _id(param: tuple[str, Any]) -> str:
    return f"{param[0]}={param[1]!r}"


@pytest.mark.parametrize(("key", "value"), INVALID, ids=[_id(p) for p in INVALID])
def test_invalid_value_raises_error_naming_the_key(key: str, value: Any) -> None:
    with pytest.raises(InvalidChannelLayerError) as info:
        parse_config({key: value})
    assert isinstance(info.value, channels.exceptions.InvalidChannelLayerError)
    assert key in str(info.value)


@pytest.mark.parametrize(("key", "value"), INVALID, ids=[_id(p) for p in INVALID])
def test_problems_reports_one_item_for_invalid_value(key: str, value: Any) -> None:
    found = problems({key: value})
    assert len(found) == 1
    assert key in found[0]


@pytest.mark.parametrize(
    ("key", "value"), EDGE_INVALID, ids=[_id(p) for p in EDGE_INVALID]
)
def test_edge_invalid_value_raises_error_naming_the_key(key: str, value: Any) -> None:
    with pytest.raises(InvalidChannelLayerError) as info:
        parse_config({key: value})
    assert key in str(info.value)


def test_single_string_encryption_key_message_says_must_be_a_list() -> None:
    with pytest.raises(InvalidChannelLayerError, match="must be a list"):
        parse_config({"symmetric_encryption_keys": "single-string"})


def test_unknown_key_raises_error_listing_valid_keys() -> None:
    with pytest.raises(InvalidChannelLayerError) as info:
        parse_config({"sever": ["nats://h:1"]})
    message = str(info.value)
    assert "'sever'" in message
    for key in DEFAULTS:
        assert key in message


def test_channels_invalid_layer_error_catches_ours() -> None:
    with pytest.raises(channels.exceptions.InvalidChannelLayerError):
        parse_config({"capacity": 0})


def test_problems_of_valid_config_is_empty() -> None:
    assert problems({}) == []
    assert problems(None) == []
    assert problems({"servers": "nats://h:1", "prefix": "a.b"}) == []


def test_problems_reports_every_bad_key() -> None:
    found = problems({"capacity": 0, "prefix": "a b", "nope": 1, "expiry": 60})
    assert len(found) == 3
    assert "'nope'" in found[0]
    assert any("capacity" in problem for problem in found)
    assert any("prefix" in problem for problem in found)


def test_problems_of_non_dict_reports_it() -> None:
    found = problems("notadict")  # type: ignore[arg-type]
    assert len(found) == 1
    assert "dict" in found[0]
    assert "str" in found[0]


# -- NatsChannelLayer construction -----------------------------------------


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make any attempt to create a transport or connect a test failure."""
    attempts: list[str] = []

    def refuse_transport(*args: Any, **kwargs: Any) -> Any:
        attempts.append("Transport")
        raise AssertionError("constructing the layer created a transport")

    async def refuse_connect(*args: Any, **kwargs: Any) -> Any:
        attempts.append("connect")
        raise AssertionError("constructing the layer connected to NATS")

    monkeypatch.setattr(channels_nats.layer, "Transport", refuse_transport)
    monkeypatch.setattr(nats.aio.client.Client, "connect", refuse_connect)
    return attempts


@pytest.mark.parametrize(("key", "value"), INVALID, ids=[_id(p) for p in INVALID])
def test_layer_with_invalid_config_raises_same_error(
    key: str, value: Any, no_connections: list[str]
) -> None:
    with pytest.raises(InvalidChannelLayerError) as info:
        NatsChannelLayer(**{key: value})
    assert key in str(info.value)
    assert isinstance(info.value, channels.exceptions.InvalidChannelLayerError)


def test_layer_with_unknown_key_raises(no_connections: list[str]) -> None:
    with pytest.raises(InvalidChannelLayerError, match="valid keys"):
        NatsChannelLayer(sever="nats://h:1")


def test_layer_exposes_configured_attributes(no_connections: list[str]) -> None:
    layer = NatsChannelLayer(
        servers="nats://127.0.0.1:1",
        prefix="app.asgi",
        expiry=3,
        capacity=9,
        group_expiry=11,
    )
    assert layer.capacity == 9
    assert layer.expiry == 3
    assert layer.group_expiry == 11
    assert layer.prefix == "app.asgi"
    assert layer.extensions == ["groups", "flush"]
    assert no_connections == []


def test_layer_defaults_match_channels_redis_defaults(
    no_connections: list[str],
) -> None:
    layer = NatsChannelLayer()
    assert layer.capacity == 100
    assert layer.expiry == 60
    assert layer.group_expiry == 86400
    assert layer.prefix == "asgi"


def test_constructing_layer_opens_no_connection(no_connections: list[str]) -> None:
    layer = NatsChannelLayer(servers=["nats://127.0.0.1:1"])
    assert layer._transport is None
    assert layer.stats()["connections"] == 0
    assert no_connections == []


def test_get_capacity_honours_glob_patterns(no_connections: list[str]) -> None:
    layer = NatsChannelLayer(capacity=50, channel_capacity={"http.*": 7})
    assert layer.get_capacity("http.request") == 7
    assert layer.get_capacity("http.response!abc") == 7
    assert layer.get_capacity("other") == 50
    assert layer.get_capacity("xhttp.request") == 50


def test_get_capacity_honours_compiled_regexes(no_connections: list[str]) -> None:
    layer = NatsChannelLayer(
        channel_capacity={re.compile(r"^websocket\.(send|receive)$"): 3, "ws*": 4}
    )
    assert layer.get_capacity("websocket.send") == 3
    assert layer.get_capacity("websocket.receive") == 3
    assert layer.get_capacity("ws.other") == 4
    assert layer.get_capacity("websocket.connect") == 100


def test_get_capacity_uses_first_matching_pattern(no_connections: list[str]) -> None:
    layer = NatsChannelLayer(channel_capacity={"a.*": 1, "a.b*": 2})
    assert layer.get_capacity("a.bc") == 1


# -- Django system checks ---------------------------------------------------


def _our_errors() -> list[Any]:
    return [m for m in run_checks() if (m.id or "").startswith("channels_nats.")]


def test_check_reports_bad_config_with_e001_naming_alias() -> None:
    layers = {"special": {"BACKEND": BACKEND, "CONFIG": {"capacity": 0}}}
    with override_settings(CHANNEL_LAYERS=layers):
        errors = _our_errors()
    assert len(errors) == 1
    (error,) = errors
    assert isinstance(error, Error)
    assert error.id == "channels_nats.E001"
    assert "'special'" in error.msg
    assert "'CONFIG'" in error.msg
    assert "capacity" in error.msg


def test_check_accepts_full_module_path_backend() -> None:
    layers = {
        "default": {
            "BACKEND": "channels_nats.layer.NatsChannelLayer",
            "CONFIG": {"prefix": "a..b"},
        }
    }
    with override_settings(CHANNEL_LAYERS=layers):
        errors = _our_errors()
    assert [e.id for e in errors] == ["channels_nats.E001"]


def test_check_of_valid_config_reports_nothing() -> None:
    layers = {
        "default": {
            "BACKEND": BACKEND,
            "CONFIG": {"servers": ["nats://127.0.0.1:1"], "capacity": 5},
        },
        "bare": {"BACKEND": BACKEND},
    }
    with override_settings(CHANNEL_LAYERS=layers):
        assert _our_errors() == []


def test_check_ignores_layers_of_other_backends() -> None:
    layers = {
        "redis": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"capacity": 0, "hosts": ["x"]},
        },
        "memory": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
    }
    with override_settings(CHANNEL_LAYERS=layers):
        assert _our_errors() == []


def test_check_reports_bad_test_config() -> None:
    layers = {
        "default": {
            "BACKEND": BACKEND,
            "CONFIG": {},
            "TEST_CONFIG": {"expiry": -1},
        }
    }
    with override_settings(CHANNEL_LAYERS=layers):
        errors = _our_errors()
    assert len(errors) == 1
    assert errors[0].id == "channels_nats.E001"
    assert "'TEST_CONFIG'" in errors[0].msg
    assert "expiry" in errors[0].msg


def test_check_reports_config_that_is_not_a_dict() -> None:
    layers = {"default": {"BACKEND": BACKEND, "CONFIG": "nats://h:1"}}
    with override_settings(CHANNEL_LAYERS=layers):
        errors = _our_errors()
    assert [e.id for e in errors] == ["channels_nats.E001"]


def test_check_reports_each_bad_alias() -> None:
    layers = {
        "one": {"BACKEND": BACKEND, "CONFIG": {"capacity": 0}},
        "two": {"BACKEND": BACKEND, "CONFIG": {"sever": 1}},
    }
    with override_settings(CHANNEL_LAYERS=layers):
        errors = _our_errors()
    assert len(errors) == 2
    assert any("'one'" in e.msg for e in errors)
    assert any("'two'" in e.msg for e in errors)


def test_check_with_no_channel_layers_reports_nothing() -> None:
    with override_settings(CHANNEL_LAYERS={}):
        assert _our_errors() == []


def test_package_exports_invalid_channel_layer_error() -> None:
    assert channels_nats.InvalidChannelLayerError is InvalidChannelLayerError
