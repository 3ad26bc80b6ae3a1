"""Mooncake (FAST'25) JSONL traces: one request per line.

{"timestamp": ms, "input_length": tokens, "output_length": tokens, "hash_ids": [ids...]}.
hash_ids name the request's consecutive 512-token prompt blocks; equal ids are reusable KV
(the release README). They become WorkloadArrays.prefix_ids / prefix_offsets with
prefix_block_tokens = 512. A row whose number of ids is not ceil(input_length / 512) is kept
and counted (the prefix then covers more or less of the prompt than the ids say).

Three readers, fastest first, each used only when the previous one cannot vouch for the file:
1. the released layout ({"timestamp": .., "input_length": .., "output_length": ..,
   "hash_ids": [..]} with whole-number values, one object per line, as json.dumps writes
   it) is parsed by numpy over the whole file, with no Python object per value;
2. any other valid JSONL is parsed by one json.loads call on the lines joined into an array;
3. lines are parsed one by one, to name the bad line and field (or skip and count it).
"""

from __future__ import annotations

import codecs
import json
import math
import warnings
from itertools import chain
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..config import TraceSource
from ..errors import WorkloadError
from .csvread import MAX_COUNT, BadRows
from .table import TraceTable

NAME = "mooncake"
BLOCK_TOKENS = 512
FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")


_HEAD = b'{"timestamp": , "input_length": , "output_length": , "hash_ids": ['
_NUMBERS_ONLY = bytes(b if 48 <= b <= 57 or b == 45 else 32 for b in range(256))  # digits, '-'
_EMPTY_SLOTS = (b": ,", b"[,", b", ,", b", ]")


