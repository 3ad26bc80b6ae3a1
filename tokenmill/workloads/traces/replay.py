"""From trace rows to requests: exclusions, time order, window, time scaling, repeats, limits.

The order of operations, and what each does to time:
1. rows with a zero-token prompt or output are excluded (the simulator needs >= 1 of each);
2. rows are put in time order (a stable sort; how many were out of order is reported);
3. time zero is the first remaining request; the window [start_s, end_s) selects rows by
   their time since then;
4. the first selected request is moved to t = 0 and the gaps are kept;
5. speedup divides every gap; rate rescales them so that the mean rate, (n - 1) / span, is
   `rate` (inf puts every request at t = 0);
6. repeat plays the result again after a mean gap, with prefix ids renumbered per copy;
7. Workload.duration_s and num_requests cut the stream, as for synthetic arrivals.
Every step that removes requests counts them in the table's counts.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..config import TraceSource
from ..errors import WorkloadError
from .table import TraceTable, select_prefixes


def replay(table: TraceTable, source: TraceSource, duration_s: Optional[float],
           num_requests: Optional[int]) -> TraceTable:
    """The requests to simulate, as a table whose time_s are arrival times from 0."""
    path = table.path
    table.keep(table.prompt > 0, "excluded_zero_prompt")
    table.keep(table.output > 0, "excluded_zero_output")
    if len(table) == 0:
        raise WorkloadError(f"{path}: no requests to replay ({_summary(table)})")
    descents = int(np.count_nonzero(np.diff(table.time_s) < 0))
    if descents:
        _reorder(table, np.argsort(table.time_s, kind="stable"))
        table.counts["reordered"] = descents
    rel = table.time_s - table.time_s[0]
    mask = np.ones(len(table), dtype=bool)
    if source.start_s is not None:
        mask &= rel >= source.start_s
    if source.end_s is not None:
        mask &= rel < source.end_s
    table.time_s = rel
    table.keep(mask, "outside_window")
    if len(table) == 0:
        raise WorkloadError(f"{path}: no requests in the window [{source.start_s or 0:g}, "
                            f"{source.end_s if source.end_s is not None else 'end'}) s "
                            f"({_summary(table)})")
    t = table.time_s - table.time_s[0]
    n = t.shape[0]
    span = float(t[-1])
    if source.speedup is not None:
        t = t / source.speedup
    elif source.rate is not None:
        if math.isinf(source.rate):
            t = np.zeros(n)
        else:
            if n < 2 or span <= 0:
                raise WorkloadError(f"{path}: cannot rescale to trace.rate = {source.rate:g} "
                                    f"req/s: the replayed requests span no time ({n} request(s))")
            t = t * (((n - 1) / span) / source.rate)
    table.time_s = t
    if source.repeat > 1:
        _repeat(table, source.repeat)
    if duration_s is not None:
        table.keep(table.time_s < duration_s, "after_duration")
    if num_requests is not None and len(table) > num_requests:
        mask = np.zeros(len(table), dtype=bool)
        mask[:num_requests] = True
        table.keep(mask, "over_limit")
    if len(table) == 0:
        raise WorkloadError(f"{path}: no requests left to replay ({_summary(table)})")
    return table


def _reorder(table: TraceTable, order: np.ndarray) -> None:
    table.time_s = table.time_s[order]
    table.prompt = table.prompt[order]
    table.output = table.output[order]
    if table.prefix_ids is not None and table.prefix_offsets is not None:
        table.prefix_ids, table.prefix_offsets = select_prefixes(
            table.prefix_ids, table.prefix_offsets, order)


def _repeat(table: TraceTable, copies: int) -> None:
    """Play the table `copies` times; each copy starts one mean gap after the previous ends."""
    t = table.time_s
    n = t.shape[0]
    span = float(t[-1] - t[0])
    period = span + (span / (n - 1) if n > 1 else 0.0)
    table.time_s = np.concatenate([t + k * period for k in range(copies)])
    table.prompt = np.tile(table.prompt, copies)
    table.output = np.tile(table.output, copies)
    if table.prefix_ids is not None and table.prefix_offsets is not None:
        ids, offsets = table.prefix_ids, table.prefix_offsets
        stride = int(ids.max()) + 1 if ids.size else 0
        table.prefix_ids = np.concatenate([ids + k * stride for k in range(copies)])
        total = int(offsets[-1])
        table.prefix_offsets = np.concatenate(
            [offsets[:1]] + [offsets[1:] + k * total for k in range(copies)])


def _summary(table: TraceTable) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in table.counts.items() if v)
