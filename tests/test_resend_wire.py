"""The resend protocol on a real server, with the loss made deterministic.

Losing a frame on purpose: the sender takes a sequence number (and keeps the
frame, as a publish would) without publishing it, exactly what a frame
dropped by the server looks like to the receiver. Two layers on one server
are two processes as far as NATS is concerned; tests/test_outage.py does the
same across OS processes with real faults.
"""

from __future__ import annotations

import asyncio
import time

from channels_nats import NatsChannelLayer
from channels_nats.serializers import DIRECT, GROUP
from tests.layers import LayerFactory
from tests.servers import await_until

RECEIVE_TIMEOUT = 5.0


async def drop_one(
    sender: NatsChannelLayer, kind: int, target: str, subject: str, keep: bool
) -> int:
    """Number a frame to ``target`` as if it was published, and drop it."""
    transport = sender.transport
    link = await transport.link()
    seq = link.sequencer.next(target)
    if keep:
        body = transport.serializer.dumps({"n": "dropped"})
        link.retained.keep(
            time.monotonic(), kind, target, subject, time.time(), body, seq
        )
    return seq


async def receive_n(layer: NatsChannelLayer, channel: str, n: int) -> list[str]:
    return [
        (await asyncio.wait_for(layer.receive(channel), RECEIVE_TIMEOUT))["n"]
        for _ in range(n)
    ]


async def test_a_dropped_frame_to_a_channel_is_resent_in_order(
    make_layer: LayerFactory,
) -> None:
    receiver, sender = make_layer(), make_layer()
    channel = await receiver.new_channel()
    await sender.send(channel, {"n": "1"})
    assert await receive_n(receiver, channel, 1) == ["1"]
    subject = sender.transport.subjects.process(receiver.transport.client_id)
    await drop_one(sender, DIRECT, channel, subject, keep=True)
    await sender.send(channel, {"n": "3"})
    # "3" waited behind the gap until "dropped" was resent.
    assert await receive_n(receiver, channel, 2) == ["dropped", "3"]
    assert sender.stats()["resent"] == 1
    assert receiver.stats()["lost_in_transit"] == 0


async def test_a_batch_behind_a_dropped_frame_waits_for_the_resend(
    make_layer: LayerFactory,
) -> None:
    """Frames of a batch behind a gap take the frame-by-frame path and wait."""
    receiver, sender = make_layer(), make_layer()
    channel = await receiver.new_channel()
    await sender.send(channel, {"n": "1"})
    assert await receive_n(receiver, channel, 1) == ["1"]
    subject = sender.transport.subjects.process(receiver.transport.client_id)
    await drop_one(sender, DIRECT, channel, subject, keep=True)
    for n in range(3, 9):  # no yield in between: one batch
        await sender.send(channel, {"n": str(n)})
    expected = ["dropped"] + [str(n) for n in range(3, 9)]
    assert await receive_n(receiver, channel, 7) == expected
    # Then a batch next in line again takes the fast path.
    for n in range(9, 12):
        await sender.send(channel, {"n": str(n)})
    assert await receive_n(receiver, channel, 3) == ["9", "10", "11"]
    assert sender.stats()["batched_frames"] >= 9
    assert sender.stats()["resent"] == 1
    assert receiver.stats()["lost_in_transit"] == 0


async def test_a_dropped_group_message_is_resent_to_the_process_that_missed_it(
    make_layer: LayerFactory,
) -> None:
    receiver, bystander, sender = make_layer(), make_layer(), make_layer()
    mine, theirs = await receiver.new_channel(), await bystander.new_channel()
    await receiver.group_add("room", mine)
    await bystander.group_add("room", theirs)
    await sender.group_send("room", {"n": "1"})
    assert await receive_n(receiver, mine, 1) == ["1"]
    assert await receive_n(bystander, theirs, 1) == ["1"]
    subject = sender.transport.subjects.group("room")
    await drop_one(sender, GROUP, "room", subject, keep=True)
    await sender.group_send("room", {"n": "3"})
    # Both missed it; each asked and got its own copy, once.
    assert await receive_n(receiver, mine, 2) == ["dropped", "3"]
    assert await receive_n(bystander, theirs, 2) == ["dropped", "3"], (
        sender.stats(),
        bystander.stats(),
        receiver.stats(),
    )
    assert sender.stats()["resent"] == 2


async def test_a_lost_tail_is_found_by_the_senders_mark(
    make_layer: LayerFactory,
) -> None:
    receiver, sender = make_layer(), make_layer()
    channel = await receiver.new_channel()
    await sender.send(channel, {"n": "1"})
    assert await receive_n(receiver, channel, 1) == ["1"]
    subject = sender.transport.subjects.process(receiver.transport.client_id)
    await drop_one(sender, DIRECT, channel, subject, keep=True)
    # Nothing follows the lost frame; the mark a reconnect sends reveals it.
    sender.transport.recovery.recovered()
    assert await receive_n(receiver, channel, 1) == ["dropped"]


async def test_what_the_sender_no_longer_has_is_counted_and_the_rest_flows(
    make_layer: LayerFactory,
) -> None:
    receiver, sender = make_layer(), make_layer()
    channel = await receiver.new_channel()
    await sender.send(channel, {"n": "1"})
    assert await receive_n(receiver, channel, 1) == ["1"]
    subject = sender.transport.subjects.process(receiver.transport.client_id)
    await drop_one(sender, DIRECT, channel, subject, keep=False)
    await sender.send(channel, {"n": "3"})
    # The sender answered "gone" at once: no wait for the resend deadline.
    assert await receive_n(receiver, channel, 1) == ["3"]
    assert receiver.stats()["lost_in_transit"] == 1
    assert sender.stats()["resent"] == 0


async def test_rejoining_a_group_does_not_ask_for_what_was_sent_while_away(
    make_layer: LayerFactory,
) -> None:
    receiver, sender = make_layer(), make_layer()
    channel = await receiver.new_channel()
    await receiver.group_add("away", channel)
    await sender.group_send("away", {"n": "1"})
    assert await receive_n(receiver, channel, 1) == ["1"]
    await receiver.group_discard("away", channel)  # the process unsubscribes
    home = receiver.transport.links.home
    subject = receiver.transport.subjects.group("away")
    await await_until(lambda: subject not in home._subs, timeout=RECEIVE_TIMEOUT)
    await home.barrier()  # the server has processed the UNSUB
    reassembly = receiver.transport.recovery.reassembly
    await await_until(  # and the process has forgotten the group's numbers
        lambda: (
            not any(
                key[2] == "away"
                for table in (reassembly._current, reassembly._previous)
                for key in table
            )
        ),
        timeout=RECEIVE_TIMEOUT,
    )
    for n in ("while away 1", "while away 2"):
        await sender.group_send("away", {"n": n})
    # group_send returns once the frame is queued: make sure the server has
    # routed both (to nobody) before the SUB of the rejoin can reach it.
    await (await sender.transport.links.link()).barrier()
    await receiver.group_add("away", channel)
    await sender.group_send("away", {"n": "back"})
    # Only what was sent after the member joined again: no gap, no resend.
    assert await receive_n(receiver, channel, 1) == ["back"]
    assert sender.stats()["resent"] == 0
    assert receiver.stats()["lost_in_transit"] == 0
