"""Versions ↔ tags (design §4): the mapping reverses, tags are valid Docker tags, order is PEP 440's."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import Version

from dockship.errors import UsageError
from dockship.tags import DOCKER_TAG_RE, newest, newest_tag, parse_version, tag_for, version_for

# -- a strategy for valid PEP 440 versions, written in all their spellings ----------------------

# Every strategy here is built from integers, sampled_from and lists: cheap from the first draw.
# (st.from_regex builds a character map on its first draw, over a second on a small machine, and
# Hypothesis' too_slow health check then fails the test on a fresh clone.)
_numbers = st.integers(min_value=0, max_value=10**6)
_ALNUM = string.ascii_letters + string.digits
_local_part = st.lists(st.sampled_from(_ALNUM), min_size=1, max_size=8).map("".join)


@st.composite
def versions(draw) -> str:
    text = ""
    if draw(st.booleans()):
        text += f"{draw(st.integers(0, 50))}!"
    text += ".".join(str(n) for n in draw(st.lists(_numbers, min_size=1, max_size=4)))
    if draw(st.booleans()):
        pre = draw(st.sampled_from(["a", "b", "rc", "alpha", "beta", "c", "pre", "preview"]))
        text += draw(st.sampled_from(["", ".", "-", "_"])) + pre + str(draw(_numbers))
    if draw(st.booleans()):
        text += draw(st.sampled_from([f".post{draw(_numbers)}", f"-{draw(_numbers)}", f"-post{draw(_numbers)}",
                                      f"_r{draw(_numbers)}", f".rev{draw(_numbers)}"]))
    if draw(st.booleans()):
        text += draw(st.sampled_from([".dev", "-dev", "dev"])) + str(draw(_numbers))
    if draw(st.booleans()):
        sep = draw(st.sampled_from([".", "-", "_"]))
        text += "+" + sep.join(draw(st.lists(_local_part, min_size=1, max_size=3)))
    if draw(st.booleans()):
        text = text.upper()
    return text


@given(versions())
def test_the_tag_of_a_version_gives_back_the_same_version(text):
    v = Version(text)
    tag = tag_for(text)
    assert version_for(tag) == v
    assert str(version_for(tag)) == str(v)
    assert tag_for(v) == tag == tag_for(version_for(tag))


@given(versions())
def test_every_tag_is_a_valid_docker_tag(text):
    tag = tag_for(text)
    assert DOCKER_TAG_RE.fullmatch(tag)
    assert "+" not in tag and "!" not in tag


@given(versions(), versions())
def test_equal_normalized_versions_have_equal_tags_and_others_different_tags(a, b):
    # The tag is the *normalized form* (design §4): 1.0 and 1.0.0 compare equal as
    # versions but are two spellings, so two tags; the mapping never merges two forms.
    assert (tag_for(a) == tag_for(b)) == (str(Version(a)) == str(Version(b)))


def test_equal_versions_spelled_differently_keep_their_own_tags():
    assert Version("1.0") == Version("1.0.0")
    assert (tag_for("1.0"), tag_for("1.0.0")) == ("1.0", "1.0.0")


@pytest.mark.parametrize(("version", "tag"), [
    ("1.4.0", "1.4.0"),
    ("1.4.0+abc.1", "1.4.0-abc.1"),
    ("1!2.0", "1_2.0"),
    ("1!2.0rc1.post2.dev3+Local-Build_7", "1_2.0rc1.post2.dev3-local.build.7"),
    ("v1.0-1", "1.0.post1"),           # normalized first: a leading v, a legacy post release
    ("1.0.0-RC1", "1.0.0rc1"),
])
def test_design_examples(version, tag):
    assert tag_for(version) == tag
    assert version_for(tag) == Version(version)


@pytest.mark.parametrize("tag", ["latest", "main", "v1.0", "01.0", "1.0RC1", "1.0-", "sha-abc123", "", "1_", "1.0+x"])
def test_only_canonical_version_tags_are_version_tags(tag):
    with pytest.raises(ValueError):
        version_for(tag)


def test_a_version_too_long_for_a_docker_tag_is_refused():
    with pytest.raises(UsageError, match="128 characters"):
        tag_for("1." + "0." * 70 + "1")


@pytest.mark.parametrize("text", ["1.0-foo-bar", "latest", "", "1..0", "one"])
def test_parse_version_refuses_what_is_not_pep440(text):
    with pytest.raises(UsageError) as e:
        parse_version(text)
    assert "is not a PEP 440 version" in str(e.value) and "\n" not in str(e.value)
    assert e.value.exit_code == 2


def test_parse_version_accepts_spellings_and_versions():
    assert parse_version(" 1.0-1 ") == Version("1.0.post1")
    v = Version("2.0")
    assert parse_version(v) is v


# -- ordering ------------------------------------------------------------------------------------

def test_newest_orders_by_pep440_not_by_string():
    assert newest(["1.9", "1.10", "1.2"]) == Version("1.10")


def test_newest_skips_pre_and_dev_releases_unless_asked():
    assert newest(["1.0rc1", "0.9", "1.0.dev3", "1.0a1"]) == Version("0.9")
    assert newest(["1.0rc1", "0.9", "1.0.dev3", "1.0a1"], pre=True) == Version("1.0rc1")
    assert newest(["1.0rc1", "1.0"], pre=True) == Version("1.0")     # 1.0rc1 < 1.0
    assert newest(["1.0rc1"]) is None
    assert newest([]) is None


def test_newest_counts_post_and_local_versions_as_final():
    assert newest(["1.0", "1.0.post1"]) == Version("1.0.post1")
    assert newest(["1.0", "1.0+build.7", "0.9+zzz"]) == Version("1.0+build.7")
    assert newest([Version("1!0.1"), Version("9.9")]) == Version("1!0.1")   # epochs first


@pytest.mark.parametrize(("smaller", "larger"), [
    ("1.9", "1.10"), ("1.0rc1", "1.0"), ("1.0.dev1", "1.0a1"), ("1.0", "1.0+local"),
    ("1.0+abc.1", "1.0+abc.2"), ("1.0+abc", "1.0+1"), ("1.0", "1.0.post1"), ("2.0", "1!1.0"),
])
def test_tag_order_follows_version_order(smaller, larger):
    assert version_for(tag_for(smaller)) < version_for(tag_for(larger))
    top = newest([smaller, larger])
    assert newest_tag([tag_for(larger), tag_for(smaller)]) == (tag_for(top) if top else None)


def test_newest_tag_takes_the_highest_final_release_and_ignores_the_rest():
    tags = ["latest", "1.9.0", "1.10.0", "2.0.0rc1", "v3.0", "main", "1.10.0-build.2", "0.1.dev1"]
    assert newest_tag(tags) == "1.10.0-build.2"
    assert newest_tag(["1.9.0", "1.10.0", "2.0.0rc1"]) == "1.10.0"
    assert newest_tag(["latest", "2.0.0rc1"]) is None
    assert newest_tag([]) is None
    assert newest_tag(["1_0.1", "9.9"]) == "1_0.1"


@given(st.lists(versions(), max_size=8))
def test_newest_tag_agrees_with_newest(texts):
    expected = newest(texts)
    assert newest_tag(tag_for(t) for t in texts) == (tag_for(expected) if expected is not None else None)
