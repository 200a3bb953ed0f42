"""Unit tests of the normal-channel fetcher (channels_nats.normal.puller).

On a real nats-server with JetStream: the fetcher pulls only while receivers
wait, binds again when its consumer disappears, and gives back (naks) what it
fetched when the receivers that wanted it are gone.
"""

from __future__ import annotations

import asyncio

import nats

from channels_nats import NatsChannelLayer, NatsLayerError
from channels_nats.normal.jetstream import consumer_name
from channels_nats.normal.puller import Puller
from tests.servers import NatsServer, await_until

TIMEOUT = 5.0


async def _puller(layer: NatsChannelLayer, channel: str) -> Puller:
    transport = layer.transport
    link = await transport.link()
    return await transport.normal.puller(link, channel)


async def test_fetcher_pulls_only_while_a_receiver_waits(make_layer) -> None:
    layer = make_layer()
    await layer.send("pull-q", {"i": 0})
    await layer.send("pull-q", {"i": 1})
    puller = await _puller(layer, "pull-q")
    inbox = layer.transport.inbox
    assert inbox.count("pull-q") == 0  # bound, but nobody wants anything yet

    puller.want(1)
    await await_until(lambda: inbox.count("pull-q") == 1, timeout=TIMEOUT)
    # One waiting receiver: one message fetched, unacked, with its handle.
    [entry] = inbox.take_all("pull-q")
    assert entry.handle is not None
    entry.handle.settle(ack=True)
    puller.want(-1)

    assert await asyncio.wait_for(layer.receive("pull-q"), TIMEOUT) == {"i": 1}


async def test_fetcher_binds_again_when_its_consumer_is_deleted(
    make_layer, nats_server: NatsServer
) -> None:
    layer = make_layer()
    await layer.send("rebind-q", {"i": 0})
    assert await asyncio.wait_for(layer.receive("rebind-q"), TIMEOUT) == {"i": 0}
    puller = await _puller(layer, "rebind-q")
    old_psub = puller.psub

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.delete_consumer(puller.address.stream, consumer_name("rebind-q"))
        receiving = asyncio.create_task(layer.receive("rebind-q"))
        await layer.send("rebind-q", {"i": 1})
        assert await asyncio.wait_for(receiving, 3 * TIMEOUT) == {"i": 1}
        info = await js.consumer_info(puller.address.stream, consumer_name("rebind-q"))
        assert info.config.durable_name == consumer_name("rebind-q")
    finally:
        await nc.close()
    assert puller.psub is not old_psub
    assert layer.stats()["pull_errors"] >= 1


async def test_fetched_message_is_released_when_its_receiver_is_cancelled(
    make_layer,
) -> None:
    # A long redelivery timeout: only the nak can hand the message on in time.
    holder = make_layer(redelivery_timeout=60)
    taker = make_layer(redelivery_timeout=60)
    await holder.send("release-q", {"type": "kept"})
    inbox = holder.transport.inbox
    puller = await _puller(holder, "release-q")

    # A receiver arrives (demand 1): the message is fetched into the buffer,
    # unacked; then the receiver is cancelled before it takes it (demand 0).
    puller.want(1)
    await await_until(lambda: inbox.count("release-q") == 1, timeout=TIMEOUT)
    puller.want(-1)
    # Within the grace the fetcher stops and naks what nobody took.
    await await_until(lambda: inbox.count("release-q") == 0, timeout=TIMEOUT)

    got = await asyncio.wait_for(taker.receive("release-q"), TIMEOUT)
    assert got == {"type": "kept"}


async def test_a_watch_whose_watcher_dies_starting_raises_and_the_next_one_works(
    make_layer,
) -> None:
    # The membership watcher runs as a task of the home link; closing the
    # link cancels it. A waiting watch() used to wait forever for it.
    layer = make_layer()
    transport = layer.transport
    home = await transport.home()
    watching = asyncio.create_task(transport.normal.watch())
    for _ in range(5):  # let watch() hand the watcher to the home loop
        await asyncio.sleep(0)
    await home.close()
    try:
        await asyncio.wait_for(watching, TIMEOUT)
    except NatsLayerError as exc:
        assert "watcher" in str(exc) or "bucket" in str(exc)
    # else: it had read the bucket already; either way it did not hang
    # A fresh home watches again, and normal channels work.
    await asyncio.wait_for(transport.normal.watch(), TIMEOUT)
    await layer.send("watch-q", {"i": 1})
    assert await asyncio.wait_for(layer.receive("watch-q"), TIMEOUT) == {"i": 1}


async def test_closing_a_link_stops_a_task_that_swallowed_its_cancellation(
    make_layer,
) -> None:
    # nats-py's flush swallows a cancellation (subscribe() flushes), so a
    # watcher cancelled inside kv.watchall() used to carry on and close()
    # waited for it forever. close() now cancels again until the task ends.
    layer = make_layer()
    home = await layer.transport.home()
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()  # what nats-py's _flush_pending does
        await asyncio.Event().wait()

    task = home.spawn(stubborn())
    await asyncio.sleep(0)  # let it start waiting
    await asyncio.wait_for(home.close(), TIMEOUT)
    assert swallowed.is_set()
    assert task.cancelled()
