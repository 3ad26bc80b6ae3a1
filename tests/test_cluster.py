"""Clusters: the worked examples of docs/cluster.md, and the behaviour a planner relies on."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

import tokenmill as tm
from tokenmill import _core
from tokenmill.cluster import ROUTERS
from tokenmill.reference import simulate_reference
from tokenmill.workload import WorkloadArrays

from conftest import assert_same_outputs, unit_step_cost

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DOC = Path(__file__).resolve().parent.parent / "docs" / "cluster.md"


def doc_examples() -> list[dict]:
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    return [tomllib.loads(b)["example"] for b in blocks if "[example]" in b]


def run_example(ex: dict) -> dict:
    reqs = ex["requests"]
    arrays = (np.array([r["arrival"] for r in reqs], dtype=np.float64),
              np.array([r["prompt"] for r in reqs], dtype=np.int32),
              np.array([r["output"] for r in reqs], dtype=np.int32))
    unit = unit_step_cost()
    stages = ex.get("pipeline_stages", 1)
    kw = dict(num_replicas=ex.get("replicas", 1), pipeline_stages=stages,
              max_batch_tokens=ex.get("max_batch_tokens", 16), max_num_seqs=ex.get("max_num_seqs", 4),
              block_size=ex.get("block_size", 4), kv_capacity_blocks=ex.get("kv_capacity_blocks", 100),
              router=ROUTERS[ex.get("router", "round-robin")])
    kernel = dict(kw, cost=np.stack([unit.to_array()] * stages))
    ref = dict(kw, cost=[unit] * stages)
    if "decode" in ex:
        d = ex["decode"]
        split = dict(decode_replicas=d["replicas"], decode_max_batch_tokens=d["max_batch_tokens"],
                     decode_max_num_seqs=d["max_num_seqs"],
                     decode_kv_capacity_blocks=d["kv_capacity_blocks"],
                     kv_link_bytes_per_s=ex["kv_link_bytes_per_s"],
                     kv_link_latency_s=ex["kv_link_latency_s"],
                     kv_bytes_per_token=ex["kv_bytes_per_token"])
        kernel.update(split, decode_cost=unit.to_array())
        ref.update(split, decode_cost=unit)
    if "spec_tokens" in ex:
        spec = dict(spec_tokens=ex["spec_tokens"], spec_acceptance=np.array(ex["spec_acceptance"]))
        kernel.update(spec)
        ref.update(spec)
    out = _core.run(*arrays, **kernel)
    assert_same_outputs(out, simulate_reference(*arrays, check_invariants=True, **ref))
    return out


def test_the_document_covers_every_mechanism() -> None:
    titles = " ".join(ex["title"] for ex in doc_examples())
    for word in ("round-robin", "least-requests", "pipeline", "disaggregated", "speculation"):
        assert word in titles, word


@pytest.mark.parametrize("ex", doc_examples(), ids=lambda ex: ex["title"].split(":")[0])
def test_documented_example(ex: dict) -> None:
    out = run_example(ex)
    want = ex["expect"]
    np.testing.assert_array_equal(out["first_token_s"], want["first_token"])
    np.testing.assert_array_equal(out["completion_s"], want["completion"])
    if "replica" in want:
        np.testing.assert_array_equal(out["replica"], want["replica"])
    if "kv_ready" in want:
        np.testing.assert_array_equal(out["kv_ready_s"], want["kv_ready"])


# --- replicas and routing --------------------------------------------------------------------

def _wl(**kw) -> tm.Workload:
    return tm.Workload(**{"arrival_rate": 20.0, "duration_s": 120.0, **kw})


def test_two_replicas_at_twice_the_rate_behave_like_one() -> None:
    one = tm.simulate(tm.Scenario(workload=_wl()))
    two = tm.simulate(tm.Scenario(plan=tm.Plan(replicas=2), workload=_wl(arrival_rate=40.0),
                                  seed=7))
    assert two.request_throughput == pytest.approx(2 * one.request_throughput, rel=0.05)
    assert two.tpot_ms.mean == pytest.approx(one.tpot_ms.mean, rel=0.05)
    assert two.ttft_ms.p50 == pytest.approx(one.ttft_ms.p50, rel=0.15)
    per = [r.requests for r in two.cluster.replicas]
    assert abs(per[0] - per[1]) <= 1  # round robin
    assert two.cluster.chips == 2


def test_least_loaded_routing_beats_random_on_the_tail_under_bursty_load() -> None:
    wl = _wl(arrival_rate=45.0, arrival_process="gamma", burstiness=4.0, duration_s=200.0)
    plan = tm.Plan(replicas=4)
    rand = tm.simulate(tm.Scenario(plan=plan, workload=wl, router=tm.RouterConfig(name="random")))
    least = tm.simulate(tm.Scenario(plan=plan, workload=wl,
                                    router=tm.RouterConfig(name="least-requests")))
    two = tm.simulate(tm.Scenario(plan=plan, workload=wl,
                                  router=tm.RouterConfig(name="power-of-two")))
    assert least.e2e_ms.p99 < rand.e2e_ms.p99
    assert two.e2e_ms.p99 < rand.e2e_ms.p99


def _shared_prefix_workload(n: int = 600, families: int = 8, seed: int = 3) -> WorkloadArrays:
    rng = np.random.default_rng(seed)
    fam = rng.integers(0, families, n)
    ids = np.concatenate([[1000 * f + j for j in range(6)] + [10**6 + i]
                          for i, f in enumerate(fam)]).astype(np.int64)
    return WorkloadArrays(arrival_s=np.sort(rng.uniform(0, 60, n)),
                          prompt_tokens=np.full(n, 3584, dtype=np.int32),
                          output_tokens=np.full(n, 64, dtype=np.int32), prefix_ids=ids,
                          prefix_offsets=np.arange(0, 7 * n + 1, 7, dtype=np.int64),
                          prefix_block_tokens=512)


def test_prefix_affinity_raises_the_hit_rate() -> None:
    # 40 shared prefixes of 3,072 tokens; each replica's cache holds about ten of them.
    arrays = _shared_prefix_workload(families=40)
    base = dict(scheduler=tm.SchedulerPolicy(name="vllm", kv_blocks=2000), plan=tm.Plan(replicas=4))
    rr = tm.simulate(tm.Scenario(**base), workload=arrays)
    aff = tm.simulate(tm.Scenario(**base, router=tm.RouterConfig(name="prefix-affinity")),
                      workload=arrays)
    assert aff.prefix_hit_rate > rr.prefix_hit_rate + 0.3
    assert aff.ttft_ms.mean < 0.7 * rr.ttft_ms.mean
    assert min(x.requests for x in aff.cluster.replicas) > 100  # still spread over replicas


def test_least_tokens_router_and_per_replica_statistics() -> None:
    r = tm.simulate(tm.Scenario(plan=tm.Plan(replicas=3), workload=_wl(arrival_rate=30.0),
                                router=tm.RouterConfig(name="least-tokens")))
    assert len(r.cluster.replicas) == 3
    assert sum(x.requests for x in r.cluster.replicas) == r.num_requests
    assert all(0 < x.busy_fraction <= 1 for x in r.cluster.replicas)
    assert set(np.unique(r.requests.replica)) == {0, 1, 2}


def test_gpus_derive_the_plan() -> None:
    sc = tm.Scenario(model="llama-3.1-70b", plan=tm.Plan(gpus=8))
    assert (sc.plan.tp, sc.plan.replicas) == (4, 2)  # 70B in BF16 needs tp 4 on H100
    sc = tm.Scenario(model="llama-3.1-70b", plan=tm.Plan(gpus=8, tp=8))
    assert sc.plan.replicas == 1
    with pytest.raises(ValueError, match="not a multiple"):
        tm.Scenario(plan=tm.Plan(gpus=6, tp=4))


# --- pipeline parallelism ---------------------------------------------------------------------

def _single(**plan) -> tm.Result:
    one = WorkloadArrays(arrival_s=np.zeros(1), prompt_tokens=np.array([1024], np.int32),
                         output_tokens=np.array([64], np.int32))
    return tm.simulate(tm.Scenario(model="llama-3.1-70b", gpu="h200", plan=tm.Plan(**plan)),
                       workload=one)


def test_pipeline_parallelism_does_not_speed_up_a_single_request() -> None:
    tp4 = _single(tp=4)
    pp4 = _single(tp=1, pp=4)      # the same four chips
    tp2pp2 = _single(tp=2, pp=2)
    assert pp4.e2e_ms.mean > tp4.e2e_ms.mean
    assert tp2pp2.e2e_ms.mean > tp4.e2e_ms.mean
    # and one pipelined token crosses all stages: no faster than the whole model on one stage
    assert _single(tp=2, pp=2).tpot_ms.mean >= 0.95 * _single(tp=2, pp=1).tpot_ms.mean


def test_pipeline_parallelism_raises_throughput_not_speed() -> None:
    wl = tm.Workload(arrival_rate=float("inf"), num_requests=400,
                     prompt=tm.LengthDistribution(mean=128), output=tm.LengthDistribution(mean=512))
    sc = dict(model="llama-3.1-70b", gpu="h200", workload=wl,
              scheduler=tm.SchedulerPolicy(max_num_seqs=64))
    pp1 = tm.simulate(tm.Scenario(plan=tm.Plan(tp=2), **sc))
    pp2 = tm.simulate(tm.Scenario(plan=tm.Plan(tp=2, pp=2), **sc))
    assert pp2.output_token_throughput > 1.2 * pp1.output_token_throughput
    assert pp2.tpot_ms.mean >= pp1.tpot_ms.mean  # two micro-batches share the stages
    assert pp2.cluster.pools[0].busy_fraction < 0.95  # bubbles: the stages are not balanced


# --- disaggregation -----------------------------------------------------------------------

def _split(link_gbps: float | None = None, **pools) -> tm.Scenario:
    dis = tm.Disaggregation(prefill=tm.PoolPlan(replicas=2, tp=2), decode=tm.PoolPlan(replicas=1, tp=4),
                            kv_link_gbps=link_gbps, **pools)
    return tm.Scenario(disaggregation=dis, workload=_wl(arrival_rate=15.0, duration_s=60.0))


def test_no_request_decodes_before_its_kv_arrives() -> None:
    r = tm.simulate(_split())
    q = r.requests
    done = q.finished
    assert done.all()
    assert (q.kv_ready_s[done] >= q.arrival_s[done]).all()
    assert (q.first_token_s[done] > q.kv_ready_s[done]).all()  # the decode side emits it
    assert (q.decode_replica[done] >= 0).all()
    assert r.cluster.kv_transfer_ms.count == r.num_finished
    roles = [p.role for p in r.cluster.pools]
    assert roles == ["prefill", "decode"] and r.cluster.chips == 8


def test_a_slow_link_shows_up_in_ttft() -> None:
    fast = tm.simulate(_split(link_gbps=400.0))
    slow = tm.simulate(_split(link_gbps=0.5))
    assert slow.cluster.kv_transfer_ms.p50 > 20 * fast.cluster.kv_transfer_ms.p50
    assert slow.ttft_ms.p50 > fast.ttft_ms.p50 + 0.5 * slow.cluster.kv_transfer_ms.p50
    assert slow.cluster.kv_link_utilization > fast.cluster.kv_link_utilization


def test_pools_can_use_different_chips() -> None:
    dis = tm.Disaggregation(prefill=tm.PoolPlan(gpu="h200", tp=2, replicas=2),
                            decode=tm.PoolPlan(gpu="h100", tp=4))
    r = tm.simulate(tm.Scenario(disaggregation=dis, workload=_wl(duration_s=20.0)))
    assert [p.gpu for p in r.cluster.pools] == ["h200", "h100"]
    assert r.num_finished == r.num_requests


# --- speculative decoding ------------------------------------------------------------------

@pytest.mark.parametrize("k, a", [(1, 0.5), (3, 0.7), (4, 0.9)])
def test_tokens_per_step_average_the_geometric_formula(k: int, a: float) -> None:
    spec = tm.SpeculativeDecoding(tokens=k, acceptance_rate=a)
    r = tm.simulate(tm.Scenario(speculative=spec, workload=_wl(arrival_rate=5.0, duration_s=200.0,
                                                               output=tm.LengthDistribution(mean=400))))
    expected = (1 - a ** (k + 1)) / (1 - a)
    assert spec.expected_tokens_per_step() == pytest.approx(expected)
    assert r.cluster.spec_tokens_per_step == pytest.approx(expected, rel=0.05)


def test_zero_acceptance_is_slower_than_no_speculation() -> None:
    wl = _wl(arrival_rate=10.0, duration_s=60.0)
    plain = tm.simulate(tm.Scenario(workload=wl))
    useless = tm.simulate(tm.Scenario(workload=wl, speculative=tm.SpeculativeDecoding(
        tokens=3, acceptance_rate=0.0)))
    good = tm.simulate(tm.Scenario(workload=wl, speculative=tm.SpeculativeDecoding(
        tokens=3, acceptance_rate=0.8)))
    assert useless.tpot_ms.mean > plain.tpot_ms.mean
    assert good.tpot_ms.mean < plain.tpot_ms.mean
    assert useless.memory.kv_capacity_blocks == plain.memory.kv_capacity_blocks  # same fit object
    assert useless.cluster.spec_tokens_per_step == 1.0 or useless.cluster.spec_tokens_per_step == pytest.approx(1.0)


def test_mtp_heads_and_the_original_flags(capsys) -> None:
    import json

    from tokenmill.cli import main

    code = main(["run", "--mtp-heads", "2", "--duration", "10", "--output", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["scenario"]["speculative"]["method"] == "mtp"
    assert out["scenario"]["speculative"]["acceptance_rate"] == 0.9
    code = main(["run", "--spec-tokens", "3", "--spec-acceptance-rate", "0.6", "--draft-model",
                 "llama-3.2-1b", "--duration", "10", "--output", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["cluster"]["spec_tokens_per_step"] > 1.5
    code = main(["run", "--disaggregate", "--prefill-replicas", "2", "--decode-replicas", "1",
                 "--prefill-tp", "2", "--decode-tp", "4", "--internode-bw-gbps", "200",
                 "--duration", "10", "--output", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["scenario"]["disaggregation"]["kv_link_gbps"] == 200.0
    assert [p["role"] for p in out["cluster"]["pools"]] == ["prefill", "decode"]
    code = main(["run", "--replicas", "2", "--router", "power-of-two", "--duration", "10",
                 "--output", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["cluster"]["router"] == "power-of-two"


def test_draft_memory_is_accounted() -> None:
    base = tm.simulate(tm.Scenario(workload=_wl(duration_s=5.0)))
    spec = tm.simulate(tm.Scenario(workload=_wl(duration_s=5.0),
                                   speculative=tm.SpeculativeDecoding(tokens=2)))
    kernel_blocks = lambda r: r.cluster.replicas  # noqa: E731
    assert kernel_blocks(spec) and kernel_blocks(base)
    assert spec.kv_peak_blocks >= 0
    from tokenmill.cluster import build_cluster
    plain = build_cluster(tm.Scenario()).entry.kv_capacity_blocks
    with_draft = build_cluster(tm.Scenario(speculative=tm.SpeculativeDecoding(tokens=2))).entry.kv_capacity_blocks
    assert with_draft < plain  # the 1B draft's weights and KV come out of the same memory


@pytest.mark.parametrize("kwargs, needle", [
    (dict(plan=tm.Plan(pp=2), speculative=tm.SpeculativeDecoding(tokens=2)), "pipeline"),
    (dict(router=tm.RouterConfig(name="prefix-affinity")), "prefix caching"),
    (dict(disaggregation=tm.Disaggregation(), scheduler=tm.SchedulerPolicy(name="static")), "static"),
    (dict(disaggregation=tm.Disaggregation(), plan=tm.Plan(replicas=2)), "replicas per pool"),
    (dict(model="gpt-oss-120b", plan=tm.Plan(tp=4), speculative=tm.SpeculativeDecoding(tokens=2)),
     "no default draft model"),
])
def test_cluster_configurations_that_are_refused(kwargs, needle) -> None:
    with pytest.raises((ValueError, tm.ConfigError), match=needle):
        tm.simulate(tm.Scenario(**kwargs))


# ---- pricing of stages and expert parallelism (the per-operator model, cluster side) ----------

def _stage_rows(pp: int, **kw):
    from tokenmill.cluster import stage_coefficients
    from tokenmill.costparams import CostModelParams
    from tokenmill.precision import Precision

    return stage_coefficients(tm.find_model("llama-3.1-70b"), tm.find_gpu("h100"), Precision(), 4,
                              pp, CostModelParams(), fabric=tm.find_fabric("ndr-400"), **kw)


def test_pipeline_stages_split_the_work_and_pay_the_per_step_costs_once() -> None:
    from tokenmill.costmodel import StepShape, step_seconds

    whole, = _stage_rows(1)
    stages = _stage_rows(4)
    # layers split 20/20/20/20: weights and KV per stage add up to the whole replica's
    assert sum(s.weight_bytes for s in stages) == pytest.approx(whole.weight_bytes, rel=1e-9)
    assert sum(s.kv_bytes_per_token for s in stages) == pytest.approx(whole.kv_bytes_per_token)
    # scheduling on the first stage only, sampling on the last only, the LM head on the last
    assert [s.overhead_decode_s > 0 for s in stages] == [True, False, False, False]
    assert [s.overhead_per_token_s > 0 for s in stages] == [False, False, False, True]
    assert [s.lm_head_weight_bytes > 0 for s in stages] == [False, False, False, True]
    # every stage but the last sends on; 4 stages x tp 4 = 16 chips span two 8-GPU domains,
    # so the send from stage 1 to stage 2 crosses the fabric and costs more than NVLink sends
    sends = [s.send_per_token_s for s in stages]
    assert sends[3] == 0.0 and sends[1] > sends[0] == sends[2] > 0.0
    # a decode step over the four stages costs at least the whole replica's step
    shape = StepShape(decode_tokens=32, logit_tokens=32, decode_context=32 * 1024)
    assert sum(step_seconds(s, shape) for s in stages) >= step_seconds(whole, shape)


def test_whole_step_kernel_tables_are_refused_for_pipeline_stages() -> None:
    table = tm.KernelTable.parse("gpu,model,op,batch_size,seq_len,latency_ms\n"
                                 "h100,llama-3.1-70b,decode,1,512,30.0\n"
                                 "h100,llama-3.1-70b,decode,64,512,40.0\n")
    assert _stage_rows(1, kernel_table=table)[0].kt_decode_nb > 0
    with pytest.raises(tm.ConfigError, match="whole-step rows.*pp = 2"):
        _stage_rows(2, kernel_table=table)


def test_expert_parallelism_trades_all_reduces_for_all_to_alls() -> None:
    def run(ep: int) -> tm.Result:
        return tm.simulate(tm.Scenario(model="mixtral-8x7b", gpu="h100", plan=tm.Plan(tp=4, ep=ep),
                                       workload=tm.Workload(arrival_rate=5, num_requests=50)))
    from tokenmill.cluster import build_cluster

    tp_only = build_cluster(tm.Scenario(model="mixtral-8x7b", plan=tm.Plan(tp=4))).entry.costs[0]
    ep4 = build_cluster(tm.Scenario(model="mixtral-8x7b", plan=tm.Plan(tp=4, ep=4))).entry.costs[0]
    assert tp_only.a2a_fixed_s == 0.0 and ep4.a2a_fixed_s > 0.0
    assert ep4.ar_ring_fixed_s < tp_only.ar_ring_fixed_s  # attention still all-reduces
    a, b = run(1), run(4)
    assert a.num_finished == b.num_finished == 50
    assert a.tpot_ms.mean != b.tpot_ms.mean


def test_pools_follow_the_scenarios_plan_unless_told_otherwise() -> None:
    from tokenmill.cluster import build_cluster

    def pools(**dis):
        sc = tm.Scenario(model="llama-3.1-70b", plan=tm.Plan(tp=4, pp=2),
                         disaggregation=tm.Disaggregation(**dis))
        return [(p.role, p.tp, p.pp) for p in build_cluster(sc).pools]

    assert pools() == [("prefill", 4, 2), ("decode", 4, 2)]
    assert pools(decode=tm.PoolPlan(tp=8, pp=1)) == [("prefill", 4, 2), ("decode", 8, 1)]
