"""Workloads through tokenmill.simulate: closed loops, offline runs, classes, traces, notes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tokenmill as tm
from tokenmill import _core
from tokenmill.report import to_csv, to_text
from tokenmill.workloads.generate import generate

DATA = Path(__file__).with_name("data")


def sim(**workload) -> tm.Result:
    return tm.simulate(tm.Scenario(workload=tm.Workload(**workload)))


def outstanding_at_arrivals(arrival: np.ndarray, completion: np.ndarray) -> np.ndarray:
    """Requests sent and not yet finished at each arrival instant (the new one included)."""
    sent = np.searchsorted(np.sort(arrival), arrival, side="right")
    done = np.searchsorted(np.sort(completion), arrival, side="right")
    return sent - done


def test_closed_loop_arrivals_follow_completions() -> None:
    r = sim(concurrency=4, num_requests=200, think_time_s=0.1)
    rec = r.requests
    assert r.num_finished == 200
    assert (rec.arrival_s[:4] == 0.0).all() and (np.diff(rec.arrival_s) >= 0).all()
    ends = np.sort(rec.completion_s)
    np.testing.assert_allclose(rec.arrival_s[4:], ends[:196] + 0.1, rtol=0, atol=0)
    assert outstanding_at_arrivals(rec.arrival_s, rec.completion_s).max() == 4
    # latencies are measured from the actual arrivals the kernel decided
    assert r.ttft_ms.mean == pytest.approx(float(np.mean(rec.first_token_s - rec.arrival_s)) * 1e3)


def test_one_client_without_think_time_serves_back_to_back() -> None:
    r = sim(concurrency=1, num_requests=25)
    rec = r.requests
    np.testing.assert_array_equal(rec.arrival_s[1:], rec.completion_s[:-1])
    assert float(np.sum(rec.e2e_s)) == pytest.approx(r.duration_s, rel=1e-12)


def test_concurrency_caps_a_scheduled_arrival_stream() -> None:
    w = tm.Workload(arrival_rate=200.0, num_requests=300, concurrency=3)
    r = tm.simulate(tm.Scenario(workload=w))
    scheduled = generate(w, 42).arrival_s
    rec = r.requests
    assert (rec.arrival_s >= scheduled).all() and (rec.arrival_s > scheduled).sum() > 100
    assert outstanding_at_arrivals(rec.arrival_s, rec.completion_s).max() == 3
    free = tm.simulate(tm.Scenario(workload=w.model_copy(update={"concurrency": None})))
    assert r.ttft_ms.p99 < free.ttft_ms.p99  # queueing moved to the clients


def test_offline_run_sends_everything_at_once() -> None:
    r = sim(arrival_rate=float("inf"), num_requests=300)
    assert (r.requests.arrival_s == 0).all() and r.num_finished == 300
    ttft = r.requests.ttft_s
    assert ttft.max() > 10 * ttft.min()  # the last ones queue behind the first 256 (max_num_seqs)


def test_more_clients_more_throughput_and_latency() -> None:
    few = sim(concurrency=2, num_requests=300)
    many = sim(concurrency=64, num_requests=300)
    assert many.request_throughput > 3 * few.request_throughput
    assert many.tpot_ms.mean > few.tpot_ms.mean


def test_classes_are_reported_with_slo_attainment() -> None:
    classes = [{"name": "chat", "share": 3, "slo_ttft_ms": 30.0, "slo_tpot_ms": 9.0},
               {"name": "batch", "share": 1, "priority": 1,
                "prompt": {"kind": "fixed", "mean": 3000}, "output": {"kind": "fixed", "mean": 64}}]
    r = sim(arrival_rate=15.0, duration_s=30.0, classes=classes)
    chat, batch = r.class_stats
    rec = r.requests
    assert chat.name == "chat" and batch.priority == 1
    assert chat.requests + batch.requests == r.num_requests
    np.testing.assert_array_equal(rec.priority, np.where(rec.class_id == 0, 0, 1))
    mine = (rec.class_id == 0) & rec.finished
    ok = mine & (rec.ttft_s * 1e3 <= 30.0) & ((rec.output_tokens <= 1) | (rec.tpot_s * 1e3 <= 9.0))
    assert chat.slo_attained == ok.sum() and chat.slo_attainment == ok.sum() / chat.arrived
    assert 0.0 < chat.slo_attainment < 1.0
    assert batch.slo_attainment is None
    assert batch.ttft_ms.p50 > chat.ttft_ms.p50  # 3000-token prompts take longer to prefill
    d = json.loads(r.to_json())
    assert [c["name"] for c in d["classes"]] == ["chat", "batch"]
    assert d["classes"][0]["slo_attainment"] == pytest.approx(chat.slo_attainment)
    text = to_text(r)
    assert "chat" in text and "SLO met" in text and f"{100 * chat.slo_attainment:.1f}%" in text
    assert "class_chat_slo_attainment" in to_csv(r).splitlines()[0]
    assert set(r.requests.columns()) >= {"class_id", "priority"}


def test_adjustments_reach_the_result() -> None:
    r = sim(num_requests=2000, arrival_rate=50.0, prompt={"mean": 512, "sigma": 1.0, "max": 1024})
    counts = r.workload_info.counts
    assert counts["prompt_lowered"] == int((r.requests.prompt_tokens == 1024).sum()) - \
        int((generate(tm.Workload(num_requests=2000, arrival_rate=50.0,
                                  prompt={"mean": 512, "sigma": 1.0}), 42).prompt_tokens == 1024).sum())
    assert "were lowered to it" in to_text(r)
    assert json.loads(r.to_json())["workload"]["counts"]["prompt_lowered"] == counts["prompt_lowered"]


def test_trace_replay_simulates_and_reports_skipped_rows(tmp_path) -> None:
    lines = (DATA / "azure2023_conv_head200.csv").read_text().splitlines()
    bad = tmp_path / "conv.csv"
    bad.write_text("\n".join(lines[:50] + ["2023-11-16 18:20:00.0,oops,3"] + lines[50:]) + "\n")
    r = sim(trace={"path": str(bad), "skip_bad_rows": True})
    assert r.num_requests == 200 and r.num_finished == 200  # 201 rows, one skipped
    assert r.workload_info.counts["skipped_bad"] == 1
    assert "skipped 1 malformed rows" in to_text(r) and "line 51" in to_text(r)
    assert json.loads(r.to_json())["workload"]["counts"]["skipped_bad"] == 1
    with pytest.raises(tm.ConfigError, match="line 51, field 'ContextTokens'"):
        sim(trace={"path": str(bad)})


def test_mooncake_replay_keeps_prefix_columns() -> None:
    w = tm.Workload(trace={"path": str(DATA / "mooncake_synthetic_head100.jsonl")})
    arrays = generate(w, 0)
    assert arrays.prefix_block_tokens == 512 and arrays.prefix_offsets.shape == (101,)
    sc = tm.Scenario(workload=w, scheduler=tm.SchedulerPolicy(max_batch_tokens=200_000))
    r = tm.simulate(sc)
    assert r.num_requests == 100
    assert r.num_finished + r.num_rejected == 100  # long prompts may exceed the KV cache


def test_closed_loop_replay_of_a_trace() -> None:
    w = tm.Workload(trace={"path": str(DATA / "azure2023_code_head300.csv"), "rate": float("inf")},
                    concurrency=8)
    r = tm.simulate(tm.Scenario(workload=w))
    assert r.num_finished == 300
    assert outstanding_at_arrivals(r.requests.arrival_s, r.requests.completion_s).max() == 8


def test_full_workload_determinism() -> None:
    w = tm.Workload(arrival_rate=30.0, duration_s=40.0, burstiness=2.0,
                    rate_profile={"kind": "diurnal", "amplitude": 0.5, "period_s": 20.0},
                    classes=[{"name": "a", "prompt": {"kind": "normal", "mean": 400, "sigma": 100}},
                             {"name": "b", "share": 0.5}])
    a = tm.simulate(tm.Scenario(workload=w, seed=9))
    b = tm.simulate(tm.Scenario(workload=w, seed=9))
    for name in ("arrival_s", "prompt_tokens", "output_tokens", "class_id", "completion_s"):
        np.testing.assert_array_equal(a.requests[name], b.requests[name])


def test_custom_arrays_in_a_closed_loop_scenario() -> None:
    arrays = tm.WorkloadArrays(arrival_s=np.zeros(6), prompt_tokens=np.full(6, 100, np.int32),
                               output_tokens=np.full(6, 10, np.int32),
                               class_id=np.array([0, 1, 0, 1, 0, 1], np.int32))
    sc = tm.Scenario(workload=tm.Workload(concurrency=2, num_requests=6))
    r = tm.simulate(sc, workload=arrays)
    assert r.num_finished == 6 and (r.requests.arrival_s[2:] > 0).all()
    assert [c.name for c in r.class_stats] == ["class 0", "class 1"]
    assert r.workload_info.source == "6 requests given as WorkloadArrays"
    assert r.requests.status.tolist() == [_core.STATUS_FINISHED] * 6
