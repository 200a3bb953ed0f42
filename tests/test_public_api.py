"""The public surface of the package: exports, version, typing marker, errors."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import channels.exceptions
import pytest

import channels_nats
import channels_nats.exceptions as exc_module
from channels_nats import (
    ChannelFull,
    ConnectionUnavailable,
    InvalidChannelLayerError,
    LayerClosed,
    MessageTooLarge,
    NatsLayerError,
    NormalChannelsUnavailable,
)

# PEP 440 public version, from the specification's appendix.
PEP440 = re.compile(
    r"^([1-9][0-9]*!)?(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*"
    r"((a|b|rc)(0|[1-9][0-9]*))?(\.post(0|[1-9][0-9]*))?(\.dev(0|[1-9][0-9]*))?$"
)

EXCEPTION_CLASSES = [
    obj
    for name, obj in vars(exc_module).items()
    if inspect.isclass(obj)
    and issubclass(obj, BaseException)
    and not name.startswith("_")
]


def test_all_is_sorted_and_unique() -> None:
    names = list(channels_nats.__all__)
    assert names == sorted(names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", channels_nats.__all__)
def test_every_name_in_all_is_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from channels_nats import {name}", namespace)
    assert namespace[name] is getattr(channels_nats, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from channels_nats import *", namespace)
    exported = {k for k in namespace if k != "__builtins__"}
    assert exported == set(channels_nats.__all__)


def test_exceptions_module_all_is_sorted_unique_and_importable() -> None:
    names = list(exc_module.__all__)
    assert names == sorted(names)
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(exc_module, name)


@pytest.mark.parametrize("cls", EXCEPTION_CLASSES, ids=lambda c: c.__name__)
def test_each_exception_class_is_exported_from_package(cls: type) -> None:
    assert cls.__name__ in channels_nats.__all__
    assert getattr(channels_nats, cls.__name__) is cls


def test_exception_module_defines_the_documented_classes() -> None:
    assert {c.__name__ for c in EXCEPTION_CLASSES} >= {
        "ChannelFull",
        "ConnectionUnavailable",
        "InvalidChannelLayerError",
        "LayerClosed",
        "MessageTooLarge",
        "NatsLayerError",
        "NormalChannelsUnavailable",
    }


def test_layer_class_is_exported() -> None:
    from channels_nats.layer import NatsChannelLayer

    assert channels_nats.NatsChannelLayer is NatsChannelLayer


def test_version_is_a_pep440_string() -> None:
    assert isinstance(channels_nats.__version__, str)
    assert PEP440.match(channels_nats.__version__), channels_nats.__version__


def test_setup_cfg_takes_version_from_the_package() -> None:
    setup_cfg = Path(__file__).resolve().parent.parent / "setup.cfg"
    assert "version = attr: channels_nats.__version__" in setup_cfg.read_text()


def test_py_typed_marker_exists_in_package_dir() -> None:
    package_dir = Path(channels_nats.__file__).resolve().parent
    assert (package_dir / "py.typed").is_file()


# -- the exception hierarchy -------------------------------------------------


def test_connection_unavailable_is_connection_error_and_layer_error() -> None:
    assert issubclass(ConnectionUnavailable, ConnectionError)
    assert issubclass(ConnectionUnavailable, NatsLayerError)


def test_message_too_large_is_value_error_and_layer_error() -> None:
    assert issubclass(MessageTooLarge, ValueError)
    assert issubclass(MessageTooLarge, NatsLayerError)


def test_normal_channels_unavailable_is_not_implemented_error() -> None:
    assert issubclass(NormalChannelsUnavailable, NotImplementedError)
    assert issubclass(NormalChannelsUnavailable, NatsLayerError)


def test_layer_closed_is_layer_error() -> None:
    assert issubclass(LayerClosed, NatsLayerError)


def test_channel_full_is_the_channels_class() -> None:
    assert ChannelFull is channels.exceptions.ChannelFull


def test_invalid_channel_layer_error_subclasses_channels_one() -> None:
    assert issubclass(
        InvalidChannelLayerError, channels.exceptions.InvalidChannelLayerError
    )
    assert InvalidChannelLayerError is not channels.exceptions.InvalidChannelLayerError


def test_nats_layer_error_is_a_plain_exception() -> None:
    assert issubclass(NatsLayerError, Exception)
    assert not issubclass(NatsLayerError, channels.exceptions.ChannelFull)


def test_exceptions_can_be_raised_and_caught_by_their_bases() -> None:
    with pytest.raises(ConnectionError):
        raise ConnectionUnavailable("down")
    with pytest.raises(ValueError):
        raise MessageTooLarge("big")
    with pytest.raises(NotImplementedError):
        raise NormalChannelsUnavailable("normal")
    with pytest.raises(NatsLayerError):
        raise LayerClosed("closed")
