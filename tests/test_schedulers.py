"""Serving policies: the worked examples of docs/schedulers.md, invariants, and their effects."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenmill as tm
from tokenmill import _core
from tokenmill.costmodel import StepShape, step_seconds
from tokenmill.reference import simulate_reference
from tokenmill.workload import WorkloadArrays

from conftest import assert_same_outputs, unit_step_cost

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DOC = Path(__file__).resolve().parent.parent / "docs" / "schedulers.md"
POLICIES = {"orca": _core.POLICY_ORCA, "chunked": _core.POLICY_CHUNKED, "static": _core.POLICY_STATIC}


def doc_examples() -> list[dict]:
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    return [tomllib.loads(b)["example"] for b in blocks if "[example]" in b]


def example_kwargs(ex: dict) -> tuple[tuple, dict]:
    reqs = ex["requests"]
    arrays = (np.array([r["arrival"] for r in reqs], dtype=np.float64),
              np.array([r["prompt"] for r in reqs], dtype=np.int32),
              np.array([r["output"] for r in reqs], dtype=np.int32))
    kw = dict(num_replicas=1, max_batch_tokens=ex["max_batch_tokens"],
              max_num_seqs=ex["max_num_seqs"], block_size=ex["block_size"],
              kv_capacity_blocks=ex["kv_capacity_blocks"], policy=POLICIES[ex["policy"]])
    if ex.get("priority_scheduling"):
        kw["priority_scheduling"] = True
        kw["priority"] = np.array([r.get("priority", 0) for r in reqs], dtype=np.int32)
    if ex.get("preemption") == "swap":
        kw["preemption"] = _core.PREEMPT_SWAP
        kw["swap_capacity_blocks"] = ex["swap_capacity_blocks"]
    if ex.get("prefix_caching"):
        ids = [r.get("prefix_ids", []) for r in reqs]
        kw.update(prefix_caching=True, prefix_granule_tokens=ex["prefix_granule_tokens"],
                  prefix_offsets=np.cumsum([0] + [len(x) for x in ids]).astype(np.int64),
                  prefix_ids=np.array([i for x in ids for i in x], dtype=np.int64))
    return arrays, kw


def run_both(arrays: tuple, kw: dict, cost=None) -> dict:
    """The kernel's output, after checking the reference (with its invariants) agrees exactly."""
    cost = cost or unit_step_cost()
    a = _core.run(*arrays, cost.to_array(), **kw)
    b = simulate_reference(*arrays, cost, check_invariants=True, **kw)
    assert_same_outputs(a, b)
    return a


def test_the_document_has_an_example_for_every_policy_and_mechanism() -> None:
    titles = " ".join(ex["title"] for ex in doc_examples())
    for word in ("orca", "vllm", "sarathi", "static", "recompute", "swap", "priority", "prefix"):
        assert word in titles, word


@pytest.mark.parametrize("ex", doc_examples(), ids=lambda ex: ex["title"].split(":")[0])
def test_documented_example(ex: dict) -> None:
    arrays, kw = example_kwargs(ex)
    out = run_both(arrays, kw)
    want = ex["expect"]
    np.testing.assert_array_equal(out["first_token_s"], want["first_token"])
    np.testing.assert_array_equal(out["completion_s"], want["completion"])
    if "preemptions" in want:
        np.testing.assert_array_equal(out["preemptions"], want["preemptions"])
    if "prefix_hit_tokens" in want:
        np.testing.assert_array_equal(out["prefix_hit_tokens"], want["prefix_hit_tokens"])
    for stat in ("prefill_tokens", "swap_out_blocks", "swap_in_blocks"):
        if stat in want:
            assert out["replicas"][stat][0] == want[stat], stat
    assert (out["status"] == _core.STATUS_FINISHED).all()
    assert out["replicas"]["kv_blocks_in_use_at_end"][0] == 0


# --- invariants on random small scenarios (hypothesis) -------------------------------------

