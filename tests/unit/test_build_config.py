"""`[build]`'s network opt-in and `[build.hooks]`: a build's own settings, not an environment's."""

from pathlib import Path

import pytest

from dockship.config import parse
from dockship.errors import ConfigError

BASE = {
    "index": {"url": "http://127.0.0.1:8081/simple/"},
    "registry": {"url": "127.0.0.1:5000"},
    "environments": {"stage": {"nodes": [{"name": "node1", "docker": "unix:///run/n1.sock"}]}},
}


def _parse(build=None, hooks=None):
    data = {**BASE, **({"build": build} if build is not None else {})}
    if hooks is not None:
        data["environments"] = {"stage": {**BASE["environments"]["stage"], "hooks": hooks}}
    return parse(data, base_dir=Path("/"))


def _problems(**kw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _parse(**kw)
    return info.value.problems


def test_builds_have_no_network_and_no_hooks_unless_configured():
    build = _parse().build
    assert build.network is False and dict(build.hooks) == {}


def test_build_hooks_and_the_network_opt_in_are_read():
    build = _parse(build={"network": True, "hooks": {"pre_build": ["./check", "x"],
                                                     "post_build": ["./announce"]}}).build
    assert build.network is True
    assert dict(build.hooks) == {"pre_build": ("./check", "x"), "post_build": ("./announce",)}


def test_build_hooks_in_an_environment_point_to_build_hooks():
    problems = _problems(hooks={"pre_build": ["./check"], "pre_node": ["./lb", "drain"]})
    assert problems == ["environments.stage.hooks.pre_build: pre_build runs around `dockship build`,"
                        " which has no environment; move it to [build.hooks]"]


@pytest.mark.parametrize(("build", "where"), [
    ({"network": "yes"}, "build.network"),
    ({"hooks": {"pre_build": "./check"}}, "build.hooks.pre_build"),
    ({"hooks": {"pre_roll": ["./x"]}}, "build.hooks.pre_roll"),
])
def test_bad_build_keys_are_named(build, where):
    assert any(p.startswith(f"{where}: ") for p in _problems(build=build))
