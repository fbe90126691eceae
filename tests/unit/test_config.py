"""Configuration: parsed into records, every problem reported with its key path."""

import re
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
                        "package, image, port, role, command, env, health, stop_timeout, retain, secrets, "
                        "publish, template, base_image"]


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


def test_an_environment_needs_a_source_of_nodes():
    problems = _errors(_with(environments={"stage": {}}))
    assert problems == ["environments.stage: needs a source of nodes: `nodes = [...]`, "
                        "`chef = { url = ..., client = ..., key = ... }`, "
                        "`etcd = { url = ... }` or `swarm = { manager = ... }`"]


def test_a_swarm_environment_names_its_manager_and_nothing_else():
    ok = parse(_with(environments={"s": {"swarm": {"manager": "ssh://root@10.0.0.1"}}}),
               base_dir=Path("/"))
    assert ok.environments["s"].swarm.manager == "ssh://root@10.0.0.1"
    assert ok.environments["s"].nodes is None
    problems = _errors(_with(environments={"s": {
        "swarm": {"manager": "http://10.0.0.1"},
        "nodes": [{"name": "a", "docker": "ssh://root@10.0.0.2"}]}}))
    assert any(p.startswith("environments.s.swarm.manager: 'http://10.0.0.1' is not a Docker "
                            "endpoint") for p in problems)
    assert "environments.s: has `nodes` and `swarm`; keep one source of nodes" in problems


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


# --- design §8: hostile and careless values ------------------------------------------

def _node(**changes) -> dict:
    return _with(**{f"environments__stage__nodes": [{"name": "node1", "docker": "ssh://root@10.0.0.1",
                                                      **changes}]})


@pytest.mark.parametrize("key", ["timeout", "min_healthy", "interval", "rollback_min_healthy"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1, 10 ** 100])
def test_health_numbers_are_finite_and_in_range(key, value):
    problems = _errors(_with(**{f"services__hello__health": {key: value}}))
    assert problems and problems[0].startswith(f"services.hello.health.{key}: ")


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 3601, True, "10"])
def test_stop_timeout_is_bounded(value):
    assert _errors(_with(services__hello__stop_timeout=value))[0].startswith("services.hello.stop_timeout: ")


@pytest.mark.parametrize("name", [";", "a\nb", "a" * 100_000, "-x", "\x1b[2J"])
def test_node_names_are_checked(name):
    problems = _errors(_node(name=name))
    assert problems[0].startswith("environments.stage.nodes[0].name: ")
    assert "\x1b" not in problems[0] and "\n" not in problems[0] and len(problems[0]) < 300


@pytest.mark.parametrize("name", ["a;b", "a b", "a\nb", "x" * 64])
def test_environment_names_are_checked_and_shown_escaped(name):
    data = _with()
    data["environments"][name] = data["environments"].pop("stage")
    problems = _errors(data)
    bare = name.isalnum()
    assert len(problems) == 1 and problems[0].startswith("environments." if bare else 'environments."')
    assert "\n" not in problems[0]


def test_service_names_are_lowercase_names():
    data = _with()
    data["services"]["Hello"] = data["services"].pop("hello")
    assert _errors(data)[0].startswith("services.Hello: 'Hello' is not valid")


@pytest.mark.parametrize("var", ["A=B", "", "1X", "A B"])
def test_env_var_names_are_checked(var):
    problems = _errors(_with(services__hello__env={var: "x"}))
    assert len(problems) == 1 and problems[0].startswith("services.hello.env.")


def test_env_values_are_finite_and_not_nul():
    problems = _errors(_with(services__hello__env={"A": float("nan"), "B": "a\x00b", "C": [1]}))
    assert [p.split(":")[0] for p in problems] == ["services.hello.env.A", "services.hello.env.B",
                                                  "services.hello.env.C"]


def test_good_env_values_become_strings():
    cfg = parse(_with(services__hello__env={"A": 1, "B": True, "C": "x y\nz"}), base_dir=Path("/"))
    assert dict(cfg.services["hello"].env) == {"A": "1", "B": "true", "C": "x y\nz"}


@pytest.mark.parametrize("path", ["/health\r\nX-Evil: 1", "health", "/a b", ""])
def test_health_path_is_a_clean_path(path):
    assert _errors(_with(services__hello__health={"path": path}))[0].startswith("services.hello.health.path: ")


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/simple/", "http://[::1/", "http://h:0/",
                                 "ftp://h/", "http://h/\n"])
def test_index_url_must_parse_with_a_real_port(url):
    assert _errors(_with(index={"url": url}))[0].startswith("index.url: ")


