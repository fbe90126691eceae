"""`dockship build` against the lab: real index, real build engine, real registry."""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from pathlib import Path

import pytest
import requests

from conftest import dockship, json_out
from dockship import configfile
from dockship.registry import RegistryClient
from dockship.template import load_template

pytestmark = pytest.mark.lab


def write_config(path: Path, lab: dict, package: str, *, registry: str | None = None,
                 template: str | None = None, index_url: str | None = None) -> Path:
    build = {"base_image": lab["base_image"]}
    if template:
        build["template"] = template
    return configfile.write(path, {
        "index": {"url": index_url or lab["index_url"]},
        "registry": {"url": registry or lab["registry"]},
        "build": build,
        "services": {"svc": {"package": package, "image": image_of(package), "port": 8000,
                             "command": ["hello-svc"]}},
    })


def image_of(package: str) -> str:
    return f"test/{package}"


@pytest.fixture(scope="module")
def package(lab, run_id) -> str:
    """A package published under a fresh name, in three versions."""
    from publish import publish

    name = f"hello-b{run_id}"
    for version in ("1.0.0", "1.1.0", "1.2.0rc1"):
        publish(version, index_url=lab["index_url"], upload_url=lab["index_upload_url"], name=name)
    return name


@pytest.fixture(scope="module")
def config(lab, package, tmp_path_factory) -> Path:
    return write_config(tmp_path_factory.mktemp("build") / "dockship.toml", lab, package)


@pytest.fixture(scope="module")
def built(config, package) -> dict:
    """The newest final release, built and pushed once for the module."""
    return json_out(dockship("--config", str(config), "build", package, "--json"))


def test_build_picks_the_newest_final_release_and_pushes_it(built, lab, package):
    assert built["version"] == "1.1.0" and built["tag"] == "1.1.0"
    assert built["pushed"] is True
    assert built["image"] == f"{lab['registry']}/{image_of(package)}:1.1.0"
    registry = RegistryClient(lab["registry"])
    assert built["digest"].startswith("sha256:")
    assert registry.manifest_digest(image_of(package), "1.1.0") == built["digest"]


def test_the_image_records_its_inputs_and_installed_packages(built, lab, package):
    labels = RegistryClient(lab["registry"]).image_labels(image_of(package), "1.1.0")
    assert labels["org.opencontainers.image.title"] == package
    assert labels["org.opencontainers.image.version"] == "1.1.0"
    assert labels["org.opencontainers.image.created"]
    assert labels["io.dockship.package"] == package
    assert labels["io.dockship.index"] == lab["index_url"]
    assert len(labels["io.dockship.package.sha256"]) == 64
    assert len(labels["io.dockship.dockerfile.sha256"]) == 64
    assert labels["io.dockship.base.digest"].startswith("sha256:")
    assert f"{package}==1.1.0" in labels["io.dockship.pip-freeze"].replace("_", "-")


def test_building_the_same_inputs_again_is_a_no_op(built, config, package):
    proc = dockship("--config", str(config), "build", package, "1.1.0", "--json")
    again = json_out(proc)
    assert again["pushed"] is False
    assert again["digest"] == built["digest"]
    assert "already built" in proc.stderr


def test_pre_releases_only_with_pre(config, package, lab):
    out = json_out(dockship("--config", str(config), "build", package, "--pre", "--no-push", "--json"))
    assert out["version"] == "1.2.0rc1" and out["tag"] == "1.2.0rc1" and out["pushed"] is False
    assert RegistryClient(lab["registry"]).manifest_digest(image_of(package), "1.2.0rc1") is None


def test_different_content_under_a_pushed_tag_is_refused_unless_forced(built, lab, package, tmp_path):
    text, _ = load_template(None)
    template = tmp_path / "Dockerfile.template"
    template.write_text(text + "\nENV CHANGED_TEMPLATE=1\n")
    config = write_config(tmp_path / "dockship.toml", lab, package, template=str(template))
    registry = RegistryClient(lab["registry"])

    refused = dockship("--config", str(config), "build", package, "1.1.0")
    assert refused.returncode == 2, refused.stderr
    assert "already exists with different content (dockerfile.sha256 differ)" in refused.stderr
    assert "--force" in refused.stderr
    assert registry.manifest_digest(image_of(package), "1.1.0") == built["digest"]

    forced = json_out(dockship("--config", str(config), "build", package, "1.1.0", "--force", "--json"))
    assert forced["pushed"] is True and forced["digest"] != built["digest"]
    assert registry.manifest_digest(image_of(package), "1.1.0") == forced["digest"]


