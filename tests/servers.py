"""The server helpers live in :mod:`channels_nats.testing`; re-exported here."""

from __future__ import annotations

from channels_nats.testing import *  # noqa: F403
from channels_nats.testing import __all__ as __all__