def test_ipv6_urls_and_registries_are_fine():
    cfg = parse(_with(index={"url": "http://[::1]:8081/simple/"}, registry={"url": "[::1]:5000"}),
                base_dir=Path("/"))
    assert cfg.index_url == "http://[::1]:8081/simple/" and cfg.registry == "[::1]:5000"


@pytest.mark.parametrize("docker", ["ssh://-oProxyCommand=id", "ssh://-oProxyCommand=id@h",
                                    "ssh://root@attacker@10.0.0.1", "ssh://root@h:99999"])
def test_ssh_endpoints_cannot_smuggle_options(docker):
    assert _errors(_node(docker=docker))[0].startswith("environments.stage.nodes[0].docker: ")


def test_ssh_user_cannot_be_an_option():
    problems = _errors(_with(environments__stage__ssh={"user": "-oProxyCommand=id"}))
    assert problems[0].startswith("environments.stage.ssh.user: ")


@pytest.mark.parametrize("address", ["attacker@127.0.0.1:47107", "10.0.0.1:22", "-x"])
def test_node_addresses_are_hosts(address):
    assert _errors(_node(address=address))[0].startswith("environments.stage.nodes[0].address: ")


def test_zones_and_roles_are_names():
    problems = _errors(_node(zone="a b", roles=["web", "x;y"]))
    assert [p.split(": ")[0] for p in problems] == ["environments.stage.nodes[0].zone",
                                                    "environments.stage.nodes[0].roles[1]"]


@pytest.mark.parametrize("image", ["[bold]python[/]", "python:3\x1b[2J", "Python"])
def test_base_image_is_an_image_reference(image):
    assert _errors(_with(build={"base_image": image}))[0].startswith("build.base_image: ")


@pytest.mark.parametrize("have, missing", [("cert", "key"), ("key", "cert")])
def test_tls_cert_and_key_go_together(tmp_path, have, missing):
    (tmp_path / "f.pem").write_text("x")
    data = _with(environments__stage__tls={have: "f.pem"})
    with pytest.raises(ConfigError) as info:
        parse(data, base_dir=tmp_path)
    assert info.value.problems == [f"environments.stage.tls.{missing}: missing: tls.{have} is "
                                   "given, and a client certificate needs both cert and key (or neither)"]


def test_min_healthy_cannot_outlast_the_timeout():
    problems = _errors(_with(services__hello__health={"timeout": 5, "min_healthy": 6}))
    assert problems == ["services.hello.health.min_healthy: 6 s is longer than timeout (5 s), the "
                        "time the window must end within; lower min_healthy or raise timeout"]
    cfg = parse(_with(services__hello__health={"timeout": 5, "min_healthy": 5}), base_dir=Path("/"))
    assert cfg.services["hello"].health.min_healthy == 5


def test_a_bad_timeout_is_reported_once_not_again_as_a_comparison():
    problems = _errors(_with(services__hello__health={"timeout": float("nan"), "min_healthy": 40}))
    assert problems == ["services.hello.health.timeout: nan is not a finite number; use a number "
                        "from 0.1 to 3600"]


# --- plain TCP engines (design §8 Transport) -------------------------------------------

def test_a_tcp_engine_without_tls_is_refused_naming_the_fix():
    problems = _errors(_node(docker="tcp://10.0.0.5:2375"))
    assert len(problems) == 1
    assert problems[0].startswith("environments.stage.nodes[0].docker: a tcp:// engine without TLS")
    assert "[environments.stage.tls] ca" in problems[0] and "allow_plain_tcp = true" in problems[0]


def test_allow_plain_tcp_loads_with_one_warning_naming_the_environment():
    data = _node(docker="tcp://10.0.0.5:2375")
    data["environments"]["stage"]["allow_plain_tcp"] = True
    cfg = parse(data, base_dir=Path("/"))
    assert cfg.environments["stage"].allow_plain_tcp
    assert len(cfg.warnings) == 1 and cfg.warnings[0].startswith("environments.stage: ")
    assert "registry credentials and all engine traffic travel in clear" in cfg.warnings[0]


def test_tcp_with_tls_needs_no_opt_in_and_warns_nothing(tmp_path):
    (tmp_path / "ca.pem").write_text("x")
    data = _node(docker="tcp://10.0.0.5:2376")
    data["environments"]["stage"]["tls"] = {"ca": "ca.pem"}
    cfg = parse(data, base_dir=tmp_path)
    assert cfg.warnings == () and cfg.environments["stage"].tls.enabled


def test_ssh_engines_need_no_opt_in():
    assert parse(BASE, base_dir=Path("/")).warnings == ()


def _chef_env(tmp_path, **chef) -> dict:
    (tmp_path / "dockship.pem").write_text("key")
    return _with(environments={"prod": {"chef": {"url": "http://127.0.0.1:4545", "client": "dockship",
                                                 "key": "dockship.pem", **chef}}})


