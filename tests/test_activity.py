"""Compute and memory activity of the steps (what power follows): the compiled step_activity
and its Python twin agree exactly, kernel and reference agree on the per-engine sums and on
every time-series field, and the integrals add up."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tokenmill as tm
from tokenmill import _core
from tokenmill.catalogue import find_gpu, find_model
from tokenmill.cluster import build_cluster
from tokenmill.costmodel import StepShape, coefficients, step_activity, step_seconds
from tokenmill.reference import simulate_reference
from tokenmill.scenario import CostModelParams, Precision
from tokenmill.workload import generate

from conftest import assert_same_outputs, run_kwargs


@pytest.mark.parametrize("model,tp", [("llama-3.1-8b", 1), ("mixtral-8x7b", 2),
                                      ("deepseek-v3", 8), ("gpt-oss-120b", 2)])
def test_step_activity_twin_matches_the_kernel(model: str, tp: int) -> None:
    c = coefficients(find_model(model), find_gpu("h200"), Precision(), tp, CostModelParams())
    arr = c.to_array()
    rng = np.random.default_rng(7)
    for _ in range(200):
        args = [float(x) for x in rng.integers(0, 50_000, 6)]
        shape = StepShape(*args)
        assert _core.step_activity_time(arr, *args) == step_activity(c, shape)
        comp, mem = step_activity(c, shape)
        # the roofline side of the step: its duration covers the larger of the two
        assert max(comp, mem) <= step_seconds(c, shape)


def _scenario_case(scenario: tm.Scenario) -> tuple[tuple, dict, dict]:
    build = build_cluster(scenario)
    arrays = generate(scenario.workload, scenario.seed)
    base = dict(block_size=16, stop_time_s=math.inf, **build.kernel_args)
    kernel = dict(base)
    ref = dict(base)
    ref["cost"] = build.pools[0].costs
    if "decode_cost" in base:
        ref["decode_cost"] = build.pools[1].costs
    if "draft_cost" in base:
        ref["draft_cost"] = [p.draft for p in build.pools]
    reqs = (np.ascontiguousarray(arrays.arrival_s), np.ascontiguousarray(arrays.prompt_tokens),
            np.ascontiguousarray(arrays.output_tokens))
    return reqs, kernel, ref


CASES = {
    "unified, two replicas": dict(plan=tm.Plan(replicas=2)),
    "pipeline of two stages": dict(model="llama-3.1-70b", plan=tm.Plan(tp=4, pp=2)),
    "disaggregated": dict(disaggregation=tm.Disaggregation(
        prefill=tm.PoolPlan(replicas=1), decode=tm.PoolPlan(replicas=2))),
    "speculative with a draft": dict(speculative=tm.SpeculativeDecoding(tokens=3)),
    "chunked prefill under pressure": dict(scheduler=tm.SchedulerPolicy(name="sarathi", kv_blocks=300)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("stop", [math.inf, 3.0])
def test_kernel_and_reference_agree_on_activity_and_time_series(case: str, stop: float) -> None:
    scenario = tm.Scenario(workload=tm.Workload(arrival_rate=40.0, num_requests=120), **CASES[case])
    reqs, kernel, ref = _scenario_case(scenario)
    kernel.update(stop_time_s=stop, timeseries_dt=0.1)
    ref.update(stop_time_s=stop, timeseries_dt=0.1)
    a = _core.run(*reqs, **kernel)
    b = simulate_reference(*reqs, check_invariants=True, **ref)
    assert_same_outputs(a, b)
    assert a["timeseries"].shape[2] == len(_core.TIMESERIES_FIELDS) == 6
    assert (a["replicas"]["compute_s"] > 0).any() and (a["replicas"]["memory_s"] > 0).any()


@pytest.mark.parametrize("case", sorted(CASES))
def test_activity_integrals_add_up_and_stay_under_busy(case: str) -> None:
    scenario = tm.Scenario(workload=tm.Workload(arrival_rate=40.0, num_requests=200), **CASES[case])
    reqs, kernel, _ = _scenario_case(scenario)
    out = _core.run(*reqs, timeseries_dt=0.05, **{k: v for k, v in kernel.items()})
    ts = out["timeseries"]
    fields = _core.TIMESERIES_FIELDS
    for name in ("compute", "memory"):
        total = ts[:, :, fields.index(name)].sum(axis=0)
        np.testing.assert_allclose(total, out["replicas"][f"{name}_s"], rtol=1e-9, atol=1e-12)
        # a step's compute (or memory) time never exceeds its duration: fraction <= busy
        assert (ts[:, :, fields.index(name)] <= ts[:, :, fields.index("busy")] * (1 + 1e-9) + 1e-15).all()
    assert (out["replicas"]["compute_s"] <= out["replicas"]["busy_s"] * (1 + 1e-12)).all()


def test_unit_steps_have_no_activity() -> None:
    # the known-answer cost (overhead only) computes nothing and reads nothing
    from conftest import requests, unit_step_cost
    out = _core.run(*requests([0.0, 0.0], [3, 2], [3, 2]), unit_step_cost().to_array(),
                    timeseries_dt=1.0, **run_kwargs(block_size=2, kv_capacity_blocks=4))
    assert out["replicas"]["compute_s"][0] == 0.0 and out["replicas"]["memory_s"][0] == 0.0
    assert out["timeseries"][:, :, 4:].sum() == 0.0


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("max_buckets", [4, 6, 64])
def test_time_series_coarsens_past_its_bucket_limit_like_the_reference(case: str, max_buckets: int) -> None:
    scenario = tm.Scenario(workload=tm.Workload(arrival_rate=40.0, num_requests=120), **CASES[case])
    reqs, kernel, ref = _scenario_case(scenario)
    opts = dict(timeseries_dt=0.01, timeseries_max_buckets=max_buckets)
    a = _core.run(*reqs, **kernel, **opts)
    b = simulate_reference(*reqs, check_invariants=True, **ref, **opts)
    assert_same_outputs(a, b)
    assert a["timeseries"].shape[0] <= max_buckets
    assert a["timeseries_dt"] > 0.01 and math.log2(a["timeseries_dt"] / 0.01).is_integer()
    # the integrals are those of the fine series, added up
    fine = _core.run(*reqs, **kernel, timeseries_dt=0.01)
    factor = round(a["timeseries_dt"] / 0.01)
    padded = np.zeros((a["timeseries"].shape[0] * factor,) + fine["timeseries"].shape[1:])
    padded[:fine["timeseries"].shape[0]] = fine["timeseries"]
    merged = padded.reshape(a["timeseries"].shape[0], factor, *fine["timeseries"].shape[1:]).sum(axis=1)
    np.testing.assert_allclose(a["timeseries"], merged, rtol=1e-9, atol=1e-12)


def test_bucket_limit_is_checked() -> None:
    from conftest import requests, unit_step_cost
    with pytest.raises(ValueError, match="timeseries_max_buckets"):
        _core.run(*requests([0.0], [1], [1]), unit_step_cost().to_array(), timeseries_dt=1.0,
                  timeseries_max_buckets=3, **run_kwargs())
