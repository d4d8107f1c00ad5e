"""TLS on the channel's TCP connections, on exactly when Ray's own TLS is on, with Ray's certificates.

Ray reads ``RAY_USE_TLS`` (``1``/``true``) and three files: ``RAY_TLS_SERVER_CERT`` and
``RAY_TLS_SERVER_KEY`` (each process's certificate, used both to serve and to call) and
``RAY_TLS_CA_CERT``. The channel does as Ray's gRPC does, mutual TLS: a replica requires a caller's
certificate signed by that CA, and a caller verifies the replica's against it.

The host name in the replica's certificate is not checked: a caller dials the replica by IP, and on
one machine by loopback, which certificates made for Ray's gRPC need not name. Which replica answered
is proven by the channel's own handshake (``auth``: only the real replica holds its key); TLS adds
that both ends belong to the cluster, and encryption. Unix-socket connections (same node, a 0700
directory) go without TLS.
"""

from __future__ import annotations

import functools
import os
import ssl
from dataclasses import dataclass
from typing import Mapping

USE_TLS_ENV = "RAY_USE_TLS"
CERT_ENV = "RAY_TLS_SERVER_CERT"
KEY_ENV = "RAY_TLS_SERVER_KEY"
CA_ENV = "RAY_TLS_CA_CERT"
#: Values of ``RAY_USE_TLS`` that turn TLS on, as Ray reads them (case-insensitive).
TRUE_VALUES = ("1", "true")


class TLSConfigError(ValueError):
    """Ray's TLS settings are on but incomplete or unusable; the message names the variable."""


@dataclass(frozen=True)
class TLSConfig:
    """Paths of this process's certificate, its private key, and the cluster's CA certificate."""

    cert: str
    key: str
    ca: str


def tls_config(env: Mapping[str, str]) -> TLSConfig | None:
    """The channel's TLS settings from Ray's variables in ``env``; None when Ray's TLS is off.

    Raises ``TLSConfigError`` naming what is missing: with Ray's TLS on, a channel in clear text
    would be a silent downgrade."""
    if env.get(USE_TLS_ENV, "0").strip().lower() not in TRUE_VALUES:
        return None
    missing = [name for name in (CERT_ENV, KEY_ENV, CA_ENV) if not env.get(name)]
    if missing:
        raise TLSConfigError(
            f"{USE_TLS_ENV} is on, so serve_nb's channel to replicas uses TLS, but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set. Set {CERT_ENV}, {KEY_ENV} and {CA_ENV} as "
            "for Ray itself, in every process of the cluster."
        )
    return TLSConfig(cert=env[CERT_ENV], key=env[KEY_ENV], ca=env[CA_ENV])


def _load(context: ssl.SSLContext, config: TLSConfig) -> ssl.SSLContext:
    """Load the CA and this process's certificate, each failure naming its variable and path."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cafile=config.ca)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"{CA_ENV}={config.ca!r} is not a readable PEM CA certificate: {exc}") from exc
    for name, path in ((CERT_ENV, config.cert), (KEY_ENV, config.key)):
        if not os.path.isfile(path):
            raise TLSConfigError(f"{name}={path!r}: no such file.")
    try:
        context.load_cert_chain(certfile=config.cert, keyfile=config.key)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(
            f"{CERT_ENV}={config.cert!r} and {KEY_ENV}={config.key!r} are not a matching PEM certificate "
            f"and private key: {exc}"
        ) from exc
    return context


def server_context(config: TLSConfig) -> ssl.SSLContext:
    """The replica's side: its certificate, and callers must present one signed by the CA."""
    return _load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), config)


def client_context(config: TLSConfig) -> ssl.SSLContext:
    """The caller's side: its certificate, and the replica's must be signed by the CA (the host name
    is not checked: see the module's docstring)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # before verify_mode: PROTOCOL_TLS_CLIENT starts with it on
    return _load(context, config)


@functools.lru_cache(maxsize=4)
def _contexts(config: TLSConfig | None) -> tuple[ssl.SSLContext, ssl.SSLContext] | None:
    if config is None:
        return None
    return server_context(config), client_context(config)


def server_context_from_env() -> ssl.SSLContext | None:
    """This process's replica-side context per its environment (built once); None without Ray's TLS."""
    contexts = _contexts(tls_config(os.environ))
    return contexts[0] if contexts else None


def client_context_from_env() -> ssl.SSLContext | None:
    """This process's caller-side context per its environment (built once); None without Ray's TLS."""
    contexts = _contexts(tls_config(os.environ))
    return contexts[1] if contexts else None
