"""``normalize_timestamp``: every source's times become RFC 3339 UTC, or None; never an exception."""

from __future__ import annotations

import pytest

from parsers.schema import normalize_timestamp


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05Z"),
    ("2026-01-02T03:04:05.120+02:00", "2026-01-02T01:04:05.12Z"),
    ("2026-01-02T03:04:05", "2026-01-02T03:04:05Z"),
    (1_767_323_045, "2026-01-02T03:04:05Z"),
    (1_767_323_045_000, "2026-01-02T03:04:05Z"),
    # early years keep four digits; times UTC cannot hold are None, not a crash
    ("0001-01-01T00:00:00+01:00", None),
    ("0999-12-31T23:59:59Z", "0999-12-31T23:59:59Z"),
    ("0999-12-31T23:59:59+01:00", "0999-12-31T22:59:59Z"),
    (-30_610_224_000, "1000-01-01T00:00:00Z"),
    ("9999-12-31T23:59:59-01:00", None),
    (-62_135_596_800, "0001-01-01T00:00:00Z"),
    (-62_135_596_801, None),
    (1e300, None),
    (float("nan"), None),
    ("yesterday", None),
    (True, None),
    ([2026], None),
])
def test_times_become_rfc3339_utc_or_none(value: object, expected: str | None) -> None:
    assert normalize_timestamp(value) == expected
