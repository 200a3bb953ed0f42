"""System checks of the presence configuration.

``nats_presence.E001``: an invalid ``CONFIG["presence"]`` of a NATS layer.
``nats_presence.W001``: presence is installed but no layer uses NATS.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from ..checks import _BACKENDS, BACKEND
from .settings import problems

__all__ = ["check_presence"]


@register()  # type: ignore[untyped-decorator]
def check_presence(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Report invalid presence settings of the NATS channel layers."""
    messages: list[CheckMessage] = []
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    nats = {
        alias: entry
        for alias, entry in layers.items()
        if isinstance(entry, dict) and entry.get("BACKEND") in _BACKENDS
    }
    if not nats:
        messages.append(
            Warning(
                "channels_nats.presence is installed but no CHANNEL_LAYERS entry "
                f"uses {BACKEND}.",
                hint=f"Set CHANNEL_LAYERS['default']['BACKEND'] = {BACKEND!r}.",
                id="nats_presence.W001",
            )
        )
    for alias, entry in nats.items():
        for key in ("CONFIG", "TEST_CONFIG"):
            config = entry.get(key)
            if not isinstance(config, dict) or "presence" not in config:
                continue
            for problem in problems(config["presence"]):
                messages.append(
                    Error(
                        f"CHANNEL_LAYERS[{alias!r}][{key!r}]: {problem}",
                        hint="See the presence settings in the channels_nats README.",
                        obj=f"CHANNEL_LAYERS[{alias!r}]",
                        id="nats_presence.E001",
                    )
                )
    return messages