@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 24))
    gaps = draw(st.lists(st.sampled_from([0.0, 0.3, 1.0, 2.5]), min_size=n, max_size=n))
    prompts = draw(st.lists(st.integers(1, 40), min_size=n, max_size=n))
    outputs = draw(st.lists(st.integers(1, 20), min_size=n, max_size=n))
    policy = draw(st.sampled_from(list(POLICIES.values())))
    block = draw(st.sampled_from([1, 2, 4]))
    seqs = draw(st.integers(1, 6))
    kw = dict(num_replicas=draw(st.integers(1, 2)), policy=policy, block_size=block,
              max_num_seqs=seqs, max_batch_tokens=draw(st.integers(seqs, 48)),
              kv_capacity_blocks=draw(st.integers(2, 40)))
    if draw(st.booleans()):
        kw["priority_scheduling"] = True
        kw["priority"] = np.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)),
                                  dtype=np.int32)
    if draw(st.booleans()):
        kw.update(preemption=_core.PREEMPT_SWAP, swap_capacity_blocks=draw(st.integers(0, 20)))
    if policy != _core.POLICY_STATIC and draw(st.booleans()):
        granule = block * draw(st.sampled_from([1, 2]))
        fams = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
        lens = [p // granule for p in prompts]
        ids = [100 * f + j for f, m in zip(fams, lens) for j in range(m)]
        kw.update(prefix_caching=True, prefix_granule_tokens=granule,
                  prefix_offsets=np.cumsum([0] + lens).astype(np.int64),
                  prefix_ids=np.array(ids, dtype=np.int64))
    arrays = (np.cumsum(gaps).astype(np.float64), np.array(prompts, dtype=np.int32),
              np.array(outputs, dtype=np.int32))
    return arrays, kw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_invariants_hold_and_kernel_matches_reference(case) -> None:
    # The reference asserts, at every step, that no request is in two queues, that every KV
    # block is accounted for once, and that the budget and sequence limit hold; run_both then
    # insists the kernel produced exactly the same thing.
    arrays, kw = case
    out = run_both(arrays, kw)
    status = out["status"]
    done = status == _core.STATUS_FINISHED
    rejected = (status == _core.STATUS_REJECTED_BUDGET) | (status == _core.STATUS_REJECTED_KV)
    assert (done | rejected).all(), "when arrivals stop every request finishes or is rejected"
    np.testing.assert_array_equal(out["generated_tokens"][done], arrays[2][done])
    reps = out["replicas"]
    assert (reps["kv_peak_blocks"] <= kw["kv_capacity_blocks"]).all()
    assert (reps["kv_blocks_in_use_at_end"] == 0).all() and (reps["swapped_at_end"] == 0).all()
    assert (reps["max_step_tokens"] <= kw["max_batch_tokens"]).all()
    if kw["policy"] != _core.POLICY_CHUNKED:
        assert not (status == _core.STATUS_REJECTED_BUDGET).any() or \
            (arrays[1][status == _core.STATUS_REJECTED_BUDGET] + out["generated_tokens"][
                status == _core.STATUS_REJECTED_BUDGET] > kw["max_batch_tokens"]).all()


@given(st.integers(1, 8192), st.data())
def test_a_prefix_hit_never_costs_more_than_a_miss(prompt: int, data) -> None:
    from tokenmill.catalogue import find_gpu, find_model
    from tokenmill.costmodel import coefficients
    from tokenmill.scenario import CostModelParams, Precision

    cost = coefficients(find_model("llama-3.1-8b"), find_gpu("h100"), Precision(), 1, CostModelParams())
    hit = data.draw(st.integers(0, prompt - 1))
    c = prompt - hit
    with_hit = step_seconds(cost, StepShape(prefill_tokens=c, prefill_pairs=c * hit + c * (c + 1) / 2,
                                            prefill_context=hit, logit_tokens=1))
    miss = step_seconds(cost, StepShape(prefill_tokens=prompt, prefill_pairs=prompt * (prompt + 1) / 2,
                                        logit_tokens=1))
    assert with_hit <= miss


# --- effects a capacity planner relies on ---------------------------------------------------

def _scenario(name: str, **sched) -> tm.Scenario:
    return tm.Scenario(scheduler=tm.SchedulerPolicy(name=name, **sched),
                       workload=tm.Workload(arrival_rate=25.0, duration_s=40.0,
                                            prompt=tm.LengthDistribution(mean=3000, sigma=0.5)))


def test_chunked_prefill_keeps_inter_token_latency_down_under_long_prompts() -> None:
    orca = tm.simulate(_scenario("orca"))
    sarathi = tm.simulate(_scenario("sarathi"))
    assert sarathi.itl_ms.p99 < 0.5 * orca.itl_ms.p99  # decodes are not stalled by prefills
    assert sarathi.max_step_tokens <= 512 < orca.max_step_tokens


def test_a_chunked_prompt_is_charged_in_full() -> None:
    arrays = (np.array([0.0]), np.array([4096], dtype=np.int32), np.array([1], dtype=np.int32))
    whole = _core.run(*arrays, unit_step_cost().to_array(), num_replicas=1, max_batch_tokens=8192,
                      max_num_seqs=4, block_size=16, kv_capacity_blocks=1000)
    chunked = _core.run(*arrays, unit_step_cost().to_array(), num_replicas=1, max_batch_tokens=512,
                        max_num_seqs=4, block_size=16, kv_capacity_blocks=1000,
                        policy=_core.POLICY_CHUNKED)
    assert whole["replicas"]["prefill_tokens"][0] == chunked["replicas"]["prefill_tokens"][0] == 4096
    assert chunked["replicas"]["steps"][0] == 8


def test_continuous_batching_is_not_capped_near_twelve_requests() -> None:
    r = tm.simulate(tm.Scenario(workload=tm.Workload(arrival_rate=80.0, duration_s=20.0)))
    assert r.steps > 0
    mean_batch = r.output_token_throughput * r.duration_s / r.steps
    assert mean_batch > 40


def test_static_batching_is_the_slow_baseline() -> None:
    wl = tm.Workload(arrival_rate=8.0, duration_s=30.0)
    static = tm.simulate(tm.Scenario(scheduler=tm.SchedulerPolicy(name="static"), workload=wl))
    orca = tm.simulate(tm.Scenario(scheduler=tm.SchedulerPolicy(name="orca"), workload=wl))
    assert static.ttft_ms.mean > 3 * orca.ttft_ms.mean
    assert static.num_finished == orca.num_finished == static.num_requests


def test_priority_scheduling_serves_urgent_requests_first() -> None:
    rng = np.random.default_rng(0)
    n = 600
    arrays = WorkloadArrays(arrival_s=np.sort(rng.uniform(0, 20, n)),
                            prompt_tokens=np.full(n, 2000, dtype=np.int32),
                            output_tokens=np.full(n, 200, dtype=np.int32),
                            priority=rng.integers(0, 2, n).astype(np.int32))
    sc = tm.Scenario(scheduler=tm.SchedulerPolicy(name="vllm", priority_scheduling=True))
    r = tm.simulate(sc, workload=arrays)
    ttft = r.requests.ttft_s
    assert np.nanmean(ttft[arrays.priority == 0]) < 0.5 * np.nanmean(ttft[arrays.priority == 1])


def test_prefix_caching_cuts_prefill_work_for_shared_prefixes() -> None:
    n, granule = 200, 512
    rng = np.random.default_rng(1)
    lens = np.full(n, 4096, dtype=np.int32)
    ids = np.concatenate([[1000 * (i % 4) + j for j in range(7)] + [10**6 + i] for i in range(n)])
    arrays = WorkloadArrays(arrival_s=np.sort(rng.uniform(0, 30, n)), prompt_tokens=lens,
                            output_tokens=np.full(n, 64, dtype=np.int32),
                            prefix_ids=ids.astype(np.int64),
                            prefix_offsets=np.arange(0, 8 * n + 1, 8, dtype=np.int64),
                            prefix_block_tokens=granule)
    on = tm.simulate(tm.Scenario(scheduler=tm.SchedulerPolicy(name="vllm")), workload=arrays)
    off = tm.simulate(tm.Scenario(scheduler=tm.SchedulerPolicy(name="vllm", prefix_caching=False)),
                      workload=arrays)
    assert on.prefix_hit_rate > 0.8
    assert off.prefix_hit_rate == 0.0
    assert on.requests.prefix_hit_tokens.sum() > 0.8 * 3584 * n
    assert on.ttft_ms.mean < 0.5 * off.ttft_ms.mean


def test_swap_preemption_moves_bytes_instead_of_recomputing() -> None:
    wl = tm.Workload(arrival_rate=40.0, duration_s=20.0, output=tm.LengthDistribution(mean=1000))
    base = dict(name="vllm", kv_blocks=3000)
    recompute = tm.simulate(tm.Scenario(scheduler=tm.SchedulerPolicy(**base), workload=wl))
    swap = tm.simulate(tm.Scenario(scheduler=tm.SchedulerPolicy(preemption="swap", **base), workload=wl))
    assert recompute.preemptions > 0 and recompute.recomputed_tokens > 0
    assert swap.swapped_out_bytes > 0 and swap.recomputed_tokens < recompute.recomputed_tokens
    assert swap.num_finished == recompute.num_finished == swap.num_requests


# --- configuration ------------------------------------------------------------------------

def test_vllm_defaults_follow_the_chip() -> None:
    from tokenmill.policy import resolve_policy

    big = resolve_policy(tm.SchedulerPolicy(name="vllm"), tm.Scenario().hardware())
    assert (big.max_batch_tokens, big.max_num_seqs, big.prefix_caching) == (8192, 1024, True)
    small_chip = tm.Scenario().hardware().model_copy(update={"name": "a100", "memory_gib": 79.0})
    small = resolve_policy(tm.SchedulerPolicy(name="vllm"), small_chip)
    assert (small.max_batch_tokens, small.max_num_seqs) == (2048, 256)
    sarathi = resolve_policy(tm.SchedulerPolicy(name="chunked-prefill"), small_chip)
    assert (sarathi.name, sarathi.max_batch_tokens, sarathi.prefix_caching) == ("sarathi", 512, False)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(name="sarathi", max_num_seqs=1024), "must be >= scheduler.max_num_seqs"),
    (dict(name="static", prefix_caching=True), "not modelled with request-level"),
    (dict(name="fcfs"), "unknown scheduler 'fcfs'"),
    (dict(preemption="discard"), "preemption"),
])
def test_bad_policies_are_refused(kwargs, needle) -> None:
    with pytest.raises(ValueError, match=needle):
        tm.Scenario(scheduler=tm.SchedulerPolicy(**kwargs))


