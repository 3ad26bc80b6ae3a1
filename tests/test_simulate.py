"""End to end through tokenmill.simulate: determinism, conservation, light-load latency."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import tokenmill as tm
from tokenmill.costmodel import decode_seconds, prefill_seconds
from tokenmill.workload import WorkloadArrays

ARRAYS = ("admitted_s", "first_token_s", "completion_s", "generated_tokens", "preemptions",
          "status", "arrival_s", "prompt_tokens", "output_tokens")


def small(**workload) -> tm.Scenario:
    return tm.Scenario(workload=tm.Workload(**{"arrival_rate": 20.0, "duration_s": 20.0, **workload}))


def test_default_scenario_matches_the_documented_defaults() -> None:
    sc = tm.Scenario()
    assert sc.model_arch().name == "llama-3.1-8b" and sc.hardware().name == "h100"
    assert sc.precision.weights == "bf16" and sc.plan.tp == 1
    wl = sc.workload
    assert (wl.arrival_rate, wl.duration_s, wl.prompt.mean, wl.output.mean) == (10.0, 60.0, 512.0, 128.0)
    assert wl.prompt.sigma == 0.5 and sc.seed == 42


def test_same_seed_gives_identical_results_and_another_seed_does_not() -> None:
    a = tm.simulate(small())
    b = tm.simulate(small())
    for name in ARRAYS:
        np.testing.assert_array_equal(a.requests[name], b.requests[name])
    assert a.to_dict()["latency_ms"] == b.to_dict()["latency_ms"]
    c = tm.simulate(small().model_copy(update={"seed": 43}))
    assert not np.array_equal(a.requests.arrival_s, c.requests.arrival_s)
    assert a.ttft_ms.mean != c.ttft_ms.mean


def test_conservation_when_drained() -> None:
    r = tm.simulate(small(arrival_rate=40.0))
    assert r.num_arrived == r.num_requests == len(r.requests)
    assert r.num_finished + r.num_unfinished + r.num_rejected == r.num_arrived
    assert r.num_unfinished == 0 and r.num_rejected == 0
    fin = r.requests.finished
    assert int(r.requests.generated_tokens[fin].sum()) == int(r.requests.output_tokens[fin].sum())
    assert r.kv_peak_blocks <= r.memory.kv_capacity_blocks
    assert r.output_token_throughput == pytest.approx(
        r.requests.output_tokens.sum() / r.duration_s)


def test_unfinished_requests_are_counted_not_dropped() -> None:
    sc = small(arrival_rate=200.0).model_copy(update={"stop_time_s": 5.0})
    r = tm.simulate(sc)
    assert r.num_unfinished > 0
    assert r.num_arrived < r.num_requests  # arrivals after the stop are reported as such
    assert r.num_finished + r.num_unfinished + r.num_rejected == r.num_arrived
    assert r.ttft_ms.count == r.num_finished
    assert r.duration_s == 5.0


def test_memory_pressure_preempts_and_still_drains() -> None:
    sc = small(arrival_rate=50.0).model_copy(
        update={"scheduler": tm.SchedulerPolicy(kv_blocks=400)})
    r = tm.simulate(sc)
    assert r.preemptions > 0
    assert r.num_finished == r.num_requests
    assert r.kv_peak_blocks <= 400
    assert (r.requests.preemptions > 0).sum() > 0


def test_light_load_ttft_is_the_unloaded_prefill_time() -> None:
    wl = tm.Workload(arrival_rate=0.5, num_requests=40,
                     prompt=tm.LengthDistribution(mean=512, sigma=0.0),
                     output=tm.LengthDistribution(mean=16, sigma=0.0))
    r = tm.simulate(tm.Scenario(workload=wl))
    prefill = prefill_seconds(r.cost, 512) * 1e3
    decode = decode_seconds(r.cost, 1, 512 + 1) * 1e3
    assert r.ttft_ms.p50 == pytest.approx(prefill, rel=1e-9)
    assert r.ttft_ms.mean == pytest.approx(prefill, rel=0.05)
    assert r.tpot_ms.p50 == pytest.approx(decode, rel=0.01)
    # and the unloaded prefill is a sane number for an 8B model on one H100
    assert 5.0 < prefill < 30.0 and 4.0 < decode < 12.0


def test_more_load_means_more_latency() -> None:
    light = tm.simulate(small(arrival_rate=2.0))
    heavy = tm.simulate(small(arrival_rate=60.0))
    assert heavy.ttft_ms.p99 > light.ttft_ms.p99
    assert heavy.tpot_ms.mean > light.tpot_ms.mean


def test_custom_workload_arrays_and_request_columns() -> None:
    arrays = WorkloadArrays(arrival_s=np.array([0.0, 0.1]), prompt_tokens=np.array([100, 50], np.int32),
                            output_tokens=np.array([1, 5], np.int32))
    r = tm.simulate(tm.Scenario(), workload=arrays)
    assert r.num_finished == 2
    assert math.isnan(r.requests.tpot_s[0])  # one-token outputs have no TPOT
    assert set(r.requests.columns()) >= {"ttft_s", "e2e_s", "tpot_s", "arrival_s", "status"}
    with pytest.raises(KeyError, match="columns"):
        r.requests["nope"]


def test_result_serialises_with_scenario_and_version() -> None:
    r = tm.simulate(small())
    d = json.loads(r.to_json())
    assert d["tokenmill_version"] == tm.__version__
    assert d["scenario"]["model"] == "llama-3.1-8b"
    assert d["requests"]["finished"] == r.num_finished
    assert d["latency_ms"]["ttft"]["p99"] == pytest.approx(r.ttft_ms.p99)
    rebuilt = tm.Scenario.model_validate(d["scenario"])
    assert rebuilt == r.scenario


def test_fp8_weights_raise_kv_capacity_and_speed_decode() -> None:
    base = tm.simulate(small())
    fp8 = tm.simulate(small().model_copy(update={"precision": tm.Precision(weights="fp8", activations="fp8")}))
    assert fp8.memory.kv_capacity_blocks > base.memory.kv_capacity_blocks
    assert fp8.tpot_ms.mean < base.tpot_ms.mean


def test_tensor_parallelism_speeds_decode_and_is_validated() -> None:
    tp1 = tm.simulate(small())
    tp2 = tm.simulate(small().model_copy(update={"plan": tm.Plan(tp=2)}))
    assert tp2.tpot_ms.mean < tp1.tpot_ms.mean
    with pytest.raises(ValueError, match="scale-up domain"):
        tm.Scenario(model="llama-3.1-8b", plan=tm.Plan(tp=16))
