"""The original tokenmill's native trace CSV: timestamp_ms, prompt_tokens, output_tokens.

Extra columns are allowed and ignored; timestamps are milliseconds on any origin.
"""

from __future__ import annotations

from pathlib import Path

from ..config import TraceSource
from .csvread import Column, read_columns
from .table import TraceTable

NAME = "tokenmill"
COLUMNS = (Column("timestamp_ms", "number", "time"), Column("prompt_tokens", "count", "prompt"),
           Column("output_tokens", "count", "output"))


def matches(header: list[str]) -> bool:
    return {"timestamp_ms", "prompt_tokens", "output_tokens"} <= set(header)


def read(path: Path, source: TraceSource) -> TraceTable:
    cols = read_columns(path, COLUMNS, skip_bad_rows=source.skip_bad_rows,
                        what="tokenmill native trace")
    return TraceTable(path, NAME, cols.values["time"] / 1e3, cols.values["prompt"],
                      cols.values["output"],
                      counts={"rows": cols.rows, "skipped_bad": cols.bad.count},
                      bad_examples=cols.bad.examples)
