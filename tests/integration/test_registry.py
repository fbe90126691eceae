"""RegistryClient against real registries (Debian's docker-registry, distribution 2.8).

Four registries run for this module, all on 127.0.0.1:
  open   — plain http, no auth; images are pushed to it by the real Docker engine;
  basic  — plain http, htpasswd (bcrypt) auth; images pushed with credentials;
  tls    — https with a certificate from a CA made here, sharing open's storage;
  token  — plain http, Bearer tokens from a token service run by this module
           over https (JWT signed with a key whose certificate the registry
           trusts), also sharing open's storage. Design §8: credentials go to
           a realm only over https or at the registry's own origin, so the
           token service speaks https with the module's CA (REQUESTS_CA_BUNDLE).
Nothing is mocked: the engine pushes, the registries answer.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import docker
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from dockship.credentials import Credentials, registry_credentials
from dockship.errors import DockshipError, Unreachable, UsageError
from dockship.registry import ImageNotFound, RegistryClient

pytestmark = pytest.mark.lab

USER = "deployer"
PASSWORD = "Corr3ct-horse-battery"
WRONG = "wr0ng-Password-here"
REPO = "dockship-test/tiny"
SECRETS = (PASSWORD, WRONG,
           base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
           base64.b64encode(f"{USER}:{WRONG}".encode()).decode())


def assert_secret_free(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"a secret leaked into: {text}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- registries -------------------------------------------------------------

@dataclass
class Registry:
    """One `docker-registry serve` process, stopped by stop()."""

    workdir: Path
    name: str
    storage: Path
    auth: dict | None = None
    tls: tuple[Path, Path] | None = None
    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Registry:
        if shutil.which("docker-registry") is None:
            pytest.fail("docker-registry is not installed (Debian package docker-registry)")
        self.port = free_port()
        http: dict = {"addr": self.address, "secret": uuid.uuid4().hex}
        if self.tls:
            http["tls"] = {"certificate": str(self.tls[0]), "key": str(self.tls[1])}
        config = {
            "version": "0.1",
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)},
                        "delete": {"enabled": True}},
            "http": http,
        }
        if self.auth:
            config["auth"] = self.auth
        path = self.workdir / f"{self.name}.yml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.log = self.workdir / f"{self.name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["docker-registry", "serve", str(path)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"registry {self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"registry {self.name} did not listen: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def make_ca(workdir: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.crt, server.crt, server.key)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dockship test CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                              critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = workdir / "ca.crt", workdir / "server.crt", workdir / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


# -- a token service (Docker registry token authentication) ----------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """Issues RS256 JWTs the registry accepts: full access for USER/PASSWORD,
    no access for anonymous callers, 401 for a wrong password."""

    issuer = "dockship-test-issuer"
    service = "dockship-test-registry"

    def __init__(self, workdir: Path, tls: tuple[Path, Path] | None = None):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dockship test token issuer")])
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .sign(self.key, hashes.SHA256()))
        self.bundle = workdir / "token-root.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.requests: list[dict] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                service.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def realm(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}/token"

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        query = parse_qs(urlsplit(req.path).query)
        auth = req.headers.get("Authorization", "")
        user = None
        if auth.startswith("Basic "):
            name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if (name, password) != (USER, PASSWORD):
                self.requests.append({"user": name, "scope": query.get("scope", []), "ok": False})
                return self._send(req, 401, {"errors": [{"code": "UNAUTHORIZED",
                                                         "message": "authentication failed"}]})
            user = name
        scopes = query.get("scope", [])
        self.requests.append({"user": user, "scope": scopes, "ok": True})
        access = []
        for scope in scopes if user else []:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        token = self.sign({"iss": self.issuer, "sub": user or "", "aud": self.service,
                           "exp": int(time.time()) + 300, "nbf": int(time.time()) - 10,
                           "iat": int(time.time()), "jti": uuid.uuid4().hex, "access": access})
        self._send(req, 200, {"token": token, "access_token": token, "expires_in": 300})

    def sign(self, claims: dict) -> str:
        header = {"typ": "JWT", "alg": "RS256",
                  "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- images, pushed by the real engine ---------------------------------------------

class PushFailed(Exception):
    pass


def push(engine: docker.DockerClient, repository: str, tag: str,
         auth_config: dict | None = None) -> str:
    """Push repository:tag; every chunk is checked for an error; returns the pushed digest."""
    digest = None
    stream = engine.api.push(repository, tag=tag, stream=True, decode=True,
                             auth_config=auth_config if auth_config is not None else {})
    for chunk in stream:
        if "error" in chunk or "errorDetail" in chunk:
            raise PushFailed(chunk.get("error") or chunk["errorDetail"].get("message"))
        aux = chunk.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            digest = aux["Digest"]
    assert digest, f"push of {repository}:{tag} reported no digest"
    return digest


def import_image(engine: docker.DockerClient, labels: dict[str, str]) -> str:
    """A one-file image from a tar (no base image is needed), with labels; returns its id."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = f"dockship test {uuid.uuid4()}\n".encode()
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, io.BytesIO(data))
    changes = [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in labels.items()]
    answer = engine.api.import_image_from_data(buf.getvalue(), changes=changes)
    status = json.loads(answer.strip().splitlines()[-1]) if isinstance(answer, str) else answer
    if "error" in status:
        raise PushFailed(status["error"])
    return status["status"]


