#!/usr/bin/env python3
"""dockship's benchmark (issue 4): ratios measured side by side, in one run, on the lab.

    .venv/bin/python bench/run.py [--runs 5] [--only 1,2,3,4,5,6,7,8] [--no-write]

Prints one table (every figure as median and min–max over --runs runs) and
writes it to bench/RESULTS.md with the date and the machine. What each
figure means and how it is measured: bench/README.md.

Where it runs:
- figures 1, 3, 4 and 5 on the shared lab (`dockship lab up`: its 3 nodes,
  registry, index), with this benchmark's own services (names `bench*`,
  ports 18600+), whose containers it removes at the end;
- figures 2, 6 and 8 on up to 9 extra nodes of a separate lab on 10.77.8.0/24
  (state under /var/lib/dockship-bench and /run/dsb), which pull from the
  shared lab's registry and are removed at the end, together with the
  Docker Swarms made of them for figures 2 and 8 (bench/swarmbench.py).
Traffic goes only to loopback and to the lab and bench subnets.

Exit codes: 0 every figure measured; 1 a figure failed (its row says why);
2 the lab is not up or this is not run as root (nothing was touched).

`run.py _plain SPEC.json` is the "plain script" of figure 1 (run as its own
process, so that it pays for its interpreter and imports as dockship does).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable

# Names and ports of this benchmark (other engineers use the prefix "z" and port 18500).
ENV_MAIN = "bench"           # environment of the configs on the shared lab's nodes
ENV_BENCH = "benchlab"       # environment of the configs on the bench nodes
SVC_ROLL = "bench"           # fig 1/3: dockship's service on the shared lab, port 18600
SVC_PLAIN = "benchplain"     # fig 1: the plain script's containers, port 18601
SVC_LB = "benchlb"           # fig 5: behind the balancer, port 18602
SVC_DS = "benchds"           # fig 2: dockship on the swarm's engines, port 18611
SVC_SW = "benchsw"           # fig 2: the Swarm service, port 18610
SVC_SCALE = "benchsc"        # fig 6: 3/6/9 nodes, port 18620
ENV_SWARM = "benchswarm"     # fig 8: the Swarm backend's environment (the bench swarm)
SVC_SW8 = "benchsw8"         # fig 8a: the plain Swarm service, port 18630
SVC_DS8 = "benchds8"         # fig 8a: dockship on the swarm (its revisions), port 18631
SVC_SSH8 = "benchssh8"       # fig 8b: the SSH backend, port 18632
SVC_SWB8 = "benchswb8"       # fig 8b: the Swarm backend, port 18633
PORTS = {SVC_ROLL: 18600, SVC_PLAIN: 18601, SVC_LB: 18602, SVC_SW: 18610, SVC_DS: 18611,
         SVC_SCALE: 18620, SVC_SW8: 18630, SVC_DS8: 18631, SVC_SSH8: 18632, SVC_SWB8: 18633}
MAIN_SERVICES = (SVC_ROLL, SVC_PLAIN, SVC_LB)
BENCH_SERVICES = (SVC_DS, SVC_SCALE, SVC_SW, SVC_SW8, SVC_DS8, SVC_SSH8, SVC_SWB8)
PLAIN_LABEL = "io.dockship.bench.plain"
LB_NAME = "benchlb"          # fig 5: the benchmark's own HAProxy (the lab's `hello` one is not used)
LB_PORT = 18650
LB_RATE = 50                 # requests per second through the balancer during fig 5
BENCH_SUBNET = "10.77.8"
BENCH_ROOT = Path("/var/lib/dockship-bench")
BENCH_RUN = Path("/run/dsb")                 # short: unix socket paths are limited to 107 bytes
BENCH_NODES = 9
RESULTS = HERE / "RESULTS.md"
NOTES_MARK = "<!-- notes below this line are kept when run.py rewrites the file -->"

GOALS = {"overhead": 1.15, "swarm": 0.5, "rollback": 0.5, "build": 1.10}
SWARM_WINDOWS = (1, 5)       # seconds: dockship min_healthy = Swarm --update-monitor
FAST_HEALTH = {"path": "/health", "timeout": 30, "min_healthy": 0, "interval": 0.1}
CMD_TIMEOUT = 300            # one dockship/docker command
LOCAL_NETS = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "10.77.0.0/24", f"{BENCH_SUBNET}.0/24")]


LAST_CPU = 0.0              # CPU seconds (user + system) of the last command run()


class BenchError(Exception):
    """A measurement could not be made; the message says what and why."""


def log(text: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def clean_env() -> dict[str, str]:
    """The environment for every subprocess: no proxy can send lab traffic elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "*"
    env.pop("DOCKSHIP_CONFIG", None)
    return env


def assert_local(what: str, host_or_url: str) -> None:
    """Refuse to measure against anything outside loopback and the lab/bench subnets."""
    host = urlsplit(host_or_url).hostname if "://" in host_or_url else host_or_url.rsplit(":", 1)[0]
    try:
        addr = ipaddress.ip_address(host or "")
    except ValueError:
        raise BenchError(f"{what} {host_or_url!r} is not an IP address on the lab; "
                         "the benchmark only talks to loopback and the lab subnets") from None
    if not any(addr in net for net in LOCAL_NETS):
        raise BenchError(f"{what} {host_or_url!r} is outside loopback and the lab subnets")


# --- statistics and formatting ----------------------------------------------------------

def stats(xs: list[float]) -> tuple[float, float, float]:
    return statistics.median(xs), min(xs), max(xs)


def fmt_s(xs: list[float]) -> str:
    if not xs:
        return "—"
    m, lo, hi = stats(xs)
    return f"{m:.2f} s ({lo:.2f}–{hi:.2f})"


def fmt_r(xs: list[float]) -> str:
    if not xs:
        return "—"
    m, lo, hi = stats(xs)
    return f"{m:.2f} ({lo:.2f}–{hi:.2f})"


@dataclass
class Row:
    figure: str
    what: str
    dockship: str = "—"
    baseline: str = "—"
    ratio: str = "—"
    goal: str = ""
    met: str = ""
    ratios: list[float] = field(default_factory=list)


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)   # phase breakdowns, extra figures
    failures: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        log(f"fig {row.figure}: {row.what}: {row.dockship} vs {row.baseline} → {row.ratio} {row.met}")

    def detail(self, text: str) -> None:
        self.details.append(text)
        log(text)


def judged(ratios: list[float], goal: float) -> str:
    return "yes" if ratios and statistics.median(ratios) <= goal else "**no**"


# --- running commands ---------------------------------------------------------------------

