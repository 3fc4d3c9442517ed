"""Errors of usage reports: a query the report cannot answer, naming the parameter at fault."""

from __future__ import annotations

from gatehouse.errors import BadRequest


class UnknownDimension(BadRequest):
    """`group_by` names something a report cannot group by."""

    code = "unknown_dimension"


class InvalidRange(BadRequest):
    """`from` or `to` is not a date or a time, `to` is not after `from`, or the range is longer than allowed."""

    code = "invalid_range"
