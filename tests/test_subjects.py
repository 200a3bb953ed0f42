"""Property tests of the Channels-name to NATS-subject mapping (no server)."""

from __future__ import annotations

import pytest
from channels.layers import BaseChannelLayer
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from channels_nats.subjects import Subjects, owner_of, token, untoken

CHANNEL_RE = BaseChannelLayer.channel_name_regex
GROUP_RE = BaseChannelLayer.group_name_regex

# Names Channels accepts, including its quirks: empty dot segments, a bare
# trailing "!", unicode digits and word characters after "!" and, since
# Python's "$" matches before a final newline, a trailing "\n".
channel_names = st.from_regex(CHANNEL_RE)
group_names = st.from_regex(GROUP_RE)
any_names = st.one_of(st.text(), channel_names, group_names)

QUIRKY_NAMES = [
    "",
    "a..b",
    ".x",
    "x.",
    ".",
    "..",
    "a!",
    "a!b",
    "specific.abc!xyz",
    "a!\u0661\u0662",  # ARABIC-INDIC digits match \d
    "a!\u00e9t\u00e9",  # accented word characters match \w
    "abc\n",
    "a!b\n",
    "_",
    "__",
    "_d",
    "_e",
    "_x000041",
    "-",
    "a b",
    "a\tb",
    "a\u00a0b",  # NO-BREAK SPACE
    "a\u2028b",  # LINE SEPARATOR
    "*",
    ">",
    "a.*.>",
    "\U0010ffff",
    "\x00",
]

NATS_FORBIDDEN = frozenset(".*>")


def assert_valid_nats_token(tok: str) -> None:
    assert isinstance(tok, str)
    assert tok, "a NATS token must not be empty"
    assert not NATS_FORBIDDEN.intersection(tok), tok
    assert not any(c.isspace() for c in tok), repr(tok)


@pytest.mark.parametrize("name", QUIRKY_NAMES)
def test_token_round_trips_quirky_names(name: str) -> None:
    assert untoken(token(name)) == name


@pytest.mark.parametrize("name", QUIRKY_NAMES)
def test_token_of_quirky_name_is_a_single_valid_nats_token(name: str) -> None:
    assert_valid_nats_token(token(name))


def test_channels_regexes_accept_the_quirky_names_used_here() -> None:
    # Guards the premise of the quirk tests: these really are valid names.
    for name in ["a..b", ".x", "x.", "a!", "abc\n", "a!\u0661", "a!\u00e9"]:
        assert CHANNEL_RE.match(name), name
    assert GROUP_RE.match("abc\n")


@settings(max_examples=200)
@given(any_names)
@example("abc\n")
@example("a!\n")
def test_untoken_inverts_token_for_any_string(name: str) -> None:
    assert untoken(token(name)) == name


@settings(max_examples=200)
@given(any_names)
def test_token_is_a_single_valid_nats_token_for_any_string(name: str) -> None:
    assert_valid_nats_token(token(name))


@settings(max_examples=200)
@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_token_is_ascii_only(name: str) -> None:
    assert token(name).isascii()


@settings(max_examples=200)
@given(any_names, any_names)
@example("", "_e")
@example("_", "__")
@example(".", "_d")
@example("!", "_b")
@example("a_", "a__")
def test_token_is_injective_over_pairs(a: str, b: str) -> None:
    assume(a != b)
    assert token(a) != token(b)


@settings(max_examples=200)
@given(st.lists(any_names, min_size=2, max_size=8, unique=True))
def test_token_is_injective_over_sets(names: list[str]) -> None:
    assert len({token(n) for n in names}) == len(names)


@pytest.mark.parametrize(
    "bad",
    ["a_", "_q", "_x12", "a.b", "_", "_x", "_x00004", "a b", "*", ">", "_E", "é"],
)
def test_untoken_rejects_strings_token_cannot_produce(bad: str) -> None:
    with pytest.raises(ValueError):
        untoken(bad)


@pytest.mark.parametrize(
    "non_canonical",
    [
        "_x000041",  # 'A' is kept as is by token(), never escaped
        "_x00002e",  # '.' is escaped as '_d', never '_x'
        "_x00005f",  # '_' is escaped as '__', never '_x'
        "_x0000E9",  # token() writes lowercase hex
        "_x0_00e9",  # int() accepts '_' between digits
        "_x+000e9",  # int() accepts a sign
        "_x 000e9",  # int() strips whitespace
    ],
)
def test_untoken_rejects_non_canonical_hex_escapes(non_canonical: str) -> None:
    with pytest.raises(ValueError):
        untoken(non_canonical)


@settings(max_examples=200)
@given(
    st.one_of(
        st.text(),
        st.text(alphabet="_xdbe0123456789abcdefABCDEF+ -"),
        st.builds(token, any_names),
    )
)
@example("_x000041")
def test_untoken_accepts_only_what_token_produces(tok: str) -> None:
    try:
        name = untoken(tok)
    except ValueError:
        return
    assert token(name) == tok


@settings(max_examples=100)
@given(
    st.from_regex(r"\A[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){0,3}\Z"),
    any_names,
)
def test_group_subject_is_prefix_g_and_one_token(prefix: str, group: str) -> None:
    subject = Subjects(prefix).group(group)
    assert subject.startswith(prefix + ".g.")
    assert len(subject.split(".")) == prefix.count(".") + 3
    assert subject.split(".")[-1] == token(group)


@settings(max_examples=100)
@given(
    st.from_regex(r"\A[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){0,3}\Z"),
    any_names,
)
def test_process_and_control_subjects_are_prefix_kind_and_one_token(
    prefix: str, client_id: str
) -> None:
    subjects = Subjects(prefix)
    expected_tokens = prefix.count(".") + 3
    for kind, subject in (
        ("p", subjects.process(client_id)),
        ("ctl", subjects.control(client_id)),
    ):
        assert subject.startswith(f"{prefix}.{kind}.")
        assert len(subject.split(".")) == expected_tokens
        assert subject.split(".")[-1] == token(client_id)
    assert subjects.broadcast == f"{prefix}.bc"


def test_group_subjects_of_distinct_groups_differ() -> None:
    subjects = Subjects("asgi")
    names = ["a..b", "a.b", "a_b", "a__b", "a_db", "ab", "a!b", "a"]
    assert len({subjects.group(n) for n in names}) == len(names)


@pytest.mark.parametrize(
    ("channel", "owner"),
    [
        ("specific.abc123!xyz", "abc123"),
        ("x.y.cid!", "cid"),
        ("cid!q", "cid"),
        ("a..cid!q.r!s", "cid"),
        ("cid!", "cid"),
    ],
)
def test_owner_of_is_last_dot_segment_before_bang(channel: str, owner: str) -> None:
    assert owner_of(channel) == owner


@settings(max_examples=100)
@given(
    st.from_regex(r"\A[a-zA-Z\d\-_.]*\Z"),
    st.from_regex(r"\A[a-zA-Z\d\-_]+\Z"),
    st.from_regex(r"\A[\d\w\-_.]*\Z"),
)
def test_owner_of_recovers_client_id_of_any_specific_name(
    head: str, client_id: str, local: str
) -> None:
    channel = f"{head}.{client_id}!{local}" if head else f"{client_id}!{local}"
    assert owner_of(channel) == client_id
