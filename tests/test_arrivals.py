"""Arrival processes: rates, shapes, limits, time-varying rates, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tokenmill.workloads.arrivals import _Diurnal, _Piecewise, arrival_times
from tokenmill.workloads.config import Workload
from tokenmill.workloads.generate import generate, streams


def times(seed: int = 1, **kw) -> np.ndarray:
    return arrival_times(streams(seed)["arrivals"], Workload(**kw))


def cv(t: np.ndarray) -> float:
    g = np.diff(t)
    return float(g.std() / g.mean())


def test_poisson_rate_and_burstiness() -> None:
    t = times(arrival_rate=50.0, num_requests=200_000)
    assert (np.diff(t) > 0).all()
    assert (len(t) - 1) / (t[-1] - t[0]) == pytest.approx(50.0, rel=0.01)
    assert cv(t) == pytest.approx(1.0, abs=0.01)


def test_constant_rate_has_exact_gaps() -> None:
    t = times(arrival_rate=4.0, arrival_process="constant", duration_s=10.0)
    np.testing.assert_array_equal(t, np.arange(1, 40) / 4.0)  # 0.25 ... 9.75, and not 10.0
    assert len(times(arrival_rate=4.0, arrival_process="constant", num_requests=7)) == 7


@pytest.mark.parametrize("burstiness", [0.5, 2.0, 4.0])
def test_gamma_gaps_have_the_asked_coefficient_of_variation(burstiness: float) -> None:
    t = times(arrival_rate=20.0, burstiness=burstiness, num_requests=400_000)
    assert cv(t) == pytest.approx(burstiness, rel=0.03)
    assert (len(t) - 1) / (t[-1] - t[0]) == pytest.approx(20.0, rel=0.03)


def test_duration_and_count_limits() -> None:
    t = times(arrival_rate=100.0, duration_s=5.0)
    assert t[-1] < 5.0 and 430 < len(t) < 570
    both = times(arrival_rate=100.0, duration_s=5.0, num_requests=50)
    np.testing.assert_array_equal(both, t[:50])  # the same stream, cut by count
    assert len(times(arrival_rate=1.0, duration_s=5.0, num_requests=50)) < 50  # time cuts first


def test_offline_puts_everything_at_zero() -> None:
    np.testing.assert_array_equal(times(arrival_rate=math.inf, num_requests=9), np.zeros(9))


def test_piecewise_rate_follows_the_schedule() -> None:
    steps = [[0, 1.0], [100, 0.0], [200, 4.0]]
    t = times(arrival_rate=10.0, rate_profile={"kind": "piecewise", "steps": steps}, duration_s=300.0)
    first, gap, last = ((t >= a) & (t < b) for a, b in ((0, 100), (100, 200), (200, 300)))
    assert gap.sum() == 0
    assert first.sum() == pytest.approx(1000, rel=0.1)
    assert last.sum() == pytest.approx(4000, rel=0.05)
    assert t[-1] < 300.0


def test_piecewise_inverse_is_exact() -> None:
    pw = _Piecewise(((0.0, 1.0), (10.0, 0.0), (20.0, 2.0)), 3.0)
    u = np.array([0.0, 15.0, 29.999, 30.0, 36.0])
    np.testing.assert_allclose(pw.inverse(u), [0.0, 5.0, 9.999666666666667, 20.0, 21.0])
    assert pw.at(25.0) == 60.0


@pytest.mark.parametrize("amplitude", [0.0, 0.6, 1.0])
def test_diurnal_inverse_solves_the_cumulative_rate(amplitude: float) -> None:
    d = _Diurnal(rate=5.0, amplitude=amplitude, period_s=100.0, peak_s=30.0)
    u = np.linspace(0.01, 5_000.0, 20_001)
    t = d.inverse(u)
    np.testing.assert_allclose(d.at(t), u, rtol=0, atol=1e-7)
    assert (np.diff(t) >= 0).all()


def test_diurnal_rate_peaks_and_troughs() -> None:
    profile = {"kind": "diurnal", "amplitude": 0.8, "period_s": 1000.0, "peak_s": 250.0}
    t = times(arrival_rate=20.0, rate_profile=profile, duration_s=10_000.0)
    phase = np.mod(t, 1000.0)
    near_peak = np.count_nonzero(np.abs(phase - 250.0) < 50.0)
    near_trough = np.count_nonzero(np.abs(phase - 750.0) < 50.0)
    # expected ratio of the integrated rates over the two windows: about (1 + 0.8) / (1 - 0.8)
    assert 7.0 < near_peak / near_trough < 11.0
    assert len(t) == pytest.approx(200_000, rel=0.02)


def test_same_seed_same_arrays_and_streams_are_independent() -> None:
    w = Workload(arrival_rate=30.0, duration_s=20.0)
    a, b = generate(w, 3), generate(w, 3)
    for name in ("arrival_s", "prompt_tokens", "output_tokens"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    other = generate(w.model_copy(update={"output": w.output.model_copy(update={"mean": 999.0})}), 3)
    np.testing.assert_array_equal(a.arrival_s, other.arrival_s)        # arrivals unchanged
    np.testing.assert_array_equal(a.prompt_tokens, other.prompt_tokens)  # prompts unchanged
    assert not np.array_equal(a.output_tokens, other.output_tokens)
    assert not np.array_equal(a.arrival_s, generate(w, 4).arrival_s)
