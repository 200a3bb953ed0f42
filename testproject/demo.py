"""Run the channels_nats demo: ``python -m testproject`` from the repository root.

1. Unless it already runs there (or ``--no-venv`` is given), creates the venv
   ``.venv-demo`` in the repository, installs the package into it with
   ``pip install -e '.[server,demo]'`` (again only when ``setup.cfg`` or
   ``pyproject.toml`` changed) and re-runs itself with that venv's Python.
2. Migrates the SQLite database (``testproject/db.sqlite3``, or ``DEMO_DB``)
   and creates the demo users and rooms; both are no-ops the second time.
3. Starts an embedded ``nats-server`` with JetStream on a free loopback port
   and a temporary store (:class:`channels_nats.testing.NatsServer`), unless
   ``NATS_URL`` is set (comma-separated URLs allowed).
4. Starts two daphne processes serving ``testproject.asgi:application``
   against that NATS, on ports 8001 and 8002 by default (``--ports`` or
   ``DEMO_PORTS``; a busy port is replaced by a free one), waits until both
   answer HTTP and prints the URLs and credentials.
5. Runs until Ctrl-C or SIGTERM (or SIGHUP), then stops both daphnes and the
   nats-server and waits for them, leaving no process behind. If a daphne
   dies on its own, stops the rest and exits 1.

``--check`` (or ``DEMO_EXIT_AFTER_READY=1``) brings everything up, checks
that both daphnes serve the lobby, the sign-in page, the admin and static
files, then shuts down and exits 0. ``--ready-file PATH`` writes the URLs and
process ids as JSON once everything is up (for tests).

This module imports only the standard library at the top: the first step
runs on whatever Python 3.10+ the user has, before the venv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_DIR = ROOT / ".venv-demo"
STAMP_NAME = ".channels-nats-demo-installed"
INSTALL_TARGET = ".[server,demo]"
HOST = "127.0.0.1"
DEFAULT_PORTS = "8001,8002"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
DEMO_USERS = "alice, bob, carol (password: demo)"
ADMIN_CREDENTIALS = "admin / admin"


class DemoError(Exception):
    """Something the user can fix; the message says what."""


class Stop(BaseException):
    """Raised by the signal handlers to unwind to the shutdown code."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


# -- step 1: the venv ------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def in_venv(venv: Path) -> bool:
    return Path(sys.prefix).resolve() == venv.resolve()


def install_stamp() -> str:
    """What the venv was installed from: changes when the dependencies may."""
    digest = hashlib.sha256()
    for name in ("setup.cfg", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv(venv: Path) -> Path:
    """Create ``venv`` and install the demo into it if needed; its python."""
    python = venv_python(venv)
    if not python.exists():
        say(f"creating the venv {venv} (first run only)")
        result = subprocess.run([sys.executable, "-m", "venv", str(venv)], check=False)
        if result.returncode != 0 or not python.exists():
            raise DemoError(
                f"could not create a venv with {sys.executable} -m venv; on "
                "Debian/Ubuntu install the package python3-venv"
            )
    stamp_file = venv / STAMP_NAME
    stamp = install_stamp()
    if not stamp_file.exists() or stamp_file.read_text() != stamp:
        say(f"installing the package into {venv}: pip install -e '{INSTALL_TARGET}'")
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-e", INSTALL_TARGET],
            cwd=ROOT,
            check=False,
        )
        if result.returncode != 0:
            raise DemoError(
                f"pip install -e '{INSTALL_TARGET}' failed (output above); "
                f"fix it and run again, or delete {venv} to start over"
            )
        stamp_file.write_text(stamp)
    return python


def rerun_in(python: Path, argv: list[str]) -> int:
    """Run this launcher again with ``python``: replaces this process on POSIX,
    so signals sent to the demo reach the new one directly."""
    cmd = [str(python), "-m", "testproject", *argv]
    os.chdir(ROOT)
    if os.name == "nt":
        return subprocess.call(cmd)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(str(python), cmd)
    raise AssertionError("unreachable")  # pragma: no cover


# -- steps 2 to 5: inside the venv --------------------------------------------------


