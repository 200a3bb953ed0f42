"""One ``nats-server`` process on loopback, with its own store and log."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .binary import (
    HOST,
    find_nats_server,
)

__all__ = ["NatsServer"]

_CLIENT_PORT_RE = re.compile(
    r"Listening for client connections on (?:\[[^\]]*\]|[^\s:]+):(\d+)"
)
_MONITOR_PORT_RE = re.compile(r"Starting http monitor on (?:\[[^\]]*\]|[^\s:]+):(\d+)")
_READY_RE = re.compile(r"Server is ready")

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
        """Stop the server and delete its work directory if we created it.

        With ``NATS_KEEP_LOGS=1`` in the environment the directory (and the
        server's logs in it) stays, for a post-mortem.
        """
        self.stop()
        if self._own_workdir and not os.environ.get("NATS_KEEP_LOGS"):
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
