"""A report as CSV (RFC 4180, CRLF), for the API's `format=csv` and the CLI's `--csv`.

The first column says what a line is: `row` (a group), `other` (the groups past the limit, summed) or `total`.
Then the dimensions' columns (reports/service.py COLUMNS), the measures, and the currency.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from gatehouse.limits.prices.money import decimal_of_nanos
from gatehouse.reports.service import MEASURES, Measures, Report

MEDIA_TYPE = "text/csv; charset=utf-8"
# A cell starting with one of these is a formula to a spreadsheet (`=HYPERLINK(...)`): key names are chosen by
# users, model names by clients. Such a cell gets a leading `'`, shown as text (as exports/files.py does).
FORMULA_STARTS = frozenset("=+-@\t\r")
_WRITTEN = [name if name != "cost_nanos" else "cost" for name in MEASURES]


def header(report: Report) -> list[str]:
    """The CSV's first line."""
    return ["row", *report.columns, *_WRITTEN, "currency"]


def to_csv(report: Report, *, currency: str) -> str:
    """The whole report as CSV text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header(report))
    blank = [""] * len(report.columns)
    for row in report.rows:
        labels = [_cell(row.labels[column]) for column in report.columns]
        writer.writerow(["row", *labels, *_measures(row.measures), currency])
    if report.other is not None:
        writer.writerow(["other", *blank, *_measures(report.other), currency])
    writer.writerow(["total", *blank, *_measures(report.totals), currency])
    return buffer.getvalue()


def _measures(measures: Measures) -> list[Any]:
    return [
        f"{decimal_of_nanos(value):f}" if name == "cost_nanos" else value
        for name, value in ((name, getattr(measures, name)) for name in MEASURES)
    ]


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value and value[0] in FORMULA_STARTS:
        return "'" + value
    return value
