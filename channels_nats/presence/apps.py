"""Django app config of presence (label ``nats_presence``)."""

from __future__ import annotations

from django.apps import AppConfig


class NatsPresenceConfig(AppConfig):  # type: ignore[misc]
    name = "channels_nats.presence"
    label = "nats_presence"
    verbose_name = "Presence"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)
