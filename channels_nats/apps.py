"""Django app config: registers the system checks of CHANNEL_LAYERS."""

from __future__ import annotations

from django.apps import AppConfig


class ChannelsNatsConfig(AppConfig):  # type: ignore[misc]
    name = "channels_nats"
    verbose_name = "Channels NATS layer"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)