@dataclass
class Registries:
    engine: docker.DockerClient
    open: Registry
    basic: Registry
    tls: Registry
    token: Registry
    tokens: TokenService
    ca: Path
    image_a: str
    image_b: str
    labels_a: dict[str, str]
    labels_b: dict[str, str]
    digests: dict[str, str]           # "open:TAG" / "basic:TAG" -> pushed digest
    many_tags: list[str]


@pytest.fixture(scope="module")
def regs(tmp_path_factory) -> Registries:
    workdir = tmp_path_factory.mktemp("registries")
    engine = docker.from_env()
    try:
        engine.ping()
    except Exception as exc:  # noqa: BLE001 - say why the lab is missing
        pytest.fail(f"no Docker engine: {exc}")
    storage = workdir / "storage"
    storage.mkdir()
    htpasswd = workdir / "htpasswd"
    htpasswd.write_text(subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True,
                                       capture_output=True, text=True).stdout)
    ca, cert, key = make_ca(workdir)
    tokens = TokenService(workdir, tls=(cert, key))
    started: list[Registry] = []
    images: list[str] = []
    try:
        open_ = Registry(workdir, "open", storage).start()
        started.append(open_)
        basic = Registry(workdir, "basic", workdir / "basic-storage",
                         auth={"htpasswd": {"realm": "dockship-test", "path": str(htpasswd)}}).start()
        started.append(basic)
        tls = Registry(workdir, "tls", storage, tls=(cert, key)).start()
        started.append(tls)
        token = Registry(workdir, "token", storage, auth={"token": {
            "realm": tokens.realm, "service": TokenService.service, "issuer": TokenService.issuer,
            "rootcertbundle": str(tokens.bundle)}}).start()
        started.append(token)

        marker = uuid.uuid4().hex[:8]
        labels_a = {"a": "b", "variant": "one", "dockship.test": marker,
                    "with space": "x y"}
        labels_b = {"a": "b", "variant": "two", "dockship.test": marker}
        image_a = import_image(engine, labels_a)
        image_b = import_image(engine, labels_b)
        images += [image_a, image_b]

        digests = {}
        many_tags = [f"1.{i}.0" for i in range(7)]
        for tag, image in [("a", image_a), ("b", image_b)] + [(t, image_a) for t in many_tags]:
            engine.api.tag(image, f"{open_.address}/{REPO}", tag)
            digests[f"open:{tag}"] = push(engine, f"{open_.address}/{REPO}", tag)
        auth = registry_credentials(basic.address, environ={"DOCKSHIP_REGISTRY_USER": USER,
                                                            "DOCKSHIP_REGISTRY_PASSWORD": PASSWORD})
        for tag, image in [("a", image_a), ("b", image_b)]:
            engine.api.tag(image, f"{basic.address}/{REPO}", tag)
            digests[f"basic:{tag}"] = push(engine, f"{basic.address}/{REPO}", tag,
                                           auth_config=auth.as_auth_config())
        yield Registries(engine, open_, basic, tls, token, tokens, ca, image_a, image_b,
                  labels_a, labels_b, digests, many_tags)
    finally:
        for image in images:
            try:
                engine.images.remove(image, force=True)
            except docker.errors.APIError:
                pass
        for registry in started:
            registry.stop()
        tokens.stop()
        engine.close()


