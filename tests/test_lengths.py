"""Length distributions: exact fixed lengths, bounds, truncation by redrawing, counted caps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import tokenmill as tm
from tokenmill.workloads.config import LengthDistribution, Workload
from tokenmill.workloads.errors import WorkloadError
from tokenmill.workloads.generate import generate
from tokenmill.workloads.lengths import draw_lengths

DATA = Path(__file__).with_name("data")
ARXIV = DATA / "arxiv_summarization_head500.csv"


def draw(seed: int = 0, n: int = 100_000, **kw):
    return draw_lengths(np.random.default_rng(seed), LengthDistribution(**kw), n)


def test_fixed_is_exactly_the_mean() -> None:
    x, stats = draw(kind="fixed", mean=777)
    assert x.dtype == np.int32 and (x == 777).all()
    assert stats.raised == stats.lowered == stats.redrawn == 0
    arrays = generate(Workload(num_requests=50, prompt={"kind": "fixed", "mean": 300}), 1)
    assert (arrays.prompt_tokens == 300).all()


def test_uniform_covers_both_ends_and_nothing_else() -> None:
    x, _ = draw(kind="uniform", min=5, max=9)
    assert set(np.unique(x)) == {5, 6, 7, 8, 9}
    assert x.mean() == pytest.approx(7.0, abs=0.02)


def test_truncated_normal_redraws_instead_of_clamping() -> None:
    x, stats = draw(kind="normal", mean=100, sigma=50, min=80, max=200)
    assert x.min() >= 80 and x.max() <= 200
    # a clamp would pile ~34% of draws on 80; a truncated normal has about 1/126 on each value
    assert np.count_nonzero(x == 80) / x.size < 0.02
    assert stats.redrawn > 30_000 and stats.raised == stats.lowered == 0
    # mean of N(100, 50) truncated to [79.5, 200.5], by the standard formula
    a, b = (79.5 - 100) / 50, (200.5 - 100) / 50
    phi = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    expected = 100 + 50 * (phi(a) - phi(b)) / (cdf(b) - cdf(a))
    assert x.mean() == pytest.approx(expected, abs=0.3)


def test_normal_without_bounds_only_truncates_below_one_token() -> None:
    x, stats = draw(kind="normal", mean=3, sigma=2)
    assert x.min() == 1 and stats.redrawn > 0


def test_lognormal_mean_and_the_default_sigma() -> None:
    x, stats = draw(mean=512)
    assert x.mean() == pytest.approx(512, rel=0.01)
    assert np.std(np.log(x)) == pytest.approx(0.5, rel=0.02)
    assert stats.raised == 0


def test_caps_are_counted() -> None:
    x, stats = draw(mean=512, sigma=1.0, min=64, max=1024)
    raw = np.rint(np.random.default_rng(0).lognormal(math.log(512) - 0.5, 1.0, 100_000))
    assert x.min() == 64 and x.max() == 1024
    assert stats.lowered == np.count_nonzero(raw > 1024) > 1000
    assert stats.raised == np.count_nonzero(raw < 64) > 1000
    np.testing.assert_array_equal(x, np.clip(raw, 64, 1024))
    notes = stats.notes("prompt", LengthDistribution(mean=512, sigma=1.0, min=64, max=1024))
    assert any("lowered to it" in n and "max = 1024" in n for n in notes)
    assert any("raised to it" in n and "min = 64" in n for n in notes)


def test_tiny_lognormal_rounding_to_zero_is_counted_not_hidden() -> None:
    x, stats = draw(mean=1.0, sigma=2.0)
    assert x.min() == 1 and stats.raised == np.count_nonzero(np.rint(
        np.random.default_rng(0).lognormal(math.log(1.0) - 2.0, 2.0, 100_000)) < 1)


def test_huge_draws_without_a_cap_are_refused() -> None:
    with pytest.raises(WorkloadError, match="exceeds"):
        draw(mean=2**29, sigma=4.0, n=1000)


def test_empirical_samples_the_file_column() -> None:
    column = np.loadtxt(ARXIV, delimiter=",", skiprows=1, usecols=0)
    w = Workload(num_requests=5000, prompt={"kind": "empirical", "source": str(ARXIV)},
                 output={"kind": "empirical", "source": str(ARXIV), "column": "num_decode_tokens"})
    a = generate(w, 1)
    assert set(np.unique(a.prompt_tokens)) <= set(column.astype(int))
    assert len(np.unique(a.prompt_tokens)) > 300  # most of the 500 values are drawn
    assert a.prompt_tokens.mean() == pytest.approx(column.mean(), rel=0.05)
    outputs = np.loadtxt(ARXIV, delimiter=",", skiprows=1, usecols=1)
    assert set(np.unique(a.output_tokens)) <= set(outputs.astype(int))


def test_empirical_from_a_trace_uses_its_length_column() -> None:
    trace = DATA / "azure2023_conv_head200.csv"
    w = Workload(num_requests=2000, output={"kind": "empirical", "source": str(trace)})
    a = generate(w, 1)
    generated = np.loadtxt(trace, delimiter=",", skiprows=1, usecols=2)
    assert set(np.unique(a.output_tokens)) <= set(generated.astype(int))
    with pytest.raises(WorkloadError, match="not a length column"):
        generate(Workload(num_requests=5, output={"kind": "empirical", "source": str(trace),
                                                  "column": "TIMESTAMP"}), 1)


def test_empirical_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(WorkloadError, match="no such file"):
        generate(Workload(num_requests=5, prompt={"kind": "empirical", "source": "nope.csv"}), 1)
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b\n1,2\n")
    with pytest.raises(WorkloadError, match="no prompt-length column found"):
        generate(Workload(num_requests=5, prompt={"kind": "empirical", "source": str(odd)}), 1)
    zeros = tmp_path / "z.csv"
    zeros.write_text("prompt_tokens\n0\n5\n0\n")
    a = generate(Workload(num_requests=20, prompt={"kind": "empirical", "source": str(zeros)}), 1)
    assert (a.prompt_tokens == 5).all()
    assert a.info.counts["prompt_pool_zeros"] == 2
    assert any("2 zero values" in n for n in a.info.notes)


def test_classes_draw_their_own_lengths_and_priorities() -> None:
    w = Workload(num_requests=4000, classes=[
        {"name": "short", "share": 3, "prompt": {"kind": "fixed", "mean": 100}},
        {"name": "long", "share": 1, "priority": -1, "prompt": {"kind": "fixed", "mean": 4000},
         "output": {"kind": "fixed", "mean": 7}}])
    a = generate(w, 2)
    short = a.class_id == 0
    assert short.mean() == pytest.approx(0.75, abs=0.03)
    assert (a.prompt_tokens[short] == 100).all() and (a.prompt_tokens[~short] == 4000).all()
    assert (a.output_tokens[~short] == 7).all() and a.output_tokens[short].std() > 10
    np.testing.assert_array_equal(a.priority, np.where(short, 0, -1))
    assert a.info.class_names == ("short", "long")
    # classes come from their own stream: the arrivals are those of the one-class workload
    plain = generate(Workload(num_requests=4000), 2)
    np.testing.assert_array_equal(a.arrival_s, plain.arrival_s)


def test_scenario_level_length_flags_reach_the_workload() -> None:
    r = tm.simulate(tm.Scenario(workload=tm.Workload(
        num_requests=30, arrival_rate=5.0, prompt={"kind": "fixed", "mean": 256},
        output={"kind": "uniform", "min": 2, "max": 4})))
    assert (r.requests.prompt_tokens == 256).all()
    assert set(np.unique(r.requests.output_tokens)) <= {2, 3, 4}
