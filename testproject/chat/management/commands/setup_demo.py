"""``manage.py setup_demo``: create the demo users and rooms (idempotent)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from testproject.chat.models import Room

DEMO_USERS = ("alice", "bob", "carol")
DEMO_PASSWORD = "demo"
ADMIN_USER = ("admin", "admin")
ROOMS = (
    ("general", "General", "Say hello."),
    ("random", "Random", "Anything goes."),
    ("nats", "NATS", "Ask how the messages get from one daphne to the other."),
)


class Command(BaseCommand):
    help = (
        "Create the demo users (alice, bob, carol with password 'demo'; the "
        "superuser admin/admin) and rooms. Existing ones are left as they are, "
        "except that the flags is_staff/is_superuser are set as documented."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        created = []
        accounts = [(name, DEMO_PASSWORD, False) for name in DEMO_USERS]
        accounts.append((*ADMIN_USER, True))
        for name, password, staff in accounts:
            user, new = users.objects.get_or_create(username=name)
            if new:
                # Hashing is deliberately slow: only for new users.
                user.set_password(password)
                created.append(name)
            user.is_staff = user.is_superuser = staff
            user.save()
        for slug, title, description in ROOMS:
            Room.objects.get_or_create(
                slug=slug, defaults={"title": title, "description": description}
            )
        if created:
            self.stdout.write(f"created users: {', '.join(created)}")
        else:
            self.stdout.write("demo users already exist")
