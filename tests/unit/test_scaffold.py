"""`dockship init`: the documented example and the default template, never overwriting."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockship import cli, config
from dockship.errors import UsageError
from dockship.scaffold import EXAMPLE_CONFIG, TEMPLATE, init, packaged

ROOT = Path(__file__).resolve().parents[2]


def test_the_packaged_example_is_the_documented_one():
    assert packaged(EXAMPLE_CONFIG) == (ROOT / "examples" / "dockship.toml").read_text()


def test_init_writes_a_config_that_loads_and_builds_with_its_own_template(tmp_path, capsys):
    target = tmp_path / "dockship.toml"
    assert cli.main(["init", "--config", str(target)]) == 0
    loaded = config.load(target)
    assert loaded.build.template == tmp_path / TEMPLATE
    assert (tmp_path / TEMPLATE).read_text() == packaged(TEMPLATE)
    assert "dockship config check" in capsys.readouterr().out


@pytest.mark.parametrize("existing", ["dockship.toml", TEMPLATE])
def test_init_never_overwrites_and_then_writes_nothing(tmp_path, existing):
    (tmp_path / existing).write_text("mine\n")
    with pytest.raises(UsageError, match="never overwrites"):
        init(tmp_path / "dockship.toml")
    assert [p.name for p in tmp_path.iterdir()] == [existing]
    assert (tmp_path / existing).read_text() == "mine\n"
