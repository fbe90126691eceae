"""Pinning a release against a real local index: its own wheel from the index, its dependencies
resolved by pip once and reused only while every pinned project's page is unchanged."""

from __future__ import annotations

import sys

import pytest
from packaging import tags

from dockship.errors import UsageError
from dockship.index import IndexClient
from dockship.pinning import own_wheel, pin_release, wheel_requirements
from dockship.target import Target
from dockship.wheelhouse import pin_all
from wheelkit import make_wheel, serve, write_index

HOST = Target(version=".".join(map(str, sys.version_info[:3])), implementation=tags.interpreter_name(),
              tags=tuple(str(t) for t in tags.sys_tags()))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def pinned(url: str, version: str = "1.0"):
    with IndexClient(url) as index:
        release = index.resolve("svc", version)
    return pin_release(url, release, f"svc=={version}", HOST)


def test_a_release_pins_as_pip_would_and_is_reused_while_the_pages_are_unchanged(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    files = [make_wheel(out, "svc", "1.0", ["dep-b>=1", "dep-c; extra == 'test'"]),
             make_wheel(out, "dep-b", "1.0"), make_wheel(out, "dep-b", "1.2", ["dep-d"]),
             make_wheel(out, "dep-d", "0.1")]
    root = tmp_path / "index"
    write_index(root, files)
    with serve(root) as url:
        first = pinned(url)
        assert first.pins == tuple(pin_all(url, "svc==1.0", HOST).pins)
        # the dependencies' files gone, their pages the same: pip would fail; the pins are reused
        for name in ("dep_b-1.2-py3-none-any.whl", "dep_d-0.1-py3-none-any.whl"):
            (root / "files" / name).unlink()
        assert pinned(url).pins == first.pins
        # a new release of a dependency changes its page: resolved again, the new one pinned
        write_index(root, [*files[:2], make_wheel(out, "dep-b", "1.3"), files[3]])
        again = pinned(url)
    assert [(p.name, p.version) for p in again.pins] == [("dep-b", "1.3"), ("svc", "1.0")]


def test_a_package_without_dependencies_needs_no_resolver(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    write_index(tmp_path / "index", [make_wheel(out, "svc", "2.0")])
    with serve(tmp_path / "index") as url:
        result = pinned(url, "2.0")
    assert [(p.name, p.version, p.filename) for p in result.pins] == [
        ("svc", "2.0", "svc-2.0-py3-none-any.whl")]


def test_a_release_for_another_python_is_refused_naming_both(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    wheel = make_wheel(out, "svc", "1.0")
    import zipfile
    patched = tmp_path / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(patched, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("METADATA"):
                data += b"Requires-Python: <3.0\n"
            dst.writestr(item, data)
    write_index(tmp_path / "index", [patched])
    with serve(tmp_path / "index") as url, pytest.raises(UsageError) as e:
        pinned(url)
    assert str(e.value) == (f"svc 1.0 requires Python <3.0; the base image (build.base_image) runs"
                            f" Python {HOST.version}")
    assert wheel_requirements(patched) == ([], "<3.0")


def test_the_wheel_the_image_prefers_is_its_own():
    from dockship.index import PackageFile, Release
    from packaging.version import Version

    def f(name):
        return PackageFile(name, f"http://i/{name}", Version("1.0"), "a" * 64, False, None,
                           "wheel" if name.endswith(".whl") else "sdist")
    target = Target("3.11.2", "cp", ("cp311-cp311-manylinux_2_17_x86_64", "py3-none-any"))
    files = (f("svc-1.0.tar.gz"), f("svc-1.0-py3-none-any.whl"),
             f("svc-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"), f("svc-1.0-cp311-cp311-win32.whl"))
    release = Release("svc", Version("1.0"), files, "b" * 64)
    assert own_wheel(release, target).filename == "svc-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"
    assert own_wheel(Release("svc", Version("1.0"), files[:1], "b" * 64), target) is None
