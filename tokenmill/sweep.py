"""Run many scenarios: a grid over Scenario fields, in parallel processes, in a fixed order.

    import tokenmill as tm
    s = tm.sweep(tm.Scenario(), {"workload.arrival_rate": [1, 2, 4, 8], "plan.tp": [1, 2]})
    s.rows()        # one flat dict per point, in grid order (the last field varies fastest)

Each point runs in a worker process (concurrent.futures; `jobs` of them, default the CPU
count); results come back in grid order whatever order they finish in, so the output is the
same for any `jobs`. A point that cannot run (say, a model that does not fit) is recorded with
its error instead of stopping the sweep. Workers return summaries, TTFT and TPOT quantiles (for
CDFs) and the cluster-wide time series, never per-request arrays, so a sweep of million-request
points stays small.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
from pydantic import ValidationError

from ._validation import describe_validation_error
from ._version import __version__
from .errors import ConfigError, TokenmillError
from .scenario import Scenario

QUANTILES = np.linspace(0.0, 1.0, 201)  # CDF points kept per metric


@dataclass(frozen=True)
class SweepPoint:
    parameters: dict[str, Any]        # the swept values of this point (display names)
    scenario: dict[str, Any]          # the resolved scenario (JSON-ready)
    summary: Optional[dict[str, Any]]  # Result.to_dict() less the scenario; None on error
    flat: dict[str, Any]              # Result.flat_summary() (empty on error)
    cdf: dict[str, list[float]] = field(default_factory=dict)   # metric -> quantiles (ms)
    series: dict[str, list[float]] = field(default_factory=dict)  # cluster-wide time series
    error: Optional[str] = None


@dataclass(frozen=True)
class SweepResult:
    parameters: tuple[str, ...]       # swept names, in grid order
    points: tuple[SweepPoint, ...]
    wall_time_s: float

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per point: its parameters, then every summary figure."""
        return [{**p.parameters, "error": p.error or "", **p.flat} for p in self.points]

    def to_dict(self) -> dict[str, Any]:
        return {"tokenmill_version": __version__, "parameters": list(self.parameters),
                "wall_time_s": self.wall_time_s,
                "points": [{"parameters": p.parameters, "error": p.error, "scenario": p.scenario,
                            "summary": p.summary} for p in self.points]}


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """data[a][b][c] = value for path 'a.b.c', making the tables on the way."""
    keys = path.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def grid_points(base: Scenario, grid: Mapping[str, Sequence[Any]]) -> list[tuple[dict[str, Any], Scenario]]:
    """Every combination of the grid's values applied to the base scenario (validated)."""
    if not grid:
        raise ConfigError("sweep: give at least one field with values to sweep")
    for path, values in grid.items():
        if len(values) == 0:
            raise ConfigError(f"sweep: {path} has no values")
    base_data = base.model_dump(exclude_unset=True)
    points = []
    for combo in itertools.product(*grid.values()):
        data = _deep_copy(base_data)
        params = dict(zip(grid, combo))
        for path, value in params.items():
            set_path(data, path, value)
        try:
            points.append((params, Scenario.model_validate(data)))
        except ValidationError as err:
            raise ConfigError(describe_validation_error(err, f"sweep point {params}")) from None
    return points


def sweep(base: Scenario, grid: Mapping[str, Sequence[Any]], jobs: Optional[int] = None,
          progress: Optional[Callable[[int, int], None]] = None) -> SweepResult:
    """Simulate every point of the grid (keys: dotted Scenario paths, e.g. 'plan.tp')."""
    return run_points(grid_points(base, grid), jobs=jobs, progress=progress)


def run_points(points: Sequence[tuple[dict[str, Any], Scenario]], jobs: Optional[int] = None,
               progress: Optional[Callable[[int, int], None]] = None) -> SweepResult:
    started = time.perf_counter()
    names: list[str] = []
    for params, _ in points:
        names.extend(k for k in params if k not in names)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(points)))
    done: list[Optional[SweepPoint]] = [None] * len(points)
    if jobs == 1:
        for k, (params, sc) in enumerate(points):
            done[k] = run_point(params, sc)
            if progress:
                progress(k + 1, len(points))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_point, params, sc): k for k, (params, sc) in enumerate(points)}
            finished = 0
            for future in _as_completed(futures):
                done[futures[future]] = future.result()
                finished += 1
                if progress:
                    progress(finished, len(points))
    return SweepResult(parameters=tuple(names), points=tuple(p for p in done if p is not None),
                       wall_time_s=time.perf_counter() - started)


def _as_completed(futures: dict) -> Any:
    from concurrent.futures import as_completed

    return as_completed(futures)


def run_point(params: dict[str, Any], scenario: Scenario) -> SweepPoint:
    """One point, in a worker: the summary and small curves, or the error."""
    from .engine import simulate

    resolved = scenario.model_dump(mode="json")
    try:
        r = simulate(scenario)
    except TokenmillError as err:
        return SweepPoint(params, resolved, None, {}, error=str(err))
    summary = r.to_dict()
    summary.pop("scenario")
    rec = r.requests
    done = rec.finished
    cdf = {"ttft_ms": _quantiles(rec.ttft_s[done] * 1e3),
           "tpot_ms": _quantiles(rec.tpot_s[done & (rec.output_tokens > 1)] * 1e3)}
    series: dict[str, list[float]] = {}
    ts = r.timeseries
    if ts is not None:
        series = {"t_s": (ts.start_s + ts.length_s / 2).tolist(),
                  "queue": ts.queue.sum(axis=1).tolist(),
                  "running": ts.running.sum(axis=1).tolist(),
                  "kv_utilization": ts.kv_utilization.mean(axis=1).tolist(),
                  "power_kw": (ts.power_w.sum(axis=1) / 1e3).tolist()}
    return SweepPoint(params, resolved, summary, r.flat_summary(), cdf, series)


def _quantiles(values: np.ndarray) -> list[float]:
    return np.quantile(values, QUANTILES).tolist() if values.size else []


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def progress_line(stream: Any = None) -> Callable[[int, int], None]:
    """A one-line progress bar on stderr: [#####.....] 5/10 points, 12.3 s."""
    out = stream if stream is not None else sys.stderr
    started = time.perf_counter()

    def show(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total)
        out.write(f"\rsweep [{'#' * filled}{'.' * (width - filled)}] {done}/{total} points, "
                  f"{time.perf_counter() - started:,.1f} s")
        if done == total:
            out.write("\n")
        out.flush()
    return show
