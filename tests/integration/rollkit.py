"""Helpers for roll tests on the lab: publish and build real versions, write configs, look at nodes.

Each test module rolls its own service (fresh package name, own port), so
modules never see each other's containers and a lab can be reused across runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import requests

from conftest import dockship, json_out
from dockship import configfile


class Engine(docker.DockerClient):
    """A DockerClient usable in `with` (docker-py's own is not a context manager)."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Fleet:
    """A service of a test module on the lab nodes: what it is called and where it answers."""

    lab: dict
    package: str
    service: str
    port: int
    config: Path
    digests: dict[str, str] = field(default_factory=dict)

    @property
    def image(self) -> str:
        return f"test/{self.package}"

    @property
    def nodes(self) -> list[dict]:
        return self.lab["nodes"]

    def engine(self, node: dict) -> Engine:
        """The node's engine over its local socket: test-side inspection, not the product's path."""
        return Engine(base_url=f"unix:///run/dockship-lab/{node['name']}/docker.sock")

    def version_on(self, node: dict) -> str | None:
        try:
            return requests.get(f"http://{node['address']}:{self.port}/", timeout=3).json()["version"]
        except requests.RequestException:
            return None

    def versions(self) -> dict[str, str | None]:
        return {n["name"]: self.version_on(n) for n in self.nodes}

    def running(self, node: dict) -> list[dict]:
        with self.engine(node) as client:
            return [c.attrs for c in client.containers.list(
                filters={"label": f"io.dockship.service={self.service}"})]

    def tags_on(self, node: dict) -> list[str]:
        """The tag of every container of the service on the node, started or not."""
        with self.engine(node) as client:
            return sorted(c.labels.get("io.dockship.tag", "") for c in client.containers.list(
                all=True, filters={"label": f"io.dockship.service={self.service}"}))

    def cleanup(self) -> None:
        """Remove this service's containers, lock and ledger from every node (earlier runs too)."""
        for node in self.nodes:
            with self.engine(node) as client:
                # The plain list (no inspect per container): other modules remove their own
                # containers meanwhile, and one gone between list and inspect is no error.
                for c in client.api.containers(all=True):
                    labels = c.get("Labels") or {}
                    names = [n.lstrip("/") for n in c.get("Names") or ()]
                    state = (labels.get("io.dockship.lock.service"),
                             labels.get("io.dockship.ledger.service"))
                    if any(n.startswith(f"{self.service}-") for n in names) or self.service in state:
                        try:
                            client.api.remove_container(c["Id"], force=True)
                        except docker.errors.APIError:
                            pass  # already going away

    env_name = "lab"      # the environment of the module's config

    def roll(self, *args: str, env: dict | None = None):
        return self.run("roll", *args, env=env)

    def run(self, command: str, *args: str, env: dict | None = None):
        """`dockship COMMAND --env ENV --service S ARGS` with the module's config."""
        return dockship("--config", str(self.config), command, "--env", self.env_name,
                        "--service", self.service, *args, env=env)

    def config_data(self, *, hooks: dict | None = None, health: dict | None = None,
                    rollout: dict | None = None, balancer: dict | None = None) -> dict:
        """The module's config (environment `lab`, this service only) as data to edit or write."""
        lab = self.lab
        env: dict = {
            "nodes": [{"name": n["name"], "docker": n["docker"], "address": n["address"],
                       "zone": n["zone"], "roles": ["web"]} for n in lab["nodes"]],
            "ssh": {"user": "root", "key": lab["ssh"]["key"],
                    "known_hosts": lab["ssh"]["known_hosts"]},
            "rollout": {"canary": 1, "batch": 1, "auto_rollback": True, **(rollout or {})},
        }
        if hooks:
            env["hooks"] = hooks
        if balancer:
            env["balancer"] = balancer
        return {
            "index": {"url": lab["index_url"]},
            "registry": {"url": lab["registry"]},
            "build": {"base_image": lab["base_image"]},
            "services": {self.service: {
                "package": self.package,
                "image": self.image,
                "port": self.port,
                "role": "web",
                "command": ["hello-svc"],
                "env": {"PORT": str(self.port)},
                "stop_timeout": 5,
                "health": {"path": "/health", "timeout": 10, "min_healthy": 1, "interval": 0.25,
                           **(health or {})},
            }},
            "environments": {"lab": env},
        }

    def write_config(self, path: Path | None = None, **parts) -> Path:
        """Write config_data(**parts) to `path` (default: the module's config)."""
        return configfile.write(path or self.config, self.config_data(**parts))


def roll_json(fleet: Fleet, *args: str, expect: int = 0, **kw) -> dict:
    """`fleet.roll(ARGS --json)`, which must exit `expect`: its report."""
    proc = fleet.roll(*args, "--json", **kw)
    assert proc.returncode == expect, proc.stderr
    return json.loads(proc.stdout)


def roll_to(fleet: Fleet, *tags: str) -> None:
    """Roll to each tag in turn. From any state, every node then runs the last tag; a tag that
    differs from the one before it has that one as its previous tag (and kept its container)."""
    for tag in tags:
        report = roll_json(fleet, "--tag", tag)
        assert report["result"] == "succeeded", report


def refusing_hook(path: Path, node: str) -> Path:
    """A hook script that fails (exit 7, "NODE refuses" on stderr) for `node` only."""
    path.write_text(f'#!/bin/sh\n[ "$DOCKSHIP_NODE" = {node} ] && {{ echo "{node} refuses" >&2; exit 7; }}\n'
                    "exit 0\n")
    path.chmod(0o755)
    return path


def make_fleet(lab: dict, run_id: str, tmp: Path, *, prefix: str, port: int,
               versions: dict[str, str], kind: type[Fleet] = Fleet) -> Fleet:
    """Publish `versions` ({version: behaviour}) of a fresh package and build them all."""
    from publish import publish

    package = f"hello-{prefix}{run_id}"
    fleet = kind(lab, package, f"svc{prefix}", port, tmp / "dockship.toml")
    fleet.cleanup()
    fleet.write_config()
    for version, behaviour in versions.items():
        publish(version, index_url=lab["index_url"], upload_url=lab["index_upload_url"],
                name=package, behaviour=behaviour)
        out = json_out(dockship("--config", str(fleet.config), "build", package, version, "--json"))
        fleet.digests[version] = out["digest"]
    return fleet


def wait_for(check, timeout: float = 30, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


# --- load through a balancer (zero-downtime tests) ----------------------------------------

CLIENTS = 4
MAX_REQUESTS = 60_000        # over all clients: the load is bounded in count...
MAX_SECONDS = 240            # ...and in time, whatever happens to the roll


class Load:
    """CLIENTS threads sending GET / through the balancer in a loop until stopped (or a bound)."""

    def __init__(self, url: str, *, pause: float = 0.005, timeout: float = 3.0):
        self.url = url
        self.pause = pause
        self.timeout = timeout
        self.served: Counter[str] = Counter()      # version -> requests it answered
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, name=f"load-{i}", daemon=True)
                         for i in range(CLIENTS)]
        self._deadline = 0.0

    @property
    def total(self) -> int:
        return sum(self.served.values()) + len(self.failures)

    def _client(self) -> None:
        session = requests.Session()
        per_client = MAX_REQUESTS // CLIENTS
        for _ in range(per_client):
            if self._stop.is_set() or time.monotonic() > self._deadline:
                break
            try:
                resp = session.get(self.url, timeout=self.timeout)
                if resp.status_code == 200:
                    version, failure = resp.json()["version"], None
                else:
                    version, failure = None, f"HTTP {resp.status_code}: {resp.text[:80]!r}"
            except (requests.RequestException, ValueError, KeyError) as exc:
                version, failure = None, f"{type(exc).__name__}: {str(exc)[:120]}"
                session.close()
                session = requests.Session()
            with self._lock:
                if failure:
                    self.failures.append(f"{time.strftime('%H:%M:%S')} {failure}")
                else:
                    self.served[version] += 1
            time.sleep(self.pause)
        session.close()

    def __enter__(self) -> "Load":
        self._deadline = time.monotonic() + MAX_SECONDS
        for t in self._threads:
            t.start()
        wait_for(lambda: self.total >= 20, timeout=10)     # load is flowing before the roll starts
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)                                     # and still flows after it ended
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)

    def summary(self) -> str:
        return (f"{self.total} requests, {len(self.failures)} failed, served by "
                f"{dict(self.served)}; first failures: {self.failures[:5]}")
