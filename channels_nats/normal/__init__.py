"""Normal channels (names without ``!``): messages wait in JetStream."""

from .channels import NormalChannels

__all__ = ["NormalChannels"]
