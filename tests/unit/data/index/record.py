"""Record real simple-index answers from pypiserver and devpi-server on 127.0.0.1.

    .venv/bin/python tests/unit/data/index/record.py [--devpi-venv DIR]

Makes tiny distributions (tests/unit/test_index.py's makers), serves them with
a pypiserver from this venv (PEP 503 HTML) and, when --devpi-venv names a
separate venv with devpi-server and devpi-client, with devpi-server (PEP 691
JSON, and HTML when asked), then writes, per recorded server, a manifest.json
(request path → status, Content-Type, Location, body file) and the bodies.
The servers' own origin is replaced by ``{origin}``, which the replaying test
server fills in. Hand-edited copies (yanked files: neither server can yank)
live in directories whose names end in ``-edited-yanked`` and are not
rewritten by this script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
from test_index import write_sdist, write_wheel  # noqa: E402

ACCEPT_DOCKSHIP = ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2,"
                   " text/html;q=0.01")
PROJECTS = ["hello-svc", "hello-worker", "legacy-name", "zope-thing", "beta-svc", "local-svc"]


def make_dists(directory: Path) -> None:
    for v in ["1.0.0", "1.9.0", "1.10.0", "2.0.0rc1"]:
        write_wheel(directory, "hello-svc", v)
    for v in ["1.0.0", "1.10.0"]:
        write_sdist(directory, "hello-svc", v)
    write_wheel(directory, "hello_worker", "0.1.0")
    write_sdist(directory, "hello_worker", "0.1.0")
    write_sdist(directory, "legacy-name", "1.0-1", filename_name="legacy-name")  # legacy post release
    write_wheel(directory, "Zope.Thing", "3.0")
    write_wheel(directory, "beta-svc", "0.1.0b1")                                 # only a pre-release
    write_wheel(directory, "local-svc", "1.0.0")
    write_wheel(directory, "local-svc", "1.0.0+build.7")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=2)
            return
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def record(out: Path, origin: str, requests_: list[tuple[str, str]]) -> None:
    """GET each (path, accept) without following redirects; write manifest + bodies."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    manifest: dict[str, dict] = {}
    for path, accept in requests_:
        r = requests.get(origin + path, headers={"Accept": accept}, allow_redirects=False, timeout=10)
        ctype = r.headers.get("Content-Type", "")
        ext = ".json" if "json" in ctype else ".html" if "html" in ctype else ".bin"
        last = path.rstrip("/").rsplit("/", 1)[-1]
        body_name = "index" + ext if last in ("simple", "+simple") else last + ext
        body = r.content
        if ext != ".bin":
            body = body.replace(origin.encode(), b"{origin}")
        (out / body_name).write_bytes(body)
        entry = {"status": r.status_code, "content_type": ctype, "body": body_name}
        if "Location" in r.headers:
            entry["location"] = r.headers["Location"].replace(origin, "{origin}")
        manifest[path] = entry
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def start(argv: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def record_pypiserver(tmp: Path, dists: Path) -> None:
    venv_bin = Path(sys.executable).parent
    for name, extra in [("pypiserver", []), ("pypiserver-nohash", ["--hash-algo", "off"])]:
        port = free_port()
        origin = f"http://127.0.0.1:{port}"
        proc = start([str(venv_bin / "pypi-server"), "run", *extra, "-p", str(port), "-i", "127.0.0.1",
                      "-a", ".", "-P", ".", "--disable-fallback", str(dists)], tmp / f"{name}.log")
        try:
            wait_http(origin + "/simple/")
            if name == "pypiserver":
                paths = [("/simple/", ACCEPT_DOCKSHIP)]
                paths += [(f"/simple/{p}/", ACCEPT_DOCKSHIP) for p in PROJECTS]
                paths += [("/simple/Hello_Svc/", ACCEPT_DOCKSHIP),   # redirect to the normalized name
                          ("/simple/helo-svc/", ACCEPT_DOCKSHIP)]    # 404
            else:
                paths = [("/simple/", ACCEPT_DOCKSHIP), ("/simple/hello-svc/", ACCEPT_DOCKSHIP),
                         ("/packages/hello_svc-1.10.0-py3-none-any.whl", "*/*"),
                         ("/packages/hello_svc-1.10.0.tar.gz", "*/*")]
            record(HERE / name, origin, paths)
        finally:
            stop(proc)


def record_devpi(tmp: Path, dists: Path, devpi_venv: Path) -> None:
    bin_ = devpi_venv / "bin"
    serverdir, clientdir = tmp / "devpi-server", tmp / "devpi-client"
    subprocess.run([str(bin_ / "devpi-init"), "--serverdir", str(serverdir)], check=True,
                   capture_output=True)
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    proc = start([str(bin_ / "devpi-server"), "--serverdir", str(serverdir), "--host", "127.0.0.1",
                  "--port", str(port), "--offline-mode"], tmp / "devpi.log")
    env = dict(os.environ, DEVPI_CLIENTDIR=str(clientdir))

    def devpi(*args: str) -> None:
        subprocess.run([str(bin_ / "devpi"), *args], check=True, capture_output=True, env=env)

    try:
        wait_http(origin + "/+api")
        devpi("use", origin)
        devpi("login", "root", "--password", "")
        devpi("index", "-c", "root/dev", "bases=", "volatile=True")
        devpi("use", "root/dev")
        devpi("upload", "--from-dir", str(dists))
        base = "/root/dev/+simple/"
        json_paths = [(base, ACCEPT_DOCKSHIP)] + [(f"{base}{p}/", ACCEPT_DOCKSHIP) for p in PROJECTS]
        json_paths += [(f"{base}Hello_Svc/", ACCEPT_DOCKSHIP), (f"{base}helo-svc/", ACCEPT_DOCKSHIP)]
        record(HERE / "devpi", origin, json_paths)
        record(HERE / "devpi-html", origin, [(base, "text/html"), (f"{base}hello-svc/", "text/html")])
        # devpi answers an Accept of the PEP 691 HTML type with "Content-Type: text_html".
        record(HERE / "devpi-v1html", origin,
               [(base, "application/vnd.pypi.simple.v1+html"),
                (f"{base}hello-svc/", "application/vnd.pypi.simple.v1+html")])
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devpi-venv", type=Path, help="venv with devpi-server and devpi-client")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dockship-record-") as t:
        tmp = Path(t)
        dists = tmp / "dists"
        dists.mkdir()
        make_dists(dists)
        record_pypiserver(tmp, dists)
        if args.devpi_venv:
            record_devpi(tmp, dists, args.devpi_venv)


if __name__ == "__main__":
    main()
