"""Bounds on what the wire can make a process hold, and counts for what it drops.

Each test drives the real handler on a real server's connection, with the
flood made deterministic: the calls are made without yielding, as frames
that arrive in one socket read are dispatched.
"""

from __future__ import annotations

import pytest

from channels_nats import membership
from channels_nats.inbox import Entry
from channels_nats.serializers import GROUP_ADD, Frame
from tests.layers import LayerFactory
from tests.servers import await_until


async def test_a_flood_of_membership_requests_is_bounded_and_counted(
    make_layer: LayerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(membership, "MAX_ANSWERING", 5)
    owner = make_layer()
    channel = await owner.new_channel()
    home = await owner.transport.home()
    frame = Frame(GROUP_ADD, "someone", ("flood", channel))
    for _ in range(20):
        owner.transport.membership.on_request(frame, "ctl", "", home)
    assert owner.stats()["refused_membership"] == 15
    # The five answered ones did their work, and the bound frees up again.
    await await_until(lambda: owner.transport.groups.members("flood"), timeout=5)
    await await_until(lambda: owner.transport.membership._answering == 0, timeout=5)
    owner.transport.membership.on_request(frame, "ctl", "", home)
    assert owner.stats()["refused_membership"] == 15


async def test_forwards_to_a_normal_channel_wait_at_most_its_capacity(
    make_layer: LayerFactory,
) -> None:
    layer = make_layer(channel_capacity={"fwd-q": 3})
    await layer.group_add("fwd", "fwd-q")  # this process forwards to it
    transport = layer.transport
    await transport.home()
    before = layer.stats()["dropped_capacity"]
    entry_frames = 10
    for i in range(entry_frames):
        transport.normal.forward(
            "fwd", "fwd-q", Entry(0.0, b"x", ""), (transport.client_id, 0, i + 1)
        )
    assert layer.stats()["dropped_capacity"] - before == entry_frames - 3


async def test_credits_that_cannot_be_returned_are_counted(
    make_layer: LayerFactory,
) -> None:
    layer = make_layer()  # never connected: no link to publish on
    layer.transport.specific.send_credit("elsewhere", "specific.x!y", 1)
    assert layer.stats()["dropped_credits"] == 1
