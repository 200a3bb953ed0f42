"""Parent side of :mod:`tests.peer`: start peer processes and call them."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PEER = Path(__file__).with_name("peer.py")
ROOT = PEER.parent.parent


class PeerError(Exception):
    """The peer answered with an error."""


class Peer:
    """A channel-layer process; ``await peer.call(op, **args)`` runs one command."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, layers: dict[str, Any], script: Path = PEER) -> Peer:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            json.dumps(layers),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            limit=1 << 24,  # answers can be long (rosters, event lists)
        )
        peer = cls(proc)
        ready = peer._waiting[0] = asyncio.get_running_loop().create_future()
        await asyncio.wait_for(ready, 30)
        return peer

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            answer = json.loads(line)
            fut = self._waiting.pop(answer["id"], None)
            if fut is None or fut.done():
                continue
            if "error" in answer:
                fut.set_exception(PeerError(answer["error"]))
            else:
                fut.set_result(answer["ok"])
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(PeerError("peer process exited"))

    async def call(self, op: str, *, call_timeout: float = 30, **args: Any) -> Any:
        assert self.proc.stdin is not None
        ident = next(self._ids)
        fut = self._waiting[ident] = asyncio.get_running_loop().create_future()
        self.proc.stdin.write(
            (json.dumps({"id": ident, "op": op, **args}) + "\n").encode()
        )
        await self.proc.stdin.drain()
        return await asyncio.wait_for(fut, call_timeout)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(b'{"id": -1, "op": "exit"}\n')
                await self.proc.stdin.drain()
                self.proc.stdin.close()
                await asyncio.wait_for(self.proc.wait(), 10)
            except (asyncio.TimeoutError, ConnectionError):
                self.proc.kill()
                await self.proc.wait()
        await self._reader


class SyncPeer:
    """The same peer protocol for plain (sync) code: tests of sync views,
    management commands, benchmarks. ``peer.call(op, **args)`` blocks."""

    def __init__(self, layers: dict[str, Any], script: Path = PEER) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), json.dumps(layers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self._ids = itertools.count(1)
        ready = self._answer(0)
        assert ready == "ready", ready

    def _answer(self, ident: int) -> Any:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise PeerError("peer process exited")
            answer = json.loads(line)
            if answer["id"] != ident:
                continue
            if "error" in answer:
                raise PeerError(answer["error"])
            return answer["ok"]

    def call(self, op: str, **args: Any) -> Any:
        """Run one command and wait for its answer (commands run one at a time)."""
        assert self.proc.stdin is not None
        ident = next(self._ids)
        self.proc.stdin.write(json.dumps({"id": ident, "op": op, **args}) + "\n")
        self.proc.stdin.flush()
        return self._answer(ident)

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write('{"id": -1, "op": "exit"}\n')
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
