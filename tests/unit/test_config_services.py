"""Secrets, publish and per-environment service settings in the configuration (design §11)."""

import copy
from pathlib import Path

import pytest

from dockship.config import Publish, parse
from dockship.errors import ConfigError, UsageError

BASE = {
    "index": {"url": "http://127.0.0.1:8081/simple/"},
    "registry": {"url": "127.0.0.1:5000"},
    "services": {
        "api": {"port": 8000, "role": "web", "env": {"LOG_LEVEL": "info", "MODE": "a"},
                "secrets": ["DATABASE_URL"], "health": {"timeout": 20, "min_healthy": 2}},
        "worker": {"port": 9000, "role": "jobs"},
    },
    "environments": {
        "stage": {"nodes": [{"name": "n1", "docker": "unix:///a.sock", "roles": ["web"]},
                            {"name": "n2", "docker": "unix:///b.sock", "roles": ["jobs"]}]},
        "prod": {"nodes": [{"name": "p1", "docker": "unix:///c.sock", "roles": ["web"]}],
                 "secrets_file": "prod.env"},
    },
}


def _data(**services) -> dict:
    data = copy.deepcopy(BASE)
    for name, table in services.items():
        data["environments"]["prod"].setdefault("services", {})[name] = table
    return data


def _errors(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(data, base_dir=Path("/etc/app"))
    return info.value.problems


def test_secrets_are_names_and_the_secrets_file_is_relative_to_the_config():
    cfg = parse(BASE, base_dir=Path("/etc/app"))
    assert cfg.services["api"].secrets == ("DATABASE_URL",)
    assert cfg.environments["prod"].secrets_file == Path("/etc/app/prod.env")
    assert cfg.environments["stage"].secrets_file is None


@pytest.mark.parametrize("secrets, expected", [
    ("DATABASE_URL", "services.api.secrets: must be a list of environment variable names"),
    (["9LIVES"], "services.api.secrets[0]: '9LIVES' is not valid"),
    (["A_B", "A_B"], "services.api.secrets[1]: 'A_B' is listed twice"),
    (["LOG_LEVEL"], "services.api.secrets: LOG_LEVEL is also set in env"),
])
def test_bad_secret_lists_are_refused_with_their_key_path(secrets, expected):
    data = copy.deepcopy(BASE)
    data["services"]["api"]["secrets"] = secrets
    assert any(p.startswith(expected) for p in _errors(data)), _errors(data)


@pytest.mark.parametrize("value, expected", [
    (8080, Publish(8080)),
    ("8080", Publish(8080)),
    ("127.0.0.1:8080", Publish(8080, "127.0.0.1")),
    ("[::1]:8080", Publish(8080, "::1")),
    ("0.0.0.0:81", Publish(81, "0.0.0.0")),
])
def test_publish_takes_a_port_or_an_address_and_port(value, expected):
    data = copy.deepcopy(BASE)
    data["services"]["api"]["publish"] = value
    svc = parse(data, base_dir=Path("/")).services["api"]
    assert svc.publish == expected and svc.host_port == expected.port


@pytest.mark.parametrize("value", [0, 70000, "host:80", "::1:80", "1.2.3.4:", True, "1.2.3.4:x"])
def test_bad_publish_values_are_refused(value):
    data = copy.deepcopy(BASE)
    data["services"]["api"]["publish"] = value
    assert any(p.startswith("services.api.publish: ") for p in _errors(data))


def test_the_default_publish_is_the_container_port_on_every_interface():
    svc = parse(BASE, base_dir=Path("/")).services["api"]
    assert svc.publish == Publish() and svc.host_port == 8000
    assert svc.publish.reach("10.0.0.5") == "10.0.0.5"


def test_probes_reach_a_specific_bound_address_and_the_node_otherwise():
    assert Publish(80, "10.9.0.1").reach("node.example") == "10.9.0.1"
    assert Publish(80, "127.0.0.1").reach("10.0.0.5") == "10.0.0.5"
    assert Publish(80, "::").reach("10.0.0.5") == "10.0.0.5"


def test_an_environment_overrides_settings_of_one_service_there_only():
    data = _data(api={"env": {"LOG_LEVEL": "debug"}, "secrets": ["TOKEN"], "port": 8100,
                      "publish": "10.0.0.1:80", "command": ["api", "--prod"],
                      "health": {"timeout": 40}})
    cfg = parse(data, base_dir=Path("/"))
    prod, stage = cfg.service_for("prod", "api"), cfg.service_for("stage", "api")
    assert prod.env == {"LOG_LEVEL": "debug", "MODE": "a"}          # merged key by key
    assert prod.secrets == ("TOKEN",)                               # replaced
    assert (prod.port, prod.host_port, prod.command) == (8100, 80, ("api", "--prod"))
    assert prod.health.timeout == 40 and prod.health.min_healthy == 2   # merged key by key
    assert stage == cfg.services["api"]
    assert [s.name for s in cfg.services_in("prod")] == ["api", "worker"]
    assert cfg.services_in("prod")[0] == prod


def test_overrides_are_checked_like_the_service():
    problems = _errors(_data(api={"prot": 1, "package": "x", "health": {"min_healthy": 60}},
                             apu={"port": 1}))
    assert any(p.startswith("environments.prod.services.api.prot: unknown key (did you mean "
                            "'port'?)") for p in problems)
    assert any(p.startswith("environments.prod.services.api.package: unknown key") for p in problems)
    assert any(p.startswith("environments.prod.services.api.health.min_healthy: 60 s is longer "
                            "than timeout (20 s)") for p in problems)
    assert any(p.startswith("environments.prod.services.apu: no such service (did you mean "
                            "'api'?)") for p in problems)


def test_an_overridden_env_key_that_is_a_secret_is_refused():
    problems = _errors(_data(api={"env": {"DATABASE_URL": "x"}}))
    assert problems == ["environments.prod.services.api.secrets: DATABASE_URL is also set in env; "
                        "a variable is either a literal (env) or a secret (secrets), remove it "
                        "from one"]


def test_an_unknown_service_name_is_a_usage_error_with_a_hint():
    cfg = parse(BASE, base_dir=Path("/"))
    with pytest.raises(UsageError, match="unknown service 'apj' \\(did you mean 'api'\\?\\)"):
        cfg.service_for("stage", "apj")


def _ports(**kw) -> dict:
    data = copy.deepcopy(BASE)
    for name, value in kw.items():
        data["services"][name].update(value)
    return data


def test_two_services_on_one_host_port_of_a_shared_node_are_refused_naming_both():
    problems = _errors(_ports(worker={"publish": 8000, "role": "web"}))
    assert problems == ["environments.stage: services api and worker both publish host port 8000 "
                        "and can run on the same node (node n1); set another `publish` for one "
                        "(services.worker.publish, or in environments.stage.services.worker)",
                        "environments.prod: services api and worker both publish host port 8000 "
                        "and can run on the same node (node p1); set another `publish` for one "
                        "(services.worker.publish, or in environments.prod.services.worker)"]


def test_same_host_port_on_separate_nodes_or_addresses_is_fine():
    parse(_ports(worker={"publish": 8000}), base_dir=Path("/"))          # web and jobs nodes apart
    parse(_ports(api={"publish": "10.0.0.1:80"}, worker={"publish": "10.0.0.2:80", "role": "web"}),
          base_dir=Path("/"))


def test_a_service_without_role_shares_every_node():
    data = _ports(worker={"publish": 8000})
    del data["services"]["worker"]["role"]
    assert any("services api and worker both publish host port 8000" in p for p in _errors(data))


def test_an_override_can_make_or_resolve_a_collision_in_one_environment():
    data = _ports(worker={"publish": 8000, "role": "web"})
    data["environments"]["stage"]["services"] = {"worker": {"publish": 8001}}
    data["environments"]["prod"]["services"] = {"worker": {"publish": 8001}}
    parse(data, base_dir=Path("/"))
    data = _data(worker={"publish": 8000})
    data["services"]["worker"]["role"] = "web"
    data["environments"]["stage"]["services"] = {"worker": {"publish": 8001}}
    assert [p.split(":")[0] for p in _errors(data)] == ["environments.prod"]


def test_with_chef_discovery_services_of_one_role_or_none_may_share_a_node(tmp_path):
    key = tmp_path / "client.pem"
    key.write_text("x")
    data = _ports(worker={"publish": 8000})
    data["environments"] = {"prod": {"chef": {"url": "https://chef.example", "client": "d",
                                              "key": str(key)}}}
    parse(data, base_dir=tmp_path)                                 # roles web and jobs
    data["services"]["worker"]["role"] = "web"
    assert _errors(data) == [
        "environments.prod: services api and worker both publish host port 8000 and can run on "
        "the same node (Chef finds the same nodes for both roles); set another `publish` for one "
        "(services.worker.publish, or in environments.prod.services.worker)"]


def test_a_service_may_name_its_own_template_and_base_image(tmp_path):
    from dockship import config as config_mod

    path = tmp_path / "dockship.toml"
    path.write_text('[index]\nurl = "http://127.0.0.1:8081/simple/"\n[registry]\nurl = "r:5000"\n'
                    '[services.a]\ntemplate = "a.Dockerfile.template"\nbase_image = "python:3.13-slim"\n'
                    '[services.b]\nport = 8001\n[environments.e]\nnodes = [{ name = "n1", docker = "ssh://root@10.0.0.1" }]\n')
    loaded = config_mod.load(path)
    assert loaded.services["a"].template == tmp_path / "a.Dockerfile.template"
    assert loaded.services["a"].base_image == "python:3.13-slim"
    assert (loaded.services["b"].template, loaded.services["b"].base_image) == (None, None)
    path.write_text(path.read_text().replace('"python:3.13-slim"', '"Python 3 [bold]"'))
    import pytest
    with pytest.raises(config_mod.ConfigError, match=r"services\.a\.base_image"):
        config_mod.load(path)


def test_health_kinds_are_read_and_checked(tmp_path):
    import pytest

    from dockship import config as config_mod

    head = ('[index]\nurl = "http://127.0.0.1:8081/simple/"\n[registry]\nurl = "r:5000"\n'
            '[environments.e]\nnodes = [{ name = "n1", docker = "ssh://root@10.0.0.1" }]\n')
    path = tmp_path / "dockship.toml"
    path.write_text(head + '[services.a.health]\nscheme = "https"\nhost = "api.example"\n'
                           'verify = true\n[services.b]\nport = 9000\n[services.b.health]\nkind = "tcp"\n')
    loaded = config_mod.load(path)
    a, b = loaded.services["a"].health, loaded.services["b"].health
    assert (a.kind, a.scheme, a.host, a.verify) == ("http", "https", "api.example", True)
    assert b.kind == "tcp" and b.describe() == "TCP connect"
    path.write_text(head + '[services.a.health]\nkind = "tcpp"\nhost = "a b"\n')
    with pytest.raises(config_mod.ConfigError) as bad:
        config_mod.load(path)
    text = str(bad.value)
    assert "services.a.health.kind" in text and "did you mean 'tcp'" in text
    assert "services.a.health.host" in text
    path.write_text(head.replace('[environments.e]\n', '[environments.e]\nrollout = { bake = 30 }\n')
                    + '[services.b.health]\nkind = "tcp"\n')
    with pytest.raises(config_mod.ConfigError, match=r"environments\.e\.rollout\.bake: .*bake_path"):
        config_mod.load(path)
