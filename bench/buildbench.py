"""Figures 7a–7d (issue 9): layered, hermetic builds of a service with a real dependency tree.

The service is the example one (`examples/hello-svc`) declaring Flask, SQLAlchemy, greenlet,
psycopg2-binary and lxml (about 15 MB of wheels for the base image's Python) as its
dependencies. The set-up downloads those wheels with pip, for the lab base image's Python and
platform, and uploads them to the lab index. Then, side by side:

- 7a: build and push of a new release with unchanged dependencies: `dockship build` against
  the same service built the single-layer way (`RUN pip install --index-url LAB pkg==V` on the
  host network, then `docker push`);
- 7b: the bytes a node pulls for that release (layers that the previous release lacks, as the
  registry's manifests size them) / the bytes of the whole image;
- 7c: the time a lab node takes to pull that release with the previous one present / pulling
  the whole image (no image of that repository on the node);
- 7d: a no-op rebuild of a pushed tag, with where its time goes.

Figure 4's baseline (`raw_context`) builds the very context dockship sends.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

DEPENDENCIES = ("flask", "sqlalchemy", "greenlet", "psycopg2-binary", "lxml")
GOALS = {"build": 0.35, "bytes": 0.05}
NOOP_GOAL = 1.5


def raw_context(lab, package: str, version: str, image: str) -> bytes:
    """The build context dockship sends for package==version (Dockerfile + verified wheelhouse)."""
    from dockship.build import BuildOptions, plan_build
    from dockship.config import parse
    from dockship.resolve import pins_text
    from dockship.wheelhouse import context_tar, materialize

    config = parse({"index": {"url": lab.index_url}, "registry": {"url": lab.registry},
                    "build": {"base_image": lab.base_image},
                    "services": {"raw": {"package": package, "image": image,
                                         "command": ["hello-svc"]}}},
                   base_dir=Path("/"))
    plan = plan_build(config, package, BuildOptions(version=version, push=False))
    out = io.BytesIO()
    context_tar(plan.dockerfile, materialize(plan.index_url, plan.pinned), plan.package,
                pins_text(plan.pinned.pins), out)
    return out.getvalue()


class LayeredBuilds:
    def __init__(self, bench, r: ModuleType):
        self.b, self.r = bench, r
        self.package = f"bench-deps-{bench.run_id}"
        self.image = f"bench/{self.package}"
        self.single = f"bench/{self.package}-single"
        self.config = r.write_config(bench.tmp / "deps.toml", bench.lab, env=r.ENV_MAIN, service=r.SVC_ROLL,
                                     package=self.package, image=self.image, nodes=list(bench.lab.nodes),
                                     ssh_key=bench.lab.ssh_key, known_hosts=bench.lab.known_hosts,
                                     health=r.FAST_HEALTH, rollout={"canary": 1, "batch": 1})

    # -- set-up -----------------------------------------------------------------------------------

    def publish_dependencies(self) -> int:
        """pip downloads the dependencies' wheels for the base image's Python and platform (the
        user's pip configuration chooses where from) and twine uploads them to the lab index."""
        import docker

        from dockship.target import probe_target
        client = docker.from_env()
        base_id = client.images.get(self.b.lab.base_image).id
        target = probe_target(client, self.b.lab.base_image, base_id)
        dest = self.b.tmp / "deps"
        env = {k: v for k, v in self.r.clean_env().items()}
        self.r.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest),
                    "--only-binary", ":all:", *target.pip_args(), *DEPENDENCIES],
                   env=env, timeout=600, what="pip download of the bench dependencies")
        wheels = sorted(dest.glob("*.whl"))
        # pypiserver refuses twine's --skip-existing: upload only what its pages lack
        from dockship.index import IndexClient
        from dockship.errors import UsageError
        missing = []
        with IndexClient(self.b.lab.index_url) as index:
            for w in wheels:
                try:
                    have = {f.filename for f in index.project_files(w.name.split("-")[0])}
                except UsageError:
                    have = set()
                if w.name not in have:
                    missing.append(w)
        env.update(TWINE_USERNAME="bench", TWINE_PASSWORD="unused", TWINE_NON_INTERACTIVE="1")
        if missing:
            self.r.run([sys.executable, "-m", "twine", "upload", "--disable-progress-bar",
                        "--repository-url", self.b.lab.upload_url, *map(str, missing)],
                       env=env, timeout=600, what="upload of the bench dependencies")
        return sum(w.stat().st_size for w in wheels)

    def publish(self, versions: list[str]) -> None:
        sys.path.insert(0, str(self.r.ROOT / "examples"))
        from publish import publish
        for v in versions:
            publish(v, index_url=self.b.lab.index_url, upload_url=self.b.lab.upload_url,
                    name=self.package, requires=DEPENDENCIES)

    # -- the two ways of building ---------------------------------------------------------------

    def dockship_build(self, version: str) -> tuple[float, dict]:
        return self.r.dockship(self.config, "build", self.package, version)

    def single_build(self, version: str) -> float:
        """The way before issue 9: one RUN pip install from the index, then docker push."""
        from dockship.template import pip_index_args
        ref = f"{self.b.lab.registry}/{self.single}:{version}"
        dockerfile = (f"FROM {self.b.lab.base_image}\nENV PIP_DISABLE_PIP_VERSION_CHECK=1\n"
                      "RUN python3 -m venv /opt/venv\n"
                      f"RUN /opt/venv/bin/python -m pip install --no-cache-dir "
                      f"{pip_index_args(self.b.lab.index_url)} {self.package}=={version}\n"
                      'CMD ["/opt/venv/bin/hello-svc"]\n')
        env = {**self.r.clean_env(), "DOCKER_BUILDKIT": "0"}
        docker_cli = shutil.which("docker") or "docker"
        t0 = time.monotonic()
        self.r.run([docker_cli, "build", "--network", "host", "--rm", "--force-rm", "-t", ref, "-"],
                   input=dockerfile, env=env, what=f"docker build of {ref}")
        self.r.run([docker_cli, "push", ref], env=env, what=f"docker push of {ref}")
        return time.monotonic() - t0

    # -- registry and node reads ---------------------------------------------------------------

    def layers(self, repo: str, tag: str) -> list[tuple[str, int]]:
        import requests
        ca = Path("/etc/docker/certs.d") / self.b.lab.registry / "ca.crt"
        resp = requests.get(f"https://{self.b.lab.registry}/v2/{repo}/manifests/{tag}",
                            verify=str(ca) if ca.exists() else True, timeout=10,
                            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        resp.raise_for_status()
        return [(layer["digest"], int(layer["size"])) for layer in resp.json()["layers"]]

    def new_bytes(self, repo: str, old: str, new: str) -> tuple[int, int]:
        """(bytes of `new`'s layers that `old` lacks, bytes of all of `new`'s layers)."""
        had = {d for d, _ in self.layers(repo, old)}
        layers = self.layers(repo, new)
        return sum(s for d, s in layers if d not in had), sum(s for _, s in layers)

    def pull_seconds(self, repo: str, tag: str, *, keep: str | None) -> float:
        """Time to pull repo:tag on the first lab node with only `keep` of that repo present."""
        node = self.b.lab.nodes[0]
        ref = f"{self.b.lab.registry}/{repo}"
        with contextlib.closing(self.r.engine(node.socket)) as c:
            if keep:
                c.images.pull(ref, tag=keep)
            for image in c.images.list(name=ref):
                if not keep or f"{ref}:{keep}" not in (image.tags or []):
                    with contextlib.suppress(Exception):
                        c.images.remove(image.id, force=True)
            t0 = time.monotonic()
            c.images.pull(ref, tag=tag)
            return time.monotonic() - t0

    def clean(self) -> None:
        """This figure's images off the first node and the build engine."""
        import docker
        node = self.b.lab.nodes[0]
        with contextlib.closing(self.r.engine(node.socket)) as c, \
                contextlib.closing(docker.from_env(timeout=120)) as local:
            for client in (c, local):
                for repo in (self.image, self.single):
                    for image in client.images.list(name=f"{self.b.lab.registry}/{repo}"):
                        with contextlib.suppress(Exception):
                            client.images.remove(image.id, force=True)

    # -- the figures ------------------------------------------------------------------------------

    def measure(self) -> None:
        r, b = self.r, self.b
        size = self.publish_dependencies()
        runs = b.runs
        versions = [f"1.0.{i}" for i in range(runs + 1)]
        self.publish(versions)
        r.log(f"fig 7: {len(DEPENDENCIES)} dependencies, {size / 1e6:.1f} MB of wheels on the lab index;"
              " first release built both ways (warms the caches, pushes the dependency layers)")
        self.dockship_build(versions[0])
        self.single_build(versions[0])
        ds, single, ratios = [], [], []
        for i, order in b.rounds("fig 7a", 120, "dockship", "single"):
            v = versions[i + 1]
            for who in order:
                if who == "dockship":
                    ds.append(self.dockship_build(v)[0])
                else:
                    single.append(self.single_build(v))
            ratios.append(ds[-1] / single[-1])
            r.log(f"fig 7a run {i + 1}: dockship {ds[-1]:.2f}s, single layer {single[-1]:.2f}s")
        b.report.add(r.Row("7a", "build + push of a new release, same dependencies: dockship / "
                           "single-layer `pip install` from the index", r.fmt_s(ds), r.fmt_s(single),
                           r.fmt_r(ratios), f"≤ {GOALS['build']:.2f}", r.judged(ratios, GOALS["build"]),
                           ratios))
        built = versions[1:len(ds) + 1]
        pairs = list(zip([versions[0]] + built, built))
        fractions = []
        for old, new in pairs:
            fresh, whole = self.new_bytes(self.image, old, new)
            fractions.append(fresh / whole)
        s_fresh, s_whole = self.new_bytes(self.single, *pairs[-1])
        fresh, whole = self.new_bytes(self.image, *pairs[-1])
        b.report.add(r.Row("7b", "bytes a node pulls for the new release / the whole image (registry "
                           "sizes, compressed)", f"{fresh / 1e3:.0f} kB", f"{whole / 1e6:.1f} MB",
                           r.fmt_r(fractions), f"≤ {GOALS['bytes']:.2f}",
                           r.judged(fractions, GOALS["bytes"]), fractions))
        b.report.detail(f"fig 7b: the single-layer image pulls {s_fresh / 1e6:.1f} MB of "
                        f"{s_whole / 1e6:.1f} MB for the same release ({s_fresh / s_whole:.2f})")
        release, whole_t, pull_ratios, s_release = [], [], [], []
        for i, order in b.rounds("fig 7c", 30, "release", "whole"):
            old, new = pairs[i % len(pairs)]
            for who in order:
                if who == "release":
                    release.append(self.pull_seconds(self.image, new, keep=old))
                else:
                    whole_t.append(self.pull_seconds(self.image, new, keep=None))
            s_release.append(self.pull_seconds(self.single, new, keep=old))
            pull_ratios.append(release[-1] / whole_t[-1])
        b.report.add(r.Row("7c", "a node's pull of the new release (previous present) / of the "
                           "whole image", r.fmt_s(release), r.fmt_s(whole_t), r.fmt_r(pull_ratios),
                           "", "", pull_ratios))
        b.report.detail(f"fig 7c: the single-layer image's new release pulls in {r.fmt_s(s_release)}"
                        " with its previous release present")
        self.noop(versions[0])
        self.clean()

    def noop(self, version: str) -> None:
        r, b = self.r, self.b
        walls = []
        for _ in range(max(3, b.runs)):
            seconds, out = self.dockship_build(version)
            if out.get("pushed"):
                raise r.BenchError(f"the no-op rebuild of {version} pushed: {out}")
            walls.append(seconds)
        b.report.add(r.Row("7d", "no-op rebuild of a pushed tag (wall time)", r.fmt_s(walls), "", "",
                           f"≤ {NOOP_GOAL} s",
                           "yes" if statistics.median(walls) <= NOOP_GOAL else "**no**", []))
        b.report.detail("fig 7d phases (one in-process no-op rebuild): " + self.noop_phases(version))

    def noop_phases(self, version: str) -> str:
        """Where a no-op's time goes: each step of plan_build timed in this process (the
        interpreter's start and dockship's imports are the wall time above minus these)."""
        code = (
            "import time, json, sys\n"
            "t0 = time.monotonic()\n"
            "import docker\n"
            "from dockship import build as B, config as C\n"
            "from dockship.index import IndexClient\n"
            "from dockship.target import probe_target\n"
            "from dockship.pinning import pin_release\n"
            "from dockship.registry import RegistryClient\n"
            "from dockship.streams import build_engine\n"
            "t = {'imports': time.monotonic() - t0}\n"
            "def lap(name, fn):\n"
            "    s = time.monotonic(); v = fn(); t[name] = time.monotonic() - s; return v\n"
            "cfg = C.load(C.Path(sys.argv[1])); pkg, ver = sys.argv[2], sys.argv[3]\n"
            "client = lap('engine connect', build_engine)\n"
            "rel = lap('index: the release', lambda: IndexClient(cfg.index_url).resolve(pkg, ver))\n"
            "base = lap('base image id', lambda: client.images.get(cfg.build.base_image).id)\n"
            "target = lap('base image tags (cached)', lambda: probe_target(client, cfg.build.base_image, base))\n"
            "lap('pinning (index pages read, resolution reused)', lambda: pin_release(cfg.index_url, rel, f'{pkg}=={ver}', target))\n"
            "reg = RegistryClient(cfg.registry)\n"
            "img = B.service_for(cfg, pkg)[0]\n"
            "lap('registry: tag and labels', lambda: (reg.manifest_digest(img, ver), reg.image_labels(img, ver)))\n"
            "print(json.dumps(t))\n")
        _, proc = self.r.run([sys.executable, "-c", code, str(self.config), self.package, version],
                             what="the no-op phase split")
        import json
        phases = json.loads(proc.stdout.strip().splitlines()[-1])
        return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in phases.items())


def figure_7(bench, run_module: ModuleType) -> None:
    LayeredBuilds(bench, run_module).measure()


__all__ = ["figure_7", "raw_context"]
