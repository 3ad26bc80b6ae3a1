"""The planning figures of a run, from the kernel's raw output: time series, energy, cost,
goodput, the steady-state window, time-weighted load and the TTFT breakdown (each computed in
its own module; this one only puts them together for engine.summarise)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .goodput import goodput_stats, load_stats, measurement_window, steady_stats, ttft_breakdown_ms
from .power import energy_stats, replica_power_w, stage_busy_scale
from .pricing import cost_stats
from .timeseries import FIELDS, TimeSeries, replica_integrals


def outcome_figures(scenario: Any, build: Any, records: Any, raw: dict, duration: float,
                    dt: float) -> dict[str, Any]:
    integrals, lengths = replica_integrals(raw, dt)
    power_w = replica_power_w(integrals, lengths, raw, build, scenario.power)
    ts = _timeseries(integrals, lengths, power_w, raw, build, dt) if raw.get("timeseries") is not None else None
    finished = records.finished
    produced = int(records.generated_tokens.sum(dtype=np.int64))
    n_finished = int(finished.sum())
    window = measurement_window(records, scenario.metrics, duration)
    return {
        "timeseries": ts,
        "energy": energy_stats(power_w, lengths, raw, build, scenario.power, produced, n_finished,
                               duration),
        "spend": cost_stats(build, scenario.pricing, duration, produced, n_finished),
        "goodput": goodput_stats(records, scenario.metrics, window, scenario.workload.classes),
        "steady": steady_stats(records, window, ts),
        "load": load_stats(ts, duration, int(raw["replicas"]["preemptions"].sum())),
        "ttft_breakdown_ms": ttft_breakdown_ms(records, window.mask),
    }


def _timeseries(integrals: np.ndarray, lengths: np.ndarray, power_w: np.ndarray, raw: dict,
                build: Any, dt: float) -> Optional[TimeSeries]:
    pipes = raw["pipes"]
    capacity = np.bincount(raw["replicas"]["pipe"], weights=raw["replicas"]["capacity_blocks"],
                           minlength=len(pipes["pool"]))
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = np.where(lengths[:, None, None] > 0, integrals / lengths[:, None, None], 0.0)
    stages = pipes["stages"][None, :]
    return TimeSeries(
        dt_s=dt, start_s=np.arange(len(lengths)) * dt, length_s=lengths,
        queue=avg[:, :, FIELDS.index("queue")], running=avg[:, :, FIELDS.index("running")],
        kv_utilization=avg[:, :, FIELDS.index("kv_blocks")] / capacity[None, :],
        busy=np.minimum(1.0, avg[:, :, FIELDS.index("busy")] * stage_busy_scale(raw)[None, :] / stages),
        power_w=power_w)
