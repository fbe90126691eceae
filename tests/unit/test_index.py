"""The simple-index client against recorded pypiserver (PEP 503 HTML) and devpi (PEP 691 JSON) answers.

The recorded answers in data/index/ are replayed by a real HTTP server on
127.0.0.1 (see data/index/README.md for how they were recorded); the `lab`
test at the end runs the client against a live pypiserver.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from packaging.version import Version

from dockship.errors import Unreachable, UsageError
from dockship.index import (
    ACCEPT,
    IndexClient,
    PackageFile,
    parse_filename,
    parse_project_list,
    parse_project_page,
    release_digest,
)

# ---------------------------------------------------------------------------
# Tiny, installable distributions, made with the standard library only (no
# build backend, no network). Also used by data/index/record.py.


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_wheel(directory: Path, name: str, version: str, *, filename_name: str | None = None) -> Path:
    """A pure-Python wheel of `name` `version` with a console script named like the package.

    `filename_name` overrides the name part of the file name (to make legacy,
    unescaped names such as ``hello-svc-1.0-py3-none-any.whl``).
    """
    module = name.replace("-", "_").replace(".", "_").lower()
    dist = name.replace("-", "_").replace(".", "_")
    distinfo = f"{dist}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f'"""{name} {version}, made for dockship tests."""\n\n'
                                 f'__version__ = "{version}"\n\n\ndef main():\n'
                                 f'    print("{name} {version}")\n',
        f"{distinfo}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                f"Requires-Python: >=3.8\n",
        f"{distinfo}/WHEEL": "Wheel-Version: 1.0\nGenerator: dockship-tests\nRoot-Is-Purelib: true\n"
                             "Tag: py3-none-any\n",
        f"{distinfo}/entry_points.txt": f"[console_scripts]\n{name} = {module}:main\n",
    }
    record = "".join(f"{path},{_record_hash(text.encode())},{len(text.encode())}\n"
                     for path, text in files.items()) + f"{distinfo}/RECORD,,\n"
    files[f"{distinfo}/RECORD"] = record
    out = directory / f"{filename_name or dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, text in files.items():
            info = zipfile.ZipInfo(path, date_time=(2024, 1, 1, 0, 0, 0))
            zf.writestr(info, text)
    return out


def write_sdist(directory: Path, name: str, version: str, *, filename_name: str | None = None) -> Path:
    """A source distribution (``.tar.gz``) of `name` `version`, buildable with setuptools."""
    base = f"{filename_name or name.replace('-', '_').replace('.', '_')}-{version}"
    module = name.replace("-", "_").replace(".", "_").lower()
    files = {
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        "pyproject.toml": "[build-system]\nrequires = [\"setuptools\"]\nbuild-backend = \"setuptools.build_meta\"\n\n"
                          f"[project]\nname = \"{name}\"\nversion = \"{version}\"\n\n"
                          f"[project.scripts]\n\"{name}\" = \"{module}:main\"\n",
        f"{module}/__init__.py": f'def main():\n    print("{name} {version}")\n',
    }
    out = directory / f"{base}.tar.gz"
    with gzip.GzipFile(out, "wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tf:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{base}/{path}")
            info.size, info.mtime, info.mode = len(data), 1704067200, 0o644
            tf.addfile(info, io.BytesIO(data))
    return out



# ---------------------------------------------------------------------------
# Replaying recorded answers from a real HTTP server on 127.0.0.1

DATA = Path(__file__).parent / "data" / "index"
PYPISERVER_ROOT = "/simple"            # given without the trailing slash on purpose
DEVPI_ROOT = "/root/dev/+simple/"
#: every recorded server that lists hello-svc, and its index path
HELLO_SITES = [("pypiserver", PYPISERVER_ROOT), ("devpi", DEVPI_ROOT), ("devpi-html", DEVPI_ROOT),
               ("devpi-v1html", DEVPI_ROOT)]
FULL_SITES = [("pypiserver", PYPISERVER_ROOT), ("devpi", DEVPI_ROOT)]
YANKED_SITES = [("pypiserver-edited-yanked", PYPISERVER_ROOT), ("devpi-edited-yanked", DEVPI_ROOT)]

Route = tuple[int, dict[str, str], bytes]


class ReplayServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReplayHandler)
        self.origin = f"http://127.0.0.1:{self.server_address[1]}"
        self.routes: dict[str, Route | Callable[[], Route]] = {}
        self.seen: list[tuple[str, str | None]] = []   # (path, Accept)

    def load(self, site: str) -> ReplayServer:
        """Serve the recorded answers of data/index/SITE/."""
        manifest = json.loads((DATA / site / "manifest.json").read_text())
        for path, entry in manifest.items():
            body = (DATA / site / entry["body"]).read_bytes()
            if not entry["body"].endswith(".bin"):
                body = body.replace(b"{origin}", self.origin.encode())
            headers = {"Content-Type": entry["content_type"]}
            if "location" in entry:
                headers["Location"] = entry["location"].replace("{origin}", self.origin)
            self.routes[path] = (entry["status"], headers, body)
        return self

    def url(self, path: str) -> str:
        return self.origin + path

    def handle_error(self, request, client_address) -> None:
        pass   # a client that timed out and hung up (the slow-index test): not worth a traceback


class _ReplayHandler(BaseHTTPRequestHandler):
    server: ReplayServer

    def do_GET(self) -> None:  # noqa: N802
        self.server.seen.append((self.path, self.headers.get("Accept")))
        route = self.server.routes.get(self.path)
        if route is None:
            route = (404, {"Content-Type": "text/plain"}, b"not recorded\n")
        elif callable(route):
            route = route()
        status, headers, body = route
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Callable[..., ReplayServer]]:
    """serve(site, ...) starts a replay server on 127.0.0.1 for the recorded sites."""
    servers: list[ReplayServer] = []

    def start(*sites: str) -> ReplayServer:
        server = ReplayServer()
        for site in sites:
            server.load(site)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def client_for(server: ReplayServer, root: str, **kwargs) -> IndexClient:
    return IndexClient(server.url(root), **kwargs)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HELLO_FILES = {
    "hello_svc-1.0.0-py3-none-any.whl": ("1.0.0", "wheel"),
    "hello_svc-1.0.0.tar.gz": ("1.0.0", "sdist"),
    "hello_svc-1.9.0-py3-none-any.whl": ("1.9.0", "wheel"),
    "hello_svc-1.10.0-py3-none-any.whl": ("1.10.0", "wheel"),
    "hello_svc-1.10.0.tar.gz": ("1.10.0", "sdist"),
    "hello_svc-2.0.0rc1-py3-none-any.whl": ("2.0.0rc1", "wheel"),
}


# ---------------------------------------------------------------------------
# File names


@pytest.mark.parametrize(("filename", "project", "expected"), [
    ("hello_svc-1.0.0-py3-none-any.whl", "hello-svc", ("1.0.0", "wheel")),
    ("hello-svc-1.0.0-py3-none-any.whl", "hello-svc", ("1.0.0", "wheel")),      # unescaped legacy wheel name
    ("Hello_Svc-1.0.0-py3-none-any.whl", "hello.svc", ("1.0.0", "wheel")),
    ("hello_svc-1.0.0-2-py3-none-any.whl", "hello-svc", ("1.0.0", "wheel")),    # build tag
    ("hello_svc-1.0.0+abc.1-py3-none-any.whl", "hello-svc", ("1.0.0+abc.1", "wheel")),
    ("hello_svc-1!2.0-cp312-cp312-manylinux_2_17_x86_64.whl", "hello-svc", ("1!2.0", "wheel")),
    ("hello_svc-1.0.0.tar.gz", "hello-svc", ("1.0.0", "sdist")),
    ("hello-svc-1.0.0.tar.gz", "Hello_Svc", ("1.0.0", "sdist")),
    ("hello-svc-1.0.0.zip", "hello-svc", ("1.0.0", "sdist")),
    ("hello-svc-1.0.0.tar.bz2", "hello-svc", ("1.0.0", "sdist")),
    ("HELLO-SVC-1.0.0.TAR.GZ", "hello-svc", ("1.0.0", "sdist")),
    ("legacy-name-1.0-1.tar.gz", "legacy-name", ("1.0.post1", "sdist")),      # legacy post release
    ("Zope.Thing-3.0.tar.gz", "zope-thing", ("3.0", "sdist")),
    ("hello_svc-2.0.0rc1-py3-none-any.whl", "hello-svc", ("2.0.0rc1", "wheel")),
])
def test_parse_filename_reads_version_and_kind(filename, project, expected):
    version, kind = parse_filename(filename, project)
    assert (str(version), kind) == (str(Version(expected[0])), expected[1])


@pytest.mark.parametrize(("filename", "project"), [
    ("hello_svc-extra-1.0.0.tar.gz", "hello-svc"),          # another project
    ("hello_svc_extra-1.0.0-py3-none-any.whl", "hello-svc"),
    ("hello_svc-1.0.0-py3.6.egg", "hello-svc"),              # not a wheel or sdist
    ("hello_svc-1.0.0.win32.exe", "hello-svc"),
    ("hello_svc-1.0.0-py3-none-any.whl.metadata", "hello-svc"),
    ("hello_svc-1.0.0.tar.gz.asc", "hello-svc"),
    ("hello_svc-dev-snapshot.tar.gz", "hello-svc"),          # no PEP 440 version
    ("hello_svc-1.0.0-any.whl", "hello-svc"),                # too few wheel parts
    ("hello_svc-1.0.0-x1-py3-none-any.whl", "hello-svc"),    # build tag must start with a digit
    ("hello_svc.tar.gz", "hello-svc"),
])
def test_parse_filename_skips_what_is_not_a_dist_of_the_project(filename, project):
    assert parse_filename(filename, project) is None


def test_html_page_resolves_links_against_base_and_reads_attributes():
    body = b"""<!DOCTYPE html><html><head><meta name="pypi:repository-version" content="1.1">
    <base href="https://files.example.test/store/"></head><body>
    <a href="a/hello_svc-1.0-py3-none-any.whl#sha256=ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789"
       data-requires-python="&gt;=3.8,&lt;4">hello_svc-1.0-py3-none-any.whl</a>
    <a href="/x/hello_svc-1.1.tar.gz#md5=0123" data-yanked="">hello_svc-1.1.tar.gz</a>
    <a href="hello_svc-1.2%2Blocal.tar.gz">hello_svc-1.2+local.tar.gz</a>
    <a href="other-2.0.tar.gz">other-2.0.tar.gz</a>
    <a>no href</a></body></html>"""
    files = parse_project_page(body, "text/html", "http://127.0.0.1:1/simple/hello-svc/", "hello-svc")
    assert [f.filename for f in files] == ["hello_svc-1.0-py3-none-any.whl", "hello_svc-1.1.tar.gz",
                                           "hello_svc-1.2+local.tar.gz"]
    first, second, third = files
    assert first.url == "https://files.example.test/store/a/hello_svc-1.0-py3-none-any.whl"
    assert first.sha256 == "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
    assert first.requires_python == ">=3.8,<4" and not first.yanked
    assert second.url == "https://files.example.test/x/hello_svc-1.1.tar.gz"
    assert second.sha256 is None and second.yanked      # md5 only; bare data-yanked
    assert third.version == Version("1.2+local")


def test_json_page_reads_hashes_yanked_and_relative_urls():
    body = json.dumps({"meta": {"api-version": "1.1"}, "name": "hello-svc", "versions": ["1.0"], "files": [
        {"filename": "hello_svc-1.0.tar.gz", "url": "../../f/hello_svc-1.0.tar.gz",
         "hashes": {"sha256": "0" * 64}, "requires-python": "", "yanked": "bad"},
        {"filename": "hello_svc-1.0-py3-none-any.whl", "url": "https://cdn.test/hello_svc-1.0-py3-none-any.whl",
         "hashes": {}, "yanked": False},
        {"filename": "README", "url": "README", "hashes": {}},
        {"url": "no-filename"},
    ]}).encode()
    files = parse_project_page(body, "application/vnd.pypi.simple.v1+json",
                               "http://127.0.0.1:1/root/dev/+simple/hello-svc/", "hello-svc")
    assert [(f.filename, f.url, f.sha256, f.yanked, f.requires_python) for f in files] == [
        ("hello_svc-1.0.tar.gz", "http://127.0.0.1:1/root/dev/f/hello_svc-1.0.tar.gz", "0" * 64, True, None),
        ("hello_svc-1.0-py3-none-any.whl", "https://cdn.test/hello_svc-1.0-py3-none-any.whl", None, False, None),
    ]


@pytest.mark.parametrize(("body", "ctype"), [
    (b'{"meta": {"api-version": "2.0"}, "files": []}', "application/vnd.pypi.simple.v2+json"),
    (b'<html><head><meta name="pypi:repository-version" content="2.0"></head></html>', "text/html"),
])
def test_an_unknown_major_api_version_is_refused(body, ctype):
    with pytest.raises(UsageError, match=r"simple API version 2\.0"):
        parse_project_page(body, ctype, "http://127.0.0.1:1/simple/x/", "x")


def test_a_page_that_is_no_index_says_to_check_index_url():
    with pytest.raises(UsageError, match=r"Content-Type 'application/octet-stream'.*check index\.url"):
        parse_project_page(b"\x00\x01", "application/octet-stream", "http://127.0.0.1:1/simple/x/", "x")
    with pytest.raises(UsageError, match="invalid JSON"):
        parse_project_list(b"{nope", "application/json", "http://127.0.0.1:1/simple/")


def test_release_digest_is_order_independent_and_content_sensitive():
    a = PackageFile("a-1.0.tar.gz", "http://h/a", Version("1.0"), "1" * 64, False, None, "sdist")
    b = PackageFile("a-1.0-py3-none-any.whl", "http://h/b", Version("1.0"), "2" * 64, False, None, "wheel")
    c = PackageFile("a-1.0-py3-none-any.whl", "http://h/b", Version("1.0"), "3" * 64, False, None, "wheel")
    assert release_digest([a, b]) == release_digest([b, a])
    assert release_digest([a, b]) != release_digest([a, c])
    assert len(release_digest([a])) == 64


# ---------------------------------------------------------------------------
# Recorded pypiserver (HTML) and devpi (JSON and HTML) answers


@pytest.mark.parametrize(("site", "root"), HELLO_SITES)
def test_project_files_are_the_same_whatever_the_server_and_format(serve, site, root):
    server = serve(site)
    files = client_for(server, root).project_files("hello-svc")
    assert {f.filename: (str(f.version), f.kind) for f in files} == HELLO_FILES
    assert all(f.url.startswith(server.origin + "/") and "#" not in f.url for f in files)
    # Both servers were given the same (reproducible) files: the hashes must agree.
    expected = {f.filename: f.sha256 for f in
                parse_project_page((DATA / "pypiserver" / "hello-svc.html").read_bytes(), "text/html",
                                   "http://127.0.0.1:1/simple/hello-svc/", "hello-svc")}
    assert {f.filename: f.sha256 for f in files} == expected
    assert all(len(f.sha256) == 64 for f in files)


def test_devpi_json_gives_requires_python_and_devpi_urls(serve):
    server = serve("devpi")
    files = client_for(server, DEVPI_ROOT).project_files("hello-svc")
    assert {f.requires_python for f in files} == {">=3.8"}
    assert all(f.url.startswith(server.origin + "/root/dev/+f/") for f in files)


@pytest.mark.parametrize(("site", "root"), HELLO_SITES)
def test_the_client_asks_for_json_first_with_the_normalized_name(serve, site, root):
    server = serve(site)
    client_for(server, root).project_files("Hello_Svc")
    assert server.seen == [(root.rstrip("/") + "/hello-svc/", ACCEPT)]


@pytest.mark.parametrize(("site", "root"), FULL_SITES)
def test_project_names_from_both_formats(serve, site, root):
    names = client_for(serve(site), root).project_names()
    assert sorted(names) == ["beta-svc", "hello-svc", "hello-worker", "legacy-name", "local-svc", "zope-thing"]


@pytest.mark.parametrize(("site", "root"), HELLO_SITES)
def test_resolve_without_version_gives_the_newest_final_release_by_pep440(serve, site, root):
    release = client_for(serve(site), root).resolve("hello-svc")
    assert release.version == Version("1.10.0")             # not 1.9.0 (string order) nor 2.0.0rc1
    assert release.name == "hello-svc"
    assert [f.filename for f in release.files] == ["hello_svc-1.10.0-py3-none-any.whl", "hello_svc-1.10.0.tar.gz"]
    assert release.sha256 == release_digest(release.files)


def test_the_release_digest_is_the_same_from_both_servers(serve):
    digests = {client_for(serve(site), root).resolve("hello-svc", "1.10.0").sha256 for site, root in HELLO_SITES}
    assert len(digests) == 1


@pytest.mark.parametrize(("site", "root"), HELLO_SITES)
def test_resolve_with_pre_gives_the_newest_pre_release(serve, site, root):
    release = client_for(serve(site), root).resolve("hello-svc", pre=True)
    assert release.version == Version("2.0.0rc1")
    assert [f.kind for f in release.files] == ["wheel"]


@pytest.mark.parametrize(("site", "root"), FULL_SITES)
def test_resolve_an_exact_version_by_pep440_equality(serve, site, root):
    client = client_for(serve(site), root)
    assert client.resolve("hello-svc", "1.0").version == Version("1.0.0")
    assert client.resolve("hello-svc", "2.0.0c1").version == Version("2.0.0rc1")   # explicit pre-release
    assert client.resolve("HELLO.SVC", "1.9.0").files[0].filename == "hello_svc-1.9.0-py3-none-any.whl"


@pytest.mark.parametrize(("site", "root"), FULL_SITES)
def test_an_unknown_version_lists_the_newest_available(serve, site, root):
    with pytest.raises(UsageError) as e:
        client_for(serve(site), root).resolve("hello-svc", "9.9")
    message = str(e.value)
    assert message.startswith("hello-svc 9.9 not found on index http://127.0.0.1:")
    assert message.endswith("newest available: 2.0.0rc1 (pre-release), 1.10.0, 1.9.0, 1.0.0")
    assert "\n" not in message


@pytest.mark.parametrize(("site", "root"), FULL_SITES)
def test_an_unknown_package_suggests_close_names(serve, site, root):
    server = serve(site)
    with pytest.raises(UsageError) as e:
        client_for(server, root).resolve("helo-svc")
    index = server.url(root if root.endswith("/") else root + "/")
    assert str(e.value) == f"package 'helo-svc' not found on index {index}; did you mean: hello-svc?"
    assert e.value.exit_code == 2


def test_an_unknown_package_without_close_names_says_so_plainly(serve):
    server = serve("pypiserver")
    with pytest.raises(UsageError) as e:
        client_for(server, PYPISERVER_ROOT).project_files("zzz-nothing-like-it")
    assert str(e.value) == f"package 'zzz-nothing-like-it' not found on index {server.url('/simple/')}"


def test_an_index_url_that_is_not_the_simple_index_gets_a_hint(serve):
    server = serve("pypiserver")
    with pytest.raises(UsageError, match=r"not found on index \S+ \(index\.url should be the simple index"):
        IndexClient(server.origin).project_files("hello-svc")


def test_an_invalid_version_is_refused_before_asking_the_index():
    client = IndexClient(f"http://127.0.0.1:{closed_port()}/simple/")
    with pytest.raises(UsageError, match=r"'1\.0-foo-bar' is not a PEP 440 version"):
        client.resolve("hello-svc", "1.0-foo-bar")


@pytest.mark.parametrize("name", ["hello svc", "../etc", "-x", ""])
def test_an_invalid_package_name_is_refused(name):
    with pytest.raises(UsageError, match="not a valid package name"):
        IndexClient(f"http://127.0.0.1:{closed_port()}/simple/").project_files(name)


@pytest.mark.parametrize(("site", "root"), FULL_SITES)
def test_legacy_dotted_and_local_versions(serve, site, root):
    client = client_for(serve(site), root)
    assert client.resolve("legacy-name").version == Version("1.0.post1")
    assert client.resolve("Zope.Thing").files[0].filename == "Zope_Thing-3.0-py3-none-any.whl"
    assert client.resolve("hello_worker").version == Version("0.1.0")
    assert client.resolve("local-svc").version == Version("1.0.0+build.7")
    exact = client.resolve("local-svc", "1.0.0")
    assert [f.filename for f in exact.files] == ["local_svc-1.0.0-py3-none-any.whl"]
    assert exact.local_twins == ("1.0.0+build.7",)      # so the build pins 1.0.0 with ===
    assert client.resolve("local-svc").local_twins == ()  # a local version pins itself
    assert client.resolve("hello-svc", "1.0").local_twins == ()


@pytest.mark.parametrize(("site", "root"), FULL_SITES)
def test_a_package_with_only_pre_releases(serve, site, root):
    client = client_for(serve(site), root)
    with pytest.raises(UsageError, match=r"no final release .* \(newest pre-release: 0\.1\.0b1\)"):
        client.resolve("beta-svc")
    assert client.resolve("beta-svc", pre=True).version == Version("0.1.0b1")
    assert client.resolve("beta-svc", "0.1.0b1").version == Version("0.1.0b1")


@pytest.mark.parametrize(("site", "root"), YANKED_SITES)
def test_yanked_files_are_ignored(serve, site, root):
    client = client_for(serve(site), root)
    assert "hello_svc-1.10.0.tar.gz" not in {f.filename for f in client.project_files("hello-svc")}
    yanked = {f.filename for f in client.project_files("hello-svc", include_yanked=True) if f.yanked}
    assert yanked == {"hello_svc-1.10.0-py3-none-any.whl", "hello_svc-1.10.0.tar.gz", "hello_svc-1.0.0.tar.gz"}
    assert client.resolve("hello-svc").version == Version("1.9.0")
    assert [f.filename for f in client.resolve("hello-svc", "1.0.0").files] == ["hello_svc-1.0.0-py3-none-any.whl"]
    with pytest.raises(UsageError, match=r"^hello-svc 1\.10\.0 is yanked on index "):
        client.resolve("hello-svc", "1.10.0")


def test_files_without_a_hash_are_downloaded_and_hashed(serve):
    nohash = client_for(serve("pypiserver-nohash"), PYPISERVER_ROOT)
    assert all(f.sha256 is None for f in nohash.project_files("hello-svc"))
    release = nohash.resolve("hello-svc", "1.10.0")
    hashed = client_for(serve("pypiserver"), PYPISERVER_ROOT).resolve("hello-svc", "1.10.0")
    assert [f.sha256 for f in release.files] == [f.sha256 for f in hashed.files]
    assert release.sha256 == hashed.sha256


@pytest.mark.parametrize("root", ["/root/dev/+simple", "/root/dev/+simple/"])
def test_the_index_url_with_or_without_trailing_slash(serve, root):
    server = serve("devpi")
    assert client_for(server, root).url == server.url("/root/dev/+simple/")
    assert client_for(server, root).resolve("hello-svc").version == Version("1.10.0")


@pytest.mark.parametrize(("site", "root", "recorded"), [
    ("pypiserver", PYPISERVER_ROOT, "/simple/Hello_Svc/"),              # 301
    ("devpi", DEVPI_ROOT, "/root/dev/+simple/Hello_Svc/"),              # 302
])
def test_recorded_redirects_are_followed_and_links_resolved_from_the_final_page(serve, site, root, recorded):
    server = serve(site)
    status, headers, _ = server.routes[recorded]
    assert status in (301, 302) and headers["Location"].endswith("/hello-svc/")
    server.routes["/moved/hello-svc/"] = server.routes[recorded]     # the old index path answers that redirect
    files = client_for(server, "/moved").project_files("hello-svc")
    assert {f.filename for f in files} == set(HELLO_FILES)
    final = server.url(root.rstrip("/") + "/hello-svc/")
    expected = {f.url for f in client_for(server, root).project_files("hello-svc")}
    assert {f.url for f in files} == expected and all(f.url.startswith(server.origin + "/") for f in files)
    assert server.seen[:2] == [("/moved/hello-svc/", ACCEPT), (final[len(server.origin):], ACCEPT)]


def test_a_redirect_to_another_host_is_refused(serve):
    server = serve("pypiserver")
    elsewhere = server.origin.replace("127.0.0.1", "localhost")
    server.routes["/simple/hello-svc/"] = (303, {"Location": elsewhere + "/simple/hello-svc/"}, b"")
    with pytest.raises(UsageError, match=r"redirected .* to another host.*--disable-fallback"):
        client_for(server, PYPISERVER_ROOT).project_files("hello-svc")


def test_an_unreachable_index_names_its_url():
    url = f"http://127.0.0.1:{closed_port()}/simple/"
    with pytest.raises(Unreachable) as e:
        IndexClient(url).resolve("hello-svc")
    assert str(e.value).startswith(f"index {url} did not answer (connection refused)")
    assert e.value.exit_code == 1


@pytest.mark.parametrize("status", [500, 503])
def test_a_server_error_is_unreachable(serve, status):
    server = serve("pypiserver")
    server.routes["/simple/hello-svc/"] = (status, {"Content-Type": "text/plain"}, b"boom")
    with pytest.raises(Unreachable, match=rf"index {server.url('/simple/')} failed with HTTP {status}"):
        client_for(server, PYPISERVER_ROOT).resolve("hello-svc")


def test_a_slow_index_times_out(serve):
    server = serve("pypiserver")
    release = threading.Event()
    answered: list[str] = []

    def slow() -> Route:
        release.wait(30)               # answers only once the test lets it (or after 30 s)
        answered.append("hello-svc")
        return server.routes["/simple/"]

    server.routes["/simple/hello-svc/"] = slow
    try:
        with pytest.raises(Unreachable, match=r"did not answer \(no complete answer within 0\.2 s\)"):
            client_for(server, PYPISERVER_ROOT, timeout=0.2).project_files("hello-svc")
        # The client gave up on its own: the index had not answered, and was asked once (no retry).
        # (Under load the abandoned request may reach the server only after the deadline.)
        assert answered == []
        waited = time.monotonic() + 10
        while not server.seen and time.monotonic() < waited:
            time.sleep(0.05)
        time.sleep(0.5)                # room for a retry, were there one
        assert [path for path, _ in server.seen] == ["/simple/hello-svc/"]
    finally:
        release.set()


def test_refused_access_says_where_credentials_go_and_never_shows_them(serve):
    server = serve("pypiserver")
    server.routes["/simple/hello-svc/"] = (401, {"Content-Type": "text/plain"}, b"auth")
    url = server.origin.replace("http://", "http://ci:s3cret@") + "/simple/"
    with pytest.raises(UsageError) as e:
        IndexClient(url).project_files("hello-svc")
    assert "HTTP 401" in str(e.value) and "index.url" in str(e.value)
    assert "s3cret" not in str(e.value) and "***@127.0.0.1" in str(e.value)
    assert "s3cret" not in repr(IndexClient(url))


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/simple/", "127.0.0.1:8081/simple/", "", "http:///simple/"])
def test_an_index_url_that_is_not_http_is_a_usage_error(url):
    with pytest.raises(UsageError, match=r"index\.url"):
        IndexClient(url)


def test_a_given_session_is_used_and_not_closed(serve):
    server = serve("devpi")
    session = requests.Session()
    session.headers["X-Test"] = "1"
    with IndexClient(server.url(DEVPI_ROOT), session=session) as client:
        assert client.resolve("hello-svc").version == Version("1.10.0")
    assert client.session is session
    assert session.get(server.url(DEVPI_ROOT)).status_code == 200   # still usable


# ---------------------------------------------------------------------------
# Live pypiserver


@pytest.fixture
def live_pypiserver(tmp_path: Path) -> Iterator[str]:
    exe = Path(sys.executable).parent / "pypi-server"
    assert exe.exists(), "pypiserver is not installed in this venv (pip install -e '.[lab]')"
    dists = tmp_path / "dists"
    dists.mkdir()
    for v in ["1.0.0", "1.9.0", "1.10.0", "2.0.0rc1"]:
        write_wheel(dists, "hello-svc", v)
    write_sdist(dists, "hello-svc", "1.10.0")
    write_wheel(dists, "Zope.Thing", "3.0")
    port = closed_port()
    with open(tmp_path / "pypiserver.log", "wb") as log:
        proc = subprocess.Popen([str(exe), "run", "-p", str(port), "-i", "127.0.0.1", "-a", ".", "-P", ".",
                                 "--disable-fallback", str(dists)], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}/simple/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"pypiserver did not start: {(tmp_path / 'pypiserver.log').read_text()}")
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


@pytest.mark.lab
def test_a_live_pypiserver_is_parsed(live_pypiserver, tmp_path):
    with IndexClient(live_pypiserver.rstrip("/")) as client:
        assert sorted(client.project_names()) == ["hello-svc", "zope-thing"]
        release = client.resolve("hello-svc")
        assert release.version == Version("1.10.0")
        on_disk = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "dists").iterdir()}
        assert {f.filename: f.sha256 for f in release.files} == {
            name: on_disk[name] for name in ("hello_svc-1.10.0-py3-none-any.whl", "hello_svc-1.10.0.tar.gz")}
        assert client.resolve("hello-svc", pre=True).version == Version("2.0.0rc1")
        with pytest.raises(UsageError, match="did you mean: hello-svc"):
            client.resolve("helo-svc")
