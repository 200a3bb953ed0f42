"""Prometheus metrics of the layer and of the presence tracker.

Needs the ``prometheus`` extra (``pip install "channels-nats-layer[prometheus]"``);
nothing else in the package imports ``prometheus_client``. Register once per
process, for example in an ``AppConfig.ready()``::

    from channels_nats.prometheus import register

    register()  # the "default" layer; presence=True adds the tracker's gauges

and expose ``prometheus_client``'s registry as usual (``start_http_server``,
``make_wsgi_app``, or ``generate_latest`` in a view). The collectors read
``layer.stats()`` and the tracker's snapshot at scrape time; the metric names
are listed in the README ("Running in production").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from .stats import COUNTERS

__all__ = ["LayerCollector", "PresenceCollector", "register"]

NAMESPACE = "channels_nats"

#: layer.stats() keys that are gauges (the rest are counters, except client_id).
GAUGES = {
    "buffered": "Messages waiting in this process's channel buffers",
    "groups": "Groups with members in this process",
    "connections": "Open NATS connections of the layer",
}

_HELP = {
    "dropped_capacity": "Group messages not delivered to a member at capacity",
    "dropped_expired": "Messages older than expiry when they were to be received",
    "dropped_slow_consumer": "Messages nats-py dropped (subscription over limits)",
    "dropped_flushed": "Queued messages discarded by flush() or close()",
    "dropped_publish_failed": "Handed-over publishes that failed after the call",
    "lost_in_transit": "Messages from another process that never arrived",
    "malformed_frames": "Frames from the wire that could not be decoded",
    "handler_errors": "Messages dropped because a hub handler raised",
    "refused_channel_full": "send() calls that raised ChannelFull",
    "batched_frames": "Frames sent inside a batch of frames to one subject",
    "pull_errors": "Failed JetStream pulls and consumer re-binds",
    "permission_violations": "Publishes or subscriptions the server refused",
    "connections_opened": "NATS connections the layer opened",
    "reconnects": "Reconnections to NATS",
    "disconnects": "Disconnections from NATS",
}

LayerSource = Callable[[], Any]


def _channel_layer(alias: str) -> LayerSource:
    def source() -> Any:
        from channels.layers import get_channel_layer

        return get_channel_layer(alias)

    return source


class LayerCollector(Collector):
    """Every counter and gauge of ``layer.stats()``, labelled with the alias.

    Counters become ``channels_nats_<name>_total``, gauges
    ``channels_nats_<name>``; the client id is ``channels_nats_layer_info``.
    Counters that appear later (presence's) are exported once they exist.
    """

    def __init__(self, layers: dict[str, LayerSource]) -> None:
        self._layers = layers

    def describe(self) -> Iterable[Any]:
        return []  # names depend on what the layers have counted

    def collect(self) -> Iterator[Any]:
        stats = {alias: source().stats() for alias, source in self._layers.items()}
        names = sorted(
            {k for s in stats.values() for k in s if k not in GAUGES} - {"client_id"}
            | set(COUNTERS)
        )
        for name in names:
            family = CounterMetricFamily(
                f"{NAMESPACE}_{name}",
                _HELP.get(name, f"layer.stats()['{name}']"),
                labels=["alias"],
            )
            for alias, s in stats.items():
                family.add_metric([alias], float(s.get(name, 0)))
            yield family
        for name, doc in GAUGES.items():
            gauge = GaugeMetricFamily(f"{NAMESPACE}_{name}", doc, labels=["alias"])
            for alias, s in stats.items():
                gauge.add_metric([alias], float(s.get(name, 0)))
            yield gauge
        info = InfoMetricFamily(
            f"{NAMESPACE}_layer", "The layer's client id", labels=["alias"]
        )
        for alias, s in stats.items():
            info.add_metric([alias], {"client_id": str(s.get("client_id", ""))})
        yield info


def _run(coro: Any) -> Any:
    """Run ``coro`` to completion from sync code, also inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class PresenceCollector(Collector):
    """The presence tracker's gauges: members, users, rooms, nodes, sync age."""

    def __init__(self, trackers: dict[str, Callable[[], Any]]) -> None:
        self._trackers = trackers

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Any:
            return GaugeMetricFamily(
                f"{NAMESPACE}_presence_{name}", doc, labels=["alias", *labels]
            )

        members = gauge("members", "Connections in the cluster-wide roster")
        users = gauge("users", "Sum over rooms of distinct users per room")
        rooms = gauge("rooms", "Rooms with at least one member")
        nodes = gauge("nodes", "Presence nodes known, by state", ["state"])
        local = gauge("local_members", "Members owned by this process")
        sync_age = gauge(
            "last_sync_age_seconds", "Seconds since this tracker last synced"
        )
        for alias, source in self._trackers.items():
            snap = _run(source().snapshot(limit=0))
            members.add_metric([alias], float(snap["members_total"]))
            users.add_metric([alias], float(sum(r["users"] for r in snap["rooms"])))
            rooms.add_metric([alias], float(len(snap["rooms"])))
            states: dict[str, int] = {}
            for row in snap["nodes"]:
                states[row["state"]] = states.get(row["state"], 0) + 1
                if row["state"] == "self":
                    local.add_metric([alias], float(row["members"]))
            for state, n in sorted(states.items()):
                nodes.add_metric([alias, state], float(n))
            age = snap["last_sync_age"]
            sync_age.add_metric([alias], float("nan") if age is None else float(age))
        yield from (members, users, rooms, nodes, local, sync_age)


def _presence_tracker(alias: str) -> Callable[[], Any]:
    def source() -> Any:
        from .presence import get_presence

        return get_presence(alias)

    return source


def register(
    aliases: Sequence[str] = ("default",),
    *,
    presence: bool = False,
    registry: CollectorRegistry = REGISTRY,
) -> list[Collector]:
    """Register collectors for the channel layers ``aliases`` (and their trackers).

    Returns the collectors (to ``registry.unregister`` them in tests).
    """
    collectors: list[Collector] = [
        LayerCollector({alias: _channel_layer(alias) for alias in aliases})
    ]
    if presence:
        collectors.append(
            PresenceCollector({alias: _presence_tracker(alias) for alias in aliases})
        )
    for collector in collectors:
        registry.register(collector)
    return collectors