def test_a_built_image_pulled_on_a_lab_node_serves_its_version(lab, config, package):
    from dockship.sshengine import ssh_docker_client

    out = json_out(dockship("--config", str(config), "build", package, "1.0.0", "--json"))
    node = lab["nodes"][0]
    ref = f"{out['image'].rsplit(':', 1)[0]}@{out['digest']}"
    client = ssh_docker_client(node["docker"], key=Path(lab["ssh"]["key"]),
                               known_hosts=Path(lab["ssh"]["known_hosts"]))
    port = 18000
    try:
        client.images.pull(ref)
        container = client.containers.run(ref, detach=True, init=True, ports={"8000/tcp": port},
                                          name=f"t-{package}")
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    answer = requests.get(f"http://{node['address']}:{port}/", timeout=2).json()
                    break
                except requests.RequestException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            assert answer["version"] == "1.0.0"
        finally:
            container.remove(force=True)
    finally:
        client.close()


# --- bad input: exit 2, one clear line, nothing built ------------------------------------

def test_unknown_package_suggests_close_names(config, package):
    proc = dockship("--config", str(config), "build", package[:-1] + "x", "1.0.0")
    assert proc.returncode == 2
    assert "not found" in proc.stderr and package in proc.stderr


def test_unknown_version_lists_the_newest_available(config, package):
    proc = dockship("--config", str(config), "build", package, "9.9.9")
    assert proc.returncode == 2
    assert "9.9.9" in proc.stderr and "1.1.0" in proc.stderr


def test_a_version_that_is_not_pep440_is_bad_input(config, package):
    proc = dockship("--config", str(config), "build", package, "one.two")
    assert proc.returncode == 2 and "one.two" in proc.stderr


def test_missing_template_names_the_key(lab, package, tmp_path):
    config = write_config(tmp_path / "dockship.toml", lab, package, template="missing.template")
    proc = dockship("--config", str(config), "build", package, "1.0.0")
    assert proc.returncode == 2 and "build.template" in proc.stderr


def test_bad_config_names_the_key_path(lab, package, tmp_path):
    config = write_config(tmp_path / "dockship.toml", lab, package)
    config.write_text(config.read_text().replace("port = 8000", "port = 0"))
    proc = dockship("--config", str(config), "build", package, "1.0.0")
    assert proc.returncode == 2 and "services.svc.port" in proc.stderr


def test_unreachable_index_is_exit_1_naming_it(lab, package, tmp_path):
    config = write_config(tmp_path / "dockship.toml", lab, package,
                          index_url="http://127.0.0.1:9/simple/")
    proc = dockship("--config", str(config), "build", package, "1.0.0")
    assert proc.returncode == 1 and "127.0.0.1:9" in proc.stderr


def test_unreachable_registry_is_exit_1_naming_it(lab, package, tmp_path):
    config = write_config(tmp_path / "dockship.toml", lab, package, registry="127.0.0.1:9")
    proc = dockship("--config", str(config), "build", package, "1.0.0")
    assert proc.returncode == 1 and "127.0.0.1:9" in proc.stderr


# --- a registry with htpasswd auth ---------------------------------------------------------

def test_pushing_to_an_authenticated_registry_needs_credentials_and_never_shows_them(
        lab, package, tmp_path):
    auth = lab["registry_auth"]
    password = Path(auth["password_file"]).read_text().strip()
    config = write_config(tmp_path / "dockship.toml", lab, package, registry=auth["url"])

    denied = dockship("--config", str(config), "build", package, "1.0.0", env={
        "DOCKSHIP_REGISTRY_USER": auth["user"], "DOCKSHIP_REGISTRY_PASSWORD": "wrong",
        "DOCKER_CONFIG": str(tmp_path / "no-docker-config")})
    assert denied.returncode == 2, denied.stderr
    assert "DOCKSHIP_REGISTRY_USER" in denied.stderr and "wrong" not in denied.stderr

    ok = dockship("--config", str(config), "build", package, "1.0.0", "--json", env={
        "DOCKSHIP_REGISTRY_USER": auth["user"], "DOCKSHIP_REGISTRY_PASSWORD": password})
    out = json_out(ok)
    assert out["pushed"] is True
    assert password not in ok.stdout + ok.stderr
    from dockship.credentials import Credentials
    registry = RegistryClient(auth["url"], credentials=Credentials(auth["user"], password))
    assert registry.manifest_digest(image_of(package), "1.0.0") == out["digest"]