def run(argv: list[str], *, timeout: float = CMD_TIMEOUT, input: str | None = None,
        what: str | None = None, env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Run a command; its wall time and result. A non-zero exit raises BenchError."""
    global LAST_CPU
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input,
                              env=env or clean_env(), cwd=ROOT)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what or argv[0]} did not finish within {timeout:.0f}s") from None
    seconds = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise BenchError(f"{what or ' '.join(argv[:4])} exited {proc.returncode}:\n{tail}")
    return seconds, proc


def dockship(config: Path, *args: str, timeout: float = CMD_TIMEOUT) -> tuple[float, dict]:
    """`dockship --config CONFIG ARGS --json` as a user runs it: wall time and its JSON."""
    argv = [PY, "-m", "dockship", "--config", str(config), *args, "--json"]
    seconds, proc = run(argv, timeout=timeout, what=f"dockship {' '.join(args[:2])}")
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        raise BenchError(f"dockship {args[0]} printed no JSON: {proc.stdout[:200]!r}") from None
    result = out.get("result")
    if result is not None and result != "succeeded":
        raise BenchError(f"dockship {args[0]} ended {result}: {out.get('reason')}")
    return seconds, out


# --- node engines (the harness's own access, over the engines' unix sockets) -------------

def engine(sock: Path):
    import docker
    return docker.DockerClient(base_url=f"unix://{sock}", timeout=180)


def each(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(fn, items))


def http_get(url: str, timeout: float = 2.0):
    import requests
    with requests.Session() as s:
        s.trust_env = False
        return s.get(url, timeout=timeout)


def wait_http(url: str, *, timeout: float = 60, want_version: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = http_get(url)
            if r.status_code == 200 and (want_version is None or r.json().get("version") == want_version):
                return
            last = f"HTTP {r.status_code} {r.text[:80]}"
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            last = type(exc).__name__
        time.sleep(0.2)
    raise BenchError(f"{url} did not answer as expected within {timeout:.0f}s (last: {last})")


@dataclass(frozen=True)
class Node:
    name: str
    address: str
    docker: str       # ssh://root@ADDR: what dockship and the plain script use
    zone: str
    socket: Path      # the harness's own access


@dataclass(frozen=True)
class Lab:
    registry: str
    index_url: str
    upload_url: str
    base_image: str
    nodes: tuple[Node, ...]
    ssh_key: str
    known_hosts: str


def make_absent(nodes: list[Node], ref: str) -> None:
    """Make `ref` absent from the nodes (as a new release is): remove its stopped containers, then it.

    Only containers made from this run's own image are touched (the image is unique to the run).
    """
    import docker.errors

    def one(n: Node) -> None:
        with contextlib.closing(engine(n.socket)) as c:
            try:
                image = c.images.get(ref)
            except docker.errors.ImageNotFound:
                return
            for ct in c.containers.list(all=True, filters={"ancestor": image.id}):
                if ct.status == "running":
                    raise BenchError(f"{n.name}: container {ct.name} still runs {ref}; "
                                     "the previous reset failed")
                ct.remove(force=True)
            c.images.remove(image.id, force=False)
    each(one, nodes)


def remove_plain_leftovers(nodes: list[Node], keep: dict[str, str]) -> None:
    """Remove the plain script's stopped containers except the one running per node."""
    def one(n: Node) -> None:
        with contextlib.closing(engine(n.socket)) as c:
            for ct in c.containers.list(all=True, filters={"label": PLAIN_LABEL}):
                if ct.name != keep.get(n.name) and ct.status != "running":
                    ct.remove(force=True)
    each(one, nodes)


# --- configs ---------------------------------------------------------------------------------

def config_data(lab: Lab, *, env: str, service: str, package: str, image: str,
                nodes: list[Node], ssh_key: str, known_hosts: str, health: dict,
                rollout: dict, hooks: dict | None = None, balancer: dict | None = None,
                swarm_manager: str | None = None, role: str = "web") -> dict:
    """With `swarm_manager` the environment is a swarm (its nodes are the swarm's own)."""
    port = PORTS[service]
    environment: dict[str, Any] = {
        "ssh": {"user": "root", "key": ssh_key, "known_hosts": known_hosts},
        "rollout": rollout,
    }
    if swarm_manager:
        environment["swarm"] = {"manager": swarm_manager}
    else:
        environment["nodes"] = [{"name": n.name, "docker": n.docker, "address": n.address,
                                 "zone": n.zone, "roles": ["web"]} for n in nodes]
    if hooks:
        environment["hooks"] = hooks
    if balancer:
        environment["balancer"] = balancer
    return {
        "index": {"url": lab.index_url},
        "registry": {"url": lab.registry},
        "build": {"base_image": lab.base_image},
        "services": {service: {
            "package": package,
            "image": image,
            "port": port,
            "role": role,
            "command": ["hello-svc"],
            "env": {"PORT": str(port)},
            "stop_timeout": 10,
            "health": health,
        }},
        "environments": {env: environment},
    }


def write_config(path: Path, lab: Lab, **kw: Any) -> Path:
    """A dockship.toml for one bench service (keywords: config_data's)."""
    from dockship import configfile

    return configfile.write(path, config_data(lab, **kw), comment="written by bench/run.py")


class Load:
    """Constant-rate GET requests in a thread; counts requests and failures per phase.

    A request counts for the phase in which it was sent, even if it ends after the phase.
    """

    def __init__(self, url: str, rate: float):
        import requests
        self.url = url
        self.interval = 1.0 / rate
        self.session = requests.Session()
        self.session.trust_env = False
        self._phase: int | None = None
        self._counts: dict[int, list[int]] = {}
        self._seq = 0                # requests finished so far
        self._token = 0
        self.last_ok = False
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                phase = self._phase
            ok, why = True, ""
            try:
                r = self.session.get(self.url, timeout=5)
                if r.status_code != 200:
                    ok, why = False, f"HTTP {r.status_code}"
            except Exception as exc:  # noqa: BLE001 - every failure counts
                ok, why = False, f"{type(exc).__name__}: {str(exc)[:120]}"
            self.last_ok = ok
            with self._lock:
                self._seq += 1
                if phase is not None:
                    c = self._counts.setdefault(phase, [0, 0])
                    c[0] += 1
                    if not ok:
                        c[1] += 1
                        self.errors.append(f"{time.strftime('%H:%M:%S')} {why}")
            next_at = max(next_at + self.interval, time.monotonic() - 1.0)
            time.sleep(max(0.0, next_at - time.monotonic()))

    def wait_all_ok(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        streak = 0
        while streak < 20:
            if time.monotonic() > deadline:
                raise BenchError(f"the balancer at {self.url} does not answer 200 steadily")
            streak = streak + 1 if self.last_ok else 0
            time.sleep(self.interval)

    def start(self) -> int:
        """Count the requests sent from now on under a new phase; its token."""
        with self._lock:
            self._token += 1
            self._phase = self._token
            return self._token

    def end(self, token: int) -> tuple[int, int]:
        """Stop counting; (requests, failed) of the phase, once its last request has ended."""
        with self._lock:
            self._phase = None
            seen = self._seq
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:   # the request in flight (if any) belongs to the phase
            with self._lock:
                if self._seq >= seen + 1:
                    break
            time.sleep(0.01)
        with self._lock:
            return tuple(self._counts.get(token, [0, 0]))  # type: ignore[return-value]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.session.close()


# --- the plain script (figure 1's baseline) -------------------------------------------------

def plain_main(spec_path: str) -> int:
    """Pull on all nodes at once, then per node: stop old, run new, poll health until it answers.

    The irreducible docker steps of a roll, over the same SSH transport as dockship
    (docker-py through `docker system dial-stdio`, the lab's key and known_hosts).
    """
    t0 = time.monotonic()
    import requests

    sys.path.insert(0, str(ROOT / "src"))
    from dockship.sshengine import ssh_docker_client

    spec = json.loads(Path(spec_path).read_text())
    nodes, ref, port = spec["nodes"], spec["ref"], spec["port"]
    repo, digest = ref.split("@", 1)

    def connect(n: dict):
        return ssh_docker_client(n["docker"], key=Path(spec["key"]), known_hosts=Path(spec["known_hosts"]))

    def pull(client) -> None:
        for chunk in client.api.pull(repo, tag=digest, stream=True, decode=True):
            if "error" in chunk or "errorDetail" in chunk:
                raise SystemExit(f"pull failed: {chunk}")

    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        clients = list(pool.map(connect, nodes))
        if spec["pull"]:
            list(pool.map(pull, clients))
    session = requests.Session()
    session.trust_env = False
    per_node = []
    for n, client in zip(nodes, clients):
        t = time.monotonic()
        if n.get("old"):
            client.api.stop(n["old"], timeout=10)
        host_config = client.api.create_host_config(port_bindings={port: port}, init=True,
                                                    restart_policy={"Name": "unless-stopped"})
        created = client.api.create_container(image=ref, name=n["new"], environment={"PORT": str(port)},
                                              ports=[port], host_config=host_config,
                                              labels={PLAIN_LABEL: spec["run_id"]})
        client.api.start(created["Id"])
        deadline = time.monotonic() + 30
        url = f"http://{n['address']}:{port}/health"
        while True:
            try:
                if session.get(url, timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{n['name']}: {url} not healthy within 30s")
            time.sleep(spec["interval"])
        per_node.append(time.monotonic() - t)
    for c in clients:
        c.close()
    print(json.dumps({"seconds": time.monotonic() - t0, "per_node": per_node}))
    return 0


# --- the benchmark -----------------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.runs = args.runs
        self.only = set(args.only.split(",")) if args.only else {"1", "2", "3", "4", "5", "6", "7", "8"}
        self.run_id = uuid.uuid4().hex[:6]
        self.package = f"bench-svc-{self.run_id}"
        self.image = f"bench/{self.package}"
        self.tmp = Path(tempfile.mkdtemp(prefix="dsbench-"))
        self.report = Report()
        self.started = time.monotonic()
        self.deadline = self.started + args.budget
        self.lab: Lab | None = None
        self.bench_nodes: list[Node] = []
        self.bench_paths = None
        self.swarm_made = False
        self.swarm_nodes: list[Node] = []     # the bench nodes in the swarm, its first manager first
        self.lb_made = False
        self.digests: dict[str, str] = {}      # version -> digest
        self.plain_current: dict[str, str] = {}
        self.machine: dict[str, str] = {}

    # -- helpers ------------------------------------------------------------------------------

    def ref(self, version: str) -> str:
        return f"{self.lab.registry}/{self.image}@{self.digests[version]}"

    def uses_lab_nodes(self) -> bool:
        """Figures 1, 3, 5 and 7 run on the shared lab's nodes; 2, 4, 6 and 8 never touch them."""
        return bool({"1", "3", "5", "7"} & self.only)

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def rounds(self, what: str, need: float, *who: str) -> Iterator[tuple[int, tuple[str, ...]]]:
        """The runs of one figure while the budget lasts: (run index, who goes in which order).

        The order flips every run, so no side always runs on the machine the other warmed.
        """
        for i in range(self.runs):
            if not self.enough_time(need, what):
                return
            yield i, (who if i % 2 == 0 else tuple(reversed(who)))

    def enough_time(self, need: float, what: str) -> bool:
        if self.time_left() >= need:
            return True
        self.report.detail(f"{what}: stopped early, the --budget of {self.args.budget:.0f}s is spent")
        return False

    def config(self, name: str, **kw: Any) -> Path:
        return write_config(self.tmp / f"{name}.toml", self.lab, package=self.package,
                            image=self.image, **kw)

    # -- preconditions --------------------------------------------------------------------------

    def check_lab(self) -> None:
        if os.geteuid() != 0:
            sys.stderr.write("bench: run as root (the lab's engines and the bench nodes need it)\n")
            raise SystemExit(2)
        sys.path.insert(0, str(ROOT / "src"))
        import dockship_lab as lab_mod
        from dockship_lab.nodes import existing_nodes
        from dockship_lab.paths import LabPaths

        st = lab_mod.status()
        up = st.up
        needed = ("engine", "network", "registry", "index", "base_image") + (
            ("nodes",) if self.uses_lab_nodes() else ())
        missing = [name for name in needed if not getattr(up, name)]
        if missing or len(st.nodes) < 3:
            sys.stderr.write(f"bench: the lab is not up ({', '.join(missing) or 'fewer than 3 nodes'} "
                             "down); bring it up with `make lab` (or `dockship lab up`) and retry. "
                             "Nothing was touched.\n")
            raise SystemExit(2)
        sockets = {n.name: n.socket for n in existing_nodes(LabPaths.default())}
        nodes = tuple(Node(n.name, n.address, n.docker, n.zone, sockets[n.name])
                      for n in sorted(st.nodes, key=lambda n: n.name)[:3])
        self.lab = Lab(registry=st.registry, index_url=st.index_url, upload_url=st.index_upload_url,
                       base_image=st.base_image, nodes=nodes, ssh_key=st.ssh.key,
                       known_hosts=st.ssh.known_hosts)
        assert_local("registry", st.registry)
        assert_local("index", st.index_url)
        assert_local("index upload", st.index_upload_url)
        for n in nodes:
            assert_local(f"node {n.name}", n.address)
        self.machine = machine_info()

    # -- setup ----------------------------------------------------------------------------------

    def publish(self, versions: list[str]) -> None:
        sys.path.insert(0, str(ROOT / "examples"))
        from publish import publish

        def one(v: str) -> None:
            publish(v, index_url=self.lab.index_url, upload_url=self.lab.upload_url, name=self.package)
        log(f"publishing {self.package} {', '.join(versions)} to the lab index")
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(one, versions))

    def build(self, version: str) -> float:
        cfg = self.config("build", env=ENV_MAIN, service=SVC_ROLL, nodes=list(self.lab.nodes),
                          ssh_key=self.lab.ssh_key, known_hosts=self.lab.known_hosts,
                          health=FAST_HEALTH, rollout={"canary": 1, "batch": 1})
        seconds, out = dockship(cfg, "build", self.package, version)
        if not out.get("pushed") or not out.get("digest"):
            raise BenchError(f"dockship build {version} pushed nothing: {out}")
        self.digests[version] = out["digest"]
        return seconds

    def cleanup_main(self) -> None:
        """Remove every container of this benchmark's services on the shared lab's nodes (any run)."""
        def one(n: Node) -> None:
            with contextlib.closing(engine(n.socket)) as c:
                for ct in c.containers.list(all=True):
                    labels = ct.labels or {}
                    ours = (labels.get("io.dockship.service") in MAIN_SERVICES
                            and labels.get("io.dockship.env") == ENV_MAIN) \
                        or PLAIN_LABEL in labels \
                        or ENV_MAIN in (labels.get("io.dockship.lock.env"), labels.get("io.dockship.ledger.env"))
                    if ours:
                        with contextlib.suppress(Exception):
                            ct.remove(force=True)
                for image in c.images.list():
                    if any(r.startswith(f"{self.lab.registry}/bench/bench-svc-")
                           for r in (image.attrs.get("RepoDigests") or []) + (image.tags or [])):
                        with contextlib.suppress(Exception):
                            c.images.remove(image.id, force=False)
        each(one, list(self.lab.nodes))

    # -- figures 1 and 3: overhead and rollback, on the shared lab ---------------------------

    def plain(self, version: str, *, pull: bool) -> tuple[float, dict]:
        nodes = []
        new_names = {}
        for n in self.lab.nodes:
            new = f"{SVC_PLAIN}-{version}-{uuid.uuid4().hex[:6]}"
            new_names[n.name] = new
            nodes.append({"name": n.name, "docker": n.docker, "address": n.address,
                          "old": self.plain_current.get(n.name), "new": new})
        spec = {"nodes": nodes, "ref": self.ref(version), "port": PORTS[SVC_PLAIN], "pull": pull,
                "interval": FAST_HEALTH["interval"], "key": self.lab.ssh_key,
                "known_hosts": self.lab.known_hosts, "run_id": self.run_id}
        spec_path = self.tmp / "plain.json"
        spec_path.write_text(json.dumps(spec))
        seconds, proc = run([PY, str(Path(__file__).resolve()), "_plain", str(spec_path)],
                            what="the plain script")
        self.plain_current = new_names
        return seconds, json.loads(proc.stdout.strip().splitlines()[-1])

    def fig_1_3(self, a: str, b: str) -> None:
        nodes = list(self.lab.nodes)
        common = dict(env=ENV_MAIN, service=SVC_ROLL, nodes=nodes, ssh_key=self.lab.ssh_key,
                      known_hosts=self.lab.known_hosts, health=FAST_HEALTH)
        cfg = self.config("roll", rollout={"canary": 1, "batch": 1}, **common)
        log("fig 1/3: deploying the old version with dockship and with the plain script")
        dockship(cfg, "roll", "--env", ENV_MAIN, "--service", SVC_ROLL, "--tag", a)
        self.plain(a, pull=True)
        rolls, rollbacks, plains, plain_backs, walks, outside, rb_outside = [], [], [], [], [], [], []
        per_node_ds, per_node_plain = [], []
        for i, order in self.rounds("fig 1/3", 60, "dockship", "plain"):
            for who in order:
                make_absent(nodes, self.ref(b))
                if who == "dockship":
                    t, out = dockship(cfg, "roll", "--env", ENV_MAIN, "--service", SVC_ROLL, "--tag", b)
                    rolls.append(t)
                    walks.append(out["seconds"])
                    outside.append(t - out["seconds"])
                    per_node_ds += [n["seconds"] for n in out["nodes"]][1:]
                    t_rb, out_rb = dockship(cfg, "rollback", "--env", ENV_MAIN, "--service", SVC_ROLL)
                    if out_rb.get("tag") != a:
                        raise BenchError(f"rollback went to {out_rb.get('tag')}, not {a}")
                    rollbacks.append(t_rb)
                    rb_outside.append(t_rb - out_rb["seconds"])
                else:
                    remove_plain_leftovers(nodes, self.plain_current)
                    t, out = self.plain(b, pull=True)
                    plains.append(t)
                    per_node_plain += out["per_node"][1:]
                    t_back, _ = self.plain(a, pull=False)
                    plain_backs.append(t_back)
            log(f"fig 1/3 run {i + 1}: dockship roll {rolls[-1]:.2f}s, rollback {rollbacks[-1]:.2f}s, "
                f"plain {plains[-1]:.2f}s, plain back {plain_backs[-1]:.2f}s")
        n = min(len(rolls), len(plains))
        if "1" in self.only:
            r = [rolls[k] / plains[k] for k in range(n)]
            self.report.add(Row("1", "roll of 3 nodes (min_healthy 0) / plain docker steps",
                                fmt_s(rolls), fmt_s(plains), fmt_r(r), f"≤ {GOALS['overhead']:.2f}",
                                judged(r, GOALS["overhead"]), r))
            self.report.detail(
                f"fig 1 phases: dockship wall {fmt_s(rolls)} = node walk (report `seconds`) {fmt_s(walks)} "
                f"+ outside the walk (interpreter, imports, config, registry lookup, SSH connects, plan, "
                f"lock, history, unlock) {fmt_s(outside)}; per-node swap after the first node: dockship "
                f"{fmt_s(per_node_ds)}, plain {fmt_s(per_node_plain)}")
        if "3" in self.only:
            r = [rollbacks[k] / rolls[k] for k in range(len(rollbacks))]
            self.report.add(Row("3", "rollback / roll of figure 1 (min_healthy 0; a rollback pulls nothing)",
                                fmt_s(rollbacks), fmt_s(rolls), fmt_r(r), f"≤ {GOALS['rollback']:.2f}",
                                judged(r, GOALS["rollback"]), r))
            rb_plain = [rollbacks[k] / plain_backs[k] for k in range(min(len(rollbacks), len(plain_backs)))]
            self.report.detail(
                f"fig 3 phases: rollback outside the walk {fmt_s(rb_outside)}; plain script going back "
                f"without a pull {fmt_s(plain_backs)} (rollback / that = {fmt_r(rb_plain)}); the roll's "
                f"pull is what a rollback saves: roll − rollback = "
                f"{fmt_s([rolls[k] - rollbacks[k] for k in range(len(rollbacks))])}")

    # -- figure 4: build ------------------------------------------------------------------------------

    def raw_build(self, version: str) -> float:
        """docker build + docker push of the very context dockship sends for this version (its
        Dockerfile and verified wheelhouse, made before the clock starts), with no network."""
        from buildbench import raw_context
        from dockship.tags import parse_version, tag_for
        import io
        import tarfile
        context = self.tmp / f"context-{version}"
        with tarfile.open(fileobj=io.BytesIO(raw_context(self.lab, self.package, version,
                                                         self.image))) as tar:
            tar.extractall(context, filter="data")
        ref = f"{self.lab.registry}/{self.image}:{tag_for(parse_version(version))}"
        env = {**clean_env(), "DOCKER_BUILDKIT": "0"}
        docker_cli = shutil.which("docker") or "docker"
        t0 = time.monotonic()
        run([docker_cli, "build", "--network", "none", "--rm", "--force-rm", "-t", ref,
             str(context)], env=env, what=f"docker build of {ref}")
        run([docker_cli, "push", ref], env=env, what=f"docker push of {ref}")
        return time.monotonic() - t0

    def fig_4(self, ds_versions: list[str], raw_versions: list[str]) -> None:
        ds, raw = [], []
        for i, order in self.rounds("fig 4", 60, "dockship", "raw"):
            for who in order:
                if who == "dockship":
                    ds.append(self.build(ds_versions[i]))
                else:
                    raw.append(self.raw_build(raw_versions[i]))
            log(f"fig 4 run {i + 1}: dockship build {ds[-1]:.2f}s, docker build+push {raw[-1]:.2f}s")
        r = [ds[k] / raw[k] for k in range(min(len(ds), len(raw)))]
        self.report.add(Row("4", "`dockship build` / `docker build` + `docker push` (new version, warm cache)",
                            fmt_s(ds), fmt_s(raw), fmt_r(r), f"≤ {GOALS['build']:.2f}",
                            judged(r, GOALS["build"]), r))

    # -- figure 5: failed requests through the balancer ----------------------------------------

    def fig_5(self, a: str, b: str) -> None:
        import importlib.util
        if importlib.util.find_spec("dockship_lab.balancer") is None:
            self.report.add(Row("5", "failed requests through the balancer during roll / rollback",
                                "n/a (balancer not available)", "", "", "0 failed", "n/a"))
            self.report.detail("fig 5: dockship_lab.balancer (balancer_up) is not in this tree, so "
                               "there is no balancer to measure through")
            return
        self._fig_5_balancer(a, b)

    def _fig_5_balancer(self, a: str, b: str) -> None:
        from dockship_lab.balancer import balancer_up
        from dockship_lab.paths import LabPaths

        nodes = list(self.lab.nodes)
        paths = LabPaths.default()
        log(f"fig 5: HAProxy {LB_NAME} on 127.0.0.1:{LB_PORT} in front of port {PORTS[SVC_LB]} of the lab nodes")
        self.lb_made = True
        lb = balancer_up(paths, LB_NAME, LB_PORT, PORTS[SVC_LB], nodes)
        assert_local("balancer", lb.frontend_url)
        health = {"path": "/health", "timeout": 30, "min_healthy": 1, "interval": 0.25}
        cfg = self.config("lb", env=ENV_MAIN, service=SVC_LB, nodes=nodes, ssh_key=self.lab.ssh_key,
                          known_hosts=self.lab.known_hosts, health=health,
                          rollout={"canary": 1, "batch": 1},
                          balancer={"kind": "haproxy", "socket": lb.socket, "backend": lb.backend,
                                    "server": "{name}"})
        dockship(cfg, "roll", "--env", ENV_MAIN, "--service", SVC_LB, "--tag", a)
        for n in nodes:
            wait_http(f"http://{n.address}:{PORTS[SVC_LB]}/", want_version=a)
        load = Load(f"{lb.frontend_url}/", rate=LB_RATE)
        load.wait_all_ok(timeout=30)
        counts: dict[str, list[tuple[int, int]]] = {"roll": [], "rollback": []}
        try:
            for i, _ in self.rounds("fig 5", 40):
                make_absent(nodes, self.ref(b))
                for phase, args in (("roll", ("roll", "--tag", b)), ("rollback", ("rollback",))):
                    token = load.start()
                    try:
                        dockship(cfg, args[0], "--env", ENV_MAIN, "--service", SVC_LB, *args[1:])
                    finally:
                        counts[phase].append(load.end(token))
                log(f"fig 5 run {i + 1}: roll {counts['roll'][-1]}, rollback {counts['rollback'][-1]} "
                    "(requests, failed)")
        finally:
            load.stop()
        cells = []
        for phase in ("roll", "rollback"):
            total = sum(r for r, _ in counts[phase])
            failed = sum(f for _, f in counts[phase])
            cells.append(f"{phase}: {total} requests, {failed} failed")
        failed_all = sum(f for ph in counts.values() for _, f in ph)
        self.report.add(Row("5", f"requests through HAProxy at {LB_RATE} req/s during roll / rollback "
                                 f"of 3 nodes (sum of {len(counts['roll'])} runs)",
                            "; ".join(cells), "—", "—", "0 failed", "yes" if failed_all == 0 else "**no**"))
        if load.errors:
            self.report.detail("fig 5 failed requests (first 5): " + "; ".join(load.errors[:5]))

    # -- the bench nodes (figures 2 and 6) ----------------------------------------------------------

    def bench_up(self, count: int, old: str) -> None:
        from dockship_lab.nodes import client_key, known_hosts_file, nodes_up
        from dockship_lab.paths import LabPaths
        self.bench_paths = LabPaths(root=BENCH_ROOT, run=BENCH_RUN,
                                    cache=Path("/var/cache/dockship-bench"), subnet=BENCH_SUBNET)
        log(f"bench nodes: bringing up {count} node engines on {BENCH_SUBNET}.0/24")
        t0 = time.monotonic()
        made = nodes_up(self.bench_paths, count)
        self.bench_nodes = [Node(n.name, n.address, n.docker, n.zone, n.socket) for n in made]
        self.bench_key = str(client_key(self.bench_paths))
        self.bench_known = str(known_hosts_file(self.bench_paths))
        log(f"bench nodes up in {time.monotonic() - t0:.1f}s; checking that they reach the registry")

        def pull(n: Node) -> None:
            repo, digest = self.ref(old).split("@")
            with contextlib.closing(engine(n.socket)) as c:
                try:
                    c.images.pull(repo, tag=digest)
                except Exception as exc:  # noqa: BLE001 - explained below
                    raise BenchError(f"bench {n.name} ({n.address}) cannot pull from the lab registry "
                                     f"{self.lab.registry}: {str(exc)[:200]}") from None
        each(pull, self.bench_nodes)

    def bench_down(self) -> None:
        if self.bench_paths is None:
            return
        from dockship_lab.network import network_down
        from dockship_lab.nodes import nodes_down
        if self.swarm_made:
            self.swarm_down()
        log("bench nodes: removing them")
        nodes_down(self.bench_paths)
        network_down(self.bench_paths)
        for d in (BENCH_ROOT, BENCH_RUN):
            shutil.rmtree(d, ignore_errors=True)

    def bench_config(self, name: str, service: str, nodes: list[Node], health: dict, rollout: dict,
                     **kw: Any) -> Path:
        return self.config(name, env=kw.pop("env", ENV_BENCH), service=service, nodes=nodes,
                           ssh_key=self.bench_key, known_hosts=self.bench_known, health=health,
                           rollout=rollout, **kw)

    # -- figure 6: 3, 6, 9 nodes ------------------------------------------------------------------------

    def fig_6(self, a: str, b: str) -> None:
        sizes = (3, 6, 9)
        health = {"path": "/health", "timeout": 30, "min_healthy": 1, "interval": 0.5}
        fast = {"canary": 0, "batch": "100%"}
        measured = {k: self.bench_config(f"scale{k}", SVC_SCALE, self.bench_nodes[:k], health,
                                         {"canary": 0, "batch": "34%"}) for k in sizes}
        resets = {k: self.bench_config(f"scale{k}-reset", SVC_SCALE, self.bench_nodes[:k], FAST_HEALTH, fast)
                  for k in sizes}
        log(f"fig 6: deploying the old version on {BENCH_NODES} bench nodes")
        dockship(resets[9], "roll", "--env", ENV_BENCH, "--service", SVC_SCALE, "--tag", a)
        times: dict[int, list[float]] = {k: [] for k in sizes}
        outside: dict[int, list[float]] = {k: [] for k in sizes}
        walk: dict[int, list[float]] = {k: [] for k in sizes}
        cpu: dict[int, list[float]] = {k: [] for k in sizes}
        for i, _ in self.rounds("fig 6", 90):
            for k in sizes[i % 3:] + sizes[:i % 3]:
                make_absent(self.bench_nodes[:k], self.ref(b))
                t, out = dockship(measured[k], "roll", "--env", ENV_BENCH, "--service", SVC_SCALE, "--tag", b)
                times[k].append(t)
                cpu[k].append(LAST_CPU)
                walk[k].append(out["seconds"])
                outside[k].append(t - out["seconds"])
                dockship(resets[k], "rollback", "--env", ENV_BENCH, "--service", SVC_SCALE)
            log(f"fig 6 run {i + 1}: " + ", ".join(f"{k} nodes {times[k][-1]:.2f}s" for k in sizes))
        from dockship.plan import batch_sizes
        batches = {k: len(batch_sizes(k, 0, ["34%"])) for k in sizes}
        runs = min(len(v) for v in times.values())
        cells = []
        for k in sizes:
            ratio = [times[k][j] / times[3][j] for j in range(runs)]
            cells.append((k, ratio))
        r9 = cells[-1][1]
        self.report.add(Row("6", "roll at 3 / 6 / 9 nodes, batch \"34%\", min_healthy 1 s "
                                 f"({'/'.join(str(batches[k]) for k in sizes)} batches)",
                            " · ".join(f"{k}: {fmt_s(times[k])}" for k in sizes),
                            "3-node time",
                            " · ".join(f"{k}: {fmt_r(r)}" for k, r in cells),
                            "flat (≤ 1.25 at 9)", "yes" if r9 and statistics.median(r9) <= 1.25 else "**no**",
                            r9))
        self.report.detail("fig 6 phases: node walk " + " · ".join(f"{k} nodes {fmt_s(walk[k])}" for k in sizes)
                           + "; outside the walk " + " · ".join(f"{k} nodes {fmt_s(outside[k])}" for k in sizes)
                           + "; CPU of the dockship process " + " · ".join(f"{k} nodes {fmt_s(cpu[k])}"
                                                                          for k in sizes)
                           + f" (all {BENCH_NODES} node engines share this machine's {os.cpu_count()} CPUs)")

    # -- figure 2: Docker Swarm ---------------------------------------------------------------------

    def docker_cli(self, node: Node, *args: str, timeout: float = 120) -> str:
        docker_cli = shutil.which("docker") or "docker"
        _, proc = run([docker_cli, "-H", f"unix://{node.socket}", *args], timeout=timeout,
                      what=f"docker {' '.join(args[:2])} on bench {node.name}")
        return proc.stdout.strip()

    def swarm_up(self, nodes: list[Node], managers: int = 1) -> None:
        """`swarm init` on the first node; the next `managers` − 1 join as managers, the rest as
        workers (swarm_join)."""
        manager = nodes[0]
        log(f"swarm init on bench {manager.name}; {len(nodes) - 1} more nodes join over the bridge "
            f"({managers - 1} of them as managers)")
        for n in nodes:   # a swarm left over by an interrupted run
            with contextlib.suppress(BenchError):
                self.docker_cli(n, "swarm", "leave", "--force")
        self.swarm_made = True
        self.swarm_nodes = [manager]
        self.docker_cli(manager, "swarm", "init", "--advertise-addr", manager.address,
                        "--listen-addr", f"{manager.address}:2377")
        self.swarm_join(nodes[1:managers], role="manager")
        self.swarm_join(nodes[managers:])

    def swarm_join(self, nodes: list[Node], role: str = "worker") -> None:
        """Join more bench nodes to the swarm of swarm_up; wait until every node is ready."""
        manager = self.swarm_nodes[0]
        token = self.docker_cli(manager, "swarm", "join-token", "-q", role)
        for n in nodes:
            self.swarm_nodes.append(n)
            try:
                self.docker_cli(n, "swarm", "join", "--token", token, "--advertise-addr", n.address,
                                "--listen-addr", f"{n.address}:2377", f"{manager.address}:2377",
                                timeout=60)
            except BenchError as exc:
                raise BenchError(f"bench {n.name} cannot join the swarm on {manager.address}:2377 "
                                 f"(node-to-node traffic on the lab bridge; design §5 needs the "
                                 f"DOCKER-USER accept rule): {exc}") from None
        deadline = time.monotonic() + 60
        while True:
            ready = self.docker_cli(manager, "node", "ls", "--format", "{{.Status}}").split()
            if ready.count("Ready") == len(self.swarm_nodes):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"swarm has {ready.count('Ready')} ready nodes of {len(self.swarm_nodes)}")
            time.sleep(0.5)

    def swarm_down(self) -> None:
        """Every bench node leaves the swarm (its services, configs and tasks go with it)."""
        log("tearing the bench swarm down")
        nodes = self.swarm_nodes or self.bench_nodes[:3]
        with contextlib.suppress(BenchError):
            self.docker_cli(nodes[0], "service", "rm", SVC_SW)
        for n in reversed(nodes):
            with contextlib.suppress(BenchError):
                self.docker_cli(n, "swarm", "leave", "--force")
        self.swarm_made = False
        self.swarm_nodes = []

    def swarm_status(self, manager: Node, service: str = SVC_SW) -> dict:
        import docker.errors
        with contextlib.closing(engine(manager.socket)) as c:
            try:
                return c.api.inspect_service(service).get("UpdateStatus") or {}
            except docker.errors.NotFound:
                raise BenchError(f"swarm service {service} vanished") from None

    def swarm_update(self, manager: Node, nodes: list[Node], *args: str, version: str,
                     service: str = SVC_SW) -> tuple[float, float]:
        """`docker service update --detach ARGS` then poll until the update completed.

        Returns the wall time (command issued → UpdateStatus completed, polled every 0.1 s)
        and Swarm's own CompletedAt − StartedAt.
        """
        before = self.swarm_status(manager, service).get("StartedAt")
        t0 = time.monotonic()
        self.docker_cli(manager, "service", "update", "--detach", "--no-resolve-image", *args, service)
        deadline = t0 + 180
        while True:
            st = self.swarm_status(manager, service)
            if st.get("StartedAt") != before and st.get("State") == "completed":
                break
            if st.get("StartedAt") != before and st.get("State") in ("paused", "rollback_completed",
                                                                      "rollback_paused", "rollback_started"):
                raise BenchError(f"swarm update ended {st.get('State')}: {st.get('Message')}")
            if time.monotonic() > deadline:
                raise BenchError(f"swarm update not completed within 180s: {st}")
            time.sleep(0.1)
        wall = time.monotonic() - t0
        own = _iso_delta(st.get("StartedAt"), st.get("CompletedAt"))
        for n in nodes:
            wait_http(f"http://{n.address}:{PORTS[service]}/", timeout=20, want_version=version)
        return wall, own

    def fig_2(self, a: str, b: str) -> None:
        nodes = self.bench_nodes[:3]
        manager = nodes[0]
        port = PORTS[SVC_SW]
        interval = 0.5
        self.swarm_up(nodes)
        health_cmd = (f"python3 -c \"import urllib.request; urllib.request.urlopen("
                      f"'http://127.0.0.1:{port}/health', timeout=2)\"")
        log(f"fig 2: creating swarm service {SVC_SW} (global, {len(nodes)} tasks) on the old version")
        self.docker_cli(manager, "service", "create", "--detach", "--no-resolve-image", "--name", SVC_SW,
                        "--mode", "global", "--init", "--env", f"PORT={port}",
                        "--publish", f"mode=host,target={port},published={port}",
                        "--health-cmd", health_cmd, "--health-interval", f"{interval}s",
                        "--health-timeout", "2s", "--health-retries", "1", "--health-start-period", "0s",
                        "--update-parallelism", "1", "--update-delay", "0s", "--update-order", "stop-first",
                        "--update-failure-action", "rollback", "--update-monitor", "1s",
                        "--stop-grace-period", "10s", self.ref(a), "hello-svc", timeout=120)
        for n in nodes:
            wait_http(f"http://{n.address}:{port}/", timeout=90, want_version=a)
        fast_ds = self.bench_config("swarmcmp-reset", SVC_DS, nodes, FAST_HEALTH, {"canary": 0, "batch": "100%"})
        dockship(fast_ds, "roll", "--env", ENV_BENCH, "--service", SVC_DS, "--tag", a)
        for window in SWARM_WINDOWS:
            health = {"path": "/health", "timeout": 30, "min_healthy": window, "interval": interval}
            # Two dockship configs against the same Swarm update: Swarm's own meaning of the
            # window (move on once a task is healthy, watch every task for the window in the
            # background, fail the update if one dies inside it: overlap_min_healthy, no canary),
            # and dockship's default (a canary, and every node held for its window in turn).
            configs = {
                "overlap": self.bench_config(f"swarmcmp{window}o", SVC_DS, nodes, health,
                                             {"canary": 0, "batch": 1, "overlap_min_healthy": True}),
                "hold": self.bench_config(f"swarmcmp{window}", SVC_DS, nodes, health,
                                          {"canary": 1, "batch": 1}),
            }
            ds: dict[str, list[float]] = {k: [] for k in configs}
            sw, sw_own, rb = [], [], []
            for i, order in self.rounds(f"fig 2 ({window} s)", 40 + 15 * window, "overlap", "hold", "swarm"):
                for who in order:
                    make_absent(nodes, self.ref(b))
                    if who in configs:
                        t, _ = dockship(configs[who], "roll", "--env", ENV_BENCH, "--service", SVC_DS, "--tag", b)
                        ds[who].append(t)
                        if window == SWARM_WINDOWS[0] and who == "hold":
                            # figure 3 again, with a safety window: the rollback under the same config
                            t_rb, _ = dockship(configs[who], "rollback", "--env", ENV_BENCH, "--service", SVC_DS)
                            rb.append(t_rb)
                        else:
                            dockship(fast_ds, "rollback", "--env", ENV_BENCH, "--service", SVC_DS)
                    else:
                        # parallelism 1, stop-first, monitor = window, rollback on failure
                        self.docker_cli(manager, "service", "update", "--detach", "--update-parallelism", "1",
                                        "--update-monitor", f"{window}s", SVC_SW)
                        wall, own = self.swarm_update(manager, nodes, "--image", self.ref(b), version=b)
                        sw.append(wall)
                        sw_own.append(own)
                        # back to the old version, all at once and unmeasured
                        self.docker_cli(manager, "service", "update", "--detach", "--update-parallelism", "0",
                                        "--update-monitor", "0s", SVC_SW)
                        self.swarm_update(manager, nodes, "--image", self.ref(a), version=a)
                log(f"fig 2 ({window} s) run {i + 1}: dockship overlap {ds['overlap'][-1]:.2f}s, "
                    f"hold {ds['hold'][-1]:.2f}s, swarm {sw[-1]:.2f}s")
            r = [ds["overlap"][k] / sw[k] for k in range(min(len(ds["overlap"]), len(sw)))]
            self.report.add(Row(f"2 ({window} s)", f"roll of 3 nodes / Swarm rolling update, safety window "
                                                   f"{window} s, Swarm's meaning of it (overlap_min_healthy, "
                                                   "no canary; min_healthy = update-monitor)",
                                fmt_s(ds["overlap"]), fmt_s(sw), fmt_r(r), f"≤ {GOALS['swarm']:.2f}",
                                judged(r, GOALS["swarm"]), r))
            r = [ds["hold"][k] / sw[k] for k in range(min(len(ds["hold"]), len(sw)))]
            self.report.add(Row(f"2 ({window} s, hold)", f"the same with dockship's default: a canary, and "
                                                         f"every node held {window} s before the next",
                                fmt_s(ds["hold"]), fmt_s(sw), fmt_r(r), "— (a stronger guarantee)", "—", r))
            if rb:
                r = [rb[k] / ds["hold"][k] for k in range(len(rb))]
                self.report.add(Row(f"3 ({window} s)", f"rollback / roll with min_healthy {window} s "
                                                       "(bench nodes 1–3, canary 1, batch 1)",
                                    fmt_s(rb), fmt_s(ds["hold"][:len(rb)]), fmt_r(r),
                                    f"≤ {GOALS['rollback']:.2f}", judged(r, GOALS["rollback"]), r))
            self.report.detail(f"fig 2 ({window} s): Swarm's own UpdateStatus CompletedAt − StartedAt "
                               f"{fmt_s(sw_own)} (the wall time above adds the CLI call and 0.1 s polling)")
        self.swarm_down()

    # -- the whole run ----------------------------------------------------------------------------

    def main(self) -> int:
        try:
            self.check_lab()
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        a, b = "1.0.0", "1.1.0"
        ds_builds = [f"2.0.{i}" for i in range(self.runs)]
        raw_builds = [f"3.0.{i}" for i in range(self.runs)]
        need_bench = bool({"2", "6", "8", "8a", "8b"} & self.only)
        try:
            log(f"run {self.run_id}: package {self.package}, {self.runs} runs per figure, "
                f"figures {','.join(sorted(self.only))}")
            if self.uses_lab_nodes():
                self.cleanup_main()
            self.publish([a, b] + (ds_builds + raw_builds if "4" in self.only else []))
            log("building the old and new versions with dockship (also warms the build cache)")
            self.build(a)
            self.build(b)
            self.cli_start()
            if need_bench:
                self.guard("2/6/8", lambda: self.bench_up(BENCH_NODES, a))
            if {"1", "3"} & self.only:
                self.guard("1/3", lambda: self.fig_1_3(a, b))
            if "4" in self.only:
                self.guard("4", lambda: self.fig_4(ds_builds, raw_builds))
            if "5" in self.only:
                self.guard("5", lambda: self.fig_5(a, b))
            if "7" in self.only:
                from buildbench import figure_7
                self.guard("7", lambda: figure_7(self, sys.modules[__name__]))
            if need_bench and self.bench_nodes:
                if "6" in self.only:
                    self.guard("6", lambda: self.fig_6(a, b))
                if "2" in self.only:
                    self.guard("2", lambda: self.fig_2(a, b))
                parts = {p for p in "ab" if {"8", f"8{p}"} & self.only}
                if parts:
                    from swarmbench import figure_8
                    self.guard("8", lambda: figure_8(self, sys.modules[__name__], parts))
        finally:
            self.teardown()
        self.print_and_write()
        return 1 if self.report.failures else 0

    def guard(self, figure: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BenchError as exc:
            self.report.failures.append(f"figure {figure}: {exc}")
            self.report.add(Row(figure, "failed", f"error: {str(exc).splitlines()[0][:160]}"))

    def cli_start(self) -> None:
        ts = []
        for _ in range(3):
            t, _ = run([PY, "-m", "dockship", "--version"], what="dockship --version")
            ts.append(t)
        t_imports = []
        code = "import dockship.cli, dockship.roll, dockship.build, dockship.sshengine"
        for _ in range(3):
            t, _ = run([PY, "-c", code], what="importing dockship")
            t_imports.append(t)
        self.report.detail(f"CLI start: `python -m dockship --version` {fmt_s(ts)}; interpreter + "
                           f"imports of cli, roll, build, sshengine {fmt_s(t_imports)}")

    def teardown(self) -> None:
        log("cleaning up")
        steps = [("bench nodes", self.bench_down)]
        if self.lb_made:
            steps.append(("balancer", self.lb_down))
        if self.lab is not None and self.uses_lab_nodes():
            steps.append(("shared lab nodes", self.cleanup_main))
            steps.append(("build engine images", self.cleanup_build_engine))
        for what, fn in steps:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - clean up the rest, then report
                self.report.failures.append(f"cleanup of {what}: {exc}")
                log(f"cleanup of {what} failed: {exc}")
        shutil.rmtree(self.tmp, ignore_errors=True)

    def lb_down(self) -> None:
        from dockship_lab.balancer import balancer_down
        from dockship_lab.paths import LabPaths
        balancer_down(LabPaths.default(), LB_NAME)

    def cleanup_build_engine(self) -> None:
        import docker
        client = docker.from_env(timeout=120)
        try:
            for image in client.images.list(name=f"{self.lab.registry}/{self.image}"):
                for tag in image.tags:
                    with contextlib.suppress(Exception):
                        client.images.remove(tag, force=False)
        finally:
            client.close()

    # -- output ---------------------------------------------------------------------------------

    def table(self) -> str:
        lines = ["| # | figure | dockship | baseline | ratio, median (min–max) | goal | met |",
                 "|---|---|---|---|---|---|---|"]
        for r in sorted(self.report.rows, key=lambda row: (row.figure[:1], row.figure)):
            lines.append(f"| {r.figure} | {r.what} | {r.dockship} | {r.baseline} | {r.ratio} | {r.goal} | {r.met} |")
        return "\n".join(lines)

    def print_and_write(self) -> None:
        elapsed = time.monotonic() - self.started
        when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        m = self.machine
        machine = (f"{m.get('cpu', '?')}, nproc {m.get('nproc', '?')}, memory {m.get('memory', '?')}, "
                   f"kernel {m.get('kernel', '?')}, docker engine {m.get('docker', '?')} "
                   f"(CLI {m.get('docker_cli', '?')}), {m.get('os', '?')}, Python {platform.python_version()}")
        body = ["# dockship benchmark results", "",
                f"Run {when} on {machine}; dockship {code_version()}.", "",
                f"{self.runs} runs per figure, interleaved with their baseline; every figure is the median "
                f"with (min–max). Whole run: {elapsed / 60:.1f} min. Produced by `make bench` "
                f"(`bench/run.py`); see bench/README.md for what each figure measures.", "",
                self.table(), ""]
        if self.report.details:
            body += ["Phases and side figures:", ""] + [f"- {d}" for d in self.report.details] + [""]
        if self.report.failures:
            body += ["Failures:", ""] + [f"- {f}" for f in self.report.failures] + [""]
        text = "\n".join(body)
        print(text)
        if self.args.write:
            notes = ""
            if RESULTS.exists() and NOTES_MARK in RESULTS.read_text():
                notes = RESULTS.read_text().split(NOTES_MARK, 1)[1]
            RESULTS.write_text(text + "\n" + NOTES_MARK + (notes or "\n"))
            log(f"wrote {RESULTS.relative_to(ROOT)}")
        log(f"whole run {elapsed:.0f}s")


def _iso_delta(start: str | None, end: str | None) -> float:
    def parse(s: str) -> datetime:
        s = re.sub(r"(\.\d{6})\d*", r"\1", s.replace("Z", "+00:00"))
        return datetime.fromisoformat(s)
    if not start or not end:
        return float("nan")
    return (parse(end) - parse(start)).total_seconds()


def code_version() -> str:
    """The commit measured, and whether the working tree had changes on top of it."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "(commit unknown)"
    if not head:
        return "(commit unknown)"
    sha, _, subject = head.partition(" ")
    return f"at {sha} (\"{subject[:60]}\"){', with uncommitted changes in src/' if dirty else ''}"


def machine_info() -> dict[str, str]:
    info = {"nproc": str(os.cpu_count()), "kernel": platform.release()}
    with contextlib.suppress(OSError):
        mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        info["memory"] = f"{int(mem.split()[1]) / 1024 / 1024:.1f} GiB"
    with contextlib.suppress(OSError, StopIteration):
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name"))
    with contextlib.suppress(OSError, StopIteration):
        info["os"] = next(line.split("=", 1)[1].strip('"') for line in
                          Path("/etc/os-release").read_text().splitlines() if line.startswith("PRETTY_NAME="))
    with contextlib.suppress(Exception):
        import docker
        client = docker.from_env(timeout=10)
        info["docker"] = client.version().get("Version", "?")
        client.close()
    with contextlib.suppress(Exception):
        out = subprocess.run([shutil.which("docker") or "docker", "version", "--format", "{{.Client.Version}}"],
                             capture_output=True, text=True, timeout=20, env=clean_env())
        info["docker_cli"] = out.stdout.strip() or "?"
    return info


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_plain"]:
        return plain_main(argv[1])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="runs per figure (default 5)")
    p.add_argument("--only", help="comma-separated figures to measure, e.g. 1,3 or 8b (default: all)")
    p.add_argument("--budget", type=float, default=780,
                   help="seconds after which figures stop adding runs, so that the whole run stays "
                        "under ~15 minutes (default 780)")
    p.add_argument("--no-write", dest="write", action="store_false",
                   help=f"do not rewrite {RESULTS.relative_to(ROOT)}")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    bench = Bench(args)
    try:
        return bench.main()
    except BenchError as exc:
        sys.stderr.write(f"bench: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("bench: interrupted (cleaned up what it made)\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
