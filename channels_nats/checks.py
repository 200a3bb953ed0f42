"""Django system checks for ``CHANNEL_LAYERS`` entries that use this layer.

Add ``"channels_nats"`` to ``INSTALLED_APPS`` and ``manage.py check`` reports
the problems that would otherwise surface at the first use of the layer.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register

from .config import problems

__all__ = ["check_channel_layers"]

BACKEND = "channels_nats.NatsChannelLayer"
_BACKENDS = {BACKEND, "channels_nats.layer.NatsChannelLayer"}


@register()  # type: ignore[untyped-decorator]
def check_channel_layers(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Report invalid ``CONFIG`` of NATS channel layers (``channels_nats.E001``)."""
    errors: list[CheckMessage] = []
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    for alias, entry in layers.items():
        if not isinstance(entry, dict) or entry.get("BACKEND") not in _BACKENDS:
            continue
        for key in ("CONFIG", "TEST_CONFIG"):
            if key not in entry:
                continue
            for problem in problems(entry[key]):
                errors.append(
                    Error(
                        f"CHANNEL_LAYERS[{alias!r}][{key!r}]: {problem}",
                        hint="See the configuration table in the channels_nats README.",
                        obj=f"CHANNEL_LAYERS[{alias!r}]",
                        id="channels_nats.E001",
                    )
                )
    return errors
