"""With Ray's TLS on, the channel's TCP connections use mutual TLS with Ray's certificates: a caller
with a certificate from the cluster's CA is served; one without a certificate, with another CA's, or
in clear text is refused before the replica reads a frame; a caller refuses a replica whose certificate
the CA did not sign. Certificates are made with openssl for each test session; no Ray is needed."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from channel_peer import KEY
from serve_nb.data.channel import ChannelClient, ChannelServer, NotSent, tls
from serve_nb.exceptions import ReplicaUnavailableError
from test_channel_round_trip import FakeReplica, call

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
pytestmark = pytest.mark.skipif(not os.path.exists(OPENSSL), reason="needs the openssl command")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(directory: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}", cwd=directory)


def _make_cert(directory: Path, name: str, ca: str) -> None:
    """A certificate like Ray's: one per process, used to serve and to call, signed by ``ca``."""
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    (directory / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=directory)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cluster's CA and a node certificate it signed; another CA and a certificate of its own."""
    directory = tmp_path_factory.mktemp("certs")
    _make_ca(directory, "ca")
    _make_cert(directory, "node", "ca")
    _make_ca(directory, "rogue-ca")
    _make_cert(directory, "rogue", "rogue-ca")
    return directory


def env_of(certs: Path, cert: str = "node", ca: str = "ca") -> dict[str, str]:
    return {
        tls.USE_TLS_ENV: "1",
        tls.CERT_ENV: str(certs / f"{cert}.crt"),
        tls.KEY_ENV: str(certs / f"{cert}.key"),
        tls.CA_ENV: str(certs / f"{ca}.crt"),
    }


def config_of(certs: Path, cert: str = "node", ca: str = "ca") -> tls.TLSConfig:
    config = tls.tls_config(env_of(certs, cert, ca))
    assert config is not None
    return config


def serve_and_call(server_tls: ssl.SSLContext | None, client_tls: ssl.SSLContext | None, *, uds: bool = False) -> Any:
    """Start a replica's server, make one call from a client; returns (result or exception, replica,
    server's authenticated connections, the client's transport extras)."""

    async def main() -> Any:
        replica = FakeReplica()
        server = ChannelServer(replica, KEY, tls=server_tls, handshake_timeout_s=2.0)
        address = await server.start("127.0.0.1", node_id="n", use_uds=uds)
        client = ChannelClient(address, KEY, tls=client_tls, local_node_id="n" if uds else "", handshake_timeout_s=2.0)
        try:
            outcome: Any = await asyncio.wait_for(client.call(call("echo", 1)), 10)
        except Exception as exc:  # noqa: BLE001 - the test looks at what was raised
            outcome = exc
        transport = client._conn.transport if client._conn is not None else None
        extras = {
            "family": transport.get_extra_info("socket").family if transport else None,
            "tls_version": transport.get_extra_info("ssl_object").version()
            if transport and transport.get_extra_info("ssl_object") else None,
        }
        authenticated = [c for c in server._connections if c._phase.name == "AUTHENTICATED"]
        client.close()
        server.abort()
        return outcome, replica, authenticated, extras

    return asyncio.run(main())


# -- Ray's settings, read as Ray reads them ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "0", "false", "no"])
def test_without_rays_tls_the_channel_has_none(value: str | None):
    env = {} if value is None else {tls.USE_TLS_ENV: value, tls.CERT_ENV: "c", tls.KEY_ENV: "k", tls.CA_ENV: "a"}
    assert tls.tls_config(env) is None


@pytest.mark.parametrize("value", ["1", "true", "True", "TRUE"])
def test_rays_tls_on_gives_rays_three_files(value: str):
    env = {tls.USE_TLS_ENV: value, tls.CERT_ENV: "/c.pem", tls.KEY_ENV: "/k.pem", tls.CA_ENV: "/ca.pem"}
    assert tls.tls_config(env) == tls.TLSConfig(cert="/c.pem", key="/k.pem", ca="/ca.pem")


def test_rays_tls_on_without_its_files_names_each_missing_variable():
    with pytest.raises(tls.TLSConfigError, match="RAY_TLS_SERVER_KEY, RAY_TLS_CA_CERT are not set"):
        tls.tls_config({tls.USE_TLS_ENV: "1", tls.CERT_ENV: "/c.pem"})


