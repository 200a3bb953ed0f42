"""Encryption of the payloads that features publish through the hub.

With ``symmetric_encryption_keys`` the layer encrypts message bodies
(:class:`~channels_nats.serializers.Serializer`); the frames of features
beside it (presence deltas, heartbeats, rosters, their replies) go through
:class:`~channels_nats.hub.Hub`, which seals them with a :class:`Sealer` made
from the same keys, so nothing a feature publishes is readable on the wire.
The first key encrypts and every key decrypts (rotation), as for messages.
"""

from __future__ import annotations

from collections.abc import Sequence

from .serializers import _fernet_key

__all__ = ["Sealer", "UnsealError"]


class UnsealError(ValueError):
    """A payload was not sealed with any of the configured keys."""


class Sealer:
    """Fernet encryption of raw payloads with key rotation."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        from cryptography.fernet import Fernet, MultiFernet

        self._crypter = MultiFernet([Fernet(_fernet_key(k)) for k in keys])

    def seal(self, payload: bytes) -> bytes:
        return bytes(self._crypter.encrypt(payload))

    def unseal(self, payload: bytes) -> bytes:
        from cryptography.fernet import InvalidToken

        try:
            return bytes(self._crypter.decrypt(payload))
        except (InvalidToken, TypeError, ValueError) as exc:
            raise UnsealError(
                f"payload not sealed with a configured key ({type(exc).__name__})"
            ) from None

    @staticmethod
    def room(max_payload: int) -> int:
        """The largest plaintext whose sealed form fits in ``max_payload``.

        A Fernet token is the URL-safe base64 of version (1) + time (8) + IV
        (16) + the AES-CBC padded plaintext + HMAC (32) bytes.
        """
        raw = max_payload // 4 * 3  # bytes that base64-encode within the limit
        blocks = (raw - 57) // 16  # 57 = 1 + 8 + 16 + 32
        return max(0, blocks * 16 - 1)  # PKCS7 adds at least one byte
