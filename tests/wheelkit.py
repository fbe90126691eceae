"""Small real distributions for build tests: wheels and sdists written from scratch, and a
PEP 503 index served from a directory by a real HTTP server on 127.0.0.1.

A wheel is a zip with a module, METADATA (with Requires-Dist), WHEEL and RECORD; an sdist
is a setuptools project (pyproject.toml) that `pip wheel --no-build-isolation` builds, or
fails to build on purpose.
"""

from __future__ import annotations

import base64
import hashlib
import html
import http.server
import io
import os
import tarfile
import threading
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from packaging.utils import canonicalize_name


def _module(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")


def make_wheel(out: Path, name: str, version: str, requires: Sequence[str] = (), *,
               tag: str = "py3-none-any", payload: int = 0) -> Path:
    """A wheel of a one-module project; `payload` bytes of incompressible data make it bigger."""
    mod = _module(name)
    dist_info = f"{mod}-{version}.dist-info"
    files = {
        f"{mod}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist_info}/METADATA": ("Metadata-Version: 2.1\n"
                                  f"Name: {name}\nVersion: {version}\n"
                                  + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode(),
        f"{dist_info}/WHEEL": (f"Wheel-Version: 1.0\nGenerator: wheelkit\nRoot-Is-Purelib: "
                               f"{'true' if tag.endswith('-any') else 'false'}\nTag: {tag}\n").encode(),
    }
    if payload:
        files[f"{mod}/payload.bin"] = os.urandom(payload)
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
                     for path, data in files.items()) + f"{dist_info}/RECORD,,\n"
    files[f"{dist_info}/RECORD"] = record.encode()
    path = out / f"{mod}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, data in files.items():
            z.writestr(zipfile.ZipInfo(p, (1980, 1, 1, 0, 0, 0)), data)
    return path


def make_sdist(out: Path, name: str, version: str, requires: Sequence[str] = (), *,
               broken: bool = False) -> Path:
    """An sdist built by setuptools; `broken`: its setup.py raises, as a bad sdist does."""
    mod = _module(name)
    root = f"{mod}-{version}"
    deps = ", ".join(f'"{r}"' for r in requires)
    files = {
        "pyproject.toml": ('[build-system]\nrequires = ["setuptools"]\n'
                           'build-backend = "setuptools.build_meta"\n\n'
                           f'[project]\nname = "{name}"\nversion = "{version}"\n'
                           f'dependencies = [{deps}]\n\n'
                           f'[tool.setuptools]\npackages = ["{mod}"]\n'),
        f"{mod}/__init__.py": f"VERSION = {version!r}\n",
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    }
    if broken:
        files["setup.py"] = "raise SystemExit('this sdist is broken on purpose')\n"
    path = out / f"{root}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for p, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{root}/{p}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def write_index(root: Path, files: Sequence[Path], *, wrong_hash: Sequence[str] = ()) -> None:
    """A PEP 503 index of `files` under root/simple/, files under root/files/, with #sha256=
    links (a deliberately wrong one for the file names in `wrong_hash`)."""
    (root / "files").mkdir(parents=True, exist_ok=True)
    projects: dict[str, list[Path]] = {}
    for f in files:
        target = root / "files" / f.name
        if f != target:
            target.write_bytes(f.read_bytes())
        stem = f.name.split("-")[0]
        projects.setdefault(canonicalize_name(stem), []).append(target)
    links = []
    for project, paths in sorted(projects.items()):
        (root / "simple" / project).mkdir(parents=True, exist_ok=True)
        anchors = []
        for p in paths:
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            if p.name in wrong_hash:
                digest = hashlib.sha256(b"not " + p.read_bytes()).hexdigest()
            anchors.append(f'<a href="../../files/{html.escape(p.name)}#sha256={digest}">'
                           f'{html.escape(p.name)}</a><br>')
        (root / "simple" / project / "index.html").write_text(
            "<!DOCTYPE html><html><body>" + "".join(anchors) + "</body></html>")
        links.append(f'<a href="{project}/">{project}</a><br>')
    (root / "simple").mkdir(parents=True, exist_ok=True)
    (root / "simple" / "index.html").write_text("<html><body>" + "".join(links) + "</body></html>")


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve `root` over HTTP on 127.0.0.1; yield the simple index's URL."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()
