"""Closed-loop clients inside the kernel: known answers, agreement with the reference, invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tokenmill import _core

from conftest import requests, run_kwargs, unit_step_cost
from test_kernel import both, _random_case


def test_one_client_with_think_time_sends_one_request_at_a_time() -> None:
    # Steps take 1 s. Prompt 4, output 2: prefill ends at +1 (first token), one decode at +2.
    # The client thinks 0.5 s after each completion before sending the next request.
    out = both(*requests([0.0] * 4, [4] * 4, [2] * 4), unit_step_cost(),
               **run_kwargs(), concurrency=1, think_time_s=0.5)
    np.testing.assert_array_equal(out["arrival_s"], [0.0, 2.5, 5.0, 7.5])
    np.testing.assert_array_equal(out["first_token_s"], [1.0, 3.5, 6.0, 8.5])
    np.testing.assert_array_equal(out["completion_s"], [2.0, 4.5, 7.0, 9.5])
    assert out["end_time_s"] == 9.5


def test_two_clients_without_think_time_refill_at_the_same_instant() -> None:
    # Two clients, four requests of one output token: each step serves the two outstanding
    # requests; their successors arrive the instant they finish and share the next step.
    out = both(*requests([0.0] * 4, [4] * 4, [1] * 4), unit_step_cost(),
               **run_kwargs(), concurrency=2)
    np.testing.assert_array_equal(out["arrival_s"], [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(out["completion_s"], [1.0, 1.0, 2.0, 2.0])
    assert out["replicas"]["steps"][0] == 2


def test_concurrency_cap_on_scheduled_arrivals_is_vllm_max_concurrency() -> None:
    # Arrivals scheduled at 0, 0 and 10 s with one slot: the second waits for the first to
    # finish (t=2); the third is not sent before its own time, 10 s.
    out = both(*requests([0.0, 0.0, 10.0], [4, 4, 4], [2, 2, 2]), unit_step_cost(),
               **run_kwargs(), concurrency=1)
    np.testing.assert_array_equal(out["arrival_s"], [0.0, 2.0, 10.0])
    np.testing.assert_array_equal(out["completion_s"], [2.0, 4.0, 12.0])


def test_a_rejected_request_frees_its_client() -> None:
    # The first prompt exceeds the 10-token budget and is rejected at t=0: the client sends the
    # next request straight away (after 0.25 s of thinking) instead of hanging.
    out = both(*requests([0.0, 0.0, 0.0], [12, 4, 4], [1, 1, 1]), unit_step_cost(),
               **run_kwargs(max_batch_tokens=10, max_num_seqs=4), concurrency=1,
               think_time_s=0.25)
    assert out["status"][0] == _core.STATUS_REJECTED_BUDGET
    np.testing.assert_array_equal(out["arrival_s"], [0.0, 0.25, 1.5])
    np.testing.assert_array_equal(out["completion_s"][1:], [1.25, 2.5])


def test_stop_time_leaves_unsent_requests_pending() -> None:
    out = both(*requests([0.0] * 5, [4] * 5, [3] * 5), unit_step_cost(),
               **run_kwargs(stop_time_s=4.0), concurrency=1)
    assert list(out["status"][:2]) == [_core.STATUS_FINISHED, _core.STATUS_RUNNING]
    assert (out["status"][2:] == _core.STATUS_PENDING).all()
    assert math.isnan(out["arrival_s"][2])  # never sent


def test_concurrency_at_least_n_is_the_open_loop() -> None:
    a, p, o = requests([0.0, 0.3, 0.7], [40, 50, 60], [5, 6, 7])
    open_loop = _core.run(a, p, o, unit_step_cost().to_array(), **run_kwargs())
    capped = _core.run(a, p, o, unit_step_cost().to_array(), **run_kwargs(), concurrency=3,
                       think_time_s=5.0)
    for name in ("arrival_s", "first_token_s", "completion_s"):
        np.testing.assert_array_equal(open_loop[name], capped[name])


def _closed_case(seed: int):
    arrival, prompt, output, kw = _random_case(seed)
    rng = np.random.default_rng(10_000 + seed)
    if seed % 2 == 0:
        arrival = np.zeros_like(arrival)  # pure closed loop
    kw["concurrency"] = int(rng.integers(1, 12))
    kw["think_time_s"] = float(rng.choice([0.0, 0.0, 0.01, 0.2, 1.0]))
    return arrival, prompt, output, kw


@pytest.mark.parametrize("seed", range(120))
def test_kernel_matches_reference_in_closed_loop(seed: int, h100_llama8b_cost) -> None:
    arrival, prompt, output, kw = _closed_case(seed)
    both(arrival, prompt, output, h100_llama8b_cost, **kw)


def test_closed_loop_cases_exercise_every_path(h100_llama8b_cost) -> None:
    statuses = np.zeros(6, dtype=np.int64)
    preemptions = capped = 0
    for seed in range(120):
        arrival, prompt, output, kw = _closed_case(seed)
        out = _core.run(arrival, prompt, output, h100_llama8b_cost.to_array(), **kw)
        statuses += np.bincount(out["status"], minlength=6)
        preemptions += int(out["preemptions"].sum())
        sent = ~np.isnan(out["arrival_s"])
        capped += int((out["arrival_s"][sent] > arrival[sent]).sum())
    assert preemptions > 20 and capped > 100
    assert (statuses > 0).all(), statuses


@pytest.mark.parametrize("seed", range(40))
def test_closed_loop_invariants(seed: int, h100_llama8b_cost) -> None:
    arrival, prompt, output, kw = _closed_case(seed)
    kw["stop_time_s"] = math.inf
    out = _core.run(arrival, prompt, output, h100_llama8b_cost.to_array(), **kw)
    sent = out["arrival_s"]
    assert not np.isnan(sent).any()  # drained: every request was sent
    assert (np.diff(sent) >= 0).all() and (sent >= arrival).all()
    status = out["status"]
    ended = np.where(status == _core.STATUS_FINISHED, out["completion_s"], np.nan)
    # at most C outstanding: request k (k >= C) is sent no earlier than the (k-C+1)-th end
    # (rejections end at their arrival-side instants; only finished ones carry a time here)
    c = kw["concurrency"]
    n = len(sent)
    finished = status == _core.STATUS_FINISHED
    if finished.all() and n > c:
        ends = np.sort(ended)
        np.testing.assert_array_equal(sent[c:], np.maximum(arrival[c:], ends[: n - c] + kw["think_time_s"]))


def test_core_refuses_bad_closed_loop_arguments(h100_llama8b_cost) -> None:
    a, p, o = requests([0.0], [5], [5])
    cost = h100_llama8b_cost.to_array()
    with pytest.raises(ValueError, match="concurrency"):
        _core.run(a, p, o, cost, **run_kwargs(), concurrency=-1)
    with pytest.raises(ValueError, match="think_time_s"):
        _core.run(a, p, o, cost, **run_kwargs(), concurrency=1, think_time_s=float("nan"))
    with pytest.raises(ValueError, match="think_time_s"):
        _core.run(a, p, o, cost, **run_kwargs(), concurrency=1, think_time_s=-1.0)
