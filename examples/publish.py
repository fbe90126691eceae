"""Publish versions of the example service to an index (the lab's, by default).

    python examples/publish.py 1.0.0 1.1.0
    python examples/publish.py 1.2.0 --behaviour unhealthy   # a deliberately sick release

Each version is built as a real wheel from examples/hello-svc (its version
and behaviour rewritten in a temporary copy) and uploaded with twine. A
version the index already has is left alone, so re-running is safe.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "hello-svc"
BEHAVIOURS = ("ok", "crash", "unhealthy", "slow:SECONDS", "sick-after:SECONDS", "errors:FRACTION",
              "latency:MS")


def behaviour(text: str) -> str:
    if text in ("ok", "crash", "unhealthy"):
        return text
    if text.split(":", 1)[0] in ("slow", "sick-after", "errors", "latency") and ":" in text:
        float(text.split(":", 1)[1])
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: use one of {', '.join(BEHAVIOURS)}")


def lab_urls() -> tuple[str, str]:
    """The lab's index and upload URLs, from `dockship lab status --json`."""
    out = subprocess.run([sys.executable, "-m", "dockship", "lab", "status", "--json"],
                         check=True, capture_output=True, text=True).stdout
    status = json.loads(out)
    return status["index_url"], status["index_upload_url"]


def has_version(index_url: str, name: str, version: str) -> bool:
    resp = requests.get(f"{index_url.rstrip('/')}/{name}/", timeout=10)
    if resp.status_code == 404:
        return False
    resp.raise_for_status()
    stem = f"{name.replace('-', '_')}-{version}-"
    return stem in resp.text


def build_wheel(version: str, behaviour: str, out: Path, *, name: str = "hello-svc",
                requires: tuple[str, ...] = ()) -> Path:
    """A wheel of the example package at `version`, behaving as `behaviour`, declaring
    `requires` as its dependencies (the service itself uses none of them)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(SOURCE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        pyproject = src / "pyproject.toml"
        text = re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject.read_text())
        text = re.sub(r'(?m)^name = ".*"$', f'name = "{name}"', text, count=1)
        text = re.sub(r'(?m)^dependencies = \[\]$', f'dependencies = {json.dumps(list(requires))}', text)
        pyproject.write_text(text)
        (src / "src" / "hello_svc" / "behaviour.py").write_text(f'BEHAVIOUR = "{behaviour}"\n')
        subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                        "--outdir", str(out), str(src)],
                       check=True, capture_output=True, text=True)
    wheels = sorted(out.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        raise SystemExit(f"no wheel was built for {name} {version}")
    return wheels[-1]


def publish(version: str, *, index_url: str, upload_url: str, behaviour: str = "ok",
            name: str = "hello-svc", requires: tuple[str, ...] = ()) -> bool:
    """Build and upload one version; False if the index already had it."""
    if has_version(index_url, name, version):
        return False
    with tempfile.TemporaryDirectory() as out:
        wheel = build_wheel(version, behaviour, Path(out), name=name, requires=requires)
        env = dict(os.environ, TWINE_USERNAME="dockship", TWINE_PASSWORD="unused",
                   TWINE_NON_INTERACTIVE="1")
        subprocess.run([sys.executable, "-m", "twine", "upload", "--disable-progress-bar",
                        "--repository-url", upload_url, str(wheel)],
                       check=True, capture_output=True, text=True, env=env)
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("versions", nargs="+")
    p.add_argument("--behaviour", type=behaviour, default="ok",
                   help=f"how the published version behaves: {', '.join(BEHAVIOURS)}")
    p.add_argument("--name", default="hello-svc", help="distribution name to publish as")
    p.add_argument("--index-url")
    p.add_argument("--upload-url")
    args = p.parse_args()
    index_url, upload_url = args.index_url, args.upload_url
    if not (index_url and upload_url):
        index_url, upload_url = lab_urls()
    for v in args.versions:
        done = publish(v, index_url=index_url, upload_url=upload_url, behaviour=args.behaviour,
                       name=args.name)
        print(f"{args.name} {v}: {'published' if done else 'already on the index'}", file=sys.stderr)


if __name__ == "__main__":
    main()
