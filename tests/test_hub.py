"""The extension surface (channels_nats.hub) on a real nats-server."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from asgiref.sync import async_to_sync

from channels_nats import NatsChannelLayer, NoResponders, RequestTimeout
from tests.servers import await_until, wait_for


def subject(layer: NatsChannelLayer, name: str) -> str:
    return f"{layer.prefix}.ext.{name}"


async def test_a_subscription_gets_what_another_process_publishes(layer, other):
    got: list[tuple[str, bytes]] = []
    await layer.hub.subscribe(subject(layer, "a"), lambda s, d, r: got.append((s, d)))
    await other.hub.start()
    other.hub.publish(subject(layer, "a"), b"one")
    other.hub.publish(subject(layer, "a"), b"two")
    await await_until(lambda: len(got) == 2, 5)
    assert got == [(subject(layer, "a"), b"one"), (subject(layer, "a"), b"two")]


async def test_a_wildcard_subscription_gets_every_matching_subject(layer, other):
    got: list[str] = []
    await layer.hub.subscribe(subject(layer, "w.*"), lambda s, d, r: got.append(s))
    await other.hub.start()
    for name in ("w.x", "w.y", "other"):
        other.hub.publish(subject(layer, name), b"m")
    await await_until(lambda: len(got) == 2, 5)
    assert sorted(got) == [subject(layer, "w.x"), subject(layer, "w.y")]


async def test_a_handler_that_raises_is_counted_and_later_messages_arrive(layer, other):
    got: list[bytes] = []

    def handler(_s: str, data: bytes, _r: str) -> None:
        if data == b"bad":
            raise ValueError("boom")
        got.append(data)

    await layer.hub.subscribe(subject(layer, "h"), handler)
    await other.hub.start()
    other.hub.publish(subject(layer, "h"), b"bad")
    other.hub.publish(subject(layer, "h"), b"good")
    await await_until(lambda: got == [b"good"], 5)
    assert layer.stats()["handler_errors"] == 1


async def test_unsubscribe_stops_delivery(layer, other):
    got: list[bytes] = []
    await layer.hub.subscribe(subject(layer, "u"), lambda s, d, r: got.append(d))
    await other.hub.start()
    other.hub.publish(subject(layer, "u"), b"before")
    await await_until(lambda: got == [b"before"], 5)
    await layer.hub.unsubscribe(subject(layer, "u"))
    # A request round trip through the same subject proves the server has
    # processed the unsubscribe: nobody answers any more.
    with pytest.raises(NoResponders):
        await other.hub.request(subject(layer, "u"), b"after", 1.0)
    assert got == [b"before"]


async def test_subscribing_again_with_another_handler_is_refused(layer):
    await layer.hub.subscribe(subject(layer, "d"), lambda s, d, r: None)
    with pytest.raises(ValueError, match="another handler"):
        await layer.hub.subscribe(subject(layer, "d"), lambda s, d, r: None)


async def test_request_gets_the_reply_or_a_clear_error(layer, other):
    def echo(_s: str, data: bytes, reply: str) -> None:
        layer.hub.publish(reply, b"echo:" + data)

    await layer.hub.subscribe(subject(layer, "echo"), echo)
    await layer.hub.subscribe(subject(layer, "silent"), lambda s, d, r: None)
    assert await other.hub.request(subject(layer, "echo"), b"hi", 2.0) == b"echo:hi"
    with pytest.raises(NoResponders):
        await other.hub.request(subject(layer, "nobody"), b"x", 2.0)
    with pytest.raises(RequestTimeout):
        await other.hub.request(subject(layer, "silent"), b"x", 0.2)
    assert issubclass(RequestTimeout, TimeoutError)


async def test_gather_collects_a_reply_from_every_process(make_layer):
    responders = [make_layer() for _ in range(3)]
    asker = make_layer()
    name = subject(asker, "roll")
    for i, responder in enumerate(responders):

        def answer(_s: str, _d: bytes, reply: str, i: int = i, r=responder) -> None:
            r.hub.publish(reply, f"node{i}".encode())

        await responder.hub.subscribe(name, answer)
    loop = asyncio.get_running_loop()
    started = loop.time()
    replies = await asker.hub.gather(name, b"?", timeout=5.0, expected=3)
    assert sorted(replies) == [b"node0", b"node1", b"node2"]
    assert loop.time() - started < 4.0  # returned on the count, not the deadline
    # Without a count it waits for the deadline and still has all three.
    replies = await asker.hub.gather(name, b"?", timeout=0.3)
    assert sorted(replies) == [b"node0", b"node1", b"node2"]
    assert await asker.hub.gather(subject(asker, "none"), b"?", timeout=0.1) == []


async def test_a_service_runs_on_the_home_loop(layer):
    ran = asyncio.Event()
    loops: list[asyncio.AbstractEventLoop] = []

    async def service() -> None:
        loops.append(asyncio.get_running_loop())
        ran.set()
        await asyncio.Event().wait()

    await layer.hub.start()
    layer.hub.run_on_home("probe", service)
    await asyncio.wait_for(ran.wait(), 5)
    assert loops == [asyncio.get_running_loop()]


def test_services_and_subscriptions_follow_the_home_to_the_io_thread(nats_server):
    prefix = "h" + uuid.uuid4().hex[:10]
    layer = NatsChannelLayer(servers=[nats_server.url], prefix=prefix)
    sender = NatsChannelLayer(servers=[nats_server.url], prefix=prefix)
    threads: list[str] = []
    got: list[tuple[str, bytes]] = []
    moved = threading.Event()
    layer.hub.on_home_moved(moved.set)

    async def service() -> None:
        threads.append(threading.current_thread().name)
        await asyncio.Event().wait()

    def handler(_s: str, data: bytes, _r: str) -> None:
        got.append((threading.current_thread().name, data))

    async def setup() -> None:
        await layer.hub.subscribe(f"{prefix}.ext.m", handler)
        layer.hub.run_on_home("probe", service)
        await await_until(lambda: threads, 5)

    try:
        asyncio.run(setup())  # this loop ends: the home moves to the I/O thread
        wait_for(lambda: len(threads) == 2, 5)
        assert threads[0] == "MainThread"
        assert threads[1].startswith("channels_nats-")
        assert moved.is_set()

        async def publish() -> None:
            await sender.hub.start()
            sender.hub.publish(f"{prefix}.ext.m", b"after the move")

        async_to_sync(publish)()
        wait_for(lambda: got, 5)
        assert got[0][0].startswith("channels_nats-")
        assert got[0][1] == b"after the move"
    finally:
        async_to_sync(layer.close)()
        async_to_sync(sender.close)()


async def test_reconnect_listeners_hear_a_server_restart(nats_server_fresh, prefix):
    layer = NatsChannelLayer(
        servers=[nats_server_fresh.url], prefix=prefix, reconnect_time_wait=0.05
    )
    sender = NatsChannelLayer(
        servers=[nats_server_fresh.url], prefix=prefix, reconnect_time_wait=0.05
    )
    reconnected = asyncio.Event()
    loop = asyncio.get_running_loop()
    layer.hub.on_reconnected(lambda: loop.call_soon_threadsafe(reconnected.set))
    got: list[bytes] = []
    try:
        await layer.hub.subscribe(f"{prefix}.ext.r", lambda s, d, r: got.append(d))
        await sender.hub.start()
        nats_server_fresh.restart(graceful=False)
        await asyncio.wait_for(reconnected.wait(), 10)

        # The subscription is restored after the reconnect.
        async def delivered() -> bool:
            sender.hub.publish(f"{prefix}.ext.r", b"x")
            await asyncio.sleep(0.05)
            return bool(got)

        await await_until(delivered, 10)
    finally:
        await layer.close()
        await sender.close()


async def test_close_hooks_run_while_the_connection_still_works(make_layer):
    leaving, staying = make_layer(), make_layer()
    got: list[bytes] = []
    await staying.hub.subscribe(subject(staying, "bye"), lambda s, d, r: got.append(d))
    await leaving.hub.start()

    async def say_bye() -> None:
        leaving.hub.publish(subject(staying, "bye"), b"bye")

    hub = leaving.hub
    hub.on_close(say_bye)
    await leaving.close()
    await await_until(lambda: got == [b"bye"], 5)
    assert hub.closed
    assert leaving.hub is not hub  # a closed layer starts afresh when used again
