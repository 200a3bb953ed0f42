"""Housekeeping of a layer's process side: periodic sweeps and ``flush()``.

The sweeper runs on the home link (a hub service, so it moves with the home):
it drops expired buffered messages, forgets idle sequence state after two
generations and unsubscribes groups whose members all expired. ``flush()``
broadcasts a ``FLUSH`` frame through the hub, purges the normal channels'
streams and empties this process's buffers, credit state and groups; every
other process does the same on the frame (:meth:`Housekeeping.on_flush`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from .config import LayerConfig
from .flow import CreditBatcher, CreditWindows
from .groups import GroupRegistry
from .hub import Hub
from .inbox import Inbox
from .link import Link
from .resend import Reassembly
from .serializers import FLUSH, Frame, pack_control
from .subjects import Subjects

if TYPE_CHECKING:
    from .loops import Links
    from .normal import NormalChannels

__all__ = ["Housekeeping"]


class Housekeeping:
    """Sweeps, and flushing of everything this layer holds."""

    def __init__(
        self,
        config: LayerConfig,
        client_id: str,
        subjects: Subjects,
        inbox: Inbox,
        groups: GroupRegistry,
        gaps: Reassembly,
        windows: CreditWindows,
        credits: CreditBatcher,
        hub: Hub,
    ) -> None:
        self.client_id = client_id
        self.subjects = subjects
        self.inbox = inbox
        self.groups = groups
        self.gaps = gaps
        self.windows = windows
        self.credits = credits
        self.hub = hub
        self.interval = max(0.5, min(config.expiry, 30.0) / 2)
        self.sequence_sweep_every = max(2 * config.expiry, 240.0)
        self.links: Links  # set by the transport once its links exist
        self.normal: NormalChannels  # likewise

    async def sweep_forever(self) -> None:
        sequences_swept = time.monotonic()
        while True:
            await asyncio.sleep(self.interval)
            self.inbox.sweep()
            now = time.monotonic()
            if now - sequences_swept >= self.sequence_sweep_every:
                # Two generations: state idle for one to two intervals goes.
                sequences_swept = now
                self.gaps.sweep()
                for link in list(self.links.by_loop.values()):
                    link.sequencer.sweep()
            emptied = self.groups.sweep()
            home = self.links.current_home()
            if home is not None and emptied:
                await home.unsubscribe_many(self.subjects.group(g) for g in emptied)
            for group in emptied:
                self.gaps.forget(group)

    async def flush(self) -> None:
        await self.hub.publish_confirmed(
            self.subjects.broadcast, pack_control(FLUSH, self.client_id)
        )
        await self.normal.flush(await self.links.link())
        await self.local_flush()

    def on_flush(self, frame: Frame, subject: str, reply: str, link: Link) -> None:
        """Another process flushed the layer (dispatch table handler)."""
        link.spawn(self.local_flush())

    async def local_flush(self) -> None:
        self.inbox.clear()
        self.windows.clear()
        self.credits.clear()
        emptied = self.groups.clear()
        home = self.links.current_home()
        if home is not None and emptied:
            subjects = [self.subjects.group(g) for g in emptied]

            async def unsubscribe() -> None:
                for subject in subjects:
                    if subject in home.confirmed:
                        await home.unsubscribe(subject)

            with contextlib.suppress(Exception):
                await home.run(unsubscribe)
        for group in emptied:
            self.gaps.forget(group)