def test_prefix_granule_must_be_a_multiple_of_the_block() -> None:
    arrays = WorkloadArrays(arrival_s=np.zeros(1), prompt_tokens=np.array([100], np.int32),
                            output_tokens=np.array([5], np.int32),
                            prefix_ids=np.array([1], np.int64),
                            prefix_offsets=np.array([0, 1], np.int64), prefix_block_tokens=24)
    with pytest.raises(tm.ConfigError, match="kv_block_size = 16 does not divide"):
        tm.simulate(tm.Scenario(scheduler=tm.SchedulerPolicy(name="vllm")), workload=arrays)


def test_scheduler_flags_on_the_command_line(capsys) -> None:
    import json

    from tokenmill.cli import main

    code = main(["run", "--scheduler", "chunked-prefill", "--chunk-size", "256", "--max-num-seqs",
                 "64", "--preemption", "swap", "--swap-space", "2", "--priority-scheduling",
                 "--no-prefix-caching", "--duration", "5", "--output", "json"])
    assert code == 0
    sched = json.loads(capsys.readouterr().out)["scheduler"]
    assert sched["name"] == "sarathi" and sched["max_batch_tokens"] == 256
    assert sched["max_num_seqs"] == 64 and sched["preemption"] == "swap"
    assert sched["priority_scheduling"] is True and sched["prefix_caching"] is False
    assert math.isfinite(sched["prefix_hit_rate"])
