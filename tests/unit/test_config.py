"""Configuration: parsed into records, every problem reported with its key path."""

from pathlib import Path

import pytest

from dockship.checks import docker_endpoint_problem
from dockship.config import Config, load, parse
from dockship.errors import ConfigError, UsageError

ROOT = Path(__file__).resolve().parents[2]

BASE = {
    "index": {"url": "http://127.0.0.1:8081/simple/"},
    "registry": {"url": "127.0.0.1:5000"},
    "services": {"hello": {"package": "hello-svc", "port": 8000, "role": "web"}},
    "environments": {"stage": {"nodes": [
        {"name": "node1", "docker": "ssh://root@10.77.0.11", "zone": "a", "roles": ["web"]},
        {"name": "node2", "docker": "unix:///run/n2.sock", "roles": ["db"]},
    ]}},
}


def _with(**changes) -> dict:
    import copy
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        keys = dotted.split("__")
        t = data
        for k in keys[:-1]:
            t = t.setdefault(k, {})
        t[keys[-1]] = value
    return data


def _errors(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(data, base_dir=Path("/"))
    return info.value.problems


def test_a_minimal_config_gets_the_documented_defaults():
    cfg = parse(BASE, base_dir=Path("/"))
    svc = cfg.services["hello"]
    assert svc.image == "hello"
    assert svc.health.path == "/health" and svc.health.status == 200
    assert svc.health.timeout == 30 and svc.health.min_healthy == 3
    env = cfg.environments["stage"]
    assert env.rollout.canary == 1 and env.rollout.batch == (1,) and env.rollout.auto_rollback
    assert cfg.build.base_image == "python:3.12-slim" and cfg.build.template is None


def test_nodes_are_filtered_by_role():
    env = parse(BASE, base_dir=Path("/")).environments["stage"]
    assert [n.name for n in env.nodes if n.runs("web")] == ["node1"]


def test_service_is_found_by_package_name_in_any_spelling():
    cfg = parse(BASE, base_dir=Path("/"))
    assert cfg.service_for_package("Hello_Svc").name == "hello"
    assert cfg.service_for_package("hello").name == "hello"
    assert cfg.service_for_package("other") is None


def test_every_problem_is_reported_at_once_with_its_key_path():
    data = _with(services__hello__port=70000)
    data["environments"]["stage"]["nodes"][1]["docker"] = "ftp://x"
    problems = _errors(data)
    assert any(p.startswith("services.hello.port: 70000 must be at most 65535") for p in problems)
    assert any(p.startswith("environments.stage.nodes[1].docker: 'ftp://x' is not a Docker endpoint")
               for p in problems)
    assert len(problems) == 2


def test_unknown_keys_suggest_the_close_one():
    problems = _errors(_with(services__hello__prot=8000))
    assert problems == ["services.hello.prot: unknown key (did you mean 'port'?); known keys: "
                        "package, image, port, role, command, env, health, stop_timeout, retain"]


@pytest.mark.parametrize("batch, expected", [
    (2, (2,)), ("25%", ("25%",)), ([1, "50%"], (1, "50%")),
])
def test_batches_accept_counts_percentages_and_lists(batch, expected):
    data = _with(environments__stage__rollout={"batch": batch})
    assert parse(data, base_dir=Path("/")).environments["stage"].rollout.batch == expected


@pytest.mark.parametrize("batch", [0, "0%", "150%", "half", [], True])
def test_bad_batches_are_rejected(batch):
    problems = _errors(_with(environments__stage__rollout={"batch": batch}))
    assert problems and all(p.startswith("environments.stage.rollout.batch") for p in problems)


def test_an_environment_needs_nodes_or_chef():
    problems = _errors(_with(environments={"stage": {}}))
    assert problems == ["environments.stage: needs either `nodes = [...]` or "
                        "`chef = { url = ..., client = ..., key = ... }`"]


def test_hooks_are_argv_lists_not_shell_strings():
    problems = _errors(_with(environments__stage__hooks={"pre_node": "./lb drain"}))
    assert problems[0].startswith("environments.stage.hooks.pre_node: must be a non-empty list")


def test_registry_must_be_a_host_not_a_url():
    problems = _errors(_with(registry={"url": "https://r.example:5000"}))
    assert problems[0].startswith("registry.url: 'https://r.example:5000' must be host[:port]")


def test_chef_key_paths_are_relative_to_the_config_and_must_exist(tmp_path):
    (tmp_path / "dockship.pem").write_text("key")
    data = _with(environments={"prod": {"chef": {"url": "http://127.0.0.1:4545",
                                                 "client": "dockship", "key": "dockship.pem"}}})
    chef = parse(data, base_dir=tmp_path).environments["prod"].chef
    assert chef.key == tmp_path / "dockship.pem" and chef.environment == "prod"
    assert chef.docker == "ssh://root@{address}"
    problems = _errors(_with(environments={"prod": {"chef": {"url": "http://127.0.0.1:4545",
                                                             "client": "dockship", "key": "nope.pem"}}}))
    assert problems == ["environments.prod.chef.key: '/nope.pem' does not exist"]


@pytest.mark.parametrize("url", ["ssh://root@10.0.0.1", "ssh://deploy@host:2222",
                                 "tcp://10.0.0.5:2376", "unix:///var/run/docker.sock"])
def test_valid_docker_endpoints(url):
    assert docker_endpoint_problem(url) is None


@pytest.mark.parametrize("url", ["ssh://", "tcp://host", "unix://relative", "http://x:1", "host:22"])
def test_invalid_docker_endpoints(url):
    assert docker_endpoint_problem(url)


def test_missing_config_file_says_how_to_point_at_one(tmp_path):
    with pytest.raises(UsageError, match="not found; pass --config PATH or set DOCKSHIP_CONFIG"):
        load(tmp_path / "dockship.toml")


def test_broken_toml_is_a_config_error(tmp_path):
    path = tmp_path / "dockship.toml"
    path.write_text("[index\nurl=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(path)


def test_the_documented_example_config_is_valid():
    cfg = load(ROOT / "examples" / "dockship.toml")
    assert isinstance(cfg, Config) and "stage" in cfg.environments
