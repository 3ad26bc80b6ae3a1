"""Azure LLM inference traces, 2023 (Splitwise) and 2024 (DynamoLLM).

Columns TIMESTAMP (absolute date and time), ContextTokens (prompt), GeneratedTokens (output),
per the dataset's README; the requests were replayed with forced output lengths.
"""

from __future__ import annotations

from pathlib import Path

from ..config import TraceSource
from .csvread import Column, read_columns
from .table import TraceTable

NAME = "azure"
COLUMNS = (Column("TIMESTAMP", "datetime", "time"), Column("ContextTokens", "count", "prompt"),
           Column("GeneratedTokens", "count", "output"))


def matches(header: list[str]) -> bool:
    return {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= set(header)


def read(path: Path, source: TraceSource) -> TraceTable:
    cols = read_columns(path, COLUMNS, skip_bad_rows=source.skip_bad_rows, what="Azure trace")
    ns = cols.values["time"]
    time_s = (ns - (ns.min() if ns.size else 0)) / 1e9  # relative, so float64 keeps ns detail
    return TraceTable(path, NAME, time_s, cols.values["prompt"], cols.values["output"],
                      counts={"rows": cols.rows, "skipped_bad": cols.bad.count},
                      bad_examples=cols.bad.examples)
