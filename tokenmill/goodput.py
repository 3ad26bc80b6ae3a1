"""Goodput, the steady-state window, time-weighted load and where TTFT went.

* Window: the requests that *arrive* in [warmup_s, last arrival - cooldown_s] are measured; the
  others warm the cluster up or keep it loaded while the measured ones finish. Without
  --warmup/--cooldown every request is measured and rates are over the whole run.
* Goodput (DistServe; vLLM `bench serve --goodput`): measured requests that finished and met
  every objective given (TTFT, TPOT, E2E; a one-token output meets TPOT, as vLLM counts it),
  per second of the window (of the run, without one); attainment is their share of the measured
  requests that arrived (rejected and unfinished ones count against it). Each request class is
  judged by its own SLOs where it has any, else by the scenario's.
* Load: queue length, running batch and KV use averaged over time (time series), preemptions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import numpy as np

from . import _core
from .errors import ConfigError
from .metrics import LatencyStats
from .results_config import MetricsConfig
from .timeseries import TimeSeries


@dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float
    mask: np.ndarray          # requests measured (arrived inside the window)
    explicit: bool            # warmup or cooldown given

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


def measurement_window(records: Any, cfg: MetricsConfig, duration_s: float) -> Window:
    arrived = records.status != _core.STATUS_PENDING
    if not cfg.has_window:
        return Window(0.0, duration_s, arrived, False)
    last = float(records.arrival_s[arrived].max()) if arrived.any() else 0.0
    start, end = cfg.warmup_s, last - cfg.cooldown_s
    if not end > start:
        raise ConfigError(
            f"metrics.warmup_s = {cfg.warmup_s:g} and metrics.cooldown_s = {cfg.cooldown_s:g} "
            f"leave no window: arrivals span [0, {last:g}] s; choose warmup + cooldown < {last:g}")
    mask = arrived & (records.arrival_s >= start) & (records.arrival_s <= end)
    return Window(start, end, mask, True)


def slo_met(records: Any, ttft_ms: Optional[float], tpot_ms: Optional[float],
            e2e_ms: Optional[float]) -> np.ndarray:
    """Finished requests that met every objective given."""
    ok = records.status == _core.STATUS_FINISHED
    with np.errstate(invalid="ignore"):
        if ttft_ms is not None:
            ok &= records.ttft_s * 1e3 <= ttft_ms
        if e2e_ms is not None:
            ok &= records.e2e_s * 1e3 <= e2e_ms
        if tpot_ms is not None:
            ok &= (records.output_tokens <= 1) | (records.tpot_s * 1e3 <= tpot_ms)
    return ok


@dataclass(frozen=True)
class ClassGoodput:
    name: str
    slo_ttft_ms: Optional[float]
    slo_tpot_ms: Optional[float]
    slo_e2e_ms: Optional[float]
    measured: int
    met: int
    attainment: float
    goodput_rps: float


@dataclass(frozen=True)
class GoodputStats:
    slo_ttft_ms: Optional[float]
    slo_tpot_ms: Optional[float]
    slo_e2e_ms: Optional[float]
    measured: int             # requests arrived in the window
    met: int                  # of them, finished within every objective
    attainment: float         # met / measured
    goodput_rps: float        # met per second of the window
    classes: tuple[ClassGoodput, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["classes"] = [asdict(c) for c in self.classes]
        return out


def goodput_stats(records: Any, cfg: MetricsConfig, window: Window,
                  classes: Sequence[Any]) -> Optional[GoodputStats]:
    class_slos = [c for c in classes if any(
        getattr(c, f) is not None for f in ("slo_ttft_ms", "slo_tpot_ms", "slo_e2e_ms"))]
    if not cfg.has_slo and not class_slos:
        return None
    length = window.length_s
    per_class = []
    met_all = np.zeros(len(records), dtype=bool)
    judged = np.zeros(len(records), dtype=bool)
    if records.class_id is not None:
        for k, c in enumerate(classes):
            own = any(getattr(c, f) is not None for f in ("slo_ttft_ms", "slo_tpot_ms", "slo_e2e_ms"))
            slo = ((c.slo_ttft_ms, c.slo_tpot_ms, c.slo_e2e_ms) if own
                   else (cfg.slo_ttft_ms, cfg.slo_tpot_ms, cfg.slo_e2e_ms))
            mine = window.mask & (records.class_id == k)
            if all(x is None for x in slo):
                continue
            met = mine & slo_met(records, *slo)
            met_all |= met
            judged |= mine
            n, m = int(mine.sum()), int(met.sum())
            per_class.append(ClassGoodput(c.name, slo[0], slo[1], slo[2], measured=n, met=m,
                                          attainment=m / n if n else float("nan"),
                                          goodput_rps=m / length if length > 0 else float("nan")))
    if cfg.has_slo:  # requests of classes without their own SLOs, or without classes
        rest = window.mask & ~judged
        met_all |= rest & slo_met(records, cfg.slo_ttft_ms, cfg.slo_tpot_ms, cfg.slo_e2e_ms)
        judged |= rest
    n, m = int(judged.sum()), int(met_all.sum())
    return GoodputStats(cfg.slo_ttft_ms, cfg.slo_tpot_ms, cfg.slo_e2e_ms, measured=n, met=m,
                        attainment=m / n if n else float("nan"),
                        goodput_rps=m / length if length > 0 else float("nan"),
                        classes=tuple(per_class))


@dataclass(frozen=True)
class SteadyStats:
    """Figures over the measurement window (only with --warmup or --cooldown)."""

    start_s: float
    end_s: float
    measured: int
    finished: int
    ttft_ms: LatencyStats
    tpot_ms: LatencyStats
    e2e_ms: LatencyStats
    request_throughput: float          # measured requests finished, per second of the window
    output_token_throughput: float
    mean_queue: Optional[float]        # time averages over the window (with a time series)
    mean_running: Optional[float]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("ttft_ms", "tpot_ms", "e2e_ms"):
            out[k] = getattr(self, k).to_dict()
        return out


def steady_stats(records: Any, window: Window, ts: Optional[TimeSeries]) -> Optional[SteadyStats]:
    if not window.explicit:
        return None
    done = window.mask & records.finished
    multi = done & (records.output_tokens > 1)
    length = window.length_s
    return SteadyStats(
        start_s=window.start_s, end_s=window.end_s, measured=int(window.mask.sum()),
        finished=int(done.sum()),
        ttft_ms=LatencyStats.from_seconds(records.ttft_s[done]),
        tpot_ms=LatencyStats.from_seconds(records.tpot_s[multi]),
        e2e_ms=LatencyStats.from_seconds(records.e2e_s[done]),
        request_throughput=float(done.sum()) / length,
        output_token_throughput=float(records.output_tokens[done].sum(dtype=np.int64)) / length,
        mean_queue=ts.window_mean("queue", window.start_s, window.end_s) if ts else None,
        mean_running=ts.window_mean("running", window.start_s, window.end_s) if ts else None)


@dataclass(frozen=True)
class LoadStats:
    """Time-weighted load over the whole run, summed over replicas (None without a series)."""

    mean_queue: Optional[float]
    max_queue: Optional[float]          # largest bucket average
    mean_running: Optional[float]
    mean_kv_utilization: Optional[float]  # of all replicas' KV capacity
    preemptions: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_stats(ts: Optional[TimeSeries], duration_s: float, preemptions: int) -> LoadStats:
    if ts is None or duration_s <= 0:
        return LoadStats(None, None, None, None, preemptions)
    return LoadStats(mean_queue=ts.window_mean("queue", 0.0, duration_s),
                     max_queue=float(ts.queue.sum(axis=1).max()),
                     mean_running=ts.window_mean("running", 0.0, duration_s),
                     mean_kv_utilization=ts.window_mean("kv_utilization", 0.0, duration_s)
                     / ts.replicas,
                     preemptions=preemptions)


def ttft_breakdown_ms(records: Any, mask: np.ndarray) -> dict[str, float]:
    """Mean milliseconds of each TTFT part over the finished measured requests."""
    done = mask & records.finished
    parts = {"queue": records.ttft_queue_s, "prefill": records.ttft_prefill_s,
             "recompute": records.ttft_recompute_s, "kv_transfer": records.ttft_kv_transfer_s,
             "other": records.ttft_other_s}
    if not done.any():
        return {k: float("nan") for k in parts}
    means = {k: float(v[done].mean() * 1e3) for k, v in parts.items()}
    if abs(means["other"]) < 1e-9:  # rounding of a sum that is exactly zero in real numbers
        means["other"] = 0.0
    return means
