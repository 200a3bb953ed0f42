"""``manage.py notify ROOM TEXT``: post a notification from a plain process.

The same call as the sync view, from a process without any event loop: each
``async_to_sync`` runs in a short-lived loop, as in a Celery task or a cron job.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from testproject.chat.models import Room
from testproject.chat.views import send_notification


class Command(BaseCommand):
    help = "Post a notification to everyone in a room."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("room", help="slug of the room, e.g. general")
        parser.add_argument("text", nargs="+", help="the notification's text")
        parser.add_argument("--user", default="manage.py", help="shown as sender")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            room = Room.objects.get(slug=options["room"])
        except Room.DoesNotExist:
            slugs = ", ".join(Room.objects.values_list("slug", flat=True))
            raise CommandError(
                f"no room {options['room']!r}; rooms: {slugs or 'none'} "
                "(manage.py setup_demo creates the demo rooms)"
            ) from None
        text = " ".join(options["text"])
        send_notification(room, text, options["user"])
        self.stdout.write(f"sent to {room.slug}: {text}")