# -- open registry ------------------------------------------------------------------

def test_ping_falls_back_to_http_on_loopback(regs):
    client = RegistryClient(regs.open.address)
    client.ping()
    assert client.scheme == "http"


def test_manifest_digest_is_the_pushed_digest(regs):
    client = RegistryClient(regs.open.address)
    assert client.manifest_digest(REPO, "a") == regs.digests["open:a"]
    assert client.manifest_digest(REPO, "b") == regs.digests["open:b"]
    assert regs.digests["open:a"] != regs.digests["open:b"]
    # The engine records the same digest.
    repo_digests = regs.engine.images.get(regs.image_a).attrs["RepoDigests"]
    assert f"{regs.open.address}/{REPO}@{regs.digests['open:a']}" in repo_digests


def test_manifest_digest_of_absent_tag_or_repository_is_none(regs):
    client = RegistryClient(regs.open.address)
    assert client.manifest_digest(REPO, "9.9.9") is None
    assert client.manifest_digest("no/such-repo", "a") is None


def test_tags_with_more_tags_than_page_size(regs):
    client = RegistryClient(regs.open.address)
    expected = sorted(["a", "b", *regs.many_tags])
    assert client.tags(REPO, page_size=3) == expected
    assert client.tags(REPO, page_size=1) == expected
    assert client.tags(REPO) == expected


def test_tags_of_unknown_repository_is_empty(regs):
    assert RegistryClient(regs.open.address).tags("no/such-repo") == []


def test_image_labels(regs):
    client = RegistryClient(regs.open.address)
    assert client.image_labels(REPO, "a") == regs.labels_a
    assert client.image_labels(REPO, "b") == regs.labels_b
    assert client.image_labels(REPO, regs.digests["open:b"]) == regs.labels_b


def test_image_labels_of_absent_image(regs):
    client = RegistryClient(regs.open.address)
    with pytest.raises(ImageNotFound, match=f"{REPO}:9.9.9 not found"):
        client.image_labels(REPO, "9.9.9")
    with pytest.raises(ImageNotFound):
        client.image_labels("no/such-repo", "a")


def _put_index(regs: Registries, tag: str, media_type: str, entries: list[tuple[str, str]]) -> None:
    """Put a multi-platform index naming pushed images (by tag) for (architecture, tag) pairs."""
    base = f"http://{regs.open.address}/v2/{REPO}/manifests"
    manifests = []
    for arch, image_tag in entries:
        resp = requests.get(f"{base}/{image_tag}", timeout=10, headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        resp.raise_for_status()
        manifests.append({"mediaType": resp.headers["Content-Type"],
                          "digest": "sha256:" + hashlib.sha256(resp.content).hexdigest(),
                          "size": len(resp.content),
                          "platform": {"architecture": arch, "os": "linux"}})
    body = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests})
    resp = requests.put(f"{base}/{tag}", data=body, headers={"Content-Type": media_type}, timeout=10)
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize("media_type", [
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
])
def test_image_labels_of_a_multi_platform_index_pick_linux_amd64(regs, media_type):
    tag = "multi-" + media_type.split(".")[-1].split("+")[0].replace("/", "-")
    _put_index(regs, tag, media_type, [("arm64", "b"), ("amd64", "a")])
    client = RegistryClient(regs.open.address)
    assert client.image_labels(REPO, tag) == regs.labels_a
    assert client.manifest_digest(REPO, tag) not in (None, regs.digests["open:a"])


