"""Replay of real request logs: formats, detection, reading and the replay transformations.

    from tokenmill.workloads.traces import load_trace
    arrays = load_trace(TraceSource(path="azure_code.csv"))
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ...workload import WorkloadArrays
from ..config import TraceSource
from ..info import WorkloadInfo
from .registry import READERS, SIGNATURES, detect_format, read_trace
from .replay import replay
from .table import TraceTable

__all__ = ["READERS", "SIGNATURES", "TraceTable", "detect_format", "load_trace", "read_trace",
           "replay", "trace_notes"]


def load_trace(source: TraceSource, *, duration_s: Optional[float] = None,
               num_requests: Optional[int] = None) -> WorkloadArrays:
    """Read and replay a trace: the requests as the kernel's columns, with an account."""
    table = replay(read_trace(source), source, duration_s, num_requests)
    counts = {k: v for k, v in table.counts.items() if v}
    info = WorkloadInfo(source=f"trace {table.path} ({table.format})", counts=counts,
                        notes=tuple(trace_notes(table, source, duration_s, num_requests)))
    block = table.block_tokens if table.prefix_ids is not None else 0
    return WorkloadArrays(
        arrival_s=np.ascontiguousarray(table.time_s, dtype=np.float64),
        prompt_tokens=table.prompt.astype(np.int32),
        output_tokens=table.output.astype(np.int32),
        prefix_ids=table.prefix_ids, prefix_offsets=table.prefix_offsets,
        prefix_block_tokens=block, info=info)


def trace_notes(table: TraceTable, source: TraceSource, duration_s: Optional[float],
                num_requests: Optional[int]) -> list[str]:
    """One sentence for every row the replay left out or changed."""
    c = table.counts
    notes = [f"read {c.get('rows', 0):,} rows of {table.path} ({table.format})"]
    if c.get("skipped_bad"):
        first = "; ".join(table.bad_examples[:2])
        notes.append(f"skipped {c['skipped_bad']:,} malformed rows (first: {first})")
    if c.get("filtered_model"):
        notes.append(f"left out {c['filtered_model']:,} rows of other models "
                     f"(trace.model = {source.model!r})")
    if c.get("filtered_log_type"):
        notes.append(f"left out {c['filtered_log_type']:,} rows of other log types "
                     f"(trace.log_type = {source.log_type!r})")
    if c.get("excluded_failed"):
        notes.append(f"excluded {c['excluded_failed']:,} failed requests (zero Response tokens)")
    if c.get("excluded_zero_prompt"):
        notes.append(f"excluded {c['excluded_zero_prompt']:,} rows with a zero-token prompt")
    if c.get("excluded_zero_output"):
        notes.append(f"excluded {c['excluded_zero_output']:,} rows with zero output tokens "
                     "(a request produces at least one)")
    if c.get("reordered"):
        notes.append(f"rows were not in time order ({c['reordered']:,} steps back in time); "
                     "requests were sorted by time")
    if c.get("prefix_blocks_mismatch"):
        notes.append(f"{c['prefix_blocks_mismatch']:,} rows have a number of hash_ids other "
                     f"than ceil(input_length / {table.block_tokens}); kept as given")
    if c.get("outside_window"):
        notes.append(f"left out {c['outside_window']:,} requests outside the window "
                     f"[{source.start_s or 0:g}, "
                     f"{source.end_s if source.end_s is not None else 'end'}) s")
    if c.get("after_duration"):
        notes.append(f"left out {c['after_duration']:,} requests arriving after duration_s = "
                     f"{duration_s:g} s")
    if c.get("over_limit"):
        notes.append(f"left out {c['over_limit']:,} requests beyond num_requests = "
                     f"{num_requests:,}")
    if source.speedup is not None:
        notes.append(f"gaps divided by speedup {source.speedup:g}")
    if source.rate is not None:
        notes.append("every request sent at time 0 (trace.rate = inf)" if math.isinf(source.rate)
                     else f"time rescaled to a mean rate of {source.rate:g} req/s")
    if source.repeat > 1:
        notes.append(f"trace played {source.repeat} times back to back")
    return notes
