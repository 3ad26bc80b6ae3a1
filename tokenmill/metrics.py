"""Latency statistics with the definitions of vLLM's `bench serve` and GenAI-Perf.

TTFT = first token - arrival; TPOT = (E2E - TTFT) / (output tokens - 1) for requests with more
than one output token; ITL = every gap between consecutive tokens of a request; E2E =
completion - arrival. Percentiles use numpy's default (linear) interpolation, as vLLM does.

Inter-token gaps are counted by the kernel in a log-linear histogram (see src/itl_hist.pxd):
their mean and maximum are exact, their percentiles and standard deviation are read at bin
midpoints and lie within 0.05% of the exact values.
"""

from __future__ import annotations

import math
import struct
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from . import _core

PERCENTILES = (50.0, 90.0, 95.0, 99.0)

_MANTISSA_SHIFT = 52 - _core.ITL_BIN_MANTISSA_BITS
_FIRST_KEY = (1023 + _core.ITL_BIN_MIN_EXPONENT) << _core.ITL_BIN_MANTISSA_BITS


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one latency metric, in milliseconds."""

    count: int
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    std: float = float("nan")  # population standard deviation (numpy's default, as vLLM)

    @property
    def median(self) -> float:
        return self.p50

    @classmethod
    def empty(cls) -> "LatencyStats":
        nan = float("nan")
        return cls(0, nan, nan, nan, nan, nan, nan, nan)

    @classmethod
    def from_seconds(cls, values_s: np.ndarray) -> "LatencyStats":
        if values_s.size == 0:
            return cls.empty()
        ms = values_s * 1e3
        p50, p90, p95, p99 = np.percentile(ms, PERCENTILES)
        return cls(int(ms.size), float(ms.mean()), float(p50), float(p90), float(p95), float(p99),
                   float(ms.max()), float(ms.std()))

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def itl_bin_of(gap_s: float) -> int:
    """Histogram bin of a gap, computed in Python from the bits of the double (as the kernel)."""
    if not gap_s > 0.0:
        return 0
    (bits,) = struct.unpack("<Q", struct.pack("<d", gap_s))
    key = (bits >> _MANTISSA_SHIFT) - _FIRST_KEY
    return min(max(key, 0), _core.ITL_BINS - 1)


@lru_cache(maxsize=1)
def itl_bin_midpoints() -> np.ndarray:
    """Midpoint (seconds) of every histogram bin."""
    keys = np.arange(_core.ITL_BINS + 1, dtype=np.uint64) + np.uint64(_FIRST_KEY)
    edges = (keys << np.uint64(_MANTISSA_SHIFT)).view(np.float64)
    return (edges[:-1] + edges[1:]) / 2.0


def itl_stats(hist: np.ndarray, total_s: float, count: int, max_s: float) -> LatencyStats:
    """ITL summary from the kernel's histogram, exact sum and exact maximum."""
    if count == 0:
        return LatencyStats.empty()
    occupied = np.flatnonzero(hist)  # a run touches few of the 51,200 bins
    cum = np.cumsum(hist[occupied])
    mids = itl_bin_midpoints()[occupied]

    def sample(j: np.ndarray) -> np.ndarray:  # the j-th smallest gap (0-based), at its bin midpoint
        return mids[np.searchsorted(cum, j, side="right")]

    pos = (count - 1) * np.asarray(PERCENTILES) / 100.0
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, count - 1)
    values = sample(lo) + (pos - lo) * (sample(hi) - sample(lo))
    values = np.minimum(values, max_s)  # a midpoint may sit above the true maximum
    p50, p90, p95, p99 = (float(v) * 1e3 for v in values)
    mean_s = total_s / count
    # the spread from the bins' midpoints around the exact mean (each gap within 0.05%)
    var = float(np.dot(hist[occupied], (mids - mean_s) ** 2)) / count
    return LatencyStats(int(count), mean_s * 1e3, p50, p90, p95, p99, max_s * 1e3,
                        math.sqrt(var) * 1e3)
