"""A summary of a workload before simulating it: count, rate, burstiness, lengths, prefix
sharing, class mix, and the account of anything left out or changed.

    from tokenmill.workloads.describe import describe_workload
    print(describe_workload(tm.Workload(arrival_rate=20.0)).to_text())

Definitions: the mean rate is (n - 1) / (last - first arrival), the reciprocal of the mean gap;
burstiness is the coefficient of variation of the gaps (standard deviation / mean; 1 for
Poisson, 0 for constant gaps); the prefix-sharing ratio is the share of prompt blocks whose id
already appeared in an earlier request, i.e. the block hit rate of an unbounded prefix cache
replaying the workload in order. In a closed loop the arrival times are decided during the
simulation, so rate and burstiness describe the earliest send times only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from .._json import json_safe
from ..workload import WorkloadArrays
from .config import Workload
from .generate import generate, workload_label
from .info import WorkloadInfo

PERCENTILES = (50.0, 90.0, 99.0)


@dataclass(frozen=True)
class LengthSummary:
    mean: float
    p50: float
    p90: float
    p99: float
    min: int
    max: int
    total: int

    @classmethod
    def of(cls, x: np.ndarray) -> "LengthSummary":
        if x.size == 0:
            nan = float("nan")
            return cls(nan, nan, nan, nan, 0, 0, 0)
        p50, p90, p99 = np.percentile(x, PERCENTILES)
        return cls(float(x.mean()), float(p50), float(p90), float(p99), int(x.min()),
                   int(x.max()), int(x.sum(dtype=np.int64)))


@dataclass(frozen=True)
class WorkloadSummary:
    """What describe_workload reports; to_dict() for JSON, to_text() for people."""

    label: str
    requests: int
    span_s: float
    mean_rate: Optional[float]
    burstiness: Optional[float]
    prompt: LengthSummary
    output: LengthSummary
    closed_loop: Optional[dict[str, Any]] = None
    prefix: Optional[dict[str, Any]] = None
    classes: list[dict[str, Any]] = field(default_factory=list)
    info: Optional[WorkloadInfo] = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.label,
            "requests": self.requests,
            "arrivals": {"span_s": self.span_s, "mean_rate_per_s": self.mean_rate,
                         "burstiness_cv": self.burstiness, "closed_loop": self.closed_loop},
            "prompt_tokens": self.prompt.__dict__,
            "output_tokens": self.output.__dict__,
            "prefix_sharing": self.prefix,
            "classes": self.classes,
            "account": self.info.to_dict() if self.info is not None else None,
        }

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(json_safe(self.to_dict()), indent=indent)

    def to_text(self) -> str:
        lines = [f"workload   {self.label}"]
        if self.closed_loop is not None:
            c = self.closed_loop
            lines.append(f"clients    {c['concurrency']} concurrent, think time {c['think_time_s']:g} s: "
                         "arrival times are decided during the simulation (below: earliest "
                         "send times)")
        rate = "-" if self.mean_rate is None else f"{self.mean_rate:,.3f} req/s"
        cv = "-" if self.burstiness is None else f"{self.burstiness:.3f}"
        lines.append(f"requests   {self.requests:,} over {self.span_s:,.2f} s: mean rate {rate}, "
                     f"burstiness (CV of gaps) {cv}")
        lines.append("")
        lines.append("  tokens          mean        p50        p90        p99        min        max"
                     "          total")
        for name, s in (("prompt", self.prompt), ("output", self.output)):
            lines.append(f"  {name:<10}" + "".join(f"{_num(v):>11}" for v in
                                                  (s.mean, s.p50, s.p90, s.p99, s.min, s.max))
                         + f"{s.total:>15,}")
        if self.prefix is not None:
            p = self.prefix
            lines.append("")
            lines.append(f"prefix     {p['blocks']:,} prompt blocks of {p['block_tokens']} tokens "
                         f"({p['blocks_per_request']:.1f} per request), {p['unique_blocks']:,} "
                         f"distinct: sharing ratio {100 * p['sharing_ratio']:.1f}% (blocks seen "
                         "before)")
        if self.classes:
            lines.append("")
            lines.append("classes    " + ", ".join(
                f"{c['name']} {100 * c['fraction']:.1f}% ({c['requests']:,}, priority "
                f"{c['priority']})" for c in self.classes))
        if self.info is not None and self.info.notes:
            lines.append("")
            lines.extend(f"note: {n}" for n in self.info.notes)
        return "\n".join(lines) + "\n"


def describe_workload(workload: Union[Workload, WorkloadArrays], seed: int = 42) -> WorkloadSummary:
    """Summarise a Workload (generated, or its trace read, with `seed`) or ready-made arrays."""
    closed = None
    if isinstance(workload, Workload):
        arrays = generate(workload, seed)
        label = workload_label(workload)
        if workload.concurrency is not None:
            closed = {"concurrency": workload.concurrency, "think_time_s": workload.think_time_s}
        names = [c.name for c in workload.classes]
        priorities = [c.priority for c in workload.classes]
    else:
        arrays = workload
        label = arrays.info.source if arrays.info is not None else f"{len(arrays):,} requests"
        names, priorities = [], []
    return summarise_arrays(arrays, label, closed, names, priorities)


def summarise_arrays(arrays: WorkloadArrays, label: str, closed: Optional[dict[str, Any]] = None,
                     names: Optional[list[str]] = None,
                     priorities: Optional[list[int]] = None) -> WorkloadSummary:
    t = arrays.arrival_s
    n = len(arrays)
    span = float(t[-1] - t[0]) if n else 0.0
    gaps = np.diff(t)
    rate = (n - 1) / span if n > 1 and span > 0 else None
    cv = float(gaps.std() / gaps.mean()) if n > 2 and gaps.mean() > 0 else None
    prefix = None
    if arrays.prefix_ids is not None and arrays.prefix_offsets is not None:
        blocks = int(arrays.prefix_ids.shape[0])
        unique = int(np.unique(arrays.prefix_ids).shape[0])
        prefix = {"block_tokens": arrays.prefix_block_tokens, "blocks": blocks,
                  "unique_blocks": unique, "blocks_per_request": blocks / n if n else 0.0,
                  "sharing_ratio": (blocks - unique) / blocks if blocks else 0.0}
    classes = []
    if arrays.class_id is not None:
        counts = np.bincount(arrays.class_id, minlength=len(names or []))
        for k, count in enumerate(counts):
            name = names[k] if names and k < len(names) else f"class {k}"
            prio = priorities[k] if priorities and k < len(priorities) else (
                int(arrays.priority[arrays.class_id == k][0])
                if arrays.priority is not None and count else 0)
            classes.append({"name": name, "requests": int(count),
                            "fraction": float(count) / n if n else 0.0, "priority": prio})
    return WorkloadSummary(label=label, requests=n, span_s=span, mean_rate=rate, burstiness=cv,
                           prompt=LengthSummary.of(arrays.prompt_tokens),
                           output=LengthSummary.of(arrays.output_tokens), closed_loop=closed,
                           prefix=prefix, classes=classes, info=arrays.info)


def _num(x: float) -> str:
    if isinstance(x, float) and not math.isfinite(x):
        return "-"
    return f"{x:,.1f}" if isinstance(x, float) and not float(x).is_integer() else f"{x:,.0f}"
