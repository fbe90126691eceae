"""What `[build.hooks]` are given: the package, version and image; post_build the outcome too."""

import dataclasses
import sys

import pytest

from dockship.build import BuildHookContext
from dockship.hooks import HookFailed, run_hook

PRE = BuildHookContext(env="", service="", deploy_id="", package="hello-svc", version="1.4.0",
                       image="reg:5000/hello:1.4.0")


def test_pre_build_gets_the_package_version_and_image_only():
    assert PRE.variables() == {"DOCKSHIP_PACKAGE": "hello-svc", "DOCKSHIP_VERSION": "1.4.0",
                               "DOCKSHIP_IMAGE": "reg:5000/hello:1.4.0"}


@pytest.mark.parametrize(("pushed", "flag"), [(True, "1"), (False, "0")])
def test_post_build_also_gets_the_digest_and_whether_it_pushed(pushed, flag):
    post = dataclasses.replace(PRE, digest="sha256:" + "a" * 64, pushed=pushed)
    assert post.variables() == {**PRE.variables(), "DOCKSHIP_DIGEST": "sha256:" + "a" * 64,
                                "DOCKSHIP_PUSHED": flag}


def test_the_variables_reach_the_hook_and_its_failure_is_named(tmp_path):
    out = tmp_path / "seen"
    script = "import os, sys; open(sys.argv[1], 'w').write(os.environ['DOCKSHIP_IMAGE']); sys.exit(4)"
    with pytest.raises(HookFailed, match="hook pre_build .* exited 4"):
        run_hook({"pre_build": (sys.executable, "-c", script, str(out))}, "pre_build", PRE)
    assert out.read_text() == "reg:5000/hello:1.4.0"