def test_image_labels_of_an_index_without_amd64_take_the_first(regs):
    _put_index(regs, "multi-arm", "application/vnd.docker.distribution.manifest.list.v2+json",
               [("arm64", "b"), ("s390x", "a")])
    assert RegistryClient(regs.open.address).image_labels(REPO, "multi-arm") == regs.labels_b


def test_bad_names_are_usage_errors(regs):
    client = RegistryClient(regs.open.address)
    with pytest.raises(UsageError, match="not a valid repository name"):
        client.tags("Upper/Case")
    with pytest.raises(UsageError, match="neither a valid tag nor a digest"):
        client.manifest_digest(REPO, "bad tag")
    with pytest.raises(UsageError, match="HOST\\[:PORT\\]"):
        RegistryClient(f"http://{regs.open.address}")


# -- unreachable ------------------------------------------------------------------------

def test_unreachable_port(regs):
    address = f"127.0.0.1:{free_port()}"
    client = RegistryClient(address, credentials=Credentials(USER, PASSWORD), timeout=3)
    for call in (client.ping, lambda: client.manifest_digest(REPO, "a"), lambda: client.tags(REPO)):
        with pytest.raises(Unreachable) as info:
            call()
        message = str(info.value)
        assert message == f"registry {address} did not answer (connection refused)"
        assert_secret_free(message, repr(info.value), repr(client))


def test_unreachable_when_the_registry_stops_mid_session(regs, tmp_path):
    registry = Registry(tmp_path, "short-lived", tmp_path / "s").start()
    client = RegistryClient(registry.address, timeout=3)
    client.ping()
    registry.stop()
    with pytest.raises(Unreachable, match=f"registry {registry.address} did not answer "):
        client.tags(REPO)


# -- htpasswd (Basic) -------------------------------------------------------------------------

def test_basic_without_credentials_is_a_usage_error(regs):
    client = RegistryClient(regs.basic.address)
    for call in (client.ping, lambda: client.manifest_digest(REPO, "a")):
        with pytest.raises(UsageError) as info:
            call()
        message = str(info.value)
        assert "needs credentials" in message
        assert "DOCKSHIP_REGISTRY_USER" in message and "docker login" in message
        assert "\n" not in message


def test_basic_with_wrong_password_is_a_usage_error_without_the_secret(regs):
    creds = Credentials(USER, WRONG, source="test")
    client = RegistryClient(regs.basic.address, credentials=creds)
    for call in (client.ping, lambda: client.tags(REPO), lambda: client.image_labels(REPO, "a")):
        with pytest.raises(UsageError) as info:
            call()
        assert "rejected the credentials" in str(info.value)
        assert USER in str(info.value)
        assert_secret_free(str(info.value), repr(info.value), repr(client), repr(creds))


def test_basic_with_right_credentials(regs):
    creds = registry_credentials(regs.basic.address, environ={"DOCKSHIP_REGISTRY_USER": USER,
                                                             "DOCKSHIP_REGISTRY_PASSWORD": PASSWORD})
    client = RegistryClient(regs.basic.address, credentials=creds)
    client.ping()
    assert client.manifest_digest(REPO, "a") == regs.digests["basic:a"]
    assert client.manifest_digest(REPO, "b") == regs.digests["basic:b"]
    assert client.manifest_digest(REPO, "nope") is None
    assert client.tags(REPO, page_size=1) == ["a", "b"]
    assert client.image_labels(REPO, "a") == regs.labels_a
    assert_secret_free(repr(client))


