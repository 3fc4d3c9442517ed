"""The bytes of an export: rows formatted as CSV or JSONL (masked by column kind; in CSV, a string cell that a
spreadsheet would run as a formula starts with `'`), written into a ZIP that goes to a non-seekable stream (data
descriptors, ZIP64) and is drained chunk by chunk, so memory stays bounded."""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import zipfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from sqlalchemy import String

from gatehouse.exports import pii
from gatehouse.exports.entities import Field, Kind, PiiMode
from gatehouse.limits.prices.money import decimal_of_nanos, json_number

Format = Literal["csv", "jsonl"]
Batch = Sequence[Sequence[Any]]  # rows, as the database driver returned them
COMPRESS_LEVEL = 1  # CSV compresses about 10x at level 1 already; higher levels cost several times the CPU
TEXT_CACHE_SIZE = 4096  # masked free-text values remembered per column of a file (a few hundred KB at most)


def iso(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a Z (None stays None)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value is not None else None


def _converter(kind: Kind, pii_mode: PiiMode, fmt: Format) -> Callable[[Any], Any] | None:
    """How one column's values are written (None: as they are)."""
    masked = pii_mode == "masked"
    if kind == "time":
        return iso if fmt == "csv" else None  # orjson writes aware datetimes as RFC 3339 itself
    if kind == "bool":
        if fmt == "csv":
            return lambda v: None if v is None else ("true" if v else "false")
        return lambda v: None if v is None else bool(v)
    if kind == "email" and masked:
        return lambda v: None if v is None else pii.mask_email(v)
    if kind == "ip" and masked:
        return lambda v: None if v is None else pii.mask_ip(v)
    if kind == "text" and masked:
        # Many values repeat (model names, actor labels): each is scanned once per file.
        cached = functools.lru_cache(maxsize=TEXT_CACHE_SIZE)(pii.mask_text)
        return lambda v: None if v is None else cached(v)
    if kind == "json":
        return lambda v: _json_column(v, masked=masked, as_text=fmt == "csv")
    if kind == "nanos":
        if fmt == "csv":
            return lambda v: None if v is None else f"{decimal_of_nanos(v):f}"
        return lambda v: None if v is None else json_number(decimal_of_nanos(v))
    return None


def _json_column(value: Any, *, masked: bool, as_text: bool) -> Any:
    """JSON text (audit details), or a value the driver decoded already (a JSON column's list or object)."""
    if value is None:
        return None
    if not isinstance(value, str):
        decoded = value
    else:
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError:
            return pii.mask_text(value) if masked else value
        if not masked and as_text:
            return value
    if masked:
        decoded = pii.mask_json(decoded)
    return orjson.dumps(decoded, option=orjson.OPT_SORT_KEYS).decode() if as_text else decoded


# A CSV cell starting with one of these is a formula to a spreadsheet (`=HYPERLINK(...)`, `@SUM(...)`, `-1+1`):
# a string cell that does gets a leading `'`, which spreadsheets show as text (JSON lines are left as they are).
FORMULA_STARTS = frozenset("=+-@\t\r")


def _may_hold_text(field: Field) -> bool:
    """Whether a column's CSV cells are strings that could start like a formula (not numbers, times, bools)."""
    if field.kind in ("time", "bool", "nanos"):
        return False
    return field.kind != "plain" or isinstance(getattr(field.column, "type", None), String)


def defuse(value: Any) -> Any:
    """A string cell that a spreadsheet would run as a formula, made text with a leading `'`."""
    if isinstance(value, str) and value and value[0] in FORMULA_STARTS:
        return "'" + value
    return value


class Formatter:
    """Turns batches of rows of one entity into the bytes of its file."""

    def __init__(self, fields: tuple[Field, ...], pii_mode: PiiMode, fmt: Format) -> None:
        self.names = [f.name for f in fields]
        self.fmt = fmt
        masked = pii_mode == "masked"
        # A name beside an email is masked knowing the email (its raw value, from the row as read).
        self.names_beside = [
            (i, self.names.index(f.name_beside))
            for i, f in enumerate(fields)
            if masked and f.name_beside is not None and f.name_beside in self.names
        ]
        beside = {i for i, _ in self.names_beside}
        self.converters = [
            (i, conv)
            for i, f in enumerate(fields)
            if i not in beside and (conv := _converter(f.kind, pii_mode, fmt)) is not None
        ]
        self.defused = [i for i, f in enumerate(fields) if _may_hold_text(f)] if fmt == "csv" else []

    def header(self) -> bytes:
        """The CSV header row (JSONL has none)."""
        return self._csv([self.names]) if self.fmt == "csv" else b""

    def _csv(self, rows: Batch) -> bytes:
        buffer = io.StringIO()
        # CRLF (RFC 4180): with "\n" alone, csv leaves a cell holding a carriage return unquoted, and a reader
        # starts a new row there (`Bob\r=HYPERLINK(...)` would be a row of its own, starting with a formula).
        csv.writer(buffer, lineterminator="\r\n").writerows(rows)
        return buffer.getvalue().encode()

    def rows(self, batch: Batch) -> bytes:
        """One batch as CSV lines or JSON lines, masked and converted column by column."""
        if self.converters or self.names_beside or self.defused:
            converted = []
            for row in batch:
                values = list(row)
                for i, conv in self.converters:
                    values[i] = conv(values[i])
                for i, email in self.names_beside:
                    if row[i] is not None:
                        values[i] = pii.mask_display_name(row[i], row[email])
                for i in self.defused:
                    values[i] = defuse(values[i])
                converted.append(values)
            out: Batch = converted
        else:
            out = batch
        if self.fmt == "csv":
            return self._csv(out)
        names = self.names
        option = orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE
        return b"".join(orjson.dumps(dict(zip(names, values, strict=True)), option=option) for values in out)


# --- the ZIP ------------------------------------------------------------------------------------------------------


class _Sink(io.RawIOBase):
    """A write-only, non-seekable file for zipfile; what it received is taken out with `drain()`."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        return len(chunk)

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class EntityFile:
    """One file inside the ZIP, with its running size and SHA-256 (of the uncompressed bytes)."""

    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        # force_zip64: the size is unknown until the end, and may pass 4 GiB.
        self._handle = archive.open(info, mode="w", force_zip64=True)
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        if data:
            self._handle.write(data)
            self._digest.update(data)
            self.size += len(data)

    def write_rows(self, formatter: Formatter, batch: Batch) -> None:
        """Format a batch and write it (in a worker thread: tens of milliseconds of CPU per batch)."""
        self.write(formatter.rows(batch))

    def close(self) -> None:
        self._handle.close()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


class ZipStream:
    """A ZIP written to no file: `take()` returns the bytes produced since the last call, and `sha256` is the
    digest of everything taken so far (the whole file once `close()` has run)."""

    def __init__(self, when: datetime) -> None:
        self._sink = _Sink()
        self._archive = zipfile.ZipFile(
            self._sink, mode="w", compression=zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL
        )
        self._when = when
        self._digest = hashlib.sha256()
        self._current: EntityFile | None = None
        self.size = 0

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=self._when.astimezone(UTC).timetuple()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        return info

    def open(self, name: str) -> EntityFile:
        """Start a file; write to it, close it, then open the next."""
        self._current = EntityFile(self._archive, self._info(name))
        return self._current

    def add(self, name: str, data: bytes) -> None:
        """A whole small file at once (the manifest)."""
        self._archive.writestr(self._info(name), data)

    def close(self) -> None:
        """Write the central directory."""
        self._archive.close()

    def discard(self) -> None:
        """Give up (the reader left, or reading failed): finish the archive in memory and drop its bytes, so
        nothing complains later about a ZIP left open."""
        with contextlib.suppress(Exception):
            if self._current is not None:
                self._current.close()
            self._archive.close()
        self._sink.drain()

    def take(self) -> bytes:
        data = self._sink.drain()
        self._digest.update(data)
        self.size += len(data)
        return data

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()
