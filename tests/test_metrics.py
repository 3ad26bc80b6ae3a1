"""Metric definitions and the inter-token-gap histogram."""

from __future__ import annotations

import numpy as np
import pytest

from tokenmill import _core
from tokenmill.metrics import LatencyStats, itl_bin_midpoints, itl_bin_of, itl_stats


def test_python_and_compiled_bins_agree() -> None:
    rng = np.random.default_rng(1)
    gaps = np.concatenate([rng.lognormal(-5, 2, 2000), [0.0, -1.0, 1e-12, 1e7, 2.0**-30, 2.0**20]])
    for g in gaps:
        assert itl_bin_of(float(g)) == _core.itl_bin_index(float(g))


def test_bin_midpoints_contain_their_values() -> None:
    mids = itl_bin_midpoints()
    rng = np.random.default_rng(2)
    for g in rng.lognormal(-4, 1.5, 500):
        mid = mids[itl_bin_of(float(g))]
        assert abs(mid - g) / g < 2.0**-11  # half a bin of 1/1024 octave


def test_histogram_percentiles_within_bin_precision_of_exact() -> None:
    rng = np.random.default_rng(3)
    gaps = rng.lognormal(np.log(0.008), 0.3, 50_000)
    hist = np.zeros(_core.ITL_BINS, dtype=np.int64)
    np.add.at(hist, [itl_bin_of(float(g)) for g in gaps], 1)
    stats = itl_stats(hist, float(gaps.sum()), gaps.size, float(gaps.max()))
    exact = LatencyStats.from_seconds(gaps)
    assert stats.count == exact.count
    assert stats.mean == pytest.approx(exact.mean, rel=1e-12)
    assert stats.max == exact.max
    for q in ("p50", "p90", "p95", "p99"):
        assert getattr(stats, q) == pytest.approx(getattr(exact, q), rel=1e-3)


def test_latency_stats_use_numpy_linear_percentiles() -> None:
    s = LatencyStats.from_seconds(np.array([0.001, 0.002, 0.003, 0.004]))
    assert s.p50 == pytest.approx(2.5)
    assert s.p90 == pytest.approx(3.7)
    assert s.max == pytest.approx(4.0) and s.count == 4
    assert LatencyStats.from_seconds(np.array([])).count == 0
