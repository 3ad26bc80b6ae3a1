"""BurstGPT (HPMLL/BurstGPT): ChatGPT and GPT-4 requests served on Azure.

Columns Timestamp (seconds from 0:00 of the first day), Model (ChatGPT or GPT-4), Request
tokens, Response tokens, Total tokens, Log Type ("Conversation log" or "API log"); release
v1.2's third file adds Session ID and Elapsed time, which are not used. A row with zero
Response tokens is a failed request (the dataset's README): it is excluded and counted, as are
rows that the model and log-type filters leave out. Total tokens is redundant and not used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import TraceSource
from ..errors import WorkloadError
from .csvread import Column, read_columns
from .table import TraceTable

NAME = "burstgpt"
COLUMNS = (Column("Timestamp", "number", "time"), Column("Model", "text", "model"),
           Column("Request tokens", "count", "prompt"),
           Column("Response tokens", "count", "output"), Column("Log Type", "text", "log_type"))
LOG_TYPE_SHORT = {"conversation": "conversation log", "api": "api log"}


def matches(header: list[str]) -> bool:
    return {"Timestamp", "Model", "Request tokens", "Response tokens", "Log Type"} <= set(header)


def read(path: Path, source: TraceSource) -> TraceTable:
    cols = read_columns(path, COLUMNS, skip_bad_rows=source.skip_bad_rows, what="BurstGPT trace")
    v = cols.values
    table = TraceTable(path, NAME, v["time"], v["prompt"], v["output"],
                       counts={"rows": cols.rows, "skipped_bad": cols.bad.count},
                       bad_examples=cols.bad.examples)
    models = np.char.lower(cols.levels["model"])     # the few distinct values
    log_types = np.char.lower(cols.levels["log_type"])
    model_code = v["model"]
    log_code = v["log_type"]
    if source.model is not None:
        want = source.model.strip().lower()
        keep = (models == want)[model_code]
        if not keep.any():
            raise WorkloadError(f"{path}: no rows have Model {source.model!r}; models present: "
                                f"{', '.join(sorted(cols.levels['model'].tolist()))}")
        table.keep(keep, "filtered_model")
        log_code = log_code[keep]
    if source.log_type is not None:
        want = source.log_type.strip().lower()
        want = LOG_TYPE_SHORT.get(want, want)
        keep = (log_types == want)[log_code]
        if not keep.any():
            raise WorkloadError(f"{path}: no rows (after the model filter) have Log Type "
                                f"{source.log_type!r}; present: "
                                f"{', '.join(sorted(cols.levels['log_type'].tolist()))}")
        table.keep(keep, "filtered_log_type")
    table.keep(table.output > 0, "excluded_failed")
    return table
