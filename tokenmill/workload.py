"""Turn a Workload description into the columns the kernel reads: arrival times and lengths.

Draws come from numpy's Generator seeded by the scenario's seed, one independent stream per
column (arrivals, prompt lengths, output lengths), so changing the output distribution does
not move the arrival times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .scenario import LengthDistribution, Workload


@dataclass(frozen=True)
class WorkloadArrays:
    """One row per request, sorted by arrival time: the columns the kernel reads.

    Optional columns (None when the workload does not have them):
    * class_id: int32 index of the request's class in the workload's class table;
    * priority: int32, lower is served first (vLLM's convention);
    * prefix_ids / prefix_offsets: content ids of the request's consecutive prompt blocks of
      `prefix_block_tokens` tokens each (equal ids = shareable KV, e.g. Mooncake's hash_ids);
      request i's ids are prefix_ids[prefix_offsets[i]:prefix_offsets[i + 1]].
    """

    arrival_s: np.ndarray      # float64
    prompt_tokens: np.ndarray  # int32
    output_tokens: np.ndarray  # int32
    class_id: Optional[np.ndarray] = None
    priority: Optional[np.ndarray] = None
    prefix_ids: Optional[np.ndarray] = None      # int64
    prefix_offsets: Optional[np.ndarray] = None  # int64, length n + 1
    prefix_block_tokens: int = 0

    def __post_init__(self) -> None:
        n = self.arrival_s.shape[0]
        for name in ("prompt_tokens", "output_tokens", "class_id", "priority"):
            col = getattr(self, name)
            if col is not None and col.shape != (n,):
                raise ValueError(f"WorkloadArrays.{name} has shape {col.shape}; expected ({n},)")
        if (self.prefix_ids is None) != (self.prefix_offsets is None):
            raise ValueError("WorkloadArrays: give both prefix_ids and prefix_offsets, or neither")
        if self.prefix_offsets is not None:
            if self.prefix_offsets.shape != (n + 1,):
                raise ValueError(f"WorkloadArrays.prefix_offsets has shape "
                                 f"{self.prefix_offsets.shape}; expected ({n + 1},)")
            if self.prefix_block_tokens < 1:
                raise ValueError("WorkloadArrays.prefix_block_tokens must be >= 1 with prefix ids")

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])


def _streams(seed: int) -> tuple[np.random.Generator, ...]:
    children = np.random.SeedSequence(seed).spawn(3)
    return tuple(np.random.Generator(np.random.PCG64(c)) for c in children)


def poisson_arrivals(rng: np.random.Generator, rate: float, duration_s: float | None,
                     num_requests: int | None) -> np.ndarray:
    """Arrival times of a Poisson process, stopped by time, by count, or by whichever is first."""
    if num_requests is not None and duration_s is None:
        return np.cumsum(rng.exponential(1.0 / rate, size=num_requests))
    assert duration_s is not None
    expected = rate * duration_s
    # Draw comfortably more gaps than needed (mean + 10 sigma), topping up in the rare case
    # they fall short, so the result does not depend on the chunking.
    chunk = int(expected + 10.0 * math.sqrt(expected) + 100)
    if num_requests is not None:
        chunk = min(chunk, num_requests)
    times = np.cumsum(rng.exponential(1.0 / rate, size=chunk))
    while times[-1] < duration_s and (num_requests is None or times.shape[0] < num_requests):
        more = np.cumsum(rng.exponential(1.0 / rate, size=chunk)) + times[-1]
        times = np.concatenate([times, more])
    times = times[: np.searchsorted(times, duration_s, side="left")]
    if num_requests is not None:
        times = times[:num_requests]
    return times


def draw_lengths(rng: np.random.Generator, dist: LengthDistribution, n: int) -> np.ndarray:
    """Log-normal token counts with the given mean, rounded, at least one token."""
    mu = math.log(dist.mean) - dist.sigma**2 / 2.0
    x = rng.lognormal(mu, dist.sigma, size=n) if dist.sigma > 0 else np.full(n, dist.mean)
    lengths = np.rint(x)
    lengths = np.maximum(lengths, 1.0)
    if lengths.size and lengths.max() > 2**30:
        raise ValueError(f"a drawn length ({lengths.max():.0f} tokens) exceeds 2**30; "
                         "lower the mean or sigma")
    return lengths.astype(np.int32)


def generate(workload: Workload, seed: int) -> WorkloadArrays:
    """The requests of `workload` for this seed."""
    arrivals_rng, prompt_rng, output_rng = _streams(seed)
    arrival = poisson_arrivals(arrivals_rng, workload.arrival_rate, workload.duration_s,
                               workload.num_requests)
    n = arrival.shape[0]
    return WorkloadArrays(
        arrival_s=np.ascontiguousarray(arrival, dtype=np.float64),
        prompt_tokens=draw_lengths(prompt_rng, workload.prompt, n),
        output_tokens=draw_lengths(output_rng, workload.output, n),
    )
