"""A Ray of its own with Ray's TLS on (RAY_USE_TLS and certificates made here with openssl); run by
test_channel_tls_with_ray.py in its own process, since TLS must be set before Ray starts.

Checks that handles work, that the replica's TCP listener speaks TLS with Ray's certificates (a caller
with them is served, one in clear text is not), and that the Unix socket stays plain. Exits non-zero,
with the failed check printed, if anything is off.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OPENSSL = "/usr/bin/openssl"


def make_certs(directory: Path, node_ip: str) -> dict[str, str]:
    """A CA and one certificate it signed, for every process (as Ray's docs set it up)."""

    def openssl(*args: str) -> None:
        subprocess.run([OPENSSL, *args], cwd=directory, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=serve-nb-test-ca")
    openssl("req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=ray-node")
    (directory / "node.ext").write_text(f"subjectAltName=IP:127.0.0.1,IP:{node_ip},DNS:localhost\n")
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "node.crt", "-days", "2", "-extfile", "node.ext")
    return {
        "RAY_USE_TLS": "1",
        "RAY_TLS_SERVER_CERT": str(directory / "node.crt"),
        "RAY_TLS_SERVER_KEY": str(directory / "node.key"),
        "RAY_TLS_CA_CERT": str(directory / "ca.crt"),
    }


def node_ip() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("8.8.8.8", 80))  # no packet is sent: this only picks the outgoing interface
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


async def call_over_tcp(info, tls_context) -> tuple[object, str | None]:
    """One call to the replica over TCP (never its Unix socket), with ``tls_context`` or in clear text."""
    from serve_nb import ray_private
    from serve_nb.data.channel import Address, ChannelClient, auth
    from serve_nb.data.request import Request, RequestKind

    token = ray_private.ray_auth_token(only_if_enabled=False) if info.key_uses_ray_token else None
    address = Address(info.host, info.port, info.uds_path, info.node_id)
    client = ChannelClient(address, auth.channel_key(info.secret, token), tls=tls_context, handshake_timeout_s=5.0)
    try:
        value: object = await client.call(Request(RequestKind.CALL, "__call__", (41,), {}))
    except Exception as exc:  # noqa: BLE001 - the check looks at what failed
        value = exc
    ssl_object = client._conn.transport.get_extra_info("ssl_object") if client._conn is not None else None
    client.close()
    return value, ssl_object.version() if ssl_object is not None else None


def main() -> None:
    directory = Path(tempfile.mkdtemp(prefix="serve-nb-tls-"))
    os.environ.update(make_certs(directory, node_ip()))  # before Ray starts: its processes inherit these

    import ray

    import serve_nb as serve
    from serve_nb.data.channel import NotSent, tls

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        serve.start(http_options={"location": "NoServer"})

        @serve.deployment
        class Echo:
            def __call__(self, x):
                return x + 1

        handle = serve.run(Echo.bind(), name="tls", route_prefix=None)
        assert handle.remote(1).result() == 2, "a handle call (same node: the Unix socket)"
        (info,) = serve.feed.get(serve.feed.replicas("tls", "Echo")).replicas
        token_auth = os.environ.get("RAY_AUTH_MODE") == "token"  # ray.init sets it for a cluster it starts
        assert info.key_uses_ray_token == token_auth, (info.key_uses_ray_token, token_auth)

        value, version = asyncio.run(call_over_tcp(info, tls.client_context_from_env()))
        assert value == 42 and version in ("TLSv1.2", "TLSv1.3"), (value, version)
        value, version = asyncio.run(call_over_tcp(info, None))
        assert isinstance(value, NotSent) and version is None, f"a caller in clear text got {value!r}"
        assert handle.remote(2).result() == 3, "the replica still serves"
        print("tls scenario passed")
    finally:
        serve.shutdown()
        ray.shutdown()
        subprocess.run(["rm", "-rf", str(directory)], check=False)


if __name__ == "__main__":
    main()
