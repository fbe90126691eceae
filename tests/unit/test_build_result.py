"""The build result's JSON keys are a fixed contract for CI jobs."""

from dockship.build import Action, BuildResult


def test_build_json_keys_are_pinned():
    result = BuildResult("hello-svc", "1.4.0+abc.1", "1.4.0-abc.1", "r:5000/hello:1.4.0-abc.1",
                         "sha256:" + "0" * 64, pushed=True, action=Action.BUILD)
    assert list(result.to_json()) == ["package", "version", "tag", "image", "digest", "pushed"]


def test_already_built_summary_says_nothing_was_pushed():
    result = BuildResult("hello-svc", "1.0.0", "1.0.0", "r/hello:1.0.0", "sha256:ab",
                         pushed=False, action=Action.ALREADY_BUILT)
    assert "already built" in result.summary() and "nothing pushed" in result.summary()


def test_index_credentials_never_reach_the_image_labels():
    from dockship.build import _without_credentials
    assert _without_credentials("https://ci:s3cret@idx.example:8443/simple/") == "https://idx.example:8443/simple/"
    assert _without_credentials("http://127.0.0.1:8081/simple/") == "http://127.0.0.1:8081/simple/"
