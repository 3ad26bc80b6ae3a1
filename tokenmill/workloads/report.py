"""The workload's part of a Result: its account (WorkloadInfo), per-class figures and text."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

from .class_stats import class_stats
from .config import RequestClass
from .generate import workload_label
from .info import WorkloadInfo

if TYPE_CHECKING:
    from ..result import Result
    from ..scenario import Scenario
    from ..workload import WorkloadArrays


def with_workload_details(result: "Result", scenario: "Scenario",
                          arrays: "WorkloadArrays") -> "Result":
    """The result with the workload's account and, when it has classes, per-class figures."""
    info = arrays.info if arrays.info is not None else WorkloadInfo(
        source=f"{len(arrays):,} requests given as WorkloadArrays")
    stats: tuple = ()
    rec = result.requests
    if rec.class_id is not None and len(rec):
        classes = scenario.workload.classes
        n_ids = int(rec.class_id.max()) + 1
        if len(classes) < n_ids:  # arrays made elsewhere: name the classes by index
            classes = tuple(RequestClass(name=f"class {k}") for k in range(n_ids))
        stats = class_stats(classes, rec.class_id, rec.status, rec.arrival_s, rec.first_token_s,
                            rec.completion_s, rec.output_tokens)
    return dataclasses.replace(result, workload_info=info, class_stats=stats)


def workload_line(result: "Result") -> str:
    """The report's one-line description of the workload, and the seed."""
    info = result.workload_info
    w = result.scenario.workload
    source = workload_label(w)
    if info is not None and info.source.endswith("given as WorkloadArrays"):
        source = info.source
    elif info is not None and w.trace is not None:  # the reader's line names the format found
        source = info.source + source[source.index(w.trace.path) + len(w.trace.path):]
    return f"workload   {source}; seed {result.scenario.seed}"


def class_lines(result: "Result") -> list[str]:
    """A small table of per-class figures (empty without classes)."""
    if not result.class_stats:
        return []
    lines = ["", "  class           prio   arrived  finished  TTFT p50   TTFT p99   TPOT p50    "
             "E2E p99   SLO met"]
    for c in result.class_stats:
        slo = "-" if c.slo_attainment is None or math.isnan(c.slo_attainment) \
            else f"{100 * c.slo_attainment:.1f}%"
        cells = (c.ttft_ms.p50, c.ttft_ms.p99, c.tpot_ms.p50, c.e2e_ms.p99)
        lines.append(f"  {c.name[:14]:<14}{c.priority:>6}{c.arrived:>10,}{c.finished:>10,}"
                     + "".join(f"{_ms(v):>11}" for v in cells) + f"{slo:>10}")
    return lines


def workload_notes(result: "Result") -> list[str]:
    """One note per trace row or length draw left out or changed (nothing silently)."""
    info = result.workload_info
    if info is None:
        return []
    return [n for n in info.notes if not n.startswith("read ")]


def _ms(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:,.2f}"