def test_a_chef_tcp_template_follows_the_same_rule(tmp_path):
    data = _chef_env(tmp_path, docker="tcp://{address}:2375")
    with pytest.raises(ConfigError) as info:
        parse(data, base_dir=tmp_path)
    assert info.value.problems[0].startswith("environments.prod.chef.docker: a tcp:// engine without TLS")
    data["environments"]["prod"]["allow_plain_tcp"] = True
    assert parse(data, base_dir=tmp_path).warnings[0].startswith("environments.prod: ")


def test_chef_verify_is_a_key_the_config_knows(tmp_path):
    (tmp_path / "ca.pem").write_text("x")
    assert parse(_chef_env(tmp_path, verify="ca.pem"), base_dir=tmp_path) \
        .environments["prod"].chef.verify == tmp_path / "ca.pem"
    assert parse(_chef_env(tmp_path, verify=False), base_dir=tmp_path) \
        .environments["prod"].chef.verify is False


def test_chef_names_reach_a_search_query_so_they_are_names(tmp_path):
    with pytest.raises(ConfigError) as info:
        parse(_chef_env(tmp_path, environment="prod OR *:*"), base_dir=tmp_path)
    assert info.value.problems[0].startswith("environments.prod.chef.environment: ")


# --- the file itself -------------------------------------------------------------------

def test_a_file_that_is_not_utf8_is_refused_naming_it(tmp_path):
    path = tmp_path / "dockship.toml"
    path.write_bytes(b'[index]\nurl = "http://h/\xff"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: not UTF-8 text (byte 0xff")


def test_an_array_nested_100k_deep_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "dockship.toml"
    path.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: arrays or tables nested too deeply")


def test_an_integer_too_long_to_read_is_a_config_error(tmp_path):
    path = tmp_path / "dockship.toml"
    path.write_text("x = " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: not valid TOML")


def test_wrong_types_are_named_not_crashed_on():
    data = _with(services__hello__health=[1, 2], services__hello__port="80", index="x")
    data["environments"]["stage"]["nodes"] = {"name": "x"}
    problems = _errors(data)
    assert [p.split(":")[0] for p in problems] == [
        "index", "index.url", "services.hello.port", "services.hello.health",
        "environments.stage.nodes"]


def test_an_unknown_key_with_control_characters_is_shown_escaped():
    problems = _errors(_with(services__hello={"package": "p", "\x1b[2Jevil\n": 1}))
    assert problems == ['services.hello."\\u001b[2Jevil\\n": unknown key; known keys: package, '
                        'image, port, role, command, env, health, stop_timeout, retain, secrets, publish, '
                        'template, base_image']


def test_a_path_too_long_for_the_system_is_a_problem_not_a_crash():
    problems = _errors(_with(environments__stage__ssh={"key": "k" * 5000}))
    assert problems[0].startswith("environments.stage.ssh.key: ")


def test_every_key_the_example_shows_commented_out_is_valid_too(tmp_path, monkeypatch):
    """Uncommenting an optional key of examples/dockship.toml never makes it invalid."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in (".ssh/id_ed25519", ".ssh/known_hosts", "tls/ca.pem", "tls/cert.pem",
                 "tls/key.pem", "dockship.pem"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    text = (ROOT / "examples" / "dockship.toml").read_text()
    uncommented = re.sub(r"(?m)^# (?=\[|[a-z_]+ = )", "", text)
    assert uncommented.count("\n") == text.count("\n") and uncommented != text
    path = tmp_path / "dockship.toml"
    path.write_text(uncommented)
    cfg = load(path)
    assert cfg.environments["stage"].tls.enabled and cfg.environments["stage"].allow_plain_tcp
    assert cfg.environments["prod"].chef is not None and cfg.environments["stage"].balancer
    assert cfg.environments["edge"].etcd is not None


def test_problems_of_nodes_keep_their_index_in_the_file():
    data = _with(environments__stage__nodes=["node0", {"name": "n1", "docker": "tcp://10.0.0.5:2375"},
                                             {"name": "n1", "docker": "ssh://h"}])
    assert _errors(data) == [
        "environments.stage.nodes[0]: must be a table like { name = \"node1\", docker = "
        "\"ssh://root@10.0.0.1\" }, got 'node0'",
        "environments.stage.nodes[2].name: duplicate node name 'n1'",
        "environments.stage.nodes[1].docker: a tcp:// engine without TLS would send registry "
        "credentials and all engine traffic in clear; set [environments.stage.tls] ca (or cert "
        "and key), or allow_plain_tcp = true in [environments.stage] to accept that"]
