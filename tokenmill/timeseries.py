"""Per-replica time series of a run: queue, running batch, KV use, busy share, power.

The kernel integrates each engine's state over buckets of `dt` seconds (field-seconds; the last
bucket may be partial). Here the integrals become time averages per bucket and per replica (a
pipelined replica's stage-engines are added up), and the power model turns the busy, compute
and memory integrals into watts (tokenmill.power).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _core

FIELDS = _core.TIMESERIES_FIELDS
TARGET_BUCKETS = 500  # automatic resolution: about this many buckets over the arrivals
AUTO_MAX_BUCKETS = 2048  # ... and if the run lasts much longer (a long drain), the kernel merges
                         # bucket pairs, doubling their length, to keep at most this many


def auto_resolution(arrival_s: np.ndarray) -> float:
    """A round bucket length (1, 2 or 5 x 10^k s) giving about TARGET_BUCKETS buckets over the
    arrivals. A run that drains long after its last arrival would need more: the kernel then
    doubles the length as often as needed to keep at most AUTO_MAX_BUCKETS."""
    span = float(arrival_s[-1]) if len(arrival_s) else 0.0
    if not span > 0.0:
        return 1.0
    raw = span / TARGET_BUCKETS
    exp = math.floor(math.log10(raw))
    for mult in (1.0, 2.0, 5.0, 10.0):
        if mult * 10.0 ** exp >= raw:
            return mult * 10.0 ** exp
    return 10.0 ** (exp + 1)  # pragma: no cover


def bucket_lengths(buckets: int, dt: float, end_s: float) -> np.ndarray:
    """Seconds each bucket covers: dt, and what is left of the run in the last one."""
    starts = np.arange(buckets) * dt
    return np.clip(end_s - starts, 0.0, dt)


def per_replica(engine_integrals: np.ndarray, engine_pipe: np.ndarray, n_pipes: int) -> np.ndarray:
    """Add up the integrals of each replica's engines: [bucket, engine, f] -> [bucket, replica, f]."""
    onehot = np.zeros((engine_integrals.shape[1], n_pipes))
    onehot[np.arange(engine_integrals.shape[1]), engine_pipe] = 1.0
    return np.einsum("bef,ep->bpf", engine_integrals, onehot)


@dataclass(frozen=True)
class TimeSeries:
    """Time averages per bucket (rows) and replica (columns)."""

    dt_s: float
    start_s: np.ndarray        # bucket start times
    length_s: np.ndarray       # bucket lengths (the last may be partial)
    queue: np.ndarray          # waiting requests (incl. swapped out and KV not yet received)
    running: np.ndarray        # requests in the running batch
    kv_utilization: np.ndarray  # KV blocks in use / capacity
    busy: np.ndarray           # share of the time inside a step (mean over its stages)
    power_w: np.ndarray        # power of all the replica's chips, W

    @property
    def replicas(self) -> int:
        return int(self.queue.shape[1])

    def window_mean(self, name: str, start_s: float, end_s: float) -> float:
        """Time average of a field, summed over replicas, over [start_s, end_s]."""
        values = getattr(self, name).sum(axis=1)
        lo = np.clip(np.minimum(self.start_s + self.length_s, end_s) - np.maximum(self.start_s, start_s),
                     0.0, None)
        total = float(lo.sum())
        return float(np.dot(values, lo) / total) if total > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"dt_s": self.dt_s, "start_s": self.start_s.tolist(),
                **{k: getattr(self, k).tolist() for k in
                   ("queue", "running", "kv_utilization", "busy", "power_w")}}


def replica_integrals(raw: dict, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """[bucket, replica, field] integrals and bucket lengths; without a kernel time series, one
    bucket spanning the run, made from the per-engine totals (queue and running unknown: 0)."""
    engines, pipes = raw["replicas"], raw["pipes"]
    end = float(raw["end_time_s"])
    n_pipes = len(pipes["pool"])
    ts = raw.get("timeseries")
    if ts is None:
        totals = np.zeros((1, len(engines["pool"]), len(FIELDS)))
        totals[0, :, FIELDS.index("kv_blocks")] = engines["kv_block_seconds"]
        totals[0, :, FIELDS.index("busy")] = engines["busy_s"]
        totals[0, :, FIELDS.index("compute")] = engines["compute_s"]
        totals[0, :, FIELDS.index("memory")] = engines["memory_s"]
        return per_replica(totals, engines["pipe"], n_pipes), np.array([end])
    return per_replica(ts, engines["pipe"], n_pipes), bucket_lengths(ts.shape[0], dt, end)
