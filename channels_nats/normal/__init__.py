"""Normal channels (names without ``!``): messages wait in JetStream."""

from .channels import NormalChannels
from .context import NormalContext

__all__ = ["NormalChannels", "NormalContext"]
