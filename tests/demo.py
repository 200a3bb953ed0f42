"""Run the demo launcher (``python -m testproject``) for the tests.

:func:`start_demo` starts the real launcher, which starts its own nats-server
and two daphne processes; the ``demo`` fixture shares one such launcher with
the whole session. Every process a launcher starts inherits a unique token in
its environment, so a test can tell that none is left once it stopped.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from channels_nats.testing import wait_for

ROOT = Path(__file__).resolve().parent.parent
TOKEN_VAR = "CHANNELS_NATS_DEMO_TEST_TOKEN"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def processes_with_token(token: str) -> list[int]:
    """Pids of live processes whose environment holds ``TOKEN_VAR=token``."""
    needle = f"{TOKEN_VAR}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if state != "Z" and needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


class Demo:
    """A running launcher and what it reported in its ready file."""

    def __init__(
        self, proc: subprocess.Popen[bytes], workdir: Path, token: str, db: Path
    ) -> None:
        self.proc = proc
        self.workdir = workdir
        self.db = db
        self.token = token
        self.log_path = workdir / "launcher.log"
        self.ready_path = workdir / "ready.json"
        self.info: dict[str, Any] = {}

    @property
    def urls(self) -> list[str]:
        return [d["url"] for d in self.info["daphnes"]]

    @property
    def ports(self) -> list[int]:
        return [d["port"] for d in self.info["daphnes"]]

    @property
    def env(self) -> dict[str, str]:
        """Environment for a process that uses the demo's database and NATS."""
        return {
            **os.environ,
            "DEMO_DB": str(self.db),
            "NATS_URL": self.info["nats_url"],
            "DJANGO_SETTINGS_MODULE": "testproject.settings",
            "PYTHONPATH": str(ROOT),
            TOKEN_VAR: self.token,
        }

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> Demo:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"launcher exited with {self.proc.returncode}:\n{self.log()}"
                )
            return self.ready_path.exists()

        wait_for(ready, START_TIMEOUT, interval=0.05, message="demo ready file")
        self.info = json.loads(self.ready_path.read_text())
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the launcher, wait for it; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"launcher did not stop within {STOP_TIMEOUT}s:\n{self.log()}"
            ) from None

    def kill_leftovers(self) -> list[int]:
        left = processes_with_token(self.token)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        return left


def launch(
    workdir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    db: Path | None = None,
) -> Demo:
    """Start ``python -m testproject --no-venv`` with its log, ready file and
    (unless ``db`` names another) database in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    base = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    base.pop("DJANGO_SETTINGS_MODULE", None)
    base.update(
        {TOKEN_VAR: token, "DEMO_DB": str(db or workdir / "db.sqlite3"), **(env or {})}
    )
    ready = workdir / "ready.json"
    ready.unlink(missing_ok=True)
    with open(workdir / "launcher.log", "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "testproject",
                "--no-venv",
                "--ports",
                "0,0",
                "--ready-file",
                str(ready),
                *args,
            ],
            cwd=ROOT,
            env=base,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Demo(proc, workdir, token, Path(base["DEMO_DB"]))


def start_demo(workdir: Path, db: Path | None = None) -> Demo:
    return launch(workdir, db=db).wait_ready()


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One database directory for every launcher of the session."""
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="session")
def demo(demo_dir: Path) -> Iterator[Demo]:
    """The demo launcher with its nats-server and two daphnes, for the session."""
    running = start_demo(demo_dir)
    try:
        yield running
    finally:
        code = running.stop()
        left = running.kill_leftovers()
        assert code == 0, running.log()
        assert not left, f"processes left behind: {left}\n{running.log()}"


# -- an HTTP client with a session, and WebSockets with its cookies ------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Client:
    """A signed-in (or not) HTTP session against the demo; cookies are per host,
    so one session works on both daphnes (they share the database)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect
        )

    def request(
        self,
        path: str,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        base_url: str | None = None,
    ) -> tuple[int, dict[str, str], str]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(
            (base_url or self.base_url) + path, data=body, headers=headers or {}
        )
        try:
            with self.opener.open(req, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()

    def cookie(self, name: str) -> str:
        for cookie in self.jar:
            if cookie.name == name:
                return str(cookie.value)
        raise KeyError(name)

    def login(self, username: str, password: str) -> Client:
        status, _, html = self.request("/accounts/login/")
        assert status == 200, html
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
        assert match, html
        status, headers, html = self.request(
            "/accounts/login/",
            {
                "csrfmiddlewaretoken": match.group(1),
                "username": username,
                "password": password,
                "next": "/",
            },
        )
        assert status == 302 and headers["Location"] == "/", (status, html)
        return self

    def cookie_header(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.jar)

    def websocket(self, base_url: str, path: str) -> Any:
        """``async with client.websocket(url, "/ws/rooms/general/") as ws``."""
        origin = base_url
        ws_url = base_url.replace("http://", "ws://", 1) + path
        headers = {"Cookie": self.cookie_header()} if len(self.jar) else {}
        return connect(ws_url, additional_headers=headers, origin=origin)


async def next_of_type(
    ws: ClientConnection, kind: str, timeout: float = 10.0
) -> dict[str, Any]:
    """The next message of type ``kind`` (others are skipped)."""

    async def receive() -> dict[str, Any]:
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message.get("type") == kind:
                return message

    return await asyncio.wait_for(receive(), timeout)
