"""`[environments.E] etcd = { url, prefix, docker }`: read whole, every problem with its key path."""

from pathlib import Path

import pytest

from dockship.config import EtcdSettings, parse
from dockship.errors import ConfigError

BASE = {
    "index": {"url": "http://127.0.0.1:8081/simple/"},
    "registry": {"url": "127.0.0.1:5000"},
    "services": {"hello": {"package": "hello-svc", "port": 8000, "role": "web"}},
}


def _config(env: dict) -> dict:
    return {**BASE, "environments": {"stage": env}}


def _errors(env: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(_config(env), base_dir=Path("/"))
    return info.value.problems


def _etcd(env: dict) -> EtcdSettings | None:
    return parse(_config(env), base_dir=Path("/")).environments["stage"].etcd


def test_only_the_url_is_needed_and_prefix_and_docker_get_their_defaults():
    assert _etcd({"etcd": {"url": "http://127.0.0.1:2379"}}) == EtcdSettings(
        url="http://127.0.0.1:2379", prefix="/dockship/nodes/stage", docker="ssh://root@{address}")


def test_every_key_is_read_as_given():
    etcd = _etcd({"etcd": {"url": "https://[fd00::5]:2379/", "prefix": "/fleet/stage/",
                           "docker": "tcp://{name}.example.com:2376"},
                  "tls": {"verify": True}, "allow_plain_tcp": True})
    assert etcd == EtcdSettings(url="https://[fd00::5]:2379", prefix="/fleet/stage",
                                docker="tcp://{name}.example.com:2376")


def test_environments_without_etcd_have_none():
    env = {"nodes": [{"name": "node1", "docker": "ssh://root@10.0.0.1"}]}
    assert _etcd(env) is None


@pytest.mark.parametrize("url, expected", [
    ("ftp://127.0.0.1:2379", "must start with http:// or https://"),
    ("http://127.0.0.1:0", "has port 0"),
    ("http://127.0.0.1:99999", "has a bad port"),
    ("http://127.0.0.1:2379/v3/kv", "without a path"),
    ("http://127.0.0.1:2379?x=1", "without a path"),
    ("http://root:s3cret@127.0.0.1:2379", "holds a user or password"),
    ("http://-x:2379", "host"),
    (2379, "must be a URL"),
])
def test_a_bad_url_is_refused_with_its_key_path(url, expected):
    problems = _errors({"etcd": {"url": url}})
    assert len(problems) == 1 and problems[0].startswith("environments.stage.etcd.url: ")
    assert expected in problems[0]
    assert "s3cret" not in problems[0]


@pytest.mark.parametrize("prefix", ["dockship/nodes", "", "/a b", "/a\x1b[2J", 7, "/" + "x" * 1100])
def test_a_bad_prefix_is_refused(prefix):
    problems = _errors({"etcd": {"url": "http://127.0.0.1:2379", "prefix": prefix}})
    assert len(problems) == 1 and problems[0].startswith("environments.stage.etcd.prefix: ")
    assert "\x1b" not in problems[0]


@pytest.mark.parametrize("docker", ["ssh://root@10.0.0.1", "ftp://{address}", "ssh://-oProxy@{address}"])
def test_a_bad_docker_template_is_refused(docker):
    problems = _errors({"etcd": {"url": "http://127.0.0.1:2379", "docker": docker}})
    assert len(problems) == 1 and problems[0].startswith("environments.stage.etcd.docker: ")


def test_a_tcp_template_without_tls_needs_the_opt_in_like_any_engine():
    problems = _errors({"etcd": {"url": "http://127.0.0.1:2379", "docker": "tcp://{address}:2375"}})
    assert problems[0].startswith("environments.stage.etcd.docker: a tcp:// engine without TLS")


def test_every_problem_is_listed_at_once_and_unknown_keys_are_named():
    problems = _errors({"etcd": {"prefix": "nodes", "docker": "{address}", "urll": "x"}})
    assert sorted(p.split(":")[0] for p in problems) == [
        "environments.stage.etcd.docker", "environments.stage.etcd.prefix",
        "environments.stage.etcd.url", "environments.stage.etcd.urll"]
    assert any("did you mean 'url'" in p for p in problems)


def test_etcd_must_be_a_table():
    problems = _errors({"etcd": "http://127.0.0.1:2379"})
    assert "environments.stage.etcd: must be a table, got 'http://127.0.0.1:2379'" in problems


@pytest.mark.parametrize("other", [
    {"nodes": [{"name": "node1", "docker": "ssh://root@10.0.0.1"}]},
    {"chef": {"url": "http://127.0.0.1:4545", "client": "dockship", "key": "/"}},
])
def test_an_environment_has_exactly_one_source_of_nodes(other):
    first = next(iter(other))
    problems = _errors({**other, "etcd": {"url": "http://127.0.0.1:2379"}})
    assert problems == [f"environments.stage: has `{first}` and `etcd`; "
                        "keep one source of nodes"]


def test_none_of_the_sources_names_all_three():
    problems = _errors({"rollout": {"canary": 1}})
    assert len(problems) == 1 and "`etcd = { url = ... }`" in problems[0] \
        and "`nodes = [...]`" in problems[0] and "`chef = {" in problems[0]


def test_two_services_on_one_port_may_meet_on_etcd_nodes():
    data = _config({"etcd": {"url": "http://127.0.0.1:2379"}})
    data["services"] = {"a": {"port": 8000}, "b": {"port": 8000}}
    with pytest.raises(ConfigError) as info:
        parse(data, base_dir=Path("/"))
    assert "etcd finds the same nodes for both roles" in str(info.value)
