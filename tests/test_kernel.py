"""The compiled kernel: hand-checked cases, agreement with the Python reference, invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tokenmill import _core
from tokenmill.reference import simulate_reference

from conftest import assert_same_outputs, requests, run_kwargs, unit_step_cost


def both(arrival, prompt, output, cost, **kw):
    """Run kernel and reference on the same input and insist they agree exactly."""
    a = _core.run(arrival, prompt, output, cost.to_array(), **kw)
    b = simulate_reference(arrival, prompt, output, cost, **kw)
    assert_same_outputs(a, b)
    return a


def test_known_answer_two_requests_no_pressure() -> None:
    # Block size 2, 4 blocks. A: prompt 3, output 3. B: prompt 2, output 2. Steps take 1 s.
    # Step 0 (t=0): both prefill (A 2 blocks, B 1 block). t=1: first tokens.
    # Step 1: A's cache needs 4 tokens (2 blocks, held); B's needs 3 (a 2nd block). t=2: B done.
    # Step 2: A needs 5 tokens, a 3rd block. t=3: A done.
    out = both(*requests([0.0, 0.0], [3, 2], [3, 2]), unit_step_cost(),
               **run_kwargs(block_size=2, kv_capacity_blocks=4))
    np.testing.assert_array_equal(out["first_token_s"], [1.0, 1.0])
    np.testing.assert_array_equal(out["completion_s"], [3.0, 2.0])
    assert out["replicas"]["kv_peak_blocks"][0] == 4
    assert out["replicas"]["steps"][0] == 3
    assert out["itl_count"] == 3 and out["itl_sum_s"] == 3.0
    assert out["replicas"]["kv_blocks_in_use_at_end"][0] == 0


def test_known_answer_preemption_by_recompute() -> None:
    # Block size 2, 3 blocks. A: prompt 3, output 4. B: prompt 2, output 3. Steps take 1 s.
    # Step 0: both prefill, all 3 blocks used. Step 1 (t=1): B needs a 2nd block, none free:
    # the most recent admission (B) is preempted, requeued at the front; no admission in this
    # step. Steps 1-3 decode A, which takes the freed block at step 2 and finishes at t=4.
    # Step 4 re-prefills B's prompt plus its one generated token (3 tokens); its 2nd token comes
    # at t=5, a gap of 4 s since its first; step 5 gives the 3rd and B finishes at t=6.
    out = both(*requests([0.0, 0.0], [3, 2], [4, 3]), unit_step_cost(),
               **run_kwargs(block_size=2, kv_capacity_blocks=3))
    np.testing.assert_array_equal(out["first_token_s"], [1.0, 1.0])
    np.testing.assert_array_equal(out["completion_s"], [4.0, 6.0])
    np.testing.assert_array_equal(out["preemptions"], [0, 1])
    assert out["replicas"]["prefill_tokens"][0] == 3 + 2 + 3
    assert out["replicas"]["steps"][0] == 6
    assert out["itl_count"] == 5 and out["itl_sum_s"] == 8.0 and out["itl_max_s"] == 4.0


def test_token_budget_limits_admission_and_rejects_oversized_prompts() -> None:
    # Budget 10 tokens: a 6-token and a 5-token prompt cannot share a step; a 12-token prompt
    # never fits and is rejected, not dropped silently.
    out = both(*requests([0.0, 0.0, 0.0], [6, 5, 12], [1, 1, 1]), unit_step_cost(),
               **run_kwargs(max_batch_tokens=10, max_num_seqs=4))
    np.testing.assert_array_equal(out["completion_s"][:2], [1.0, 2.0])
    assert out["status"][2] == _core.STATUS_REJECTED_BUDGET
    assert math.isnan(out["completion_s"][2])


def test_request_larger_than_the_whole_cache_is_rejected() -> None:
    # 4 blocks of 4 tokens hold 16 tokens. A 20-token prompt can never be admitted; a 10-token
    # prompt with 10 outputs outgrows the cache while running alone.
    out = both(*requests([0.0, 1.0], [20, 10], [2, 10]), unit_step_cost(),
               **run_kwargs(block_size=4, kv_capacity_blocks=4))
    assert out["status"][0] == _core.STATUS_REJECTED_KV
    assert out["status"][1] == _core.STATUS_REJECTED_KV
    assert out["generated_tokens"][1] == 7  # 10 + 7 - 1 = 16 cached tokens fill the cache
    assert out["replicas"]["kv_blocks_in_use_at_end"][0] == 0


def test_stop_time_leaves_requests_unfinished_and_reported() -> None:
    out = both(*requests([0.0, 0.5, 10.0], [4, 4, 4], [5, 5, 5]), unit_step_cost(),
               **run_kwargs(stop_time_s=2.5))
    assert list(out["status"]) == [_core.STATUS_RUNNING, _core.STATUS_RUNNING, _core.STATUS_PENDING]
    assert out["end_time_s"] == 2.5
    np.testing.assert_array_equal(out["generated_tokens"], [2, 1, 0])
    assert out["replicas"]["busy_s"][0] == 2.5


def _random_case(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    scale = rng.choice([0.01, 0.1, 1.0])
    arrival = np.cumsum(rng.exponential(scale, n))
    if seed % 5 == 0:
        arrival = np.round(arrival, 1)  # simultaneous arrivals
    prompt = rng.integers(1, 300, n).astype(np.int32)
    output = rng.integers(1, 150, n).astype(np.int32)
    seqs = int(rng.choice([2, 8, 64]))
    kw = run_kwargs(num_replicas=int(rng.integers(1, 4)),
                    max_batch_tokens=int(rng.choice([64, 512, 4096])), max_num_seqs=seqs,
                    block_size=int(rng.choice([1, 3, 16])),
                    kv_capacity_blocks=int(rng.integers(4, 400)),
                    stop_time_s=float(rng.choice([math.inf, math.inf, 2.0])))
    return arrival, prompt, output, kw


@pytest.mark.parametrize("seed", range(120))
def test_kernel_matches_reference_on_random_cases(seed: int, h100_llama8b_cost) -> None:
    arrival, prompt, output, kw = _random_case(seed)
    both(arrival, prompt, output, h100_llama8b_cost, **kw)


def test_random_cases_exercise_every_path(h100_llama8b_cost) -> None:
    statuses = np.zeros(6, dtype=np.int64)
    preemptions = 0
    for seed in range(120):
        arrival, prompt, output, kw = _random_case(seed)
        out = _core.run(arrival, prompt, output, h100_llama8b_cost.to_array(), **kw)
        statuses += np.bincount(out["status"], minlength=6)
        preemptions += int(out["preemptions"].sum())
    assert preemptions > 50
    assert (statuses > 0).all(), statuses  # pending, waiting, running, finished, both rejections


@pytest.mark.parametrize("seed", range(40))
def test_invariants_on_drained_random_cases(seed: int, h100_llama8b_cost) -> None:
    arrival, prompt, output, kw = _random_case(seed)
    kw["stop_time_s"] = math.inf
    out = _core.run(arrival, prompt, output, h100_llama8b_cost.to_array(), **kw)
    status = out["status"]
    done = status == _core.STATUS_FINISHED
    rejected = (status == _core.STATUS_REJECTED_BUDGET) | (status == _core.STATUS_REJECTED_KV)
    assert (done | rejected).all()  # drained: nothing left waiting or running
    np.testing.assert_array_equal(out["generated_tokens"][done], output[done])
    assert (out["first_token_s"][done] > arrival[done]).all()
    assert (out["completion_s"][done] >= out["first_token_s"][done]).all()
    reps = out["replicas"]
    assert (reps["kv_peak_blocks"] <= kw["kv_capacity_blocks"]).all()
    assert (reps["kv_blocks_in_use_at_end"] == 0).all()
    # every token after a request's first is one inter-token gap
    assert out["itl_count"] == int((out["generated_tokens"][out["generated_tokens"] > 0] - 1).sum())


def test_core_refuses_bad_arrays(h100_llama8b_cost) -> None:
    cost = h100_llama8b_cost.to_array()
    a, p, o = requests([1.0, 0.5], [5, 5], [5, 5])
    with pytest.raises(ValueError, match="sorted"):
        _core.run(a, p, o, cost, **run_kwargs())
    a, p, o = requests([0.0, 0.5], [5, 0], [5, 5])
    with pytest.raises(ValueError, match=">= 1"):
        _core.run(a, p, o, cost, **run_kwargs())
    a, p, o = requests([0.0, float("nan")], [5, 5], [5, 5])
    with pytest.raises(ValueError, match="finite"):
        _core.run(a, p, o, cost, **run_kwargs())
    a, p, o = requests([0.0], [5], [5])
    with pytest.raises(ValueError, match="same length"):
        _core.run(a, p[:0], o, cost, **run_kwargs())
    with pytest.raises(ValueError, match="max_batch_tokens"):
        _core.run(a, p, o, cost, **run_kwargs(max_batch_tokens=8, max_num_seqs=16))
    with pytest.raises(ValueError, match="coefficients"):
        _core.run(a, p, o, cost[:3], **run_kwargs())
    with pytest.raises(ValueError, match="kv_capacity_blocks"):
        _core.run(a, p, o, cost, **run_kwargs(kv_capacity_blocks=0))
    with pytest.raises(ValueError, match="flops_per_s"):
        bad = cost.copy()
        bad[4] = 0.0
        _core.run(a, p, o, bad, **run_kwargs())


def test_empty_workload(h100_llama8b_cost) -> None:
    out = _core.run(*requests([], [], []), h100_llama8b_cost.to_array(), **run_kwargs())
    assert out["events"] == 0 and out["end_time_s"] == 0.0


def test_compiled_step_price_matches_python_twin(h100_llama8b_cost) -> None:
    from tokenmill.costmodel import StepShape, step_seconds

    rng = np.random.default_rng(0)
    arr = h100_llama8b_cost.to_array()
    for _ in range(200):
        args = [float(x) for x in rng.integers(0, 100_000, 6)]
        assert _core.step_time(arr, *args) == step_seconds(h100_llama8b_cost, StepShape(*args))


@pytest.mark.parametrize("seed", range(10))
def test_time_series_integrals_add_up(seed: int, h100_llama8b_cost) -> None:
    arrival, prompt, output, kw = _random_case(seed)
    kw["stop_time_s"] = math.inf
    out = _core.run(arrival, prompt, output, h100_llama8b_cost.to_array(), timeseries_dt=0.25, **kw)
    ts = out["timeseries"]
    assert ts.shape[1:] == (kw["num_replicas"], len(_core.TIMESERIES_FIELDS))
    assert ts.shape[0] == max(1, math.ceil(out["end_time_s"] / 0.25))
    busy = ts[:, :, _core.TIMESERIES_FIELDS.index("busy")].sum(axis=0)
    np.testing.assert_allclose(busy, out["replicas"]["busy_s"], rtol=1e-9, atol=1e-12)
    assert (ts >= 0).all()
    assert (ts[:, :, 3] <= 0.25 + 1e-12).all()  # busy at most the bucket's length
    # no time series unless asked for
    assert _core.run(arrival, prompt, output, h100_llama8b_cost.to_array(), **kw)["timeseries"] is None
