"""nats-servers configured for TLS, authentication and permissions, for tests.

The servers are :class:`~channels_nats.testing.NatsServer` processes (so the
binary, the random port read from the log and the cleanup are the usual
ones) given a config file with ``-c``: ``tls {}``, ``authorization {}`` or an
operator with a memory resolver. Certificates come from ``trustme``; the
operator, account and user keys from ``nkeys`` (a random seed encoded by it),
and their JWTs are signed here, in the claims format the NATS docs describe,
so no ``nsc`` is needed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
import trustme

from channels_nats.testing import NatsServer

__all__ = [
    "Certificates",
    "Identity",
    "configured_server",
    "creds_file",
    "make_certificates",
    "new_identity",
    "operator_config",
    "signed_jwt",
]


@dataclass(frozen=True)
class Certificates:
    """PEM files of a test CA, a server cert for 127.0.0.1 and a client cert."""

    ca_file: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def make_certificates(directory: str | os.PathLike[str]) -> Certificates:
    """Write a fresh CA, a server certificate and a client certificate."""
    root = Path(directory)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@example.test")
    paths = {
        "ca_file": root / "ca.pem",
        "server_cert": root / "server.pem",
        "server_key": root / "server.key",
        "client_cert": root / "client.pem",
        "client_key": root / "client.key",
    }
    ca.cert_pem.write_to_path(str(paths["ca_file"]))
    server.private_key_pem.write_to_path(str(paths["server_key"]))
    server.cert_chain_pems[0].write_to_path(str(paths["server_cert"]))
    client.private_key_pem.write_to_path(str(paths["client_key"]))
    client.cert_chain_pems[0].write_to_path(str(paths["client_cert"]))
    return Certificates(**{k: str(v) for k, v in paths.items()})


def configured_server(
    config: str, *, name: str = "secure", jetstream: bool = True
) -> NatsServer:
    """A started :class:`NatsServer` that also reads ``config`` (nats-server syntax).

    The command line still sets host, port and JetStream store, so only the
    security blocks belong in ``config``.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"nats-{name}-"))
    conf = workdir / "server.conf"
    conf.write_text(config)
    server = NatsServer(
        name=name, jetstream=jetstream, workdir=workdir, extra_args=["-c", str(conf)]
    )
    return server.start()


# -- nkeys and JWTs ----------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """An nkey pair: the seed (secret, ``S...``) and the public key."""

    seed: str
    public_key: str

    def sign(self, data: bytes) -> bytes:
        kp = nkeys.from_seed(bytearray(self.seed.encode()))
        try:
            return bytes(kp.sign(data))
        finally:
            kp.wipe()


def new_identity(prefix: int) -> Identity:
    """A random nkey of kind ``prefix`` (``nkeys.PREFIX_BYTE_USER`` ...)."""
    seed = nkeys.encode_seed(os.urandom(32), prefix).decode()
    kp = nkeys.from_seed(bytearray(seed.encode()))
    try:
        public = kp.public_key.decode()
    finally:
        kp.wipe()
    return Identity(seed=seed, public_key=public)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_jwt(
    issuer: Identity, subject: str, name: str, nats: dict[str, Any], **extra: Any
) -> str:
    """A NATS JWT (``alg: ed25519-nkey``) for ``subject``, signed by ``issuer``."""
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public_key,
        "name": name,
        "sub": subject,
        "nats": {"version": 2, **nats},
        **extra,
    }
    # jti: the base32 SHA-512/256 of the claims without it, as nsc writes it.
    body = json.dumps(claims, separators=(",", ":")).encode()
    digest = hashlib.new("sha512_256", body).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = _b64(issuer.sign(f"{header}.{payload}".encode()))
    return f"{header}.{payload}.{signature}"


_UNLIMITED = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
    "mem_storage": -1,
    "disk_storage": -1,
    "streams": -1,
    "consumer": -1,
}


@dataclass(frozen=True)
class OperatorSetup:
    config: str
    user_jwt: str
    user: Identity
    account: Identity


def operator_config(user_name: str = "app") -> OperatorSetup:
    """Server config for an operator with one account (JetStream on) and one user."""
    operator = new_identity(nkeys.PREFIX_BYTE_OPERATOR)
    account = new_identity(nkeys.PREFIX_BYTE_ACCOUNT)
    system = new_identity(nkeys.PREFIX_BYTE_ACCOUNT)
    user = new_identity(nkeys.PREFIX_BYTE_USER)
    operator_jwt = signed_jwt(
        operator,
        operator.public_key,
        "test-operator",
        {"type": "operator", "system_account": system.public_key},
    )
    account_jwt = signed_jwt(
        operator, account.public_key, "APP", {"type": "account", "limits": _UNLIMITED}
    )
    system_jwt = signed_jwt(operator, system.public_key, "SYS", {"type": "account"})
    user_jwt = signed_jwt(
        account,
        user.public_key,
        user_name,
        {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1},
    )
    config = (
        f"operator: {operator_jwt}\n"
        f"system_account: {system.public_key}\n"
        "resolver: MEMORY\n"
        "resolver_preload: {\n"
        f"  {account.public_key}: {account_jwt}\n"
        f"  {system.public_key}: {system_jwt}\n"
        "}\n"
    )
    return OperatorSetup(config=config, user_jwt=user_jwt, user=user, account=account)


def creds_file(path: str | os.PathLike[str], jwt: str, user: Identity) -> str:
    """Write a ``.creds`` file (user JWT plus its nkey seed) as nsc does."""
    Path(path).write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed}\n"
        "------END USER NKEY SEED------\n"
    )
    return str(path)