def test_a_local_build_of_the_version_on_the_index_is_not_what_gets_installed(lab, run_id, tmp_path):
    # PEP 440: `==1.0.0` also matches 1.0.0+hotfix.1, and pip prefers it (it sorts higher);
    # the build must install the very version it recorded.
    from publish import publish

    name = f"hello-l{run_id}"
    for version in ("1.0.0", "1.0.0+hotfix.1"):
        publish(version, index_url=lab["index_url"], upload_url=lab["index_upload_url"], name=name)
    config = write_config(tmp_path / "dockship.toml", lab, name)
    out = json_out(dockship("--config", str(config), "build", name, "1.0.0", "--json"))
    assert out["tag"] == "1.0.0"
    labels = RegistryClient(lab["registry"]).image_labels(image_of(name), "1.0.0")
    assert f"{name}==1.0.0" in labels["io.dockship.pip-freeze"].splitlines()


# --- hermetic builds: the wheelhouse resolved on the build side, no network inside ---------

def upload(lab: dict, files) -> None:
    """Upload distributions to the lab index with twine, as a release pipeline does."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, TWINE_USERNAME="dockship", TWINE_PASSWORD="unused", TWINE_NON_INTERACTIVE="1")
    subprocess.run([sys.executable, "-m", "twine", "upload", "--disable-progress-bar",
                    "--repository-url", lab["index_upload_url"], *map(str, files)],
                   check=True, capture_output=True, text=True, env=env)


def publish_family(lab: dict, prefix: str, out: Path, versions=("1.0.0", "1.1.0")) -> str:
    """A service `{prefix}-svc` in `versions` over the same dependencies alpha, beta, gamma
    (alpha needing delta), each a real wheel of 200 kB on the lab index; returns its name."""
    from wheelkit import make_wheel

    files = [make_wheel(out, f"{prefix}-alpha", "1.0", [f"{prefix}-delta>=1"], payload=200_000),
             make_wheel(out, f"{prefix}-beta", "2.0", payload=200_000),
             make_wheel(out, f"{prefix}-gamma", "0.3", payload=200_000),
             make_wheel(out, f"{prefix}-delta", "1.1", payload=200_000)]
    for version in versions:
        files.append(make_wheel(out, f"{prefix}-svc", version,
                                [f"{prefix}-alpha", f"{prefix}-beta>=2", f"{prefix}-gamma"]))
    upload(lab, files)
    return f"{prefix}-svc"


@pytest.fixture(scope="module")
def with_deps(lab, run_id, tmp_path_factory) -> str:
    return publish_family(lab, f"wk{run_id}", tmp_path_factory.mktemp("dists"))


def test_credentials_in_the_index_url_reach_no_image_and_no_output(lab, with_deps, tmp_path):
    import subprocess

    password = f"Pw-{with_deps}-s3cret"
    index_url = lab["index_url"].replace("http://", f"http://ci-user:{password}@")
    config = write_config(tmp_path / "dockship.toml", lab, with_deps, index_url=index_url)
    proc = dockship("--config", str(config), "build", with_deps, "1.0.0", "--no-push", "--json")
    out = json_out(proc)
    assert password not in proc.stdout + proc.stderr and "ci-user" not in proc.stdout + proc.stderr
    image = out["image"]
    for argv in (["docker", "history", "--no-trunc", image], ["docker", "inspect", image]):
        text = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        assert image.split(":")[0].split("/")[-1] in text or argv[1] == "history"
        assert password not in text and "ci-user" not in text, argv
    saved = tmp_path / "image.tar"
    subprocess.run(["docker", "save", "-o", str(saved), image], check=True)
    found = []
    with tarfile.open(saved) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            data = outer.extractfile(member).read()
            if password.encode() in data:
                found.append(member.name)
            if member.name.endswith("layer.tar"):
                with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                    for f in layer.getmembers():
                        if f.isfile() and password.encode() in layer.extractfile(f).read():
                            found.append(f"{member.name}:{f.name}")
    assert found == []
    # the dependencies were installed from the wheelhouse, all four of them
    freeze = subprocess.run(["docker", "inspect", "--format",
                             '{{ index .Config.Labels "io.dockship.pip-freeze" }}', image],
                            check=True, capture_output=True, text=True).stdout
    prefix = with_deps.removesuffix("-svc")
    assert {f"{prefix}-alpha==1.0", f"{prefix}-beta==2.0", f"{prefix}-gamma==0.3",
            f"{prefix}-delta==1.1", f"{with_deps}==1.0.0"} <= set(freeze.replace("_", "-").split())


def test_the_build_itself_has_no_network(lab, with_deps, tmp_path):
    # a template whose RUN step tries to reach the lab index: it cannot, unless build.network opts in
    text, _ = load_template(None)
    probe = ("RUN python3 -c \"import urllib.request; urllib.request.urlopen('"
             + lab["index_url"] + "', timeout=3)\"\n")
    template = tmp_path / "Dockerfile.template"
    template.write_text(text.replace("{{ package_layer }}", probe + "{{ package_layer }}"))
    config = write_config(tmp_path / "dockship.toml", lab, with_deps, template=str(template))
    refused = dockship("--config", str(config), "build", with_deps, "1.0.0", "--no-push")
    assert refused.returncode == 1, refused.stderr
    assert "build of" in refused.stderr


def manifest_layers(lab: dict, repo: str, tag: str) -> list[str]:
    """The layer digests of repo:tag as the registry serves them (its v2 API, the lab's CA)."""
    ca = Path("/etc/docker/certs.d") / lab["registry"] / "ca.crt"
    resp = requests.get(f"https://{lab['registry']}/v2/{repo}/manifests/{tag}", verify=str(ca), timeout=10,
                        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    resp.raise_for_status()
    return [layer["digest"] for layer in resp.json()["layers"]]


def test_the_pinned_set_is_in_the_image_and_part_of_the_same_inputs(lab, run_id, tmp_path):
    import hashlib
    import subprocess

    from wheelkit import make_wheel

    prefix = f"wp{run_id}"
    service = publish_family(lab, prefix, tmp_path, versions=("1.0.0",))
    config = write_config(tmp_path / "dockship.toml", lab, service)
    first = json_out(dockship("--config", str(config), "build", service, "1.0.0", "--json"))
    pins = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "cat",
                           first["image"], "/opt/dockship/pins.txt"],
                          check=True, capture_output=True, text=True).stdout
    assert [line.split()[0] for line in pins.splitlines()] == [
        f"{prefix}-alpha==1.0", f"{prefix}-beta==2.0", f"{prefix}-delta==1.1", f"{prefix}-gamma==0.3",
        f"{service}==1.0.0"]
    assert all(re.fullmatch(r"\S+==\S+ \S+ sha256:[0-9a-f]{64}", line) for line in pins.splitlines())
    labels = RegistryClient(lab["registry"]).image_labels(image_of(service), "1.0.0")
    assert labels["io.dockship.pins.sha256"] == hashlib.sha256(pins.encode()).hexdigest()

    again = dockship("--config", str(config), "build", service, "1.0.0", "--json")
    assert json_out(again)["pushed"] is False and "already built" in again.stderr

    # a new release of a dependency that the service's range admits: other inputs, same tag
    upload(lab, [make_wheel(tmp_path, f"{prefix}-gamma", "0.4")])
    refused = dockship("--config", str(config), "build", service, "1.0.0")
    assert refused.returncode == 2, refused.stderr
    assert "already exists with different content (pins.sha256 differ)" in refused.stderr


