"""Response models of GET /admin/usage/report (JSON; reports/render.py writes the same as CSV)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from gatehouse.limits.prices.money import decimal_of_nanos
from gatehouse.limits.prices.schemas import DecimalNumber
from gatehouse.reports.query import Dimension
from gatehouse.reports.service import Measures, Report


class ReportMeasures(BaseModel):
    """What a set of requests amounted to."""

    requests: int
    errors: int = Field(description="Requests answered with a status >= 400.")
    prompt_tokens: int
    completion_tokens: int
    cost: DecimalNumber = Field(
        description="What they cost, in `currency`, at the prices of their time: exact sums of `cost_nanos`."
    )
    cost_nanos: int = Field(description="`cost` in billionths of `currency` (exact).")
    unpriced_requests: int = Field(
        description="Requests that used tokens of a model without a price: they cost 0, and are not in `cost`."
    )

    @classmethod
    def of(cls, measures: Measures) -> ReportMeasures:
        """From the service's integers."""
        return cls(
            requests=measures.requests,
            errors=measures.errors,
            prompt_tokens=measures.prompt_tokens,
            completion_tokens=measures.completion_tokens,
            cost=decimal_of_nanos(measures.cost_nanos),
            cost_nanos=measures.cost_nanos,
            unpriced_requests=measures.unpriced_requests,
        )


class ReportRow(ReportMeasures):
    """One group of requests. The columns of the dimensions grouped by hold their values (null: none, e.g. no group,
    or a user since deleted has no email); the others are null."""

    user_id: int | None = None
    user_email: str | None = None
    group_id: int | None = None
    group_name: str | None = None
    key_id: int | None = None
    key_name: str | None = None
    key_prefix: str | None = None
    model: str | None = None
    upstream: str | None = None
    surface: str | None = None


class ReportOther(ReportMeasures):
    """The groups past `limit`, summed."""

    rows: int = Field(description="How many groups this sums.")


class UsageReport(BaseModel):
    """Usage and spend over [from, to), grouped by `group_by`."""

    start: datetime = Field(serialization_alias="from", description="The first moment counted (UTC).")
    end: datetime = Field(serialization_alias="to", description="The first moment not counted (UTC).")
    timezone: str = Field(description="QUOTA_TIMEZONE: the days of `from` and `to` given as dates.")
    currency: str = Field(description="PRICE_CURRENCY.")
    group_by: list[Dimension]
    limit: int
    rows_may_overlap: bool = Field(
        description="True when grouped by group (without a group_id filter): a request of a user in several groups "
        "counts in each of their rows, so the rows may sum to more than `totals`."
    )
    rows: list[ReportRow] = Field(description="By cost, then requests, descending; at most `limit`.")
    other: ReportOther | None = Field(description="The groups past `limit`, summed; null when there are none.")
    totals: ReportMeasures = Field(description="Every request in range that the filters select, each counted once.")

    @classmethod
    def of(cls, report: Report, *, timezone: str, currency: str) -> UsageReport:
        """From the service's report."""
        query = report.query
        other = None
        if report.other is not None:
            other = ReportOther(**ReportMeasures.of(report.other).model_dump(), rows=report.other_rows)
        return cls(
            start=query.start,
            end=query.end,
            timezone=timezone,
            currency=currency,
            group_by=list(query.group_by),
            limit=query.limit,
            rows_may_overlap=query.rows_may_overlap,
            rows=[ReportRow(**ReportMeasures.of(row.measures).model_dump(), **row.labels) for row in report.rows],
            other=other,
            totals=ReportMeasures.of(report.totals),
        )
