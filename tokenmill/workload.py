"""Turn a Workload description into the columns the kernel reads: arrival times and lengths.

Draws come from numpy's Generator seeded by the scenario's seed, one independent stream per
column (arrivals, prompt lengths, output lengths), so changing the output distribution does
not move the arrival times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .scenario import LengthDistribution, Workload


@dataclass(frozen=True)
class WorkloadArrays:
    """One row per request, sorted by arrival time."""

    arrival_s: np.ndarray      # float64
    prompt_tokens: np.ndarray  # int32
    output_tokens: np.ndarray  # int32

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
