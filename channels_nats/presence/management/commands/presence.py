"""``manage.py presence``: print the cluster-wide roster, or watch its diffs."""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from channels_nats.exceptions import ConnectionUnavailable, InvalidChannelLayerError
from channels_nats.presence.api import get_presence
from channels_nats.presence.tracker import PresenceTracker


class Command(BaseCommand):  # type: ignore[misc]
    help = (
        "Print who is connected to which room across the cluster: a table, or "
        "JSON shaped like get_presence().list(); --watch prints diffs as they "
        "happen."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--room", default="", help="only this room")
        parser.add_argument(
            "--json", action="store_true", help="JSON instead of a table"
        )
        parser.add_argument(
            "--watch", action="store_true", help="then print diffs until Ctrl-C"
        )
        parser.add_argument(
            "--seconds",
            type=float,
            default=0.0,
            help="with --watch: stop after this many seconds (default: never)",
        )
        parser.add_argument(
            "--alias", default="default", help="CHANNEL_LAYERS alias (default)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["alias"]
        try:
            tracker = get_presence(alias)
        except (ImproperlyConfigured, InvalidChannelLayerError) as exc:
            raise CommandError(str(exc)) from exc
        try:
            async_to_sync(self._run)(tracker, options)
        except ConnectionUnavailable as exc:
            raise CommandError(
                f"Cannot reach NATS for CHANNEL_LAYERS[{alias!r}]: {exc} Check "
                f"CHANNEL_LAYERS[{alias!r}]['CONFIG']['servers']."
            ) from exc
        except KeyboardInterrupt:
            pass
        finally:
            async_to_sync(tracker.layer.close)()

    async def _run(self, tracker: PresenceTracker, options: dict[str, Any]) -> None:
        await tracker.sync()
        room = options["room"]
        if room:
            rosters = {room: await tracker.list(room)}
        else:
            rosters = {r: await tracker.list(r) for r in sorted(await tracker.rooms())}
        if options["json"]:
            shown: Any = rosters[room] if room else rosters
            self.stdout.write(json.dumps(shown, indent=2, sort_keys=True))
        else:
            self._table(rosters, len((await tracker.snapshot(limit=0))["nodes"]))
        if options["watch"]:
            await self._watch(tracker, room, options)

    def _table(self, rosters: dict[str, Any], nodes: int) -> None:
        rows = [("ROOM", "USER", "SESSION", "NODE", "SINCE", "META")]
        connections = 0
        for room, members in rosters.items():
            for key, entry in members.items():
                for meta in entry["metas"]:
                    connections += 1
                    extra = {
                        k: v
                        for k, v in meta.items()
                        if k not in ("session", "node", "joined_at")
                    }
                    user = "-" if key == meta["session"] else key
                    since = datetime.datetime.fromtimestamp(meta["joined_at"])
                    rows.append(
                        (
                            room,
                            user,
                            meta["session"],
                            meta["node"],
                            since.strftime("%Y-%m-%d %H:%M:%S"),
                            json.dumps(extra, sort_keys=True) if extra else "",
                        )
                    )
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        for row in rows:
            cells = [c.ljust(w) for c, w in zip(row[:5], widths, strict=True)]
            self.stdout.write("  ".join([*cells, row[5]]).rstrip())
        self.stdout.write(
            f"{len(rosters)} room(s), {connections} connection(s), {nodes} node(s)"
        )

    async def _watch(
        self, tracker: PresenceTracker, room: str, options: dict[str, Any]
    ) -> None:
        as_json = options["json"]

        def show(diff_room: str, joins: dict[str, Any], leaves: dict[str, Any]) -> None:
            if room and diff_room != room:
                return
            if as_json:
                line = {"room": diff_room, "joins": joins, "leaves": leaves}
                self.stdout.write(json.dumps(line, sort_keys=True))
                return
            for sign, entries in (("+", joins), ("-", leaves)):
                for key, entry in entries.items():
                    for meta in entry["metas"]:
                        self.stdout.write(
                            f"{sign} {diff_room}  {key}  {meta['session']}  "
                            f"{meta['node']}"
                        )

        remove = tracker.watch(show)
        try:
            seconds = options["seconds"]
            if seconds > 0:
                await asyncio.sleep(seconds)
            else:
                await asyncio.Event().wait()  # until Ctrl-C
        finally:
            remove()