def test_basic_credentials_from_docker_config(regs, tmp_path):
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {f"http://{regs.basic.address}":
                                                                {"auth": auth}}}))
    creds = registry_credentials(regs.basic.address, environ={"DOCKER_CONFIG": str(tmp_path)})
    RegistryClient(regs.basic.address, credentials=creds).ping()


def test_docker_push_without_credentials_fails_inside_the_stream(regs):
    """How docker-py reports a refused push: no exception, an error chunk in the stream."""
    with pytest.raises(PushFailed) as info:
        push(regs.engine, f"{regs.basic.address}/{REPO}", "a")
    assert "basic auth credentials" in str(info.value) or "unauthorized" in str(info.value)
    with pytest.raises(PushFailed) as info:
        push(regs.engine, f"{regs.basic.address}/{REPO}", "a",
             auth_config=Credentials(USER, WRONG).as_auth_config())
    assert_secret_free(str(info.value))


# -- TLS ----------------------------------------------------------------------------------------

def test_tls_with_ca_bundle(regs):
    client = RegistryClient(regs.tls.address, ca_bundle=str(regs.ca))
    client.ping()
    assert client.scheme == "https"
    assert client.manifest_digest(REPO, "a") == regs.digests["open:a"]


def test_tls_with_the_docker_certs_d_convention(regs, tmp_path):
    (tmp_path / regs.tls.address).mkdir()
    shutil.copy(regs.ca, tmp_path / regs.tls.address / "ca.crt")
    client = RegistryClient(regs.tls.address, certs_dir=tmp_path)
    assert client.image_labels(REPO, "a") == regs.labels_a
    assert client.scheme == "https"


def test_tls_untrusted_certificate_is_not_downgraded_to_http(regs, tmp_path):
    client = RegistryClient(regs.tls.address, certs_dir=tmp_path)
    with pytest.raises(UsageError) as info:
        client.ping()
    message = str(info.value)
    assert "TLS certificate not trusted" in message
    assert str(tmp_path / regs.tls.address / "ca.crt") in message
    assert client.scheme is None


def test_missing_ca_bundle_file_is_a_usage_error(regs, tmp_path):
    with pytest.raises(UsageError, match="is not a file"):
        RegistryClient(regs.tls.address, ca_bundle=str(tmp_path / "nope.crt"))


# -- Bearer tokens ----------------------------------------------------------------------------------

