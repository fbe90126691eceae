"""`dockship versions` orders tags as PEP 440 versions, not as strings."""

from dockship.versions import ordered


def test_version_tags_newest_first_then_other_tags_by_name():
    tags = ["1.0.0", "latest", "1.10.0", "1.2.0", "2.0.0rc1", "1.2.0.post1", "edge", "1_2.0"]
    assert ordered(tags) == ["1_2.0", "2.0.0rc1", "1.10.0", "1.2.0.post1", "1.2.0", "1.0.0",
                             "edge", "latest"]