def test_two_releases_with_the_same_dependencies_share_every_dependency_layer(lab, with_deps, tmp_path):
    config = write_config(tmp_path / "dockship.toml", lab, with_deps)
    for version in ("1.0.0", "1.1.0"):
        json_out(dockship("--config", str(config), "build", with_deps, version, "--json"))
    old, new = (manifest_layers(lab, image_of(with_deps), v) for v in ("1.0.0", "1.1.0"))
    assert len(old) == len(new)
    # the base image's, user, venv, then COPY + RUN per dependency (four), then the package's
    # COPY + RUN (the labelled commit adds no layer): everything below the last two is the same blob
    own = 2
    shared = [a == b for a, b in zip(old, new)]
    assert shared[:-own] == [True] * (len(old) - own), shared
    assert len(old) - own >= 3 + 2 * 4
    assert old[-own] != new[-own]        # the package's own wheel differs


# --- [build.hooks] --------------------------------------------------------------------------

# Records the build's variables (a runner's own DOCKSHIP_* settings left out) and exits as told.
HOOK = ("import json, os, sys; open(sys.argv[1], 'a').write(json.dumps({k: v for k, v in os.environ.items()"
        " if k in ('DOCKSHIP_PACKAGE', 'DOCKSHIP_VERSION', 'DOCKSHIP_IMAGE', 'DOCKSHIP_DIGEST',"
        " 'DOCKSHIP_PUSHED')}) + '\\n'); sys.exit(int(sys.argv[2]))")