def matches_line(first: str) -> bool:
    try:
        row = json.loads(first)
    except ValueError:
        return False
    return isinstance(row, dict) and {"timestamp", "input_length", "output_length"} <= set(row)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read(path: Path, source: TraceSource) -> TraceTable:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise WorkloadError(f"{path}: cannot read it ({err.strerror})") from err
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    parsed = _released_layout(data)
    bad = BadRows()
    if parsed is None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise WorkloadError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
        parsed = _fast(text)
        if parsed is None:
            parsed = _slow(path, text, source.skip_bad_rows, bad)
    time_ms, prompt, output, ids, offsets = parsed
    table = TraceTable(path, NAME, time_ms / 1e3, prompt, output, prefix_ids=ids,
                       prefix_offsets=offsets, block_tokens=BLOCK_TOKENS,
                       counts={"rows": int(prompt.shape[0]) + bad.count, "skipped_bad": bad.count},
                       bad_examples=bad.examples)
    blocks = np.diff(offsets)
    mismatch = int(np.count_nonzero(blocks != -(-prompt // BLOCK_TOKENS)))
    if mismatch:
        table.counts["prefix_blocks_mismatch"] = mismatch
    return table


Parsed = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _released_layout(data: bytes) -> Optional[Parsed]:
    """Reader 1: the released layout, read without a Python object per value, or None.

    All numbers are parsed in one np.fromstring call after every other byte becomes a space
    and every line end a -1 marker. The layout is then proved: with the digits removed each
    line must be exactly the template for its number of ids, and no value slot may be empty,
    so each slot holds exactly one run of digits and there are digits nowhere else.
    """
    body = data.strip()
    if not body or b"-" in body or b"\r" in body or b"\n\n" in body:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            nums = np.fromstring((body + b"\n").replace(b"\n", b" -1 ").translate(_NUMBERS_ONLY),
                                 dtype=np.int64, sep=" ")
        except (ValueError, Warning):
            return None
    ends = np.flatnonzero(nums == -1)
    starts = np.concatenate([[0], ends[:-1] + 1])
    counts = ends - starts
    if counts.size == 0 or counts.min() < 3 or nums.max() == np.iinfo(np.int64).max:
        return None
    k = counts - 3
    templates = {int(x): _HEAD + b", ".join([b""] * int(x)) + b"]}" for x in np.unique(k)}
    expected = b"\n".join(map(templates.__getitem__, k.tolist()))
    if body.translate(None, b"0123456789") != expected:
        return None
    if any(slot in body for slot in _EMPTY_SLOTS) or body.count(b"[]") != int((k == 0).sum()):
        return None
    prompt = nums[starts + 1]
    output = nums[starts + 2]
    if prompt.max() > MAX_COUNT or output.max() > MAX_COUNT:
        return None
    is_id = np.ones(nums.shape[0], dtype=bool)
    is_id[ends] = False
    is_id[starts] = False
    is_id[starts + 1] = False
    is_id[starts + 2] = False
    offsets = np.zeros(k.shape[0] + 1, dtype=np.int64)
    np.cumsum(k, out=offsets[1:])
    return nums[starts].astype(np.float64), prompt, output, nums[is_id], offsets


def _fast(text: str) -> Optional[Parsed]:
    body = text.strip()
    if not body:
        return _arrays([], [], [], [])
    try:
        rows = json.loads("[" + body.replace("\n", ",") + "]", parse_constant=_reject_constant)
        ts = [r["timestamp"] for r in rows]
        il = [r["input_length"] for r in rows]
        ol = [r["output_length"] for r in rows]
        hs = [r["hash_ids"] for r in rows]
    except (ValueError, KeyError, TypeError):
        return None
    if not (set(map(type, ts)) <= {int, float} and set(map(type, il)) <= {int}
            and set(map(type, ol)) <= {int} and set(map(type, hs)) <= {list}):
        return None
    flat = list(chain.from_iterable(hs))
    if not set(map(type, flat)) <= {int}:
        return None
    try:
        out = _arrays(ts, il, ol, hs, flat)
    except OverflowError:
        return None
    time_ms, prompt, output, ids, _ = out
    if not np.isfinite(time_ms).all():
        return None
    if (prompt.size and (prompt.min() < 0 or prompt.max() > MAX_COUNT or output.min() < 0
                         or output.max() > MAX_COUNT)) or (ids.size and ids.min() < 0):
        return None
    return out


def _arrays(ts: list, il: list, ol: list, hs: list, flat: Optional[list] = None) -> Parsed:
    offsets = np.zeros(len(hs) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, hs), dtype=np.int64, count=len(hs)), out=offsets[1:])
    ids = np.array(flat if flat is not None else list(chain.from_iterable(hs)), dtype=np.int64)
    return (np.array(ts, dtype=np.float64), np.array(il, dtype=np.int64),
            np.array(ol, dtype=np.int64), ids.reshape(-1), offsets)


def _check_row(row: object) -> Optional[str]:
    """What is wrong with one parsed line, or None."""
    if not isinstance(row, dict):
        return "not a JSON object"
    for name in FIELDS:
        if name not in row:
            return f"field {name!r}: missing"
    t = row["timestamp"]
    if type(t) not in (int, float) or not math.isfinite(t):
        return f"field 'timestamp': not a finite number (got {t!r})"
    for name in ("input_length", "output_length"):
        v = row[name]
        if type(v) is not int or not 0 <= v <= MAX_COUNT:
            return f"field {name!r}: not a whole number between 0 and {MAX_COUNT} (got {v!r})"
    h = row["hash_ids"]
    if type(h) is not list or any(type(x) is not int or not 0 <= x < 2**63 for x in h):
        return f"field 'hash_ids': not a list of whole numbers >= 0 (got {str(h)[:60]})"
    return None


def _slow(path: Path, text: str, skip_bad_rows: bool, bad: BadRows) -> Parsed:
    ts: list = []
    il: list = []
    ol: list = []
    hs: list = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_constant=_reject_constant)
            problem = _check_row(row)
        except ValueError as err:
            problem = f"not valid JSON ({err})"
        if problem is not None:
            sep = ", " if problem.startswith("field ") else ": "
            where = f"{path}, line {number}{sep}{problem}"
            if not skip_bad_rows:
                raise WorkloadError(where + "; fix the line, or pass --skip-bad-rows "
                                    "(trace.skip_bad_rows) to skip and count bad lines")
            bad.add(where)
            continue
        assert isinstance(row, dict)
        ts.append(row["timestamp"])
        il.append(row["input_length"])
        ol.append(row["output_length"])
        hs.append(row["hash_ids"])
    return _arrays(ts, il, ol, hs)
