"""Results: TTFT breakdown, goodput, steady-state window, load, time series, energy and cost."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tokenmill as tm
from tokenmill.catalogue import find_gpu
from tokenmill.errors import ConfigError
from tokenmill.power import chip_power_w
from tokenmill.results_config import PowerModel
from tokenmill.timeseries import auto_resolution


def _wl(**kw) -> tm.Workload:
    return tm.Workload(**{"arrival_rate": 20.0, "num_requests": 400, **kw})


SCENARIOS = {
    "unified": dict(),
    "chunked with preemptions": dict(scheduler=tm.SchedulerPolicy(name="vllm", kv_blocks=120)),
    "pipeline": dict(model="llama-3.1-70b", plan=tm.Plan(tp=4, pp=2)),
    "disaggregated": dict(disaggregation=tm.Disaggregation(
        prefill=tm.PoolPlan(replicas=1), decode=tm.PoolPlan(replicas=1))),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_ttft_parts_add_up_to_ttft(name: str) -> None:
    r = tm.simulate(tm.Scenario(workload=_wl(arrival_rate=40.0), **SCENARIOS[name]))
    rec = r.requests
    done = rec.finished
    parts = (rec.ttft_queue_s + rec.ttft_prefill_s + rec.ttft_recompute_s + rec.ttft_kv_transfer_s
             + rec.ttft_other_s)
    np.testing.assert_allclose(parts[done], rec.ttft_s[done], rtol=0, atol=1e-12)
    for col in (rec.ttft_queue_s, rec.ttft_prefill_s, rec.ttft_recompute_s,
                rec.ttft_kv_transfer_s, rec.ttft_other_s):
        assert (col[done] >= -1e-9).all()
    assert (rec.ttft_prefill_s[done] > 0).all()
    if name == "disaggregated":
        assert (rec.ttft_kv_transfer_s[done] > 0).all()
    else:
        assert (rec.ttft_kv_transfer_s[done] == 0).all()
    if name == "chunked with preemptions":
        assert r.preemptions > 0
    assert set(r.ttft_breakdown_ms) == {"queue", "prefill", "recompute", "kv_transfer", "other"}
    assert math.isclose(sum(r.ttft_breakdown_ms.values()), r.ttft_ms.mean, rel_tol=1e-9)


def test_prefill_work_discarded_by_preemption_is_its_own_ttft_part() -> None:
    # Sarathi with a KV cache too small for its chunked prefills preempts requests whose
    # prompts are half done; the discarded chunks' time is the recompute part of their TTFT.
    r = tm.simulate(tm.Scenario(
        workload=_wl(arrival_rate=40.0, prompt=tm.LengthDistribution(mean=1500.0)),
        scheduler=tm.SchedulerPolicy(name="sarathi", kv_blocks=200)))
    rec = r.requests
    done = rec.finished
    lost = rec.ttft_recompute_s[done]
    assert (lost > 0).sum() >= 20
    assert (rec.preemptions[done][lost > 0] > 0).all()     # only preempted requests lose work
    assert (lost[rec.preemptions[done] == 0] == 0).all()
    assert r.ttft_breakdown_ms["recompute"] > 0
    # without the preemptions (a cache that holds everything) nothing is discarded
    roomy = tm.simulate(tm.Scenario(
        workload=_wl(arrival_rate=40.0, prompt=tm.LengthDistribution(mean=1500.0)),
        scheduler=tm.SchedulerPolicy(name="sarathi")))
    assert roomy.preemptions == 0 and roomy.ttft_breakdown_ms["recompute"] == 0


def test_goodput_counts_requests_within_every_objective() -> None:
    base = tm.Scenario(workload=_wl())
    r = tm.simulate(base)
    ttft = np.sort(r.requests.ttft_s[r.requests.finished]) * 1e3
    cut = float(ttft[len(ttft) // 2])
    loose = tm.simulate(base.model_copy(update={"metrics": tm.MetricsConfig(slo_ttft_ms=1e9, slo_tpot_ms=1e9)}))
    assert loose.goodput.met == loose.num_finished and loose.goodput.attainment == 1.0
    assert math.isclose(loose.goodput.goodput_rps, loose.num_finished / loose.duration_s)
    half = tm.simulate(base.model_copy(update={"metrics": tm.MetricsConfig(slo_ttft_ms=cut)}))
    assert half.goodput.met == int((ttft <= cut).sum())
    tight = tm.simulate(base.model_copy(update={"metrics": tm.MetricsConfig(slo_tpot_ms=1e-3)}))
    one_token = int((tight.requests.output_tokens[tight.requests.finished] <= 1).sum())
    assert tight.goodput.met == one_token  # a one-token output meets any TPOT objective (vLLM)
    assert r.goodput is None


def test_class_slos_judge_their_class_and_the_scenario_slo_the_rest() -> None:
    classes = (tm.RequestClass(name="chat", share=1.0, slo_ttft_ms=1e-3),
               tm.RequestClass(name="batch", share=1.0))
    r = tm.simulate(tm.Scenario(workload=_wl(classes=classes),
                                metrics=tm.MetricsConfig(slo_ttft_ms=1e9)))
    by_name = {c.name: c for c in r.goodput.classes}
    assert by_name["chat"].met == 0 and by_name["chat"].slo_ttft_ms == 1e-3
    assert by_name["batch"].attainment == 1.0 and by_name["batch"].slo_ttft_ms == 1e9
    assert r.goodput.met == by_name["batch"].met


def test_warmup_and_cooldown_define_the_measured_window() -> None:
    r = tm.simulate(tm.Scenario(workload=_wl(num_requests=None, duration_s=30.0),
                                metrics=tm.MetricsConfig(warmup_s=5.0, cooldown_s=5.0,
                                                         slo_ttft_ms=1e9)))
    arr = r.requests.arrival_s
    inside = (arr >= 5.0) & (arr <= arr.max() - 5.0)
    st = r.steady
    assert st.measured == int(inside.sum()) and st.start_s == 5.0
    assert math.isclose(st.end_s, float(arr.max()) - 5.0)
    assert st.ttft_ms.count == st.finished == int((inside & r.requests.finished).sum())
    assert math.isclose(st.request_throughput, st.finished / (st.end_s - st.start_s))
    assert r.goodput.measured == st.measured
    assert st.mean_queue is not None and st.mean_running > 0
    assert tm.simulate(tm.Scenario(workload=_wl())).steady is None


def test_an_empty_window_is_refused_naming_the_fields() -> None:
    with pytest.raises(ConfigError, match="warmup_s"):
        tm.simulate(tm.Scenario(workload=_wl(num_requests=50), metrics=tm.MetricsConfig(warmup_s=1e6)))


def test_unfinished_requests_are_reported_not_dropped() -> None:
    r = tm.simulate(tm.Scenario(workload=_wl(arrival_rate=200.0, num_requests=3000), stop_time_s=5.0))
    assert r.num_unfinished > 0
    assert r.to_dict()["requests"]["unfinished"] == r.num_unfinished


def test_time_series_resolution_and_fields() -> None:
    assert auto_resolution(np.array([0.0, 60.0])) == 0.2
    assert auto_resolution(np.array([0.0, 50_000.0])) == 100.0
    assert auto_resolution(np.array([0.0])) == 1.0
    r = tm.simulate(tm.Scenario(workload=_wl(), plan=tm.Plan(replicas=2)))
    ts = r.timeseries
    assert ts.dt_s == auto_resolution(r.requests.arrival_s)
    assert ts.queue.shape == ts.power_w.shape == (len(ts.start_s), 2)
    assert ((ts.kv_utilization >= 0) & (ts.kv_utilization <= 1)).all()
    assert ((ts.busy >= 0) & (ts.busy <= 1 + 1e-9)).all()
    assert math.isclose(ts.length_s.sum(), r.duration_s)
    off = tm.simulate(tm.Scenario(workload=_wl(), metrics=tm.MetricsConfig(timeseries_resolution_s=0.0)))
    assert off.timeseries is None and off.load.mean_queue is None
    assert r.load.mean_running > 0 and r.load.preemptions == r.preemptions


def test_power_model_known_points() -> None:
    h100 = find_gpu("h100")
    m = PowerModel()
    assert chip_power_w(h100, m, 0, 0, 0) == h100.idle_w
    assert math.isclose(chip_power_w(h100, m, 1, 1, 0), h100.tdp_w)  # compute-bound: TDP
    assert chip_power_w(h100, m, 1, 1, 1) == h100.tdp_w               # capped
    assert h100.idle_w < chip_power_w(h100, m, 1, 0, 1) < h100.tdp_w


def test_every_chip_draws_power_idle_ones_included() -> None:
    one = tm.WorkloadArrays(arrival_s=np.array([0.0]), prompt_tokens=np.array([500], dtype=np.int32),
                            output_tokens=np.array([200], dtype=np.int32))
    sc = tm.Scenario(plan=tm.Plan(replicas=3, tp=2), metrics=tm.MetricsConfig(timeseries_resolution_s=0.0))
    r = tm.simulate(sc, workload=one)
    h100 = find_gpu("h100")
    e = r.energy
    busy_replica_floor = 2 * h100.idle_w * r.duration_s
    idle_replicas = 2 * 2 * h100.idle_w * r.duration_s  # two replicas of tp=2 that got nothing
    assert e.pools[0].chips == 6
    assert e.energy_kj * 1e3 > busy_replica_floor + idle_replicas
    assert e.energy_kj * 1e3 < 2 * h100.tdp_w * r.duration_s + idle_replicas
    assert math.isclose(e.mean_power_kw, e.energy_kj / r.duration_s)
    assert math.isclose(e.joules_per_request, e.energy_kj * 1e3)
    assert math.isclose(e.joules_per_output_token, e.energy_kj * 1e3 / 200)


def test_energy_from_the_series_matches_the_totals_and_pue_scales_it() -> None:
    sc = tm.Scenario(workload=_wl())
    with_ts = tm.simulate(sc).energy.energy_kj
    totals = tm.simulate(sc.model_copy(update={"metrics": tm.MetricsConfig(timeseries_resolution_s=0.0)})).energy.energy_kj
    assert math.isclose(with_ts, totals, rel_tol=0.02)
    pue = tm.simulate(sc.model_copy(update={"power": tm.PowerModel(pue=1.5)})).energy
    assert math.isclose(pue.energy_kj, 1.5 * with_ts, rel_tol=1e-12) and pue.pue == 1.5


def test_cost_is_chip_hours_at_their_prices() -> None:
    r = tm.simulate(tm.Scenario(workload=_wl(), plan=tm.Plan(tp=2)))
    h100 = find_gpu("h100")
    c = r.spend
    assert math.isclose(c.cost_usd, 2 * h100.price_per_hour_usd * r.duration_s / 3600)
    out = int(r.requests.output_tokens[r.requests.finished].sum())
    assert math.isclose(c.usd_per_million_output_tokens, c.cost_usd / out * 1e6)
    assert math.isclose(c.usd_per_request, c.cost_usd / r.num_finished)
    cheap = tm.simulate(tm.Scenario(workload=_wl(), pricing=tm.Pricing(price_per_hour_usd=1.0)))
    assert math.isclose(cheap.spend.cost_usd, cheap.duration_s / 3600)


def test_disaggregated_pools_have_their_own_prices_and_power() -> None:
    sc = tm.Scenario(workload=_wl(), disaggregation=tm.Disaggregation(
        prefill=tm.PoolPlan(replicas=1, gpu="h200"), decode=tm.PoolPlan(replicas=2)),
        pricing=tm.Pricing(prefill_price_per_hour_usd=10.0, decode_price_per_hour_usd=1.0))
    r = tm.simulate(sc)
    pre, dec = r.spend.pools
    assert (pre.role, pre.gpu, pre.price_per_chip_hour_usd) == ("prefill", "h200", 10.0)
    assert (dec.chips, dec.price_per_chip_hour_usd) == (2, 1.0)
    assert math.isclose(r.spend.cost_usd, (10.0 + 2.0) * r.duration_s / 3600)
    assert [p.role for p in r.energy.pools] == ["prefill", "decode"]
    assert math.isclose(sum(p.energy_kj for p in r.energy.pools), r.energy.energy_kj)


def test_price_overrides_are_one_or_per_pool() -> None:
    with pytest.raises(ValueError, match="not both"):
        tm.Pricing(price_per_hour_usd=1.0, decode_price_per_hour_usd=2.0)


def test_unknown_price_leaves_cost_unknown() -> None:
    chip = find_gpu("h100").model_copy(update={"price_per_hour_usd": None, "name": "my-chip"})
    r = tm.simulate(tm.Scenario(gpu=chip, workload=_wl(num_requests=50)))
    assert r.spend.cost_usd is None and r.spend.usd_per_request is None
    from tokenmill.report import to_text

    assert "cost       unknown: no price per chip-hour for my-chip" in to_text(r)


def test_latency_std_is_numpys_and_itl_std_is_close() -> None:
    r = tm.simulate(tm.Scenario(workload=_wl()))
    ttft = r.requests.ttft_s[r.requests.finished] * 1e3
    assert math.isclose(r.ttft_ms.std, float(np.std(ttft)), rel_tol=1e-12)
    assert r.itl_ms.std > 0 and math.isfinite(r.itl_ms.std) and r.ttft_ms.median == r.ttft_ms.p50