def hooked_config(tmp_path: Path, lab: dict, package: str, *, pre_exit: int = 0) -> tuple[Path, Path]:
    import sys

    config = write_config(tmp_path / "dockship.toml", lab, package)
    record = tmp_path / "hooks.jsonl"
    with config.open("a") as f:
        f.write("\n[build.hooks]\n"
                f"pre_build = {json.dumps([sys.executable, '-c', HOOK, str(record), str(pre_exit)])}\n"
                f"post_build = {json.dumps([sys.executable, '-c', HOOK, str(record), '0'])}\n")
    return config, record


def test_build_hooks_run_around_every_build_a_no_op_included(lab, run_id, tmp_path):
    from publish import publish

    name = f"hello-h{run_id}"
    publish("1.0.0", index_url=lab["index_url"], upload_url=lab["index_upload_url"], name=name)
    config, record = hooked_config(tmp_path, lab, name)
    first = json_out(dockship("--config", str(config), "build", name, "1.0.0", "--json"))
    again = json_out(dockship("--config", str(config), "build", name, "1.0.0", "--json"))
    seen = [json.loads(line) for line in record.read_text().splitlines()]
    image = f"{lab['registry']}/{image_of(name)}:1.0.0"
    common = {"DOCKSHIP_PACKAGE": name, "DOCKSHIP_VERSION": "1.0.0", "DOCKSHIP_IMAGE": image}
    assert seen == [common,
                    {**common, "DOCKSHIP_DIGEST": first["digest"], "DOCKSHIP_PUSHED": "1"},
                    common,
                    {**common, "DOCKSHIP_DIGEST": again["digest"], "DOCKSHIP_PUSHED": "0"}]
    assert again["digest"] == first["digest"]


def test_a_failing_pre_build_hook_stops_the_build_before_anything_is_pushed(lab, run_id, tmp_path):
    from publish import publish

    name = f"hello-f{run_id}"
    publish("1.0.0", index_url=lab["index_url"], upload_url=lab["index_upload_url"], name=name)
    config, record = hooked_config(tmp_path, lab, name, pre_exit=3)
    proc = dockship("--config", str(config), "build", name, "1.0.0")
    assert proc.returncode == 1, proc.stderr
    assert "hook pre_build" in proc.stderr and "exited 3" in proc.stderr
    assert len(record.read_text().splitlines()) == 1          # post_build did not run
    assert RegistryClient(lab["registry"]).manifest_digest(image_of(name), "1.0.0") is None


# --- bad dependencies: the package named, a clear exit, nothing pushed ----------------------

