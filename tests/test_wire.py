"""The fast reading of MSG frames (channels_nats.wire.FastParser).

The parser is fed the bytes a socket would deliver, cut at arbitrary points;
what it delivers must be exactly what nats-py's own parser delivers, in the
same order. The last test runs it against a real nats-server.
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats
from hypothesis import given, settings
from hypothesis import strategies as st

from channels_nats.client import GuardedClient
from tests.servers import NatsServer

OURS, ALSO_OURS, OTHER = 7, 9, 11


def msg(subject: bytes, sid: int, payload: bytes, reply: bytes = b"") -> bytes:
    head = b"MSG %b %d %b%d\r\n" % (
        subject,
        sid,
        reply + b" " if reply else b"",
        len(payload),
    )
    return head + payload + b"\r\n"


def hmsg(
    subject: bytes, sid: int, header: bytes, payload: bytes, reply: bytes = b""
) -> bytes:
    head = b"HMSG %b %d %b%d %d\r\n" % (
        subject,
        sid,
        reply + b" " if reply else b"",
        len(header),
        len(header) + len(payload),
    )
    return head + header + payload + b"\r\n"


# Header blocks as a server forwards them from any publisher: nats-py's own
# HMSG pattern misreads the lengths of the second and third (with a payload
# of digits), which is how a hostile publisher made subscribers reconnect.
HEADERS = [b"NATS/1.0\r\nA: b\r\n\r\n", b"\r\n\r\n", b"\r\n", b"NATS/1.0", b""]


def client() -> tuple[GuardedClient, list[Any], list[Any]]:
    got: list[Any] = []
    bad: list[Any] = []
    nc = GuardedClient(lambda subject, exc: bad.append((subject, exc)))
    nc.direct[OURS] = lambda s, d, r: got.append((OURS, s, d, r))
    nc.direct[ALSO_OURS] = lambda s, d, r: got.append((ALSO_OURS, s, d, r))
    return nc, got, bad


frames = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from([OURS, ALSO_OURS, OTHER]),
            st.sampled_from([b"asgi.p.a", b"asgi.g.room"]),
            st.binary(max_size=300) | st.sampled_from([b"9", b"12", b"7\r\n"]),
            st.sampled_from([b"", b"_INBOX.x"]),
            st.none() | st.sampled_from(HEADERS),
        ),
        st.sampled_from([b"+OK\r\n", b"PONG\r\n"]),
    ),
    max_size=40,
)


def _wire(f: Any) -> bytes:
    if isinstance(f, bytes):
        return f
    sid, subject, payload, reply, header = f
    if header is None:
        return msg(subject, sid, payload, reply)
    return hmsg(subject, sid, header, payload, reply)


@settings(max_examples=300, deadline=None)
@given(frames=frames, cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_every_frame_is_delivered_once_in_order_wherever_the_reads_are_cut(
    frames: list[Any], cuts: list[int]
) -> None:
    wire = b"".join(_wire(f) for f in frames)
    expected = [
        (f[0], f[1].decode(), f[2], f[3].decode())
        for f in frames
        if not isinstance(f, bytes) and f[0] != OTHER  # OTHER: not subscribed
    ]
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    nc, got, bad = client()

    async def feed() -> None:
        for a, b in zip(points, points[1:], strict=False):
            await nc._ps.parse(wire[a:b])

    asyncio.run(feed())
    assert got == expected
    assert not bad
    assert not nc._ps.buf  # nothing left over


def test_a_frame_of_a_subscription_just_removed_is_not_delivered() -> None:
    nc, got, _ = client()

    async def feed() -> None:
        await nc._ps.parse(msg(b"asgi.p.a", OURS, b"1"))
        del nc.direct[OURS]  # the cached line must not outlive the subscription
        await nc._ps.parse(msg(b"asgi.p.a", OURS, b"2"))
        await nc._ps.parse(msg(b"asgi.p.a", ALSO_OURS, b"3"))

    asyncio.run(feed())
    assert [(sid, data) for sid, _, data, _ in got] == [(OURS, b"1"), (ALSO_OURS, b"3")]


def test_a_subject_that_is_not_utf8_is_reported_and_the_next_frames_still_arrive() -> (
    None
):
    nc, got, bad = client()
    wire = msg(b"asgi.r.\xff", OURS, b"1") + msg(b"asgi.p.a", ALSO_OURS, b"2")
    asyncio.run(nc._ps.parse(wire))
    assert [data for _, _, data, _ in got] == [b"2"]
    assert [subject for subject, _ in bad] == [b"asgi.r.\xff"]
    assert not nc._ps.buf


def test_a_handler_that_raises_is_reported_and_the_next_frames_still_arrive() -> None:
    nc, got, bad = client()

    def choke(subject: str, data: bytes, reply: str) -> None:
        raise ValueError("bad frame")

    nc.direct[OURS] = choke
    wire = msg(b"asgi.p.a", OURS, b"1") + msg(b"asgi.p.b", ALSO_OURS, b"2")
    asyncio.run(nc._ps.parse(wire))
    assert [data for _, _, data, _ in got] == [b"2"]
    assert [(subject, str(exc)) for subject, exc in bad] == [(b"asgi.p.a", "bad frame")]


async def test_a_real_server_burst_of_mixed_sizes_arrives_intact_and_in_order(
    nats_server: NatsServer,
) -> None:
    # Frames from a few bytes to 200 kB, so that reads end inside lines and
    # payloads, and the fast path hands over to nats-py's parser and back.
    got: list[bytes] = []
    done = asyncio.Event()
    sizes = [(i * 7919) % 200_000 if i % 10 == 0 else i % 300 for i in range(2000)]
    nc = GuardedClient(lambda subject, exc: None)
    await nc.connect(nats_server.url, allow_reconnect=False)
    try:
        sub = await nc.subscribe("wire.burst")

        def handler(subject: str, data: bytes, reply: str) -> None:
            got.append(data)
            if len(got) == len(sizes):
                done.set()

        nc.direct[sub._id] = handler
        await nc.flush()
        pub = await nats.connect(nats_server.url, allow_reconnect=False)
        try:
            for i, size in enumerate(sizes):
                await pub.publish("wire.burst", i.to_bytes(4, "big") * (size // 4 + 1))
            await pub.flush()
        finally:
            await pub.close()
        await asyncio.wait_for(done.wait(), 20)
    finally:
        await nc.close()
    assert [int.from_bytes(d[:4], "big") for d in got] == list(range(len(sizes)))
    assert [len(d) for d in got] == [4 * (s // 4 + 1) for s in sizes]


async def test_header_blocks_that_mislead_nats_py_change_nothing_for_any_subscriber(
    nats_server: NatsServer,
) -> None:
    # A raw publisher's HPUB with the header block "\r\n\r\n" and a payload
    # of digits: nats-py's parser read it with the wrong lengths, lost its
    # place in the stream and reconnected, dropping what was in flight.
    got: list[bytes] = []
    queued: list[tuple[bytes, dict[str, str] | None]] = []
    done = asyncio.Event()
    disconnects: list[str] = []

    async def disconnected() -> None:
        disconnects.append("disconnected")

    bad: list[bytes] = []
    nc = GuardedClient(lambda subject, exc: bad.append(subject))
    await nc.connect(
        nats_server.url, allow_reconnect=False, disconnected_cb=disconnected
    )
    try:
        ours = await nc.subscribe("wire.hostile")

        def handler(subject: str, data: bytes, reply: str) -> None:
            got.append(data)

        nc.direct[ours._id] = handler

        async def nats_py_path(msg: Any) -> None:  # a subscription nats-py serves
            queued.append((msg.data, msg.headers))
            if msg.data == b"end":
                done.set()

        await nc.subscribe("wire.other", cb=nats_py_path)
        await nc.flush()
        reader, writer = await asyncio.open_connection("127.0.0.1", nats_server.port)
        await reader.readline()  # INFO
        writer.write(b'CONNECT {"verbose":false,"headers":true}\r\n')
        for subject in (b"wire.hostile", b"wire.other"):
            for header in HEADERS[1:]:
                for payload in (b"9", b"12", b"x"):
                    line = b"HPUB %b %d %d\r\n" % (
                        subject,
                        len(header),
                        len(header) + len(payload),
                    )
                    writer.write(line + header + payload + b"\r\n")
        end = HEADERS[0]
        writer.write(b"HPUB wire.other %d %d\r\n" % (len(end), len(end) + 3))
        writer.write(end + b"end\r\n")
        await writer.drain()
        await asyncio.wait_for(done.wait(), 10)
        writer.close()
        assert not disconnects
        assert nc.is_connected
    finally:
        await nc.close()
    sent = [p for _ in HEADERS[1:] for p in (b"9", b"12", b"x")]
    assert got == sent  # inline: the payload, whatever the header block
    # nats-py parses the header block of its subscriptions' frames; the ones
    # it chokes on are counted and dropped by the client's guard.
    assert queued[-1] == (b"end", {"A": "b"})
    assert len(queued) - 1 + len(bad) == len(sent)
    assert set(bad) == {b"wire.other"}
