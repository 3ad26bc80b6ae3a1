"""Energy of a run: every chip of every replica, busy or idle, from its work.

A chip draws idle_w plus (tdp_w - idle_w) times min(1, busy_weight * b + compute_weight * c +
memory_weight * m) (tokenmill.results_config.PowerModel; weights fitted by bench/fit_power.py
on measured GPU power, calibration MAPE 7.6%, validation 11.6%). b is the share of time the
chip is inside a step; c and m the shares it spends on the compute and memory sides of the step
roofline (the kernel's step_activity terms). A replica is pp stages of tp chips: its chips
share their stage's activity (tensor parallelism splits the work evenly), so every one of them
is counted, not one per group as the original tokenmill did. The cap at TDP is applied per
time-series bucket and replica, so the energy moves a little with the resolution when a
replica runs both compute- and memory-heavy steps in one bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .timeseries import FIELDS
from .results_config import PowerModel


@dataclass(frozen=True)
class PoolEnergy:
    role: str
    gpu: str
    chips: int
    energy_kj: float
    mean_power_kw: float
    mean_chip_power_w: float


@dataclass(frozen=True)
class EnergyStats:
    """Energy and power of the whole cluster over the run (PUE applied)."""

    energy_kj: float
    mean_power_kw: float
    joules_per_output_token: float      # every output token produced, finished requests or not
    joules_per_request: float           # per finished request
    pue: float
    pools: tuple[PoolEnergy, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"energy_kj": self.energy_kj, "mean_power_kw": self.mean_power_kw,
                "joules_per_output_token": self.joules_per_output_token,
                "joules_per_request": self.joules_per_request, "pue": self.pue,
                "pools": [dict(p.__dict__) for p in self.pools]}


def stage_busy_scale(raw: dict) -> np.ndarray:
    """Per replica: its stages' busy seconds over its engines' busy seconds. 1 without pipeline
    stages; with them an engine's step also spans waits for busy stages, which no chip spends."""
    engines, pipes = raw["replicas"], raw["pipes"]
    engine_busy = np.bincount(engines["pipe"], weights=engines["busy_s"], minlength=len(pipes["pool"]))
    stage_busy = pipes["mean_stage_busy_s"] * pipes["stages"]
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(engine_busy > 0, stage_busy / engine_busy, 0.0)
    return np.where(pipes["stages"] > 1, scale, 1.0)


def replica_power_w(integrals: np.ndarray, lengths: np.ndarray, raw: dict, build: Any,
                    model: PowerModel) -> np.ndarray:
    """Watts of every replica's chips per bucket: [bucket, replica]."""
    pipes = raw["pipes"]
    pool_of = pipes["pool"]
    tp = np.array([build.pools[k].tp for k in pool_of], dtype=np.float64)
    pp = pipes["stages"].astype(np.float64)
    idle = np.array([build.pools[k].hw.idle_w for k in pool_of])
    tdp = np.array([build.pools[k].hw.tdp_w for k in pool_of])
    busy = integrals[:, :, FIELDS.index("busy")] * stage_busy_scale(raw)
    work = (model.busy_weight * busy + model.compute_weight * integrals[:, :, FIELDS.index("compute")]
            + model.memory_weight * integrals[:, :, FIELDS.index("memory")])  # stage-seconds
    span = lengths[:, None] * pp[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        activity = np.where(span > 0, np.minimum(1.0, work / span), 0.0)
    return tp * pp * (idle + (tdp - idle) * activity)


def energy_stats(power_w: np.ndarray, lengths: np.ndarray, raw: dict, build: Any,
                 model: PowerModel, output_tokens: int, finished: int,
                 duration_s: float) -> EnergyStats:
    joules = power_w * lengths[:, None] * model.pue   # [bucket, replica]
    per_replica = joules.sum(axis=0)
    pool_of = raw["pipes"]["pool"]
    pools = []
    for k, pool in enumerate(build.pools):
        kj = float(per_replica[pool_of == k].sum()) / 1e3
        kw = kj / duration_s if duration_s > 0 else 0.0
        pools.append(PoolEnergy(role=pool.role, gpu=pool.hw.name, chips=pool.chips, energy_kj=kj,
                                mean_power_kw=kw, mean_chip_power_w=kw * 1e3 / pool.chips))
    total_j = float(per_replica.sum())
    return EnergyStats(
        energy_kj=total_j / 1e3,
        mean_power_kw=total_j / duration_s / 1e3 if duration_s > 0 else 0.0,
        joules_per_output_token=_per(total_j, output_tokens),
        joules_per_request=_per(total_j, finished),
        pue=model.pue, pools=tuple(pools))


def _per(total: float, count: int) -> float:
    return total / count if count > 0 else float("nan")


def chip_power_w(hw: Any, model: PowerModel, busy: float, compute: float, memory: float,
                 ) -> float:
    """Power of one chip at the given shares of time (for checks and what-ifs)."""
    a = min(1.0, model.busy_weight * busy + model.compute_weight * compute
            + model.memory_weight * memory)
    return hw.idle_w + (hw.tdp_w - hw.idle_w) * a


__all__ = ["EnergyStats", "PoolEnergy", "chip_power_w", "energy_stats", "replica_power_w"]
