"""Pinning on the build side against a real local index (a directory served over HTTP):
the whole dependency set with the index's sha256, and each way it can go wrong named."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest
from packaging import tags

from dockship.errors import DockshipError, UsageError
from dockship.index import HashMismatch, download_verified
from dockship.resolve import NeedsSdist, Pin, parse_report, pins_text, resolve, scrub
from dockship.target import Target, parse_probe
from dockship.wheelhouse import (
    MAX_DEPENDENCY_LAYERS, PinnedSet, Wheel, context_tar, layer_groups, materialize, pin_all)
from wheelkit import make_sdist, make_wheel, serve, write_index

HOST = Target(version=".".join(map(str, sys.version_info[:3])), implementation=tags.interpreter_name(),
              tags=tuple(str(t) for t in tags.sys_tags()))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def dists(tmp_path) -> Path:
    out = tmp_path / "dists"
    out.mkdir()
    return out


def index_of(tmp_path, files, **kw):
    write_index(tmp_path / "index", files, **kw)
    return serve(tmp_path / "index")


def test_the_whole_dependency_set_is_pinned_with_the_index_sha256(tmp_path, dists, cache):
    files = [make_wheel(dists, "svc", "1.0", ["dep-b>=1", "dep-c"]),
             make_wheel(dists, "dep-b", "1.0"), make_wheel(dists, "dep-b", "1.2", ["dep-d<2"]),
             make_wheel(dists, "dep-c", "3.0"), make_wheel(dists, "dep-d", "1.5"),
             make_wheel(dists, "dep-d", "2.0")]
    with index_of(tmp_path, files) as url:
        pins = resolve(url, "svc==1.0", HOST)
    assert [(p.name, p.version) for p in pins] == [("dep-b", "1.2"), ("dep-c", "3.0"), ("dep-d", "1.5"),
                                                   ("svc", "1.0")]
    import hashlib
    by_name = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    assert all(p.sha256 == by_name[p.filename] for p in pins)


def test_credentials_in_the_index_url_go_to_pip_and_never_into_its_messages(tmp_path, dists, cache):
    files = [make_wheel(dists, "svc", "1.0", ["nothere>=1"])]
    with index_of(tmp_path, files) as url:
        secret = url.replace("http://", "http://ci:Pa55w0rd@")
        with pytest.raises(UsageError) as e:
            resolve(secret, "svc==1.0", HOST)
    assert "nothere" in str(e.value) and "not on index" in str(e.value)
    assert "Pa55w0rd" not in str(e.value) and "ci:" not in str(e.value)
    assert scrub("http://ci:Pa55w0rd@h/ Pa55w0rd", secret) == "http://***:***@h/ ***"


def test_a_dependency_missing_from_the_index_is_bad_input_naming_it(tmp_path, dists, cache):
    with index_of(tmp_path, [make_wheel(dists, "svc", "1.0", ["ghost-lib>=2"])]) as url:
        with pytest.raises(UsageError) as e:
            pin_all(url, "svc==1.0", HOST)
    assert e.value.exit_code == 2
    assert str(e.value).startswith("dependency ghost-lib (ghost-lib>=2) is not on index http://127.0.0.1:")


def test_no_wheel_for_the_image_platform_is_bad_input_naming_it(tmp_path, dists, cache):
    files = [make_wheel(dists, "svc", "1.0", ["native"]),
             make_wheel(dists, "native", "1.0", tag="cp27-cp27m-win32")]
    with index_of(tmp_path, files) as url:
        with pytest.raises(UsageError) as e:
            pin_all(url, "svc==1.0", HOST)
    assert e.value.exit_code == 2
    assert "dependency native (native) has no wheel for the image's platform" in str(e.value)
    assert "win32" in str(e.value) and HOST.version in str(e.value)


def test_a_hash_mismatch_is_a_failure_naming_the_package(tmp_path, dists, cache):
    files = [make_wheel(dists, "svc", "1.0", ["dep-b"]), make_wheel(dists, "dep-b", "1.0")]
    with index_of(tmp_path, files, wrong_hash=["dep_b-1.0-py3-none-any.whl"]) as url:
        with pytest.raises(HashMismatch) as e:
            pin_all(url, "svc==1.0", HOST)
    assert e.value.exit_code == 1
    assert str(e.value).startswith("dependency dep-b: http://127.0.0.1:")
    assert "nothing was built or pushed" in str(e.value)


def test_a_download_is_checked_against_the_index_sha256_and_never_left_behind(tmp_path, dists, cache):
    wheel = make_wheel(dists, "dep-b", "1.0")
    with index_of(tmp_path, [wheel]) as url:
        file_url = url.replace("/simple/", f"/files/{wheel.name}")
        dest = tmp_path / wheel.name
        with pytest.raises(HashMismatch, match=r"^dep-b 1.0: .* has sha256 [0-9a-f]{64} but index"):
            download_verified(url, file_url, "0" * 64, dest, what="dep-b 1.0")
        assert not dest.exists() and not list(tmp_path.glob("*.part"))
        import hashlib
        good = hashlib.sha256(wheel.read_bytes()).hexdigest()
        assert download_verified(url, file_url, good, dest, what="dep-b 1.0") == good
        assert dest.read_bytes() == wheel.read_bytes()


def test_a_dependency_only_on_the_index_as_an_sdist_is_built_by_the_builder_given(tmp_path, dists, cache):
    files = [make_wheel(dists, "svc", "1.0", ["src-only>=1"]),
             make_sdist(dists, "src-only", "1.1", ["dep-c"]), make_wheel(dists, "dep-c", "3.0")]
    built_for: list[Pin] = []

    def build_wheel(pin: Pin, links: Path) -> Wheel:
        # stands in for the container build: what a real build of this sdist gives
        built_for.append(pin)
        wheel = make_wheel(tmp_path, "src-only", pin.version, ["dep-c"])
        return Wheel(pin=pin, path=wheel, sha256="b" * 64)

    with index_of(tmp_path, files) as url:
        with pytest.raises(NeedsSdist):
            resolve(url, "svc==1.0", HOST)
        with pytest.raises(UsageError, match=r"^dependency src-only is on the index only as an sdist"
                                             r" \(src_only-1.1.tar.gz\); publish a wheel of it$"):
            pin_all(url, "svc==1.0", HOST)
        pinned = pin_all(url, "svc==1.0", HOST, build_wheel=build_wheel)
    assert [p.name for p in built_for] == ["src-only"]
    only = next(p for p in pinned.pins if p.name == "src-only")
    assert only.filename == "src_only-1.1.tar.gz" and len(only.sha256) == 64   # the sdist's, recorded
    assert [p.name for p in pinned.pins] == ["dep-c", "src-only", "svc"]
    assert [w.pin.name for w in pinned.built] == ["src-only"]


def test_materialize_sends_verified_files_in_layers_below_the_package(tmp_path, dists, cache):
    files = [make_wheel(dists, "svc", "1.0", ["dep-b", "dep-c"]), make_wheel(dists, "dep-b", "1.0"),
             make_wheel(dists, "dep-c", "1.0", payload=5000)]     # the bigger one goes lowest
    with index_of(tmp_path, files) as url:
        pinned = pin_all(url, "svc==1.0", HOST)
        wheels = materialize(url, pinned)
    context = io.BytesIO()
    context_tar("FROM x\n", wheels, "svc", pins_text(pinned.pins), context)
    context.seek(0)
    with tarfile.open(fileobj=context) as tar:
        names = tar.getnames()
        read = lambda n: tar.extractfile(n).read().decode()   # noqa: E731
        assert all(m.mtime == 0 for m in tar.getmembers())
        assert names == ["Dockerfile", "wheelhouse/01/dep_c-1.0-py3-none-any.whl",
                         "wheelhouse/01/requirements.txt", "wheelhouse/02/dep_b-1.0-py3-none-any.whl",
                         "wheelhouse/02/requirements.txt", "wheelhouse/service/svc-1.0-py3-none-any.whl",
                         "wheelhouse/service/requirements.txt", "wheelhouse/service/pins.txt"]
        assert read("wheelhouse/01/requirements.txt").startswith("dep-c==1.0 --hash=sha256:")
        assert len(read("wheelhouse/service/requirements.txt").splitlines()) == 3
        assert read("wheelhouse/service/pins.txt") == pins_text(pinned.pins)


# -- pure rules ------------------------------------------------------------------------------

def test_layer_groups_are_one_per_dependency_until_the_limit_then_stable():
    assert layer_groups(["b", "a", "c"]) == [["a"], ["b"], ["c"]]
    many = [f"lib{i}" for i in range(100)]
    groups = layer_groups(many)
    assert len(groups) <= MAX_DEPENDENCY_LAYERS and sorted(sum(groups, [])) == sorted(many)
    # one more dependency changes one group only
    changed = [g for g in layer_groups(many + ["newlib"]) if g not in groups]
    assert len(changed) == 1 and "newlib" in changed[0]


def test_the_pin_file_is_stable_and_names_version_file_and_sha256():
    a = Pin("b", "1.0", "b-1.0-py3-none-any.whl", "http://i/b", "1" * 64)
    b = Pin("a", "2.0", "a-2.0.tar.gz", "http://i/a", "2" * 64)
    assert pins_text([a, b]) == pins_text([b, a]) == (
        f"a==2.0 a-2.0.tar.gz sha256:{'2' * 64}\nb==1.0 b-1.0-py3-none-any.whl sha256:{'1' * 64}\n")


def test_pip_report_is_read_into_pins():
    report = {"install": [{"metadata": {"name": "Dep_B", "version": "1.0"},
                           "download_info": {"url": "http://i/files/dep_b-1.0-py3-none-any.whl",
                                             "archive_info": {"hashes": {"sha256": "AB" * 32}}}}]}
    assert parse_report(report, index_url="http://i/simple/") == [
        Pin("dep-b", "1.0", "dep_b-1.0-py3-none-any.whl", "http://i/files/dep_b-1.0-py3-none-any.whl",
            "ab" * 32)]
    secret = {"install": [{"metadata": {"name": "a", "version": "1"},
                           "download_info": {"url": "http://u:pw@i/files/a-1-py3-none-any.whl"}}]}
    assert parse_report(secret, index_url="http://u:pw@i/simple/")[0].url == \
        "http://i/files/a-1-py3-none-any.whl"
    with pytest.raises(DockshipError, match="lacks a name"):
        parse_report({"install": [{"metadata": {}}]}, index_url="http://u:p@i/simple/")


def test_the_target_accepts_only_wheels_its_tags_allow():
    target = Target("3.11.2", "cp", ("cp311-cp311-manylinux_2_17_x86_64", "cp311-abi3-linux_x86_64",
                                     "py3-none-any"))
    assert target.accepts("a-1.0-py2.py3-none-any.whl")
    assert target.accepts("a-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    assert not target.accepts("a-1.0-cp311-cp311-win_amd64.whl")
    assert target.abis == ("cp311", "abi3", "none")
    assert target.platforms == ("manylinux_2_17_x86_64", "linux_x86_64")
    assert target.pip_args()[:4] == ["--python-version", "3.11.2", "--implementation", "cp"]


def test_a_base_image_that_reports_no_tags_is_bad_input():
    assert parse_probe('noise\n{"version": "3.11.2", "implementation": "cp", "tags": ["py3-none-any"]}',
                       "img").tags == ("py3-none-any",)
    for text in ("", "not json", '{"version": "3"}', '{"version": "3", "implementation": "cp", "tags": []}'):
        with pytest.raises(UsageError, match="base image img"):
            parse_probe(text, "img")


def test_a_failed_sdist_build_is_explained_by_the_backend_output_not_pip_boilerplate():
    from dockship.wheelhouse import build_output

    log = ("Processing /tmp/x.tar.gz\n  error: subprocess-exited-with-error\n\n"
           "  × Preparing metadata (pyproject.toml) did not run successfully.\n  │ exit code: 1\n"
           "  ╰─> [2 lines of output]\n      Traceback ...\n      this sdist is broken\n"
           "      [end of output]\n  note: This error originates from a subprocess\n"
           "error: metadata-generation-failed\nhint: See above for details.\n")
    assert build_output(log) == ["Traceback ...", "this sdist is broken"]
    assert build_output("ERROR: no setuptools\nhint: x\n") == ["ERROR: no setuptools"]
