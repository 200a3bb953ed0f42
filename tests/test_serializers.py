"""Property tests of message bodies and wire frames (no server)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from channels_nats.serializers import (
    CREDIT,
    DIRECT,
    FLUSH,
    GROUP,
    GROUP_ADD,
    GROUP_DISCARD,
    Frame,
    MalformedFrame,
    Serializer,
    pack_control,
    pack_data,
    unpack_frame,
)

# msgpack carries 64-bit integers; NaN is excluded only because NaN != NaN.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)
messages = st.dictionaries(st.text(max_size=10), values, max_size=5)


@settings(max_examples=200)
@given(messages)
@example({})
@example({"type": "chat.message", "text": "hi", "bytes": b"\x00\xff"})
def test_plain_serializer_round_trips_any_json_like_message(
    message: dict[str, Any],
) -> None:
    serializer = Serializer()
    assert serializer.loads(serializer.dumps(message)) == message


@settings(max_examples=50)
@given(messages)
def test_encrypting_serializer_round_trips_any_json_like_message(
    message: dict[str, Any],
) -> None:
    serializer = Serializer([b"k1"])
    assert serializer.loads(serializer.dumps(message)) == message


def test_tuples_come_back_as_lists() -> None:
    serializer = Serializer()
    assert serializer.loads(serializer.dumps({"t": (1, (2, 3))})) == {"t": [1, [2, 3]]}


def test_body_of_old_key_is_read_after_rotation_to_new_key() -> None:
    message = {"type": "x", "n": 1}
    body = Serializer([b"old"]).dumps(message)
    assert Serializer([b"new", b"old"]).loads(body) == message


def test_body_of_rotated_serializer_is_unreadable_with_only_old_key() -> None:
    body = Serializer([b"new", b"old"]).dumps({"type": "x"})
    with pytest.raises(MalformedFrame):
        Serializer([b"old"]).loads(body)


def test_encrypted_body_is_unreadable_without_keys_and_with_wrong_key() -> None:
    body = Serializer([b"k1"]).dumps({"type": "x"})
    with pytest.raises(MalformedFrame):
        Serializer().loads(body)
    with pytest.raises(MalformedFrame):
        Serializer([b"k2"]).loads(body)


def test_plain_body_is_unreadable_by_encrypting_serializer() -> None:
    body = Serializer().dumps({"type": "x"})
    with pytest.raises(MalformedFrame):
        Serializer([b"k1"]).loads(body)


def test_encrypted_body_does_not_contain_the_plaintext() -> None:
    secret = "the-quick-brown-fox-secret-payload"
    message = {"type": "x", "text": secret, "raw": secret.encode()}
    body = Serializer([b"k1"]).dumps(message)
    assert secret.encode() not in body
    assert Serializer().dumps(message) not in body


@pytest.mark.parametrize("message", [None, [], "text", b"bytes", 5, ("a", 1)])
def test_dumps_of_non_dict_raises_type_error(message: Any) -> None:
    with pytest.raises(TypeError):
        Serializer().dumps(message)


@pytest.mark.parametrize("key", [1, b"bytes", None, 1.5, ("t",)])
def test_dumps_of_dict_with_non_str_key_raises_type_error(key: Any) -> None:
    with pytest.raises(TypeError):
        Serializer().dumps({"type": "x", key: 1})


@pytest.mark.parametrize(
    "value", [object(), {1, 2}, frozenset(), 2**64, -(2**63) - 1, Exception("e")]
)
def test_dumps_of_unserializable_value_raises_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        Serializer().dumps({"type": "x", "v": value})
    with pytest.raises(TypeError):
        Serializer().dumps({"type": "x", "nested": [{"v": value}]})


@pytest.mark.parametrize(
    "body", [b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb("s"), b"garbage"]
)
def test_loads_of_non_message_body_raises_malformed_frame(body: bytes) -> None:
    with pytest.raises(MalformedFrame):
        Serializer().loads(body)


# -- frames ----------------------------------------------------------------


@settings(max_examples=100)
@given(
    st.sampled_from([DIRECT, GROUP]),
    st.text(max_size=20),
    st.text(max_size=40),
    st.one_of(st.floats(allow_nan=False), st.integers(min_value=0, max_value=2**63)),
    st.binary(max_size=64),
)
def test_data_frame_round_trips(
    kind: int, origin: str, target: str, sent_at: float, body: bytes
) -> None:
    frame = unpack_frame(pack_data(kind, origin, target, sent_at, body, 7, 2))
    assert frame == Frame(kind, origin, (target, sent_at, body, 7, 2))
    assert isinstance(frame, Frame)


control_args = st.one_of(st.text(max_size=20), st.integers(0, 2**32))


@settings(max_examples=100)
@given(
    st.sampled_from([CREDIT, GROUP_ADD, GROUP_DISCARD]),
    st.text(max_size=20),
    control_args,
    control_args,
)
def test_two_argument_control_frames_round_trip(
    kind: int, origin: str, a: str | int, b: str | int
) -> None:
    assert unpack_frame(pack_control(kind, origin, a, b)) == Frame(kind, origin, (a, b))


def test_credit_frame_round_trips() -> None:
    frame = unpack_frame(pack_control(CREDIT, "origin", "specific.c!x", 7))
    assert frame == Frame(CREDIT, "origin", ("specific.c!x", 7))


def test_flush_frame_round_trips() -> None:
    assert unpack_frame(pack_control(FLUSH, "origin")) == Frame(FLUSH, "origin", ())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never-used msgpack byte
        b"\x93\x01",  # truncated array
        msgpack.packb([1, 0, "o"]) + b"\x00",  # trailing data
        msgpack.packb([2, 0, "a"]),  # wrong version
        msgpack.packb({"a": 1}),
        msgpack.packb("text"),
        msgpack.packb(None),
        msgpack.packb([]),
        msgpack.packb([1, 0]),
        msgpack.packb([1, "0", "o", "t", 1.0, b""]),  # kind not int
        msgpack.packb([1, 0, b"o", "t", 1.0, b""]),  # origin not str
        msgpack.packb([1, 0, "o", "t", 1.0, "not-bytes"]),
        msgpack.packb([1, 0, "o", "t", "1.0", b""]),  # sent_at not a number
        msgpack.packb([1, 0, "o", 5, 1.0, b""]),  # target not str
        msgpack.packb([1, 1, "o", "t", 1.0]),  # too short
        msgpack.packb([1, 1, "o", "t", 1.0, b"", 1, 2, 3]),  # too long
        msgpack.packb([1, 1, "o", "t", 1.0, b"", 1]),  # no stream number
        msgpack.packb([1, 1, "o", "t", 1.0, b"", "1", 0]),  # sequence not an int
        msgpack.packb([1, 10, "o", "ch"]),  # credit without count
        msgpack.packb([1, 10, "o", "ch", 1, 2]),  # credit with extra arg
        msgpack.packb([1, 10, "o", "ch", 1.5]),  # float argument
        msgpack.packb([1, 11, "o", "g", [1]]),  # list argument
        msgpack.packb([1, 13, "o", "x"]),  # flush with an argument
    ],
)
def test_unpack_frame_raises_malformed_frame_for_invalid_data(data: bytes) -> None:
    with pytest.raises(MalformedFrame):
        unpack_frame(data)


def test_unpack_frame_of_unknown_kind_returns_it_for_the_receiver_to_count() -> None:
    frame = unpack_frame(msgpack.packb([1, 99, "o", "a", [1]]))
    assert frame == Frame(99, "o", ("a", [1]))


def test_unpack_frame_raises_malformed_frame_for_non_str_map_key() -> None:
    with pytest.raises(MalformedFrame):
        unpack_frame(msgpack.packb({1: 2}))


@settings(max_examples=200)
@given(st.binary(max_size=64))
@example(b"\x91" * 5000)  # deeper nesting than msgpack allows
@example(b"\xdd\xff\xff\xff\xff")  # array header claiming 4G elements
def test_unpack_frame_returns_frame_or_raises_malformed_frame_for_any_bytes(
    data: bytes,
) -> None:
    try:
        frame = unpack_frame(data)
    except MalformedFrame:
        return
    assert isinstance(frame, Frame)


frame_like = st.lists(
    st.one_of(
        st.integers(-2, 20),
        st.text(max_size=4),
        st.binary(max_size=4),
        st.floats(allow_nan=False),
        st.none(),
        st.booleans(),
        st.lists(st.integers(-(2**63), 2**64 - 1), max_size=2),
    ),
    max_size=7,
)


@settings(max_examples=200)
@given(
    st.one_of(
        frame_like,
        st.tuples(st.just(1), st.integers(-2, 20), st.text())
        .map(list)
        .flatmap(lambda h: frame_like.map(lambda t: h + t)),
    )
)
def test_unpack_frame_of_msgpack_list_returns_frame_or_raises_malformed_frame(
    obj: list[Any],
) -> None:
    try:
        frame = unpack_frame(msgpack.packb(obj))
    except MalformedFrame:
        return
    assert isinstance(frame, Frame)
    assert isinstance(frame.kind, int)
    assert isinstance(frame.origin, str)
