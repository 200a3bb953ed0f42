"""Regression: a hub subscription made after the layer is connected is dispatched.

Presence starts the hub (``hub.start()`` connects and subscribes the layer's
own subjects) before its first ``hub.subscribe``; the link must then still
use the hub's handler table, which was empty when the link was created.
"""

from __future__ import annotations

from channels_nats import NatsChannelLayer
from tests.servers import await_until


async def test_subscribe_after_start_reaches_the_handler(
    layer: NatsChannelLayer, other: NatsChannelLayer
) -> None:
    await layer.hub.start()  # the home link exists before any hub handler
    got: list[bytes] = []
    name = f"{layer.prefix}.ext.late"
    await layer.hub.subscribe(name, lambda s, d, r: got.append(d))
    await other.hub.start()
    other.hub.publish(name, b"one")
    await await_until(lambda: got == [b"one"], 5)
    assert layer.stats()["malformed_frames"] == 0
