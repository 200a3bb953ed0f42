"""A cluster of routed ``nats-server`` processes on loopback."""

from __future__ import annotations

import shutil
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .binary import HOST, free_port
from .server import NatsServer
from .waiting import wait_for

__all__ = ["NatsCluster"]


class NatsCluster:
    """``size`` routed nats-server nodes (JetStream on by default).

    Cluster listener ports are chosen up front (bind to port 0, close, reuse:
    a small race accepted) because every node's ``--routes`` must name them.
    Client and monitoring ports are random and read back from each log.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        name: str | None = None,
        jetstream: bool = True,
        extra_args: Sequence[str] = (),
        start_timeout: float = 10.0,
    ) -> None:
        if size < 2:
            raise ValueError("a cluster needs at least 2 nodes")
        self.name = name or f"c{uuid.uuid4().hex[:8]}"
        self.jetstream = jetstream
        self.workdir = Path(tempfile.mkdtemp(prefix=f"nats-{self.name}-"))
        cluster_ports = [free_port() for _ in range(size)]
        self.cluster_urls = [f"nats://{HOST}:{p}" for p in cluster_ports]
        self.nodes: list[NatsServer] = []
        for i, port in enumerate(cluster_ports):
            routes = [u for j, u in enumerate(self.cluster_urls) if j != i]
            node_name = f"n{i + 1}"
            self.nodes.append(
                NatsServer(
                    jetstream=jetstream,
                    monitor=True,
                    name=node_name,
                    workdir=self.workdir / node_name,
                    start_timeout=start_timeout,
                    extra_args=[
                        "--cluster",
                        f"nats://{HOST}:{port}",
                        "--routes",
                        ",".join(routes),
                        "--cluster_name",
                        self.name,
                        *extra_args,
                    ],
                )
            )

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> NatsCluster:
        try:
            for node in self.nodes:
                node.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _peers(self, node: NatsServer) -> set[str]:
        """Names of the servers ``node`` currently has a route to."""
        try:
            routez = node.monitor_get("routez")
        except (OSError, urllib.error.URLError, ValueError):
            return set()
        # With route pooling (nats-server >= 2.10) each peer may have several
        # route connections, so count distinct remote servers, not routes.
        return {
            str(r.get("remote_name") or r.get("remote_id"))
            for r in routez.get("routes") or ()
        }

    def _meta(self, node: NatsServer) -> dict[str, Any]:
        """``node``'s view of the JetStream meta group ({} if unreadable)."""
        try:
            jsz = node.monitor_get("jsz")
        except (OSError, urllib.error.URLError, ValueError):
            return {}
        meta: dict[str, Any] = jsz.get("meta_cluster") or {}
        return meta

    def _meta_leader(self, node: NatsServer) -> str | None:
        leader = self._meta(node).get("leader")
        return str(leader) if leader else None

    def is_formed(self) -> bool:
        """All nodes run and route to each other; with JetStream, they also
        agree on a meta leader that counts every node and sees each of them
        current (so replicated streams can be placed right away)."""
        if not all(n.running for n in self.nodes):
            return False
        want = len(self.nodes) - 1
        if any(len(self._peers(n)) < want for n in self.nodes):
            return False
        if self.jetstream:
            leaders = {self._meta_leader(n) for n in self.nodes}
            if len(leaders) != 1 or None in leaders:
                return False
            # A meta leader elected while a peer still catches up refuses to
            # place a stream on it ("no suitable peers for placement").
            leader = next((n for n in self.nodes if n.name in leaders), None)
            if leader is None:
                return False
            meta = self._meta(leader)
            replicas = meta.get("replicas") or []
            return meta.get("cluster_size") == len(self.nodes) and (
                len(replicas) == want and all(r.get("current") for r in replicas)
            )
        return True

    def wait_until_formed(self, timeout: float = 30.0) -> None:
        """Wait until every node routes to all others (and, with JetStream,
        all nodes agree on a meta leader that sees every node current)."""
        try:
            wait_for(self.is_formed, timeout, interval=0.05)
        except AssertionError:
            state = {
                n.name: (n.running, sorted(self._peers(n)), self._meta_leader(n))
                for n in self.nodes
            }
            raise AssertionError(
                f"cluster {self.name} not formed within {timeout}s: "
                f"(running, peers, meta leader) per node = {state}"
            ) from None
