"""TLS from plain settings, and which connect errors no retry can fix.

``CONFIG`` may name a CA file and a client certificate and key as strings
(``tls_ca_file``, ``tls_cert_file``, ``tls_key_file``): :func:`ssl_context`
builds the :class:`ssl.SSLContext` nats-py needs, so nobody writes Python in
``settings.py`` to use TLS.

nats-py retries a first connect that the server refused for a bad secret or
a certificate it does not accept as if the server were down; the layer uses
:func:`fatal_cause` to give up at the first such refusal with an error that
names it, instead of retrying until ``connect_timeout``.
"""

from __future__ import annotations

import re
import ssl

import nats.errors

__all__ = ["TLS_KEYS", "fatal_cause", "permission_violation", "ssl_context"]

#: CONFIG keys that build the TLS context, in the order ssl_context takes them.
TLS_KEYS = ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_key_password")

# Lower-case fragments of the -ERR lines a nats-server sends when it refuses
# the credentials of a connection.
_AUTH_ERRORS = (
    "authorization violation",
    "authentication expired",
    "authentication revoked",
    "account authentication expired",
)


# -ERR 'Permissions Violation for Publish to "a.b"' (or Subscription to).
_PERMISSION_RE = re.compile(
    r"permissions violation for (publish|subscription) to \"?([^\"']*)", re.I
)


def permission_violation(exc: BaseException) -> str | None:
    """``'publish to <subject>'`` if ``exc`` is a server permission error."""
    if not isinstance(exc, nats.errors.Error):
        return None
    match = _PERMISSION_RE.search(str(exc))
    if match is None:
        return None
    return f"{match.group(1).lower()} to {match.group(2).strip()}"


def ssl_context(
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    key_password: str | None = None,
) -> ssl.SSLContext:
    """Return a client context that verifies the server (against ``ca_file``, or
    the system's CAs) and presents ``cert_file``/``key_file`` for mutual TLS.

    Raises ``OSError`` or ``ssl.SSLError`` for unreadable or mismatched files.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file, password=key_password)
    return context


def fatal_cause(exc: BaseException) -> str | None:
    """Why ``exc`` means the server refuses us for good, or ``None``.

    Authorization failures (bad user/password, token, nkey or credentials)
    and TLS failures (certificate not trusted, client certificate required
    or refused, wrong hostname) are fatal: the same secret fails again.
    """
    if isinstance(exc, nats.errors.AuthorizationError):
        return "the server refused the credentials (authorization violation)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the server's TLS certificate was not accepted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"the TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, nats.errors.Error):
        text = str(exc).lower()
        if any(fragment in text for fragment in _AUTH_ERRORS):
            return f"the server refused the credentials ({exc})"
    return None
