"""The lab's certificate authority and the registry's server certificate.

Engines want TLS for a registry that is not on loopback. The lab makes its
own CA (kept in `root/tls`, reused while valid), issues the registry a
certificate with the host's lab address in its IP SAN, and installs the CA
where every engine on the host looks for it, `/etc/docker/certs.d/ADDR:PORT/`
(honoured at once, no engine restart). HTTP clients of the registry API use
the same CA file as their bundle.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dockship_lab.paths import LabPaths, write_file

CERTS_D = Path("/etc/docker/certs.d")
CA_DAYS = 3650
SERVER_DAYS = 825
_RENEW_BEFORE = dt.timedelta(days=2)


@dataclass(frozen=True)
class LabTLS:
    ca_cert: Path      # also the CA bundle for HTTP clients
    ca_key: Path
    cert: Path         # server certificate for the host's lab address
    key: Path

    @property
    def bundle(self) -> Path:
        return self.ca_cert

    def fingerprint(self) -> str:
        """SHA-256 of the server certificate: changes whenever it is re-issued."""
        cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        return cert.fingerprint(hashes.SHA256()).hex()


def tls_files(paths: LabPaths) -> LabTLS:
    d = paths.root / "tls"
    return LabTLS(ca_cert=d / "ca.crt", ca_key=d / "ca.key", cert=d / "server.crt", key=d / "server.key")


def ensure_tls(paths: LabPaths) -> LabTLS:
    """The lab CA (reused if valid) and a server cert for paths.host_address (reissued if needed)."""
    files = tls_files(paths)
    files.ca_cert.parent.mkdir(parents=True, exist_ok=True)
    ca = _load_ca(files)
    if ca is None:
        ca = _new_ca(files)
    ca_cert, ca_key = ca
    if not _server_cert_ok(files, ca_cert, paths.host_address):
        _new_server_cert(files, ca_cert, ca_key, paths.host_address)
    return files


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _valid_for_a_while(cert: x509.Certificate) -> bool:
    now = _now()
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - now > _RENEW_BEFORE


def _load_ca(files: LabTLS) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _valid_for_a_while(cert):
        return None
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        return None
    return cert, key


def _new_ca(files: LabTLS) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dockship lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "dockship lab CA")])
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(files.ca_key, key)
    write_file(files.ca_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    # A new CA invalidates the old server certificate.
    files.cert.unlink(missing_ok=True)
    return cert, key


def _server_cert_ok(files: LabTLS, ca: x509.Certificate, address: str) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    if ipaddress.ip_address(address) not in san.get_values_for_type(x509.IPAddress):
        return False
    if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        return False
    return _valid_for_a_while(cert)


def _new_server_cert(files: LabTLS, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                     address: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    san = x509.SubjectAlternativeName([
        x509.IPAddress(ipaddress.ip_address(address)),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("localhost"),
    ])
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dockship lab"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, address)]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca.public_key()), critical=False)  # type: ignore[arg-type]
            .sign(ca_key, hashes.SHA256()))
    _write_key(files.key, key)
    write_file(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_file(path, pem, 0o600)


# --- /etc/docker/certs.d -----------------------------------------------------

def certs_d_dir(host: str, port: int) -> Path:
    return CERTS_D / f"{host}:{port}"


def install_registry_ca(tls: LabTLS, host: str, ports: Iterable[int]) -> list[Path]:
    """Make every engine on this host trust the lab CA for host:port (no restart needed)."""
    data = tls.ca_cert.read_bytes()
    written = []
    for port in ports:
        d = certs_d_dir(host, port)
        d.mkdir(parents=True, exist_ok=True)
        target = d / "ca.crt"
        if not target.exists() or target.read_bytes() != data:
            write_file(target, data, 0o644)
        written.append(target)
    return written


def remove_registry_ca(host: str, ports: Iterable[int]) -> None:
    """Remove the certs.d entries `install_registry_ca` wrote (and their dirs if left empty)."""
    for port in ports:
        d = certs_d_dir(host, port)
        (d / "ca.crt").unlink(missing_ok=True)
        (d / ".ca.crt.tmp").unlink(missing_ok=True)
        try:
            d.rmdir()
        except OSError:
            pass  # absent, or holds files someone else put there
