"""TLS and every kind of NATS authentication, each against a server set up for it.

For each kind, two OS processes whose layers are built from a
``CHANNEL_LAYERS`` of plain strings (as in ``settings.py``) exchange messages
through the secured server, and a wrong secret fails the first connect at
once (well inside ``connect_timeout``) with an error naming the cause.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
import pytest

from channels_nats import NatsChannelLayer
from channels_nats.exceptions import ConnectionUnavailable
from tests.peers import Peer
from tests.secure_servers import (
    Certificates,
    configured_server,
    creds_file,
    make_certificates,
    new_identity,
    operator_config,
)

BACKEND = "channels_nats.NatsChannelLayer"
CONNECT_TIMEOUT = 8.0


@dataclass
class Setup:
    """A secured server and the CONFIG that gets in and the one that does not."""

    url: str
    good: dict[str, Any]
    bad: dict[str, Any]
    cause: str  # a fragment the error must contain


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def foreign_certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Certificates of another CA, which the server does not trust."""
    return make_certificates(tmp_path_factory.mktemp("foreign"))


def _tls_block(certs: Certificates, *, verify: bool) -> str:
    lines = [
        f'cert_file: "{certs.server_cert}"',
        f'key_file: "{certs.server_key}"',
    ]
    if verify:
        lines += [f'ca_file: "{certs.ca_file}"', "verify: true"]
    return "tls {\n  " + "\n  ".join(lines) + "\n}\n"


def _setup(kind: str, certs: Certificates, foreign: Certificates, tmp: Path) -> Any:
    """Return (server config, good CONFIG, bad CONFIG, cause, tls)."""
    if kind == "tls":
        return (
            _tls_block(certs, verify=False),
            {"tls_ca_file": certs.ca_file},
            {},  # the system CAs do not know the test CA
            "certificate",
            True,
        )
    if kind == "mutual_tls":
        return (
            _tls_block(certs, verify=True),
            {
                "tls_ca_file": certs.ca_file,
                "tls_cert_file": certs.client_cert,
                "tls_key_file": certs.client_key,
            },
            {
                "tls_ca_file": certs.ca_file,
                "tls_cert_file": foreign.client_cert,
                "tls_key_file": foreign.client_key,
            },
            "TLS",
            True,
        )
    if kind == "user_password":
        return (
            "authorization { user: app, password: s3cret }\n",
            {"user": "app", "password": "s3cret"},
            {"user": "app", "password": "wrong"},
            "authorization violation",
            False,
        )
    if kind == "token":
        return (
            "authorization { token: t0ken-abc }\n",
            {"token": "t0ken-abc"},
            {"token": "t0ken-xyz"},
            "authorization violation",
            False,
        )
    if kind == "nkey":
        user = new_identity(nkeys.PREFIX_BYTE_USER)
        other = new_identity(nkeys.PREFIX_BYTE_USER)
        (tmp / "user.nk").write_text(user.seed + "\n")
        (tmp / "other.nk").write_text(other.seed + "\n")
        return (
            f"authorization {{ users: [ {{ nkey: {user.public_key} }} ] }}\n",
            {"nkeys_seed": str(tmp / "user.nk")},
            {"nkeys_seed": str(tmp / "other.nk")},
            "authorization violation",
            False,
        )
    if kind == "creds":
        op = operator_config()
        good = creds_file(tmp / "app.creds", op.user_jwt, op.user)
        # The right JWT with another key's seed: the nonce signature fails.
        stolen = creds_file(
            tmp / "stolen.creds", op.user_jwt, new_identity(nkeys.PREFIX_BYTE_USER)
        )
        return (
            op.config,
            {"user_credentials": good},
            {"user_credentials": stolen},
            "authorization violation",
            False,
        )
    raise AssertionError(kind)


KINDS = ["tls", "mutual_tls", "user_password", "token", "nkey", "creds"]


@pytest.fixture(scope="module", params=KINDS)
def secured(
    request: pytest.FixtureRequest,
    certs: Certificates,
    foreign_certs: Certificates,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Setup]:
    kind = request.param
    tmp = tmp_path_factory.mktemp(kind)
    conf, good, bad, cause, tls = _setup(kind, certs, foreign_certs, tmp)
    server = configured_server(conf, name=kind)
    try:
        url = server.url.replace("nats://", "tls://") if tls else server.url
        yield Setup(url=url, good=good, bad=bad, cause=cause)
    finally:
        server.close()


def _layers(setup: Setup, prefix: str, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": BACKEND,
            "CONFIG": {
                "servers": [setup.url],
                "prefix": prefix,
                "connect_timeout": CONNECT_TIMEOUT,
                **config,
            },
        }
    }


async def test_delivery_between_two_processes_through_the_secured_server(
    secured: Setup, prefix: str
) -> None:
    """Settings of plain strings connect two processes; groups and sends work."""
    receiver = await Peer.start(_layers(secured, prefix, secured.good))
    sender = await Peer.start(_layers(secured, prefix, secured.good))
    try:
        channel = await receiver.call("new_channel")
        await receiver.call("group_add", group="room", channel=channel)
        await sender.call("group_send", group="room", message={"type": "g", "n": 1})
        await sender.call("send", channel=channel, message={"type": "d", "n": 2})
        got = await receiver.call("receive_many", channel=channel, n=2, timeout=10)
        assert got == [{"type": "g", "n": 1}, {"type": "d", "n": 2}]
        assert (await sender.call("stats"))["connections_opened"] >= 1
    finally:
        await asyncio.gather(receiver.stop(), sender.stop())


async def test_wrong_secret_fails_the_first_connect_at_once_naming_the_cause(
    secured: Setup, prefix: str
) -> None:
    """No retrying until connect_timeout: the refusal ends the first connect."""
    config = _layers(secured, prefix, secured.bad)["default"]["CONFIG"]
    layer = NatsChannelLayer(**config)
    started = time.monotonic()
    try:
        with pytest.raises(ConnectionUnavailable) as info:
            await layer.group_add("room", await layer.new_channel())
    finally:
        await layer.close()
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert "refused the connection" in message, message
    assert secured.cause.lower() in message.lower(), message
    # A refusal, not a timeout: well before connect_timeout ran out.
    assert elapsed < CONNECT_TIMEOUT / 2, (elapsed, message)


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"tls_ca_file": "/nonexistent/ca.pem"}, "tls_ca_file"),
        ({"tls_ca_file": 42}, "must be a file path"),
        ({"tls_key_file": "/k.pem"}, "needs CONFIG['tls_cert_file']"),
    ],
)
def test_bad_tls_file_settings_name_the_key(config: dict[str, Any], fragment: str):
    from channels_nats.config import parse_config
    from channels_nats.exceptions import InvalidChannelLayerError

    with pytest.raises(InvalidChannelLayerError, match=fragment.replace("[", r"\[")):
        parse_config(config)


def test_tls_context_and_tls_files_together_are_refused(certs: Certificates):
    import ssl

    from channels_nats.config import parse_config
    from channels_nats.exceptions import InvalidChannelLayerError

    with pytest.raises(InvalidChannelLayerError, match="not both"):
        parse_config(tls=ssl.create_default_context(), tls_ca_file=certs.ca_file)


def test_tls_files_build_a_verifying_context_with_the_client_certificate(
    certs: Certificates,
):
    import ssl

    from channels_nats.config import parse_config

    cfg = parse_config(
        tls_ca_file=certs.ca_file,
        tls_cert_file=certs.client_cert,
        tls_key_file=certs.client_key,
    )
    context = cfg.connect_options["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
