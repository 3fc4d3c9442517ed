"""A report's dimensions and range, read from what people type."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gatehouse.reports.errors import InvalidRange, UnknownDimension
from gatehouse.reports.query import Filters, ReportQuery, parse_group_by, parse_range

NOW = datetime(2026, 12, 7, 15, 30, tzinfo=UTC)


def test_dimensions_in_the_order_given_each_once() -> None:
    assert parse_group_by(["group, Model", "user,group"]) == ("group", "model", "user")
    for bad, says in (([""], "group by one or more"), (["user,,team"], "'team'"), (["users"], "'users'")):
        with pytest.raises(UnknownDimension, match=says) as caught:
            parse_group_by(bad)
        assert caught.value.param == "group_by" and caught.value.status == 400


def test_dates_are_days_in_the_timezone_and_to_is_included() -> None:
    assert parse_range("2026-03-01", "2026-03-31", timezone="Europe/Paris", now=NOW) == (
        datetime(2026, 2, 28, 23, tzinfo=UTC),
        datetime(2026, 3, 31, 22, tzinfo=UTC),  # summer time from 29 March
    )
    assert parse_range("2026-12-07", "2026-12-07", timezone="UTC", now=NOW) == (
        datetime(2026, 12, 7, tzinfo=UTC),
        datetime(2026, 12, 8, tzinfo=UTC),
    )


def test_datetimes_are_instants_and_naive_ones_are_in_the_timezone() -> None:
    start, end = parse_range("2026-03-05T12:30:00+01:00", "2026-03-06T00:00Z", timezone="America/New_York", now=NOW)
    assert (start, end) == (datetime(2026, 3, 5, 11, 30, tzinfo=UTC), datetime(2026, 3, 6, tzinfo=UTC))
    start, _ = parse_range("2026-03-05T12:30", "2026-03-06", timezone="America/New_York", now=NOW)
    assert start == datetime(2026, 3, 5, 17, 30, tzinfo=UTC)


def test_defaults() -> None:
    # Neither: this month, December in Tokyo, up to the first of January.
    assert parse_range(None, None, timezone="Asia/Tokyo", now=NOW) == (
        datetime(2026, 11, 30, 15, tzinfo=UTC),
        datetime(2026, 12, 31, 15, tzinfo=UTC),
    )
    # Only `from`: until now. Only `to`: from the first of the month it ends in.
    assert parse_range("2026-12-01", None, timezone="UTC", now=NOW) == (datetime(2026, 12, 1, tzinfo=UTC), NOW)
    assert parse_range(None, "2026-02-28", timezone="UTC", now=NOW)[0] == datetime(2026, 2, 1, tzinfo=UTC)
    assert parse_range(None, "2026-03-01T00:00Z", timezone="UTC", now=NOW)[0] == datetime(2026, 2, 1, tzinfo=UTC)


def test_bad_ranges_name_their_parameter() -> None:
    cases = [
        (("2026-03-02", "2026-03-01"), "to", "must be after `from`"),
        (("2026-12-08", None), "to", "now, 2026-12-07T15:30:00+00:00"),
        (("2024-01-01", "2025-01-01"), "to", "spans 367 days"),
        (("March", None), "from", "YYYY-MM-DD"),
        ((None, "2026-03-01T10:00:00 01:00"), "to", "%2B"),
        (("2026-02-29", None), "from", "'2026-02-29'"),
    ]
    for (start, end), param, says in cases:
        with pytest.raises(InvalidRange, match=says.replace("+", r"\+")) as caught:
            parse_range(start, end, timezone="UTC", now=NOW)
        assert caught.value.param == param and caught.value.code == "invalid_range"
    assert parse_range("2024-01-01", "2024-12-31", timezone="UTC", now=NOW)  # a leap year: 366 days


def test_only_a_report_by_group_without_a_group_filter_may_count_a_request_twice() -> None:
    month = {"start": NOW, "end": NOW}
    assert ReportQuery(group_by=("group", "model"), **month).rows_may_overlap
    assert not ReportQuery(group_by=("group",), filters=Filters(group_id=3), **month).rows_may_overlap
    assert not ReportQuery(group_by=("user", "key"), **month).rows_may_overlap
