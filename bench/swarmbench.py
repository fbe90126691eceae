"""Figures 8a and 8b (issue 12): dockship's Swarm backend on the bench nodes made into a swarm.

- 8a: a dockship roll on a 3-node swarm (`[environments.benchswarm] swarm = { manager = ... }`,
  canary 0, batch 1, `min_healthy` = Swarm's `--update-monitor`) / a plain
  `docker service update --image` of a plain global Swarm service of the same image. The plain
  service is built from the very spec dockship gives a revision (`swarmspec`: the container,
  its HEALTHCHECK, init, restart policy, host-mode port with dnsrr, parallelism 1, stop-first,
  monitor = the window, failure action rollback), without the placement constraint that ties a
  revision to its nodes' labels; it publishes another host port than dockship's revisions
  (host-mode ports of two services on one node collide).
- 8b: what the controller costs as the fleet grows: one roll of the same service at 3, 6 and 9
  bench nodes, SSH backend (every node's engine) against Swarm backend (one manager), with
  dockship run in this process (`dockship.roll.roll`) so that it can be counted: SSH
  connections opened, engine API requests (HTTP requests docker-py sends), the Swarm
  manager's own call and connection counts, and the process's CPU seconds. A linear fit of
  each count over the three sizes is extrapolated to 100 and 1,000 nodes (printed under the
  table; RESULTS.md's notes discuss it).

The counting is bench-only: `counting()` wraps `requests.adapters.HTTPAdapter.send`,
`paramiko.Transport.start_client` / `open_channel` and `SwarmManager.__init__` in this process
while one roll runs, and restores them; product code is not changed for it.

The swarm: bench nodes 1–3 are its managers (8a runs on those three alone), nodes 4–9 join as
workers for 8b. Every swarm node carries the labels the backend reads: `dockship.name`,
`dockship.zone` and `dockship.roles` = `web` plus `n3`, `n6`, `n9` for the sizes it is part of,
so that the Swarm backend's service of size k (role `nk`) sees exactly the first k nodes.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator
from urllib.parse import urlsplit

GOAL = 1.10
WINDOW = 1                # seconds: dockship min_healthy = Swarm --update-monitor (8a)
MANAGERS = 3
SIZES = (3, 6, 9)
EXTRAPOLATE = (100, 1000)
ROLLOUT_B = {"canary": 0, "batch": "34%"}          # 8b: three batches at every size (as figure 6)
HEALTH_B = {"path": "/health", "timeout": 30, "min_healthy": 1, "interval": 0.5}
RESET = {"canary": 0, "batch": "100%"}
# The Swarm backend's unmeasured resets of 8b go 3 nodes at a time, not all 9: its one manager
# connection carries every node thread's calls, and past sshd's 10 sessions a channel that
# cannot open closes the whole SSH connection (see RESULTS.md notes, figure 8).
RESET_SWARM = {"canary": 0, "batch": 3}


@dataclass(frozen=True)
class Cost:
    """What one in-process roll cost the dockship process."""

    wall: float
    cpu: float              # user + system seconds of this process (every thread) during the roll
    api: int                # engine API requests (HTTP requests docker-py sent)
    ssh: int                # SSH connections opened (handshakes)
    channels: int           # SSH channels opened (one `docker system dial-stdio` each)
    manager_calls: int      # SwarmManager.calls (Swarm backend only)
    manager_connections: int
    peak_fds: int           # open file descriptors of this process, highest seen during the roll
    peak_threads: int       # threads of this process, highest seen during the roll
    endpoints: tuple[tuple[str, int], ...] = ()     # API requests by endpoint, most first


class Peaks:
    """Samples this process's open file descriptors and threads every 50 ms, keeping the highest
    (sockets, SSH relays and node threads are what a large fleet runs out of first)."""

    def __init__(self):
        self.fds = self.threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="bench-peaks")

    def _loop(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.fds = max(self.fds, len(os.listdir("/proc/self/fd")))
            self.threads = max(self.threads, threading.active_count() - 1)   # not this sampler
            if self._stop.wait(0.05):
                return

    def __enter__(self) -> "Peaks":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def counting() -> Iterator[dict[str, Any]]:
    """Count engine API requests, SSH connections and channels, and Swarm managers made."""
    import paramiko
    import requests.adapters

    from dockship import swarmmanager

    counts: dict[str, Any] = {"api": 0, "ssh": 0, "channels": 0, "managers": [],
                              "endpoints": collections.Counter()}
    lock = threading.Lock()
    adapter, transport, manager = (requests.adapters.HTTPAdapter, paramiko.Transport,
                                   swarmmanager.SwarmManager)
    saved = (adapter.send, transport.start_client, transport.open_channel, manager.__init__)
    send, start_client, open_channel, init = saved

    def bump(key: str) -> None:
        with lock:
            counts[key] += 1

    def counted_send(self, request, *args, **kwargs):
        if str(request.url).startswith("http+docker://"):    # docker-py; not the registry, not probes
            bump("api")
            with lock:
                counts["endpoints"][endpoint(request.method, request.url)] += 1
        return send(self, request, *args, **kwargs)

    def counted_start(self, *args, **kwargs):
        bump("ssh")
        return start_client(self, *args, **kwargs)

    def counted_open(self, *args, **kwargs):
        bump("channels")
        return open_channel(self, *args, **kwargs)

    def recorded_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        with lock:
            counts["managers"].append(self)

    adapter.send, transport.start_client, transport.open_channel = counted_send, counted_start, counted_open
    manager.__init__ = recorded_init
    try:
        yield counts
    finally:
        adapter.send, transport.start_client, transport.open_channel, manager.__init__ = saved


def endpoint(method: str, url: str) -> str:
    """`GET /tasks`, `POST /nodes/{id}/update`: an engine request without its ids and query."""
    path = urlsplit(url).path
    path = re.sub(r"^/v[0-9.]+", "", path)
    path = "/".join(p if p in KNOWN_PATH_WORDS else "{id}" for p in path.split("/"))
    return f"{method} {path}"


KNOWN_PATH_WORDS = {"", "containers", "images", "nodes", "services", "tasks", "configs", "create",
                    "json", "start", "stop", "update", "wait", "logs", "archive", "version", "info",
                    "swarm", "distribution", "events", "_ping", "exec", "prune", "kill", "rename"}


def roll_in_process(r: ModuleType, cfg: Path, env: str, service: str, *, tag: str | None) -> Cost:
    """`dockship roll` (or, with no tag, `rollback`) as a library call in this process, counted."""
    from dockship import config as config_mod
    from dockship.roll import RollOptions, roll

    config = config_mod.load(cfg)
    with counting() as counts, Peaks() as peaks:
        cpu0, t0 = time.process_time(), time.monotonic()
        outcomes = roll(config, env, service=service, opts=RollOptions(tag=tag), rollback=tag is None)
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    report = outcomes[-1].report if outcomes else None
    if report is None or not report.ok:
        what = "roll" if tag else "rollback"
        raise r.BenchError(f"in-process {what} of {service} in {env} ended "
                           f"{report.result.value if report else 'without a report'}: "
                           f"{report.reason if report else ''}")
    managers = counts["managers"]
    return Cost(wall=wall, cpu=cpu, api=counts["api"], ssh=counts["ssh"], channels=counts["channels"],
                manager_calls=sum(m.calls for m in managers),
                manager_connections=sum(m.connections for m in managers),
                peak_fds=peaks.fds, peak_threads=peaks.threads,
                endpoints=tuple(counts["endpoints"].most_common()))


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope per node) of y over N."""
    slope, intercept = statistics.linear_regression([float(n) for n, _ in points], [y for _, y in points])
    return intercept, slope


