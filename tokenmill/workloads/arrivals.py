"""Open-loop arrival times: Poisson, constant or gamma gaps, at a constant or time-varying rate.

A time-varying rate is handled by a change of time. The process is drawn at unit rate in
"operational time" u, and each point is mapped back through the inverse of the cumulative
rate, t = L^-1(u) with L(t) = integral of rate from 0 to t. For Poisson arrivals this gives
exactly the non-homogeneous Poisson process (Cinlar's inversion); for constant and gamma gaps
it keeps the gap shape relative to the local rate. Inversion rather than thinning keeps one
draw per arrival, so the stream of random numbers, and hence every arrival, depends only on
the seed and the process, not on the rate profile's peak.

Every process starts at t = 0 and its first arrival comes one gap later.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from .config import RateProfile, Workload

GapSampler = Callable[[int], np.ndarray]


def arrival_times(rng: np.random.Generator, workload: Workload) -> np.ndarray:
    """Arrival (or, in closed loop, earliest send) times of a synthetic workload, sorted."""
    rate = workload.arrival_rate
    assert rate is not None
    if math.isinf(rate):  # offline: everything at once
        assert workload.num_requests is not None
        return np.zeros(workload.num_requests)
    profile = workload.rate_profile
    horizon = workload.duration_s
    count = workload.num_requests
    if profile.kind == "constant":
        return _renewal(rng, workload, rate, horizon, count)
    cumulative = _cumulative_rate(profile, rate)
    u_horizon = cumulative.at(horizon) if horizon is not None else None
    u = _renewal(rng, workload, 1.0, u_horizon, count)
    times = cumulative.inverse(u)
    if horizon is not None:  # rounding in the inverse must not let a point past the horizon
        times = times[: np.searchsorted(times, horizon, side="left")]
    return times


def _gap_sampler(rng: np.random.Generator, workload: Workload, rate: float) -> Optional[GapSampler]:
    """Draws of n gaps with mean 1/rate; None for constant gaps (computed exactly instead)."""
    process = workload.arrival_process
    if process == "poisson":
        return lambda n: rng.exponential(1.0 / rate, size=n)
    if process == "gamma":
        cv = workload.burstiness
        assert cv is not None
        shape = 1.0 / (cv * cv)
        return lambda n: rng.gamma(shape, 1.0 / (rate * shape), size=n)
    return None


def _renewal(rng: np.random.Generator, workload: Workload, rate: float, horizon: Optional[float],
             count: Optional[int]) -> np.ndarray:
    """Points of a renewal process at `rate`, before `horizon` and at most `count` of them."""
    sampler = _gap_sampler(rng, workload, rate)
    if sampler is None:  # constant gaps: k / rate exactly, with no accumulated rounding
        n = int(math.ceil(horizon * rate)) + 1 if horizon is not None else count
        if count is not None:
            n = min(n, count)  # type: ignore[type-var]
        assert n is not None
        times = np.arange(1, n + 1, dtype=np.float64) / rate
    elif horizon is None:
        assert count is not None
        times = np.cumsum(sampler(count))
    else:
        expected = rate * horizon
        # Draw comfortably more gaps than needed (mean + 10 sigma), topping up in the rare case
        # they fall short. Generator draws are sequential, so chunking does not change values.
        chunk = int(expected + 10.0 * math.sqrt(expected) + 100)
        if count is not None:
            chunk = min(chunk, count)
        times = np.cumsum(sampler(chunk))
        while times[-1] < horizon and (count is None or times.shape[0] < count):
            times = np.concatenate([times, np.cumsum(sampler(chunk)) + times[-1]])
    if horizon is not None:
        times = times[: np.searchsorted(times, horizon, side="left")]
    if count is not None:
        times = times[:count]
    return times


class _Cumulative:
    """L(t), the expected number of arrivals by time t, and its inverse."""

    def at(self, t: float) -> float:
        raise NotImplementedError

    def inverse(self, u: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _cumulative_rate(profile: RateProfile, rate: float) -> _Cumulative:
    if profile.kind == "piecewise":
        assert profile.steps is not None
        return _Piecewise(profile.steps, rate)
    assert profile.amplitude is not None and profile.period_s is not None \
        and profile.peak_s is not None
    return _Diurnal(rate, profile.amplitude, profile.period_s, profile.peak_s)


class _Piecewise(_Cumulative):
    """Rate factor_j x rate on [start_j, start_j+1); L is piecewise linear and inverted exactly."""

    def __init__(self, steps: tuple[tuple[float, float], ...], rate: float) -> None:
        self.starts = np.array([s for s, _ in steps], dtype=np.float64)
        self.rates = np.array([f for _, f in steps], dtype=np.float64) * rate
        widths = np.diff(self.starts)
        self.cum = np.concatenate([[0.0], np.cumsum(self.rates[:-1] * widths)])

    def at(self, t: float) -> float:
        j = int(np.searchsorted(self.starts, t, side="right")) - 1
        return float(self.cum[j] + self.rates[j] * (t - self.starts[j]))

    def inverse(self, u: np.ndarray) -> np.ndarray:
        # The segment holding u: the last one whose cumulative start is <= u. A zero-rate
        # segment has the same cumulative start as the next, so side="right" skips it.
        j = np.searchsorted(self.cum, u, side="right") - 1
        r = self.rates[j]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = self.starts[j] + (u - self.cum[j]) / r
        return np.where(r > 0, t, np.inf)  # past the end of a schedule ending at rate 0


class _Diurnal(_Cumulative):
    """rate(t) = R (1 + A cos(w (t - p))), L(t) = R (t + A/w (sin(w (t - p)) + sin(w p)))."""

    def __init__(self, rate: float, amplitude: float, period_s: float, peak_s: float) -> None:
        self.r, self.a, self.p = rate, amplitude, peak_s
        self.w = 2.0 * math.pi / period_s

    def at(self, t):  # type: ignore[no-untyped-def]
        w, p = self.w, self.p
        return self.r * (t + self.a / w * (np.sin(w * (t - p)) + math.sin(w * p)))

    def inverse(self, u: np.ndarray) -> np.ndarray:
        """Safeguarded Newton: L is increasing, and |L(t) - R t| <= 2 R A / w brackets t."""
        r, a, w, p = self.r, self.a, self.w, self.p
        slack = 2.0 * a / w
        lo = np.maximum(u / r - slack, 0.0)
        hi = u / r + slack
        t = np.clip(u / r, lo, hi)
        for _ in range(200):
            f = self.at(t) - u
            lo = np.where(f <= 0, t, lo)
            hi = np.where(f >= 0, t, hi)
            slope = r * (1.0 + a * np.cos(w * (t - p)))
            with np.errstate(divide="ignore", invalid="ignore"):
                step = f / slope
            nxt = t - step
            bad = ~((nxt > lo) & (nxt < hi))
            nxt = np.where(bad, 0.5 * (lo + hi), nxt)
            done = np.abs(nxt - t) <= 1e-12 * np.maximum(1.0, np.abs(t))
            t = nxt
            if done.all():
                break
        return t