@pytest.fixture(scope="module")
def local_index(lab, run_id, tmp_path_factory):
    """A PEP 503 index served from a directory over HTTP on 127.0.0.1, with one service per case:
    a dependency only as an sdist (good, or broken), missing, only for another platform, or
    listed with a sha256 its file does not have."""
    from wheelkit import make_sdist, make_wheel, serve, write_index

    out = tmp_path_factory.mktemp("local-index")
    p = f"wb{run_id}"
    files = [make_wheel(out, f"{p}-srcok", "1.0", [f"{p}-sdist-ok"]),
             make_sdist(out, f"{p}-sdist-ok", "0.5", [f"{p}-plain"]),
             make_wheel(out, f"{p}-plain", "1.0"),
             make_wheel(out, f"{p}-srcbad", "1.0", [f"{p}-sdist-bad"]),
             make_sdist(out, f"{p}-sdist-bad", "0.5", broken=True),
             make_wheel(out, f"{p}-ghost", "1.0", [f"{p}-missing>=1"]),
             make_wheel(out, f"{p}-native", "1.0", [f"{p}-winonly"]),
             make_wheel(out, f"{p}-winonly", "1.0", tag="cp311-cp311-win_amd64"),
             make_wheel(out, f"{p}-tampered", "1.0", [f"{p}-changed"]),
             make_wheel(out, f"{p}-changed", "1.0")]
    write_index(out / "index", files, wrong_hash=[f"{p}_changed-1.0-py3-none-any.whl"])
    with serve(out / "index") as url:
        yield p, url


def build_from(local_index, lab, tmp_path, service: str):
    prefix, url = local_index
    config = write_config(tmp_path / "dockship.toml", lab, f"{prefix}-{service}", index_url=url)
    return dockship("--config", str(config), "build", f"{prefix}-{service}", "1.0", "--json")


def test_a_dependency_only_published_as_an_sdist_is_built_with_no_network(lab, local_index, tmp_path):
    out = json_out(build_from(local_index, lab, tmp_path, "srcok"))
    prefix = local_index[0]
    labels = RegistryClient(lab["registry"]).image_labels(image_of(f"{prefix}-srcok"), "1.0")
    freeze = labels["io.dockship.pip-freeze"].replace("_", "-").split()
    assert {f"{prefix}-sdist-ok==0.5", f"{prefix}-plain==1.0", f"{prefix}-srcok==1.0"} <= set(freeze)
    assert out["pushed"] is True


@pytest.mark.parametrize(("service", "exit_code", "named", "says"), [
    ("srcbad", 1, "sdist-bad 0.5", ("did not build into a wheel", "broken on purpose")),
    ("ghost", 2, "missing", ("is not on index",)),
    ("native", 2, "winonly", ("no wheel for the image's platform", "win_amd64")),
    ("tampered", 1, "changed", ("sha256", "nothing was built or pushed")),
], ids=["sdist-fails-to-build", "missing-from-index", "no-wheel-for-platform", "hash-mismatch"])
def test_a_bad_dependency_ends_with_it_named_a_clear_exit_and_nothing_pushed(
        lab, local_index, tmp_path, service, exit_code, named, says):
    proc = build_from(local_index, lab, tmp_path, service)
    assert proc.returncode == exit_code, proc.stderr
    assert f"dependency {local_index[0]}-{named}" in proc.stderr
    assert all(text in proc.stderr for text in says), proc.stderr
    assert RegistryClient(lab["registry"]).manifest_digest(
        image_of(f"{local_index[0]}-{service}"), "1.0") is None


def test_a_service_brings_its_own_template_and_base_image(lab, package, tmp_path):
    import docker

    text, _ = load_template(None)
    template = tmp_path / "svc.Dockerfile.template"
    template.write_text(text + "\nENV SERVICE_TEMPLATE=1\n")
    config = configfile.write(tmp_path / "dockship.toml", {
        "index": {"url": lab["index_url"]},
        "registry": {"url": lab["registry"]},
        # [build]'s base image cannot exist: the build succeeds only if the service's is used
        "build": {"base_image": "dockship-test.invalid/no-such-image:1"},
        "services": {"svc": {"package": package, "image": image_of(package), "port": 8000,
                             "command": ["hello-svc"], "template": template.name,
                             "base_image": lab["base_image"]}},
    })
    out = json_out(dockship("--config", str(config), "build", package, "1.0.0", "--no-push",
                            "--json"))
    image = docker.from_env().images.get(out["image"])
    assert "SERVICE_TEMPLATE=1" in image.attrs["Config"]["Env"]
    assert image.labels["io.dockship.base.image"] == lab["base_image"]
