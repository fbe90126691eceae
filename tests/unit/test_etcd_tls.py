"""etcd over https: the environment's CA checks etcd's certificate, a client certificate logs in."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dockship.config import EtcdSettings, parse
from dockship.errors import ConfigError, DockshipError
from dockship.etcd import Etcd
from dockship_lab.paths import LabPaths
from dockship_lab.tls import ensure_tls

import etcdkit


def _issue(ca_cert: Path, ca_key: Path, out: Path, name: str) -> tuple[Path, Path]:
    """A certificate from the test CA for 127.0.0.1, good for server and client auth: etcd's
    JSON gateway dials etcd itself with the server's certificate, as a client."""
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(signer, hashes.SHA256()))
    (out / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return out / f"{name}.crt", out / f"{name}.key"


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("etcd-tls")
    files = ensure_tls(LabPaths(root=tmp, run=tmp / "run", cache=tmp / "cache", subnet="10.99.0"))
    cert, key = _issue(files.ca_cert, files.ca_key, tmp, "client")
    server_cert, server_key = _issue(files.ca_cert, files.ca_key, tmp, "server")
    flags = ["--cert-file", str(server_cert), "--key-file", str(server_key),
             "--trusted-ca-file", str(files.ca_cert), "--client-cert-auth"]

    def ready(url: str) -> bool:
        try:
            with Etcd(url, total=1, ca=files.ca_cert, cert=cert, key=key) as etcd:
                etcd.status()
            return True
        except DockshipError:
            return False

    proc, url = etcdkit.start(tmp, tls=flags, ready=ready)
    try:
        yield url, files.ca_cert, cert, key
    finally:
        etcdkit.stop(proc)


def test_with_the_ca_and_a_client_certificate_etcd_answers(tls_etcd):
    url, ca, cert, key = tls_etcd
    with Etcd.of(EtcdSettings(url=url, prefix="/p", ca=ca, cert=cert, key=key)) as etcd:
        etcd.put(b"/p/node1", b"{}")
        assert [e.key for e in etcd.get_prefix(b"/p/")] == [b"/p/node1"]


def test_without_the_ca_the_certificate_is_refused_in_one_line(tls_etcd):
    url, _, cert, key = tls_etcd
    with pytest.raises(DockshipError) as info, Etcd(url, cert=cert, key=key) as etcd:
        etcd.status()
    assert str(info.value).startswith(f"etcd {url} did not answer (TLS failed: ")
    assert "\n" not in str(info.value)


def test_without_a_client_certificate_etcd_refuses(tls_etcd):
    url, ca, _, _ = tls_etcd
    with pytest.raises(DockshipError) as info, Etcd(url, ca=ca) as etcd:
        etcd.status()
    assert str(info.value).startswith(f"etcd {url} did not answer (")


def _etcd_config(tmp: Path, **etcd) -> EtcdSettings:
    for name in ("ca.pem", "c.pem", "k.pem"):
        (tmp / name).write_text("x")
    return parse({"index": {"url": "http://127.0.0.1:8081/simple/"},
                  "registry": {"url": "127.0.0.1:5000"},
                  "environments": {"stage": {"etcd": etcd}}}, base_dir=tmp).environment("stage").etcd


def test_the_tls_files_are_paths_beside_the_config(tmp_path):
    etcd = _etcd_config(tmp_path, url="https://etcd.example.com:2379", ca="ca.pem", cert="c.pem",
                        key="k.pem")
    assert (etcd.ca, etcd.cert, etcd.key) == (tmp_path / "ca.pem", tmp_path / "c.pem",
                                              tmp_path / "k.pem")


@pytest.mark.parametrize("etcd, expected", [
    ({"url": "http://127.0.0.1:2379", "ca": "ca.pem"},
     "environments.stage.etcd.ca: is for TLS, and url 'http://127.0.0.1:2379' is http://"),
    ({"url": "https://h:2379", "cert": "c.pem"},
     "environments.stage.etcd.key: missing: etcd.cert is given"),
    ({"url": "https://h:2379", "ca": "nope.pem"},
     "environments.stage.etcd.ca: "),
])
def test_bad_tls_settings_are_refused_with_their_key_path(tmp_path, etcd, expected):
    with pytest.raises(ConfigError) as info:
        _etcd_config(tmp_path, **etcd)
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems
