"""Read named columns of a CSV file, fast when it is clean and precise when it is not.

The fast path hands the whole file to numpy's C parser (np.loadtxt) and checks the values
with vectorised comparisons. If anything fails, the file is read again row by row with the
csv module, which names the line and field of the first bad value, or, with skip_bad_rows,
skips every bad row and counts it. The row-by-row reader is the reference: on files it
accepts, the fast path gives the same values (tests/test_traces.py checks both on every
format); the one latitude is that the fast path also takes the other ISO 8601 timestamp
forms numpy parses (such as a date alone), which the careful reader refuses.
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional, Sequence

import numpy as np

from ..errors import WorkloadError
from .timeparse import parse_datetime_ns, parse_datetimes_ns

Kind = Literal["count", "number", "datetime", "text"]
MAX_COUNT = 2**30 - 1
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Column:
    """A column to read: its header name, what its values are, and the name to return it by.

    count: a whole number of tokens, 0 <= x <= 2**30 - 1 ("12.0" is accepted as 12);
    number: a finite real number; datetime: an absolute timestamp (int64 ns); text: a short
    label such as a model name, returned as int32 codes into Columns.levels[key] (stripped
    strings), since such columns hold few distinct values.
    """

    header: str
    kind: Kind
    key: str


@dataclass
class BadRows:
    """Rows skipped as malformed: how many, and the first few reasons."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, where: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(where)


@dataclass
class Columns:
    values: dict[str, np.ndarray]
    rows: int
    bad: BadRows
    levels: dict[str, np.ndarray] = field(default_factory=dict)  # text columns: code -> value


def read_header(path: Path) -> list[str]:
    """The first line's fields, stripped of a byte-order mark, spaces and quotes."""
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as fh:
            first = fh.readline()
    except OSError as err:
        raise WorkloadError(f"{path}: cannot read it ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise WorkloadError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    return [name.strip().strip('"').strip() for name in next(csv.reader([first]), [])]


def read_columns(path: Path, wanted: Sequence[Column], *, skip_bad_rows: bool,
                 what: str) -> Columns:
    """The `wanted` columns of a CSV file with a header line; `what` names the format."""
    header = read_header(path)
    index = {name: i for i, name in enumerate(header)}
    missing = [c.header for c in wanted if c.header not in index]
    if missing:
        raise WorkloadError(f"{path}, line 1: the {what} header needs column(s) "
                            f"{', '.join(repr(m) for m in missing)}; found {', '.join(map(repr, header))}")
    positions = [index[c.header] for c in wanted]
    fast = _fast(path, wanted, positions, len(header))
    if fast is not None:
        return fast
    return _slow(path, wanted, positions, len(header), skip_bad_rows)


TEXT_WIDTH = 32  # longest text value the fast path reads; longer ones go the careful way


def _fast(path: Path, wanted: Sequence[Column], positions: list[int],
          width: int) -> Optional[Columns]:
    # Plain timestamps parse straight to datetime64 inside loadtxt; with a UTC offset they are
    # read as text and the offset is handled in timeparse (numpy refuses offsets).
    for stamps in ("datetime64[ns]", "U40"):
        dtype = [(f"c{k}", {"count": "i8", "number": "f8", "datetime": stamps,
                            "text": f"S{TEXT_WIDTH}"}[c.kind]) for k, c in enumerate(wanted)]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                table = np.loadtxt(path, delimiter=",", skiprows=1, usecols=positions,
                                   dtype=dtype, ndmin=1, comments=None, quotechar='"',
                                   encoding="utf-8-sig")
            break
        except (ValueError, Warning, UnicodeDecodeError):
            if stamps == "U40" or not any(c.kind == "datetime" for c in wanted):
                return None  # malformed somewhere, or no data rows: let the careful reader say
    values: dict[str, np.ndarray] = {}
    levels: dict[str, np.ndarray] = {}
    for k, col in enumerate(wanted):
        raw = table[f"c{k}"]
        if col.kind == "count":
            if raw.size and (raw.min() < 0 or raw.max() > MAX_COUNT):
                return None
            values[col.key] = raw.astype(np.int64)
        elif col.kind == "number":
            if not np.isfinite(raw).all():
                return None
            values[col.key] = raw.astype(np.float64)
        elif col.kind == "datetime":
            if raw.dtype.kind == "M":
                if np.isnat(raw).any():
                    return None
                values[col.key] = raw.astype(np.int64)
            else:
                ns = parse_datetimes_ns(raw)
                if ns is None:
                    return None
                values[col.key] = ns
        else:
            found, codes = _categories(raw)  # raw bytes: a quarter of the memory of str
            if found.size and max(len(f) for f in found.tolist()) >= TEXT_WIDTH:
                return None  # may have been cut short: read it carefully
            # loadtxt stores text in a bytes column as latin-1 (and refuses what latin-1
            # cannot hold, which then goes the careful way): decode it the same way
            stripped = np.array([f.decode("latin-1").strip() for f in found.tolist()], dtype=str)
            kept, remap = np.unique(stripped, return_inverse=True)  # " a" and "a" are one
            levels[col.key] = kept
            values[col.key] = remap.reshape(-1)[codes].astype(np.int32)
    if not _field_counts_ok(path, width, table.shape[0]):
        return None
    return Columns(values, rows=table.shape[0], bad=BadRows(), levels=levels)


def _categories(raw: np.ndarray, most: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and each row's code. A label column holds a handful of values, and one
    vectorised comparison per value beats sorting a million strings; past `most` values,
    sort after all."""
    n = raw.shape[0]
    codes = np.empty(n, dtype=np.int64)
    found: list = []
    rest = np.arange(n)
    while rest.size and len(found) < most:
        hit = raw[rest] == raw[rest[0]]
        codes[rest[hit]] = len(found)
        found.append(raw[rest[0]])
        rest = rest[~hit]
    if rest.size:
        values, inverse = np.unique(raw, return_inverse=True)
        return values, inverse.reshape(-1)
    if not found:
        return raw[:0], codes
    return np.array(found, dtype=raw.dtype), codes


def _field_counts_ok(path: Path, width: int, rows: int) -> bool:
    """loadtxt ignores fields it does not use: check that every row has the header's width.

    Without quotes, the header and `rows` well-formed rows hold exactly (width - 1) x (rows + 1)
    commas; any other count means a row with too many or too few fields somewhere."""
    with path.open("rb") as fh:
        data = fh.read()
    if b'"' in data:
        return False  # quoted fields may hold commas: let the csv module count
    return data.count(b",") == (width - 1) * (rows + 1)


def _parse_count(text: str) -> int:
    t = text.strip()
    try:
        value = int(t)
    except ValueError:
        try:
            f = float(t)
        except ValueError:
            raise ValueError("not a whole number") from None
        if not (math.isfinite(f) and f.is_integer()):
            raise ValueError("not a whole number") from None
        value = int(f)
    if value < 0:
        raise ValueError("negative")
    if value > MAX_COUNT:
        raise ValueError(f"larger than {MAX_COUNT}")
    return value


def _parse_number(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _parse_text(text: str) -> str:
    return text.strip()


PARSERS: dict[str, Callable[[str], object]] = {
    "count": _parse_count, "number": _parse_number, "datetime": parse_datetime_ns,
    "text": _parse_text,
}


def _slow(path: Path, wanted: Sequence[Column], positions: list[int], width: int,
          skip_bad_rows: bool) -> Columns:
    out: list[list[object]] = [[] for _ in wanted]
    bad = BadRows()
    parsers = [PARSERS[c.kind] for c in wanted]
    rows = 0
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            next(reader, None)  # header
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # a blank line is not a row
                line = reader.line_num
                problem = None
                parsed: list[object] = []
                if len(row) != width:
                    problem = f"{path}, line {line}: has {len(row)} fields; the header has {width}"
                else:
                    for col, pos, parse in zip(wanted, positions, parsers):
                        try:
                            parsed.append(parse(row[pos]))
                        except ValueError as err:
                            problem = (f"{path}, line {line}, field {col.header!r}: {err} "
                                       f"(got {row[pos]!r})")
                            break
                if problem is not None:
                    if not skip_bad_rows:
                        raise WorkloadError(problem + "; fix the row, or pass --skip-bad-rows "
                                            "(trace.skip_bad_rows) to skip and count bad rows")
                    bad.add(problem)
                    continue
                rows += 1
                for k, value in enumerate(parsed):
                    out[k].append(value)
    except OSError as err:
        raise WorkloadError(f"{path}: cannot read it ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise WorkloadError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except csv.Error as err:
        raise WorkloadError(f"{path}, line {reader.line_num}: not valid CSV ({err})") from err
    values: dict[str, np.ndarray] = {}
    levels: dict[str, np.ndarray] = {}
    for k, col in enumerate(wanted):
        if col.kind in ("count", "datetime"):
            values[col.key] = np.array(out[k], dtype=np.int64)
        elif col.kind == "number":
            values[col.key] = np.array(out[k], dtype=np.float64)
        else:
            kept, codes = np.unique(np.array(out[k], dtype=str), return_inverse=True)
            levels[col.key] = kept
            values[col.key] = codes.reshape(-1).astype(np.int32)
    return Columns(values, rows=rows + bad.count, bad=bad, levels=levels)
