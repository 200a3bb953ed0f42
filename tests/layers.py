"""Fixtures that build NatsChannelLayer instances against the test servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from channels_nats import NatsChannelLayer

LayerFactory = Callable[..., NatsChannelLayer]


@pytest.fixture
async def make_layer(nats_server: Any, prefix: str) -> AsyncIterator[LayerFactory]:
    """Build layers on the session server with this test's prefix; close them after."""
    made: list[NatsChannelLayer] = []

    def factory(**config: Any) -> NatsChannelLayer:
        config.setdefault("servers", [nats_server.url])
        config.setdefault("prefix", prefix)
        layer = NatsChannelLayer(**config)
        made.append(layer)
        return layer

    yield factory
    for layer in made:
        await layer.close()


@pytest.fixture
async def layer(make_layer: LayerFactory) -> NatsChannelLayer:
    return make_layer()


@pytest.fixture
async def other(make_layer: LayerFactory) -> NatsChannelLayer:
    """A second layer on the same prefix: another process as far as NATS knows."""
    return make_layer()