def fmt_fit(points: list[tuple[int, float]], digits: int) -> str:
    a, b = fit(points)
    ext = " · ".join(f"{n}: {a + b * n:.{digits}f}" for n in EXTRAPOLATE)
    return f"{a:.{digits}f} + {b:.{max(digits, 2)}f}·N (→ {ext})"


class SwarmFigures:
    def __init__(self, bench, r: ModuleType):
        self.b, self.r = bench, r
        self.a, self.b_version = "1.0.0", "1.1.0"

    # -- the swarm ------------------------------------------------------------------------

    def manager(self):
        return self.b.swarm_nodes[0]

    def label(self, nodes: list) -> None:
        """The labels the Swarm backend reads, written as a user does (`docker node update`)."""
        with contextlib.closing(self.r.engine(self.manager().socket)) as c:
            ids = {(n.get("Status") or {}).get("Addr"): n["ID"] for n in c.api.nodes()}
        for i, n in enumerate(self.b.bench_nodes):
            if n not in nodes:
                continue
            if n.address not in ids:
                raise self.r.BenchError(f"bench {n.name} ({n.address}) is not in the swarm")
            roles = ",".join(["web"] + [f"n{k}" for k in SIZES if i < k])
            self.b.docker_cli(self.manager(), "node", "update", "--label-add", f"dockship.name={n.name}",
                              "--label-add", f"dockship.zone={n.zone}",
                              "--label-add", f"dockship.roles={roles}", ids[n.address])

    def swarm_config(self, name: str, service: str, health: dict, rollout: dict, role: str = "web") -> Path:
        return self.b.bench_config(name, service, [], health, rollout, env=self.r.ENV_SWARM,
                                   swarm_manager=self.manager().docker, role=role)

    def remove_services(self, *names: str, label_service: str | None = None) -> None:
        """Remove services by name, and every revision of a dockship service (by its label)."""
        import docker.errors
        with contextlib.closing(self.r.engine(self.manager().socket)) as c:
            found = [s for s in c.api.services() if (s.get("Spec") or {}).get("Name") in names]
            if label_service:
                found += c.api.services(filters={"label": [f"io.dockship.service={label_service}"]})
            for s in found:
                with contextlib.suppress(docker.errors.NotFound):
                    c.api.remove_service(s["ID"])

    # -- 8a -------------------------------------------------------------------------------

    def plain_service(self, health_cfg: Path, ref: str) -> None:
        """The plain global Swarm service: a dockship revision's spec without its constraint."""
        from dockship import config as config_mod
        from dockship.swarmspec import container_spec, healthcheck, service_spec

        r = self.r
        port = r.PORTS[r.SVC_SW8]
        svc = config_mod.load(health_cfg).service_for(r.ENV_SWARM, r.SVC_DS8)
        container = container_spec(ref=ref, command=("hello-svc",), env={"PORT": str(port)},
                                   labels={r.PLAIN_LABEL: self.b.run_id}, stop_timeout=10,
                                   health=healthcheck(svc.health, port))
        spec = service_spec(name=r.SVC_SW8, env=r.ENV_SWARM, service=r.SVC_SW8, container=container,
                            labels={r.PLAIN_LABEL: self.b.run_id}, port=port, host_port=port,
                            min_healthy=WINDOW)
        spec["TaskTemplate"].pop("Placement")
        with contextlib.closing(r.engine(self.manager().socket)) as c:
            c.api.create_service(spec["TaskTemplate"], name=r.SVC_SW8, labels=spec["Labels"],
                                 mode=spec["Mode"], update_config=spec["UpdateConfig"],
                                 rollback_config=spec["RollbackConfig"], endpoint_spec=spec["EndpointSpec"])

    def fig_8a(self) -> None:
        b, r = self.b, self.r
        a, new = self.a, self.b_version
        nodes = b.bench_nodes[:3]
        b.swarm_up(nodes, managers=MANAGERS)
        self.label(nodes)
        manager = self.manager()
        health = {"path": "/health", "timeout": 30, "min_healthy": WINDOW, "interval": 0.5}
        configs = {
            "overlap": self.swarm_config("sw8a-overlap", r.SVC_DS8, health,
                                         {"canary": 0, "batch": 1, "overlap_min_healthy": True}),
            "hold": self.swarm_config("sw8a-hold", r.SVC_DS8, health, {"canary": 0, "batch": 1}),
        }
        reset = self.swarm_config("sw8a-reset", r.SVC_DS8, r.FAST_HEALTH, RESET)
        r.log(f"fig 8a: plain global Swarm service {r.SVC_SW8} and dockship's {r.SVC_DS8} "
              f"on the old version")
        self.plain_service(configs["hold"], b.ref(a))
        r.dockship(reset, "roll", "--env", r.ENV_SWARM, "--service", r.SVC_DS8, "--tag", a)
        for n in nodes:
            r.wait_http(f"http://{n.address}:{r.PORTS[r.SVC_SW8]}/", timeout=90, want_version=a)
            r.wait_http(f"http://{n.address}:{r.PORTS[r.SVC_DS8]}/", timeout=30, want_version=a)
        ds: dict[str, list[float]] = {k: [] for k in configs}
        outside: dict[str, list[float]] = {k: [] for k in configs}
        sw, sw_own = [], []
        for i, order in b.rounds("fig 8a", 60, "overlap", "hold", "swarm"):
            for who in order:
                r.make_absent(nodes, b.ref(new))
                if who in configs:
                    t, out = r.dockship(configs[who], "roll", "--env", r.ENV_SWARM, "--service", r.SVC_DS8,
                                        "--tag", new)
                    ds[who].append(t)
                    outside[who].append(t - out["seconds"])
                    r.dockship(reset, "rollback", "--env", r.ENV_SWARM, "--service", r.SVC_DS8)
                else:
                    b.docker_cli(manager, "service", "update", "--detach", "--update-parallelism", "1",
                                 "--update-monitor", f"{WINDOW}s", r.SVC_SW8)
                    wall, own = b.swarm_update(manager, nodes, "--image", b.ref(new), version=new,
                                               service=r.SVC_SW8)
                    sw.append(wall)
                    sw_own.append(own)
                    b.docker_cli(manager, "service", "update", "--detach", "--update-parallelism", "0",
                                 "--update-monitor", "0s", r.SVC_SW8)
                    b.swarm_update(manager, nodes, "--image", b.ref(a), version=a, service=r.SVC_SW8)
            r.log(f"fig 8a run {i + 1}: dockship on Swarm overlap {ds['overlap'][-1]:.2f}s, "
                  f"hold {ds['hold'][-1]:.2f}s, swarm {sw[-1]:.2f}s")
        for who, title, goal in (
                ("overlap", f"dockship roll on a 3-node swarm / `docker service update --image` of a plain "
                            f"global service (parallelism 1, stop-first, same HEALTHCHECK, window {WINDOW} s "
                            "in Swarm's meaning: overlap_min_healthy, canary 0, batch 1)", f"≤ {GOAL:.2f}"),
                ("hold", f"the same with every node held {WINDOW} s before the next (canary 0, batch 1)",
                 "— (a stronger guarantee)")):
            ratio = [ds[who][k] / sw[k] for k in range(min(len(ds[who]), len(sw)))]
            row = "8a" if who == "overlap" else "8a (hold)"
            b.report.add(r.Row(row, title, r.fmt_s(ds[who]), r.fmt_s(sw), r.fmt_r(ratio), goal,
                               r.judged(ratio, GOAL) if who == "overlap" else "—", ratio))
        b.report.detail(f"fig 8a: dockship on Swarm outside the node walk (interpreter, imports, manager "
                        f"connect, plan, lock, history) overlap {r.fmt_s(outside['overlap'])}, hold "
                        f"{r.fmt_s(outside['hold'])}; Swarm's own UpdateStatus CompletedAt − StartedAt "
                        f"{r.fmt_s(sw_own)}")
        self.remove_services(r.SVC_SW8, label_service=r.SVC_DS8)

    # -- 8b -------------------------------------------------------------------------------

    def fig_8b(self) -> None:
        b, r = self.b, self.r
        a, new = self.a, self.b_version
        all_nodes = b.bench_nodes[:max(SIZES)]
        if len(all_nodes) < max(SIZES):
            raise r.BenchError(f"fig 8b needs {max(SIZES)} bench nodes, {len(all_nodes)} are up")
        if not b.swarm_nodes:
            b.swarm_up(all_nodes[:MANAGERS], managers=MANAGERS)
        b.swarm_join([n for n in all_nodes if n not in b.swarm_nodes])
        self.label(all_nodes)
        configs = {k: {
            "ssh": b.bench_config(f"cost-ssh{k}", r.SVC_SSH8, all_nodes[:k], HEALTH_B, ROLLOUT_B),
            "swarm": self.swarm_config(f"cost-swarm{k}", r.SVC_SWB8, HEALTH_B, ROLLOUT_B, role=f"n{k}"),
        } for k in SIZES}
        resets = {k: {
            "ssh": b.bench_config(f"cost-ssh{k}-reset", r.SVC_SSH8, all_nodes[:k], r.FAST_HEALTH, RESET),
            "swarm": self.swarm_config(f"cost-swarm{k}-reset", r.SVC_SWB8, r.FAST_HEALTH, RESET_SWARM,
                                       role=f"n{k}"),
        } for k in SIZES}
        env = {"ssh": r.ENV_BENCH, "swarm": r.ENV_SWARM}
        service = {"ssh": r.SVC_SSH8, "swarm": r.SVC_SWB8}
        top = max(SIZES)
        r.log(f"fig 8b: deploying the old version on {top} bench nodes with each backend")
        for who in ("ssh", "swarm"):
            roll_in_process(r, resets[top][who], env[who], service[who], tag=a)
        costs: dict[str, dict[int, list[Cost]]] = {w: {k: [] for k in SIZES} for w in ("ssh", "swarm")}
        for i, order in b.rounds("fig 8b", 150, "ssh", "swarm"):
            for k in SIZES[i % 3:] + SIZES[:i % 3]:
                for who in order:
                    r.make_absent(all_nodes[:k], b.ref(new))
                    costs[who][k].append(roll_in_process(r, configs[k][who], env[who], service[who], tag=new))
                    roll_in_process(r, resets[k][who], env[who], service[who], tag=None)
            r.log(f"fig 8b run {i + 1}: " + ", ".join(
                f"{k} nodes ssh {costs['ssh'][k][-1].wall:.1f}s/{costs['ssh'][k][-1].api} calls, swarm "
                f"{costs['swarm'][k][-1].wall:.1f}s/{costs['swarm'][k][-1].api} calls" for k in SIZES))
        self.report_8b(costs)
        self.remove_services(label_service=r.SVC_SWB8)

    def report_8b(self, costs: dict[str, dict[int, list[Cost]]]) -> None:
        b, r = self.b, self.r
        metrics = (("connections", "SSH connections opened by the dockship process",
                    lambda c: c.ssh, 0),
                   ("API calls", "engine API requests sent (HTTP requests of docker-py)",
                    lambda c: c.api, 0),
                   ("CPU s", "CPU seconds of the dockship process (user + system, all threads)",
                    lambda c: c.cpu, 2),
                   ("peak fds", "open file descriptors of the process at its peak (sockets, relays)",
                    lambda c: c.peak_fds, 0),
                   ("peak threads", "threads of the process at its peak", lambda c: c.peak_threads, 0))

        def cells(who: str, get, digits: int) -> str:
            out = []
            for k in SIZES:
                xs = [get(c) for c in costs[who][k]]
                if not xs:
                    return "—"
                m, lo, hi = r.stats(xs)
                out.append(f"{k}: {m:.{digits}f}" + (f" ({lo:.{digits}f}–{hi:.{digits}f})" if lo != hi else ""))
            return " · ".join(out)

        for key, what, get, digits in metrics:
            ratios = []
            for k in SIZES:
                pairs = list(zip(costs["ssh"][k], costs["swarm"][k]))
                if pairs:
                    ratios.append(f"{k}: {statistics.median(get(sw) / get(ss) for ss, sw in pairs if get(ss)):.2f}")
            b.report.add(r.Row(f"8b ({key})", f"one roll at 3 / 6 / 9 nodes (canary 0, batch \"34%\", "
                                              f"min_healthy 1 s): {what}; dockship column SSH backend, "
                                              "baseline column Swarm backend, ratio Swarm / SSH",
                               cells("ssh", get, digits), cells("swarm", get, digits),
                               " · ".join(ratios) or "—", "— (model in the notes)", "—"))
        fits = []
        for who in ("ssh", "swarm"):
            for key, _, get, digits in metrics:
                points = [(k, float(get(c))) for k in SIZES for c in costs[who][k]]
                if len({n for n, _ in points}) >= 2:
                    fits.append(f"{who} {key} = {fmt_fit(points, digits)}")
        b.report.detail("fig 8b linear fits over 3/6/9 nodes, N = nodes (extrapolated to "
                        f"{' and '.join(map(str, EXTRAPOLATE))}): " + "; ".join(fits))
        extra = []
        for who in ("ssh", "swarm"):
            extra.append(f"{who}: wall " + " · ".join(
                f"{k} nodes {r.fmt_s([c.wall for c in costs[who][k]])}" for k in SIZES)
                + "; SSH channels (dial-stdio) " + " · ".join(
                f"{k}: {statistics.median([c.channels for c in costs[who][k]] or [0]):.0f}" for k in SIZES))
        swarm_calls = " · ".join(
            f"{k}: {statistics.median([c.manager_calls for c in costs['swarm'][k]] or [0]):.0f} calls, "
            f"{statistics.median([c.manager_connections for c in costs['swarm'][k]] or [0]):.0f} connections"
            for k in SIZES)
        b.report.detail("fig 8b side figures: " + "; ".join(extra) + f"; SwarmManager's own counts {swarm_calls}")
        top = max(SIZES)
        for who in ("ssh", "swarm"):
            runs = costs[who][top]
            if runs:
                total: collections.Counter = collections.Counter()
                for c in runs:
                    total.update(dict(c.endpoints))
                b.report.detail(f"fig 8b {who} API requests by endpoint, per node at {top} nodes (mean of "
                                f"{len(runs)} runs): " + ", ".join(
                                    f"{name} {n / len(runs) / top:.1f}" for name, n in total.most_common()))


def figure_8(bench, run_module: ModuleType, parts: set[str] = frozenset("ab")) -> None:
    """8a and/or 8b (`--only 8`, `8a`, `8b`); 8b does not need 8a, so a failed 8a is reported
    and 8b measured all the same."""
    figures = SwarmFigures(bench, run_module)
    # Setting a part up takes 1–3 min; not worth it when the budget cannot pay for one run.
    parts = {p for p in parts if bench.enough_time(120 if p == "a" else 300, f"fig 8{p}")}
    if "a" in parts:
        try:
            figures.fig_8a()
        except run_module.BenchError as exc:
            bench.report.failures.append(f"figure 8a: {exc}")
            bench.report.add(run_module.Row("8a", "failed", f"error: {str(exc).splitlines()[0][:160]}"))
    if "b" in parts:
        figures.fig_8b()


__all__ = ["figure_8", "counting", "fit"]
