"""`dockship logs`: --since and the splitting of a followed stream into lines."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from dockship.errors import UsageError
from dockship.logs import _lines, parse_since

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(("text", "ago"), [("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400),
                                           ("1.5h", 5400)])
def test_since_takes_a_duration(text, ago):
    assert parse_since(text, NOW) == NOW - timedelta(seconds=ago)


def test_since_takes_an_iso_time():
    assert parse_since("2026-12-02T10:00:00Z", NOW) == datetime(2026, 12, 2, 10, tzinfo=timezone.utc)


@pytest.mark.parametrize("text", ["10", "ten minutes", "-5m", "nan", "1e9d", "2026-13-45"])
def test_since_refuses_anything_else_naming_the_flag(text):
    with pytest.raises(UsageError, match="--since"):
        parse_since(text, NOW)


@given(st.lists(st.text(alphabet="ab\n", max_size=8), max_size=6))
def test_lines_are_whole_whatever_the_chunking(chunks):
    data = "".join(chunks)
    expected = data.split("\n")
    if expected and expected[-1] == "":
        expected.pop()
    assert list(_lines(c.encode() for c in chunks)) == expected
