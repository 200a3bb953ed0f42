"""Nothing lost through a broker outage: restart, stall, node death.

Two OS processes (tests/outage.py): a sender making about 100 calls/s that
alternate ``group_send`` and ``send`` to a specific channel of a receiver,
and the receiver, which counts every message by number. The fault hits the
server while the traffic runs. Before the outage buffer, a 3 s restart lost
103 of 500 group messages (dropped at capacity when the backlog arrived in
one burst) and refused 53 sends with ChannelFull; a 5 s stall lost 201 and
refused 151.
"""

from __future__ import annotations

from typing import Any

import pytest

from channels_nats.testing import NatsCluster, NatsServer
from tests.outage import kill_fault, restart_fault, run_traffic, stall_fault, table

pytestmark = pytest.mark.timeout(180)


def assert_nothing_lost(result: dict[str, Any], *, counted: bool = False) -> None:
    """Every accepted message arrived once, in order.

    With ``counted``, a message may be missing if the receiver counted it as
    ``lost_in_transit`` (see the restart test).
    """
    summary = "\n".join(
        [
            table("result", result),
            f"receiver: {result['receiver_stats']}",
            f"sender: {result['sender_stats']}",
        ]
    )
    lost = 0
    for kind in ("g", "d"):
        r = result[kind]
        assert r["sent"] > 0, summary
        assert (r["duplicated"], r["unexpected"]) == (0, 0), summary
        assert r["in_order"], summary
        lost += r["lost"]
    if counted:
        assert lost == result["receiver_stats"]["lost_in_transit"], summary
    else:
        assert lost == 0, summary
    assert result["ends"] == ["d", "g"], summary


async def test_a_broker_restart_loses_nothing_and_refuses_nothing(
    nats_server_fresh: NatsServer, prefix: str
) -> None:
    url = nats_server_fresh.url
    result = await run_traffic(
        [url],
        [url],
        restart_fault(nats_server_fresh, down_for=2.0),
        prefix=prefix,
        duration=5.0,
        fault_at=1.5,
    )
    # The sender's backlog goes out the moment it reconnects, and core NATS
    # drops what reaches the server before the receiver has re-subscribed:
    # the receiver's gap (or its hello) gets those resent.
    assert_nothing_lost(result)
    assert result["errors"] == {}, table("result", result)
    assert result["sender_stats"]["reconnects"] >= 1, result
    assert result["receiver_stats"]["reconnects"] >= 1, result
    # The backlog came in beyond capacity, not at its expense.
    assert result["receiver_stats"]["dropped_capacity"] == 0, result


async def test_a_frozen_broker_loses_nothing_and_refuses_nothing(
    nats_server_fresh: NatsServer, prefix: str
) -> None:
    url = nats_server_fresh.url
    result = await run_traffic(
        [url],
        [url],
        stall_fault(nats_server_fresh, stalled_for=3.0),
        prefix=prefix,
        duration=5.0,
        fault_at=1.5,
    )
    assert_nothing_lost(result)
    assert result["errors"] == {}, table("result", result)
    # The sender noticed the stall itself (nats-py would take 15 s or more).
    assert result["sender_stats"]["stalls"] >= 1, result
    assert result["receiver_stats"]["dropped_capacity"] == 0, result


async def test_an_outage_longer_than_outage_buffer_raises_link_down(
    nats_server_fresh: NatsServer, prefix: str
) -> None:
    url = nats_server_fresh.url
    result = await run_traffic(
        [url],
        [url],
        restart_fault(nats_server_fresh, down_for=2.5),
        prefix=prefix,
        duration=5.0,
        fault_at=1.5,
        config={"outage_buffer": 0.5},
    )
    # What was accepted arrives; what came after the window was refused
    # with LinkDown (never ChannelFull), and the caller was told.
    assert_nothing_lost(result)
    assert set(result["errors"]) == {"LinkDown"}, result
    refused = result["errors"]["LinkDown"]
    assert 100 <= refused <= 300, result  # about 2 s of 100 calls/s
    # (the counter also has the end markers' refused attempts)
    assert result["sender_stats"]["refused_link_down"] >= refused, result


async def test_the_receivers_node_dying_loses_nothing(prefix: str) -> None:
    with NatsCluster(3, jetstream=False) as cluster:
        cluster.wait_until_formed(timeout=30)
        receiver_node, sender_node = cluster.nodes[0], cluster.nodes[1]
        result = await run_traffic(
            [sender_node.url],
            [receiver_node.url],
            kill_fault(receiver_node),
            prefix=prefix,
            duration=4.0,
            fault_at=1.5,
        )
    # What the sender published while the receiver moved to another node
    # reached no subscriber; the gap got it resent.
    assert_nothing_lost(result)
    assert result["errors"] == {}, table("result", result)
    assert result["receiver_stats"]["reconnects"] >= 1, result


async def test_the_senders_node_dying_loses_nothing(prefix: str) -> None:
    with NatsCluster(3, jetstream=False) as cluster:
        cluster.wait_until_formed(timeout=30)
        receiver_node, sender_node = cluster.nodes[0], cluster.nodes[1]
        result = await run_traffic(
            [sender_node.url],
            [receiver_node.url],
            kill_fault(sender_node),
            prefix=prefix,
            duration=4.0,
            fault_at=1.5,
        )
    assert_nothing_lost(result)
    assert result["errors"] == {}, table("result", result)
    assert result["sender_stats"]["reconnects"] >= 1, result