def test_a_missing_certificate_file_is_named_by_its_variable(certs: Path, tmp_path: Path):
    missing = str(tmp_path / "nowhere.crt")
    with pytest.raises(tls.TLSConfigError, match=f"RAY_TLS_SERVER_CERT='{missing}': no such file"):
        tls.server_context(tls.TLSConfig(cert=missing, key=str(certs / "node.key"), ca=str(certs / "ca.crt")))
    with pytest.raises(tls.TLSConfigError, match="RAY_TLS_CA_CERT=.* is not a readable PEM CA certificate"):
        tls.client_context(tls.TLSConfig(cert=str(certs / "node.crt"), key=str(certs / "node.key"), ca=missing))


def test_a_ca_file_that_is_not_a_certificate_and_a_key_of_another_certificate_are_named(certs: Path, tmp_path: Path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    node = config_of(certs)
    with pytest.raises(tls.TLSConfigError, match="RAY_TLS_CA_CERT="):
        tls.server_context(tls.TLSConfig(cert=node.cert, key=node.key, ca=str(garbage)))
    with pytest.raises(tls.TLSConfigError, match="RAY_TLS_SERVER_CERT=.* and RAY_TLS_SERVER_KEY=.* are not a matching"):
        tls.server_context(tls.TLSConfig(cert=node.cert, key=str(certs / "rogue.key"), ca=node.ca))


def test_the_process_contexts_follow_its_environment_and_are_built_once(certs: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(tls.USE_TLS_ENV, raising=False)
    assert tls.server_context_from_env() is None and tls.client_context_from_env() is None
    for name, value in env_of(certs).items():
        monkeypatch.setenv(name, value)
    server, client = tls.server_context_from_env(), tls.client_context_from_env()
    assert server is not None and client is not None and server is not client
    assert server.verify_mode == client.verify_mode == ssl.CERT_REQUIRED
    assert server.minimum_version == client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls.server_context_from_env() is server and tls.client_context_from_env() is client


# -- the channel over TLS ---------------------------------------------------------------------------------------


def test_a_caller_with_the_clusters_certificate_is_served_over_tls(certs: Path):
    config = config_of(certs)
    outcome, replica, authenticated, extras = serve_and_call(tls.server_context(config), tls.client_context(config))
    assert outcome == ((1,), {})
    assert extras["family"] == socket.AF_INET and extras["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert len(authenticated) == 1


def test_a_caller_without_a_certificate_is_refused_before_the_replica_reads_a_frame(certs: Path):
    config = config_of(certs)
    no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    no_cert.check_hostname = False
    no_cert.load_verify_locations(config.ca)  # it trusts the replica, but has nothing to show
    outcome, replica, authenticated, _ = serve_and_call(tls.server_context(config), no_cert)
    assert isinstance(outcome, (NotSent, ReplicaUnavailableError))
    assert replica.requests == [] and authenticated == []


def test_a_caller_with_another_cas_certificate_is_refused(certs: Path):
    outcome, replica, authenticated, _ = serve_and_call(
        tls.server_context(config_of(certs)), tls.client_context(config_of(certs, cert="rogue", ca="ca"))
    )
    assert isinstance(outcome, (NotSent, ReplicaUnavailableError))
    assert replica.requests == [] and authenticated == []


def test_a_caller_in_clear_text_is_refused(certs: Path):
    outcome, replica, authenticated, _ = serve_and_call(tls.server_context(config_of(certs)), None)
    assert isinstance(outcome, (NotSent, ReplicaUnavailableError))
    assert replica.requests == [] and authenticated == []


def test_a_caller_refuses_a_replica_whose_certificate_the_ca_did_not_sign(certs: Path):
    outcome, replica, authenticated, _ = serve_and_call(
        tls.server_context(config_of(certs, cert="rogue", ca="ca")), tls.client_context(config_of(certs))
    )
    assert isinstance(outcome, ReplicaUnavailableError) and "TLS with the replica" in str(outcome)
    assert "RAY_TLS_CA_CERT" in str(outcome)
    assert replica.requests == [] and authenticated == []


def test_a_caller_on_the_same_node_uses_the_unix_socket_without_tls(certs: Path):
    config = config_of(certs)
    outcome, _, authenticated, extras = serve_and_call(tls.server_context(config), tls.client_context(config), uds=True)
    assert outcome == ((1,), {})
    assert extras == {"family": socket.AF_UNIX, "tls_version": None} and len(authenticated) == 1