def setup_database() -> None:
    """Migrate and create the demo users and rooms (both idempotent)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    import django
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    say(f"database {settings.DATABASES['default']['NAME']}: migrating")
    call_command("migrate", interactive=False, verbosity=0)
    call_command("setup_demo", stdout=_Prefixed())


class _Prefixed:
    """A file-like ``stdout`` for ``call_command`` that prefixes ``demo:``."""

    def write(self, text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                say(line)

    def flush(self) -> None:
        sys.stdout.flush()


def check_nats_reachable(urls: list[str]) -> None:
    for url in urls:
        parts = urllib.parse.urlsplit(url if "://" in url else f"nats://{url}")
        host, port = parts.hostname or HOST, parts.port or 4222
        try:
            with socket.create_connection((host, port), timeout=3):
                return
        except OSError:
            continue
    raise DemoError(
        f"no NATS server answers at NATS_URL={','.join(urls)}; start one with "
        "`nats-server -js` or unset NATS_URL to use an embedded one"
    )


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As daphne (Twisted) binds: a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def choose_ports(spec: str) -> list[int]:
    """Two distinct ports: the wanted ones where free, else free ones."""
    from channels_nats.testing import free_port

    try:
        wanted = [int(p) for p in spec.split(",")]
    except ValueError:
        wanted = []
    if len(wanted) != 2 or any(not 0 <= p < 65536 for p in wanted):
        raise DemoError(f"--ports wants two port numbers like 8001,8002, not {spec!r}")
    ports: list[int] = []
    for port in wanted:
        if port and port not in ports and port_is_free(port):
            ports.append(port)
            continue
        other = free_port()
        while other in ports:
            other = free_port()
        if port:
            say(f"port {port} is busy, using {other} instead")
        ports.append(other)
    return ports


class Daphne:
    """One daphne process serving the demo on ``127.0.0.1:port``."""

    def __init__(self, number: int, port: int, nats_url: str) -> None:
        self.number = number
        self.port = port
        self.name = f"daphne #{number} :{port}"
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="testproject.settings",
            NATS_URL=nats_url,
            DEMO_SERVER_NAME=self.name,
            PYTHONPATH=os.pathsep.join(
                filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
            ),
        )
        # Own session: a Ctrl-C in the terminal reaches only the launcher,
        # which then stops the daphnes first and the nats-server last.
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                HOST,
                "-p",
                str(port),
                "testproject.asgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """Status and body of ``GET path``; redirects are not followed."""
        request = urllib.request.Request(self.url + path)
        try:
            with _NO_REDIRECTS.open(request, timeout=timeout) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def wait_ready(self, deadline: float) -> None:
        while True:
            code = self.proc.poll()
            if code is not None:
                raise DemoError(f"{self.name} exited with code {code} (output above)")
            try:
                status, body = self.get("/", timeout=2)
            except OSError:
                pass
            else:
                if status == 200 and "Lobby" in body:
                    return
                raise DemoError(f"{self.name}: GET / answered {status}:\n{body[:2000]}")
            if time.monotonic() >= deadline:
                raise DemoError(
                    f"{self.name} did not answer HTTP within {START_TIMEOUT:.0f} s"
                )
            time.sleep(0.05)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()

    def wait(self) -> None:
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            say(f"{self.name} did not stop within {STOP_TIMEOUT:.0f} s, killing it")
            self.proc.kill()
            self.proc.wait()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_NoRedirect)


def check(daphnes: list[Daphne]) -> None:
    """What ``--check`` verifies on each daphne: pages and static files."""
    expected = [
        ("/", 200, "Lobby"),
        ("/accounts/login/", 200, "Sign in"),
        ("/rooms/general/", 302, ""),  # signed out: to the sign-in page
        ("/admin/login/", 200, "Django administration"),
        ("/static/demo/demo.css", 200, ":root"),
        ("/static/admin/css/base.css", 200, "body"),
    ]
    for daphne in daphnes:
        for path, status, text in expected:
            got, body = daphne.get(path)
            if got != status or text not in body:
                raise DemoError(
                    f"check failed: {daphne.name} GET {path} answered {got}, "
                    f"expected {status} with {text!r}"
                )
        say(f"check: {daphne.name} serves the lobby, sign-in, admin, static files")


def write_ready_file(
    path: str, nats_url: str, nats_pid: int | None, daphnes: list[Daphne]
) -> None:
    data = {
        "launcher_pid": os.getpid(),
        "nats_url": nats_url,
        "nats_pid": nats_pid,
        "daphnes": [
            {"name": d.name, "port": d.port, "pid": d.proc.pid, "url": d.url}
            for d in daphnes
        ],
        "admin_url": f"{daphnes[0].url}/admin/",
    }
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def notify_command(nats_url: str) -> str:
    """The shell command that runs ``manage.py notify`` against this demo."""
    env = [f"NATS_URL={shlex.quote(nats_url)}"]
    for name in ("NATS_PREFIX", "DEMO_DB"):
        if os.environ.get(name):
            env.append(f"{name}={shlex.quote(os.environ[name])}")
    python = os.path.relpath(sys.executable, Path.cwd())
    if python.startswith(".."):
        python = sys.executable
    return (
        f"{' '.join(env)} {shlex.quote(python)} testproject/manage.py "
        "notify general 'Hello from a plain process'"
    )


def banner(nats_url: str, embedded: bool, daphnes: list[Daphne]) -> str:
    where = "embedded nats-server, JetStream" if embedded else "from NATS_URL"
    lines = [
        "",
        f"channels_nats demo is running (NATS {nats_url}, {where})",
        "",
    ]
    for daphne in daphnes:
        lines.append(f"  chat on daphne #{daphne.number}:  {daphne.url}/rooms/general/")
    lines += [
        f"  admin:              {daphnes[0].url}/admin/  ({ADMIN_CREDENTIALS})",
        f"  demo users:         {DEMO_USERS}",
        "",
        "A notification from a plain process (sync code, like a cron job):",
        f"  {notify_command(nats_url)}",
        "",
        "Open the two chat URLs side by side (a private window for a second",
        "user): each page says which daphne served it, each message which",
        "daphne relayed it. Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signum)


def _still_stopping(signum: int, frame: FrameType | None) -> None:
    say("still stopping, please wait")


def _handle_signals(handler: Any) -> None:
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handler)


def run(args: argparse.Namespace) -> int:
    daphnes: list[Daphne] = []
    nats_server: Any = None
    _handle_signals(_raise_stop)
    try:
        setup_database()
        from_env = [u.strip() for u in os.environ.get("NATS_URL", "").split(",")]
        from_env = [u for u in from_env if u]
        if from_env:
            check_nats_reachable(from_env)
            nats_url = ",".join(from_env)
            say(f"using NATS_URL={nats_url}")
        else:
            from channels_nats.testing import NatsServer, NatsServerUnavailable

            try:
                nats_server = NatsServer(name="demo", jetstream=True).start()
            except NatsServerUnavailable as exc:
                raise DemoError(str(exc)) from None
            nats_url = nats_server.url
            say(f"started nats-server (pid {nats_server.pid}) at {nats_url}")
        for number, port in enumerate(choose_ports(args.ports), 1):
            daphnes.append(Daphne(number, port, nats_url))
        deadline = time.monotonic() + START_TIMEOUT
        for daphne in daphnes:
            daphne.wait_ready(deadline)
        print(banner(nats_url, nats_server is not None, daphnes), flush=True)
        if args.ready_file:
            write_ready_file(
                args.ready_file,
                nats_url,
                nats_server.pid if nats_server is not None else None,
                daphnes,
            )
        if args.check:
            check(daphnes)
            say("check passed, shutting down")
            return 0
        while True:
            for daphne in daphnes:
                code = daphne.proc.poll()
                if code is not None:
                    raise DemoError(f"{daphne.name} exited with code {code}")
            time.sleep(0.5)
    except Stop as stop:
        say(f"{signal.Signals(stop.signum).name}: stopping")
        return 0
    except DemoError as exc:
        print(f"demo: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        _handle_signals(_still_stopping)
        for daphne in daphnes:
            daphne.terminate()
        for daphne in daphnes:
            daphne.wait()
        if nats_server is not None:
            nats_server.close()
        if daphnes or nats_server is not None:
            say("stopped daphne and nats-server processes")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m testproject",
        description="Run the channels_nats demo chat on two daphne processes.",
    )
    parser.add_argument(
        "--ports",
        default=os.environ.get("DEMO_PORTS", DEFAULT_PORTS),
        help="ports of the two daphnes, busy ones replaced, 0 = any free "
        f"(default: DEMO_PORTS or {DEFAULT_PORTS})",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        default=os.environ.get("DEMO_EXIT_AFTER_READY") == "1",
        help="start everything, check both daphnes answer, stop, exit 0 "
        "(also DEMO_EXIT_AFTER_READY=1)",
    )
    parser.add_argument(
        "--no-venv",
        action="store_true",
        help="run with this Python as it is (it must have the [server,demo] "
        "extras) instead of .venv-demo",
    )
    parser.add_argument(
        "--venv",
        default=str(VENV_DIR),
        help="the venv to create and use (default: %(default)s)",
    )
    parser.add_argument("--ready-file", help="write URLs and pids as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    # The launcher may be started by any python3; say what it needs.
    if sys.version_info < (3, 10):  # noqa: UP036
        print("demo: error: needs Python 3.10 or newer", file=sys.stderr)
        return 2
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    venv = Path(args.venv)
    if not args.no_venv and not in_venv(venv):
        try:
            python = ensure_venv(venv)
        except DemoError as exc:
            print(f"demo: error: {exc}", file=sys.stderr)
            return 1
        return rerun_in(python, raw)
    return run(args)
