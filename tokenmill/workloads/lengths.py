"""Prompt and output lengths: draws from a LengthDistribution, with every adjustment counted.

Lengths are whole tokens: continuous draws are rounded to the nearest integer. Nothing is
moved silently: a capped draw (lognormal, empirical) is counted as raised to `min` or lowered
to `max`, and a truncated-normal draw outside [min, max] is counted as redrawn. The counts go
into the workload's report and the simulation's result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .config import MAX_TOKENS, LengthDistribution
from .errors import WorkloadError


@dataclass(frozen=True)
class LengthStats:
    """What happened to the draws of one column."""

    draws: int = 0
    raised: int = 0    # below the lower cap, raised to it
    lowered: int = 0   # above the upper cap, lowered to it
    redrawn: int = 0   # truncated normal: outside [min, max], drawn again

    def __add__(self, other: "LengthStats") -> "LengthStats":
        return LengthStats(self.draws + other.draws, self.raised + other.raised,
                           self.lowered + other.lowered, self.redrawn + other.redrawn)

    def notes(self, role: str, dist: Optional[LengthDistribution]) -> list[str]:
        out = []
        low = dist.low if dist is not None else 1
        high = dist.max if dist is not None else None
        if self.raised:
            out.append(f"{role} lengths: {self.raised:,} of {self.draws:,} draws "
                       f"({100 * self.raised / self.draws:.2g}%) were below the cap min = {low} "
                       "and were raised to it")
        if self.lowered:
            out.append(f"{role} lengths: {self.lowered:,} of {self.draws:,} draws "
                       f"({100 * self.lowered / self.draws:.2g}%) were above the cap max = "
                       f"{high} and were lowered to it")
        if self.redrawn:
            out.append(f"{role} lengths: {self.redrawn:,} normal draws fell outside "
                       f"[{low}, {high if high is not None else 'inf'}] and were drawn again "
                       "(truncated normal)")
        return out


def draw_lengths(rng: np.random.Generator, dist: LengthDistribution, n: int,
                 pool: Optional[np.ndarray] = None) -> tuple[np.ndarray, LengthStats]:
    """n token counts from `dist` (int32), and what was adjusted. `pool`: empirical values."""
    kind = dist.kind
    if kind == "fixed":
        assert dist.mean is not None
        return np.full(n, int(dist.mean), dtype=np.int32), LengthStats(draws=n)
    if kind == "uniform":
        assert dist.min is not None and dist.max is not None
        return rng.integers(dist.min, dist.max + 1, size=n).astype(np.int32), LengthStats(draws=n)
    if kind == "normal":
        return _truncated_normal(rng, dist, n)
    if kind == "lognormal":
        assert dist.mean is not None and dist.sigma is not None
        mu = math.log(dist.mean) - dist.sigma**2 / 2.0
        x = rng.lognormal(mu, dist.sigma, size=n) if dist.sigma > 0 else np.full(n, dist.mean)
        return _capped(np.rint(x), dist)
    assert kind == "empirical" and pool is not None and pool.size > 0
    x = pool[rng.integers(0, pool.shape[0], size=n)]
    return _capped(x.astype(np.float64), dist)


def _capped(x: np.ndarray, dist: LengthDistribution) -> tuple[np.ndarray, LengthStats]:
    low = dist.low
    high = dist.max
    raised = int(np.count_nonzero(x < low))
    lowered = 0
    if high is not None:
        lowered = int(np.count_nonzero(x > high))
    elif x.size and x.max() > MAX_TOKENS:
        raise WorkloadError(f"a drawn length ({x.max():.0f} tokens) exceeds {MAX_TOKENS}; lower "
                            f"the mean or sigma, or set a max cap ({dist.label()})")
    x = np.clip(x, low, high if high is not None else MAX_TOKENS)
    return x.astype(np.int32), LengthStats(draws=x.size, raised=raised, lowered=lowered)


def _truncated_normal(rng: np.random.Generator, dist: LengthDistribution,
                      n: int) -> tuple[np.ndarray, LengthStats]:
    """Rounded normal draws, each redrawn until it lies in [min, max]: the truncated normal."""
    assert dist.mean is not None and dist.sigma is not None
    low = dist.low
    high = dist.max if dist.max is not None else MAX_TOKENS
    x = np.rint(rng.normal(dist.mean, dist.sigma, size=n))
    redrawn = 0
    out = (x < low) | (x > high)
    k = int(np.count_nonzero(out))
    while k:  # config validation guarantees at least 0.1% acceptance, so this ends quickly
        redrawn += k
        idx = np.flatnonzero(out)
        x[idx] = np.rint(rng.normal(dist.mean, dist.sigma, size=k))
        out_idx = (x[idx] < low) | (x[idx] > high)
        out = np.zeros(n, dtype=bool)
        out[idx[out_idx]] = True
        k = int(np.count_nonzero(out_idx))
    return x.astype(np.int32), LengthStats(draws=n, redrawn=redrawn)
