"""``NatsChannelLayer``: the Channels layer API over NATS.

This module stays thin: it validates names and hands each call to the
process's :class:`~channels_nats.transport.Transport`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from channels.layers import BaseChannelLayer

from .config import LayerConfig, parse_config
from .hub import Hub
from .transport import Transport

__all__ = ["NatsChannelLayer"]

_NAME_CACHE = 4096


class NatsChannelLayer(BaseChannelLayer):  # type: ignore[misc]
    """Channel layer that moves messages between processes over NATS.

    Configure it in ``CHANNEL_LAYERS``; every ``CONFIG`` key is a keyword
    argument here (see :mod:`channels_nats.config` and the README).
    """

    extensions = ["groups", "flush"]

    def __init__(self, **config: Any) -> None:
        self.config: LayerConfig = parse_config(config)
        super().__init__(
            expiry=self.config.expiry,
            capacity=self.config.capacity,
            channel_capacity=dict(self.config.channel_capacity),
        )
        self.channel_capacity: Any = self.compile_capacities(
            dict(self.config.channel_capacity)
        )
        self.prefix = self.config.prefix
        self.group_expiry = self.config.group_expiry
        self._transport: Transport | None = None
        self._transport_lock = threading.Lock()
        # Names already validated (a regex per call is a large part of a
        # send). Bounded: cleared when full.
        self._valid_channels: set[str] = set()
        self._valid_groups: set[str] = set()

    def require_valid_channel_name(self, name: Any, receive: bool = False) -> bool:
        """Validate exactly as Channels does, remembering names that passed."""
        if name in self._valid_channels and not receive:
            return True
        super().require_valid_channel_name(name, receive)
        if not receive:
            if len(self._valid_channels) >= _NAME_CACHE:
                self._valid_channels.clear()
            self._valid_channels.add(name)
        return True

    def require_valid_group_name(self, name: Any) -> bool:
        if name in self._valid_groups:
            return True
        super().require_valid_group_name(name)
        if len(self._valid_groups) >= _NAME_CACHE:
            self._valid_groups.clear()
        self._valid_groups.add(name)
        return True

    @property
    def transport(self) -> Transport:
        """The process-side transport, created on first use (again after close)."""
        transport = self._transport
        if transport is None or transport.closed:
            with self._transport_lock:
                transport = self._transport
                if transport is None or transport.closed:
                    transport = self._transport = Transport(
                        self.config, self._capacity_of(), previous=transport
                    )
        return transport

    def _capacity_of(self) -> Callable[[str], int]:
        """``get_capacity`` for the hot paths, which ask it several times a message.

        Channels' version walks the ``channel_capacity`` patterns on each
        call; the answer for a channel never changes, so it is kept. A
        subclass's own ``get_capacity`` is asked every time.
        """
        get_capacity: Callable[[str], int] = self.get_capacity
        if type(self).get_capacity is not BaseChannelLayer.get_capacity:
            return get_capacity
        if not self.channel_capacity:
            capacity: int = self.capacity
            return lambda channel: capacity
        known: dict[str, int] = {}

        def capacity_of(channel: str) -> int:
            capacity = known.get(channel)
            if capacity is None:
                if len(known) >= 10_000:  # channel names come and go
                    known.clear()
                capacity = known[channel] = get_capacity(channel)
            return capacity

        return capacity_of

    @property
    def hub(self) -> Hub:
        """The process side's extension surface (see :mod:`channels_nats.hub`)."""
        return self.transport.hub

    @property
    def client_id(self) -> str:
        """The id of this process's layer instance, part of its channel names."""
        return self.transport.client_id

    # -- channels --------------------------------------------------------------

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Send ``message`` to ``channel``; raise ``ChannelFull`` if it is full."""
        self.require_valid_channel_name(channel)
        if isinstance(message, dict) and "__asgi_channel__" in message:
            raise ValueError("The message key '__asgi_channel__' is reserved.")
        await self.transport.send(channel, message)

    async def receive(self, channel: str) -> dict[str, Any]:
        """Return the next message on ``channel``, waiting for one."""
        self.require_valid_channel_name(channel)
        return await self.transport.receive(channel)

    async def new_channel(self, prefix: str = "specific") -> str:
        """Return a new channel name that this process can receive on at once."""
        name = await self.transport.new_channel(prefix)
        self.require_valid_channel_name(name)
        return name

    # -- groups ----------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group``; return once group_send reaches it."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self.transport.group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self.transport.group_discard(group, channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Send ``message`` to every member of ``group`` with one publish."""
        self.require_valid_group_name(group)
        await self.transport.group_send(group, message)

    # -- housekeeping ----------------------------------------------------------

    async def flush(self) -> None:
        """Discard queued messages and group memberships of this prefix everywhere."""
        await self.transport.flush()

    async def close(self) -> None:
        """Fail waiting receives, drain publishes and close the connections.

        The layer can be used again afterwards, with the same client id:
        channels made before the close, the messages buffered for them and
        their group memberships are still there (as with channels_redis,
        whose ``close_pools()`` leaves them in Redis). ``flush()`` is what
        empties everything.
        """
        transport = self._transport
        if transport is not None:
            await transport.close()

    def stats(self) -> dict[str, Any]:
        """Return counters of drops and refusals plus a few live gauges."""
        transport = self._transport
        if transport is None:
            from .stats import Stats

            return {**Stats().snapshot(), "buffered": 0, "groups": 0, "connections": 0}
        return transport.snapshot()