@pytest.fixture
def trust_ca(regs, monkeypatch):
    """The token service's certificate is signed by the module's CA."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(regs.ca))


def test_token_auth_with_right_credentials_and_token_cache(regs, trust_ca):
    regs.tokens.requests.clear()
    client = RegistryClient(regs.token.address, credentials=Credentials(USER, PASSWORD))
    client.ping()
    assert client.manifest_digest(REPO, "a") == regs.digests["open:a"]
    assert client.manifest_digest(REPO, "nope") is None
    assert client.tags(REPO) == sorted(["a", "b", *regs.many_tags, *_index_tags(regs)])
    assert client.image_labels(REPO, "b") == regs.labels_b
    scopes = [tuple(r["scope"]) for r in regs.tokens.requests]
    # One token for /v2/ and one for the repository, then the cache answers.
    assert scopes == [(), (f"repository:{REPO}:pull",)]
    assert all(r["user"] == USER for r in regs.tokens.requests)


def _index_tags(regs: Registries) -> list[str]:
    # Tags other tests of this module may have added to the shared storage.
    return [t for t in RegistryClient(regs.open.address).tags(REPO) if t.startswith("multi-")]


def test_token_auth_without_credentials(regs, trust_ca):
    client = RegistryClient(regs.token.address)
    client.ping()  # anonymous tokens are enough for /v2/, as on Docker Hub
    with pytest.raises(UsageError, match="needs credentials.*DOCKSHIP_REGISTRY_USER"):
        client.manifest_digest(REPO, "a")


def test_token_auth_with_wrong_password(regs, trust_ca):
    creds = Credentials(USER, WRONG)
    client = RegistryClient(regs.token.address, credentials=creds)
    with pytest.raises(UsageError, match="rejected the credentials") as info:
        client.tags(REPO)
    assert_secret_free(str(info.value), repr(info.value), repr(client))


def orphan_registry(regs, tmp_path, realm: str) -> Registry:
    return Registry(tmp_path, "orphan", tmp_path / "s", auth={"token": {
        "realm": realm, "service": TokenService.service,
        "issuer": TokenService.issuer, "rootcertbundle": str(regs.tokens.bundle)}}).start()


def test_token_service_unreachable(regs, tmp_path):
    port = free_port()
    registry = orphan_registry(regs, tmp_path, f"https://127.0.0.1:{port}/token")
    try:
        with pytest.raises(Unreachable, match=f"token service 127.0.0.1:{port} of registry "
                                              f"{registry.address} did not answer \\(connection refused\\)"):
            RegistryClient(registry.address, credentials=Credentials(USER, PASSWORD)).ping()
    finally:
        registry.stop()


def test_credentials_never_go_to_a_plain_http_token_service_elsewhere(regs, tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))    # would take the credentials: never asked
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    registry = orphan_registry(regs, tmp_path, f"http://127.0.0.1:{port}/token")
    try:
        with pytest.raises(DockshipError, match=f"token service http://127.0.0.1:{port}/token, "
                                                "plain http on another origin") as info:
            RegistryClient(registry.address, credentials=Credentials(USER, PASSWORD)).ping()
        assert info.value.exit_code == 1
        assert_secret_free(str(info.value))
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()
        registry.stop()


# -- paging through Link headers ---------------------------------------------------------------

class PagingFront:
    """A pass-through in front of the open registry that pages /tags/list with `n` and
    `last` and a `Link: <…>; rel="next"` header, as the spec and distribution ≥ 3 do
    (distribution 2.8 ignores `n`, so it alone cannot show that paging is followed)."""

    def __init__(self, upstream: str):
        front = self
        self.pages: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                front.handle(self, upstream)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def handle(self, req: BaseHTTPRequestHandler, upstream: str) -> None:
        url = urlsplit(req.path)
        resp = requests.get(f"http://{upstream}{url.path}", timeout=10)
        body, headers = resp.content, {}
        if url.path.endswith("/tags/list") and resp.status_code == 200:
            self.pages.append(req.path)
            query = parse_qs(url.query)
            tags = sorted(resp.json()["tags"])
            if "last" in query:
                tags = [t for t in tags if t > query["last"][0]]
            n = int(query["n"][0]) if "n" in query else len(tags)
            page, more = tags[:n], len(tags) > n
            body = json.dumps({"name": resp.json()["name"], "tags": page}).encode()
            if more:
                headers["Link"] = f'<{url.path}?n={n}&last={page[-1]}>; rel="next"'
        req.send_response(resp.status_code)
        req.send_header("Content-Type", resp.headers.get("Content-Type", "application/json"))
        req.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            req.send_header(k, v)
        req.end_headers()
        req.wfile.write(body)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_tags_follow_link_pages(regs):
    front = PagingFront(regs.open.address)
    try:
        client = RegistryClient(front.address)
        expected = RegistryClient(regs.open.address).tags(REPO)
        assert client.tags(REPO, page_size=3) == expected
        assert len(front.pages) == -(-len(expected) // 3)  # ceil
        assert front.pages[1].endswith(f"last={expected[2]}")
    finally:
        front.stop()


def test_errors_are_one_line_dockship_errors(regs):
    client = RegistryClient(f"127.0.0.1:{free_port()}")
    with pytest.raises(DockshipError) as info:
        client.ping()
    assert "\n" not in str(info.value)
