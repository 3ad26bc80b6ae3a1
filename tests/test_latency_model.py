"""The per-operator step cost: exact C/Python agreement, shapes of the efficiency curves,
per-stage coefficients, collectives, and the vectorised formula used for fitting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tokenmill import _core
from tokenmill.catalogue import find_fabric, find_gpu, find_model
from tokenmill.collectives import all_reduce, fabric_link, scale_up_link
from tokenmill.costmodel import (CostCoefficients, StepShape, coefficients, gemm_efficiency,
                                 gpu_seconds, stage_coefficients, step_seconds)
from tokenmill.costparams import CostModelParams
from tokenmill.operators import stage_operators
from tokenmill.precision import Precision
from tokenmill.steptimes import StepShapes, step_seconds_array

CASES = [("llama-3.1-8b", "h100", Precision(), 1, 1),
         ("llama-3.1-70b", "a100", Precision(), 4, 1),
         ("mixtral-8x7b", "h100", Precision(), 2, 2),
         ("deepseek-v3", "h200", Precision(weights="fp8"), 8, 8),
         ("gpt-oss-120b", "h100", Precision(weights="mxfp4"), 1, 1),
         ("llama-3.1-70b", "b200", Precision(weights="nvfp4", activations="fp4", sparsity="2:4"), 2, 1)]


def _random_shapes(rng: np.random.Generator, n: int) -> list[tuple[float, ...]]:
    out = []
    for _ in range(n):
        p = float(rng.integers(0, 9000)) if rng.random() < 0.6 else 0.0
        d = float(rng.integers(0 if p else 1, 600))
        x = float(rng.integers(0, 20000)) if p and rng.random() < 0.4 else 0.0
        pairs = p * x + p * (p + 1) / 2 if p else 0.0
        logits = float(rng.integers(0, 4)) + d
        out.append((p, pairs, x, logits, d, d * float(rng.integers(1, 8000))))
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-tp{c[3]}-ep{c[4]}")
def test_compiled_price_equals_python_twin_bit_for_bit(case) -> None:
    model, gpu, precision, tp, ep = case
    c = coefficients(find_model(model), find_gpu(gpu), precision, tp,
                     CostModelParams(per_sequence_overhead_us=20.0, cuda_graphs=tp % 2 == 0), ep=ep)
    arr = c.to_array()
    for args in _random_shapes(np.random.default_rng(3), 400):
        assert _core.step_time(arr, *args) == step_seconds(c, StepShape(*args))


def test_every_pipeline_stage_prices_identically_in_c_and_python() -> None:
    fabric = find_fabric("ndr-400")
    stages = stage_coefficients(find_model("llama-3.1-405b"), find_gpu("h100"), Precision(weights="fp8",
                                activations="fp8"), 8, 4, CostModelParams(), fabric=fabric)
    assert len(stages) == 4
    for c in stages:
        arr = c.to_array()
        for args in _random_shapes(np.random.default_rng(5), 100):
            assert _core.step_time(arr, *args) == step_seconds(c, StepShape(*args))


def test_vectorised_formula_matches_the_scalar_twin() -> None:
    for model, gpu, precision, tp, ep in CASES:
        c = coefficients(find_model(model), find_gpu(gpu), precision, tp, CostModelParams(), ep=ep)
        shapes = _random_shapes(np.random.default_rng(7), 300)
        cols = StepShapes(*(np.array(col, dtype=np.float64) for col in zip(*shapes)))
        got = step_seconds_array(c, cols)
        want = np.array([step_seconds(c, StepShape(*s)) for s in shapes])
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=model)


def test_gemm_efficiency_rises_with_rows_towards_its_ceiling() -> None:
    p = CostModelParams(compute_efficiency=0.8, gemm_half_rows=128.0)
    rows = [1, 2, 8, 64, 128, 512, 4096, 65536]
    eff = [gemm_efficiency(m, p) for m in rows]
    assert all(a < b for a, b in zip(eff, eff[1:]))
    assert gemm_efficiency(128, p) == pytest.approx(0.4)
    assert eff[-1] < 0.8 and eff[-1] > 0.79


def test_time_per_token_falls_with_batch_and_step_time_grows_with_it() -> None:
    c = coefficients(find_model("llama-3.1-8b"), find_gpu("h100"), Precision(), 1, CostModelParams())
    steps = [gpu_seconds(c, StepShape(prefill_tokens=t, prefill_pairs=t, prefill_context=0,
                                      logit_tokens=1)) for t in (1, 16, 256, 4096, 16384)]
    assert all(a < b for a, b in zip(steps, steps[1:]))
    per_token = [s / t for s, t in zip(steps, (1, 16, 256, 4096, 16384))]
    assert all(a > b for a, b in zip(per_token, per_token[1:]))
    # a single decode is bandwidth-bound: the weights' bytes at the achieved bandwidth dominate
    one = gpu_seconds(c, StepShape(decode_tokens=1, logit_tokens=1, decode_context=100))
    assert one > c.weight_bytes / c.bytes_per_s


def test_stages_split_the_weights_and_only_the_edges_hold_embedding_and_head() -> None:
    model, hw, prec = find_model("llama-3.1-70b"), find_gpu("h100"), Precision()
    whole = stage_operators(model, prec, 4)
    parts = [stage_operators(model, prec, 4, layers=model.stage_layers(4, s), first=s == 0,
                             last=s == 3) for s in range(4)]
    assert sum(p.layers for p in parts) == whole.layers == 80
    assert sum(p.weight_bytes for p in parts) == pytest.approx(whole.weight_bytes)
    assert [p.lm_head.weight_bytes > 0 for p in parts] == [False, False, False, True]
    with pytest.raises(ValueError, match="fabric"):  # stages 1 and 2 sit in different nodes
        stage_coefficients(model, hw, prec, 4, 4, CostModelParams())
    stages = stage_coefficients(model, hw, prec, 4, 4, CostModelParams(), fabric=find_fabric("ndr-400"))
    assert [c.send_fixed_s > 0 for c in stages] == [True, True, True, False]
    assert stages[1].send_per_token_s > stages[0].send_per_token_s  # over the fabric
    # defaults unchanged for callers: one stage of everything is the plain coefficients
    assert stage_coefficients(model, hw, prec, 4, 1, CostModelParams())[0] == \
        coefficients(model, hw, prec, 4, CostModelParams())


def test_tree_wins_small_messages_ring_large_and_the_fabric_is_slower() -> None:
    hw = find_gpu("h100")
    link = scale_up_link(hw, 0.8)
    ring, tree = all_reduce(8, 16384.0, 8, link, None, 5e-6)
    small = lambda a: a.fixed_s + a.per_token_s * 1  # noqa: E731
    large = lambda a: a.fixed_s + a.per_token_s * 8192  # noqa: E731
    assert small(tree) < small(ring) and large(ring) < large(tree)
    inter = fabric_link(find_fabric("ndr-400"), 0.8)
    ring16, _ = all_reduce(16, 16384.0, 8, link, inter, 5e-6)
    assert large(ring16) > large(ring)
    with pytest.raises(ValueError, match="fabric"):
        all_reduce(16, 16384.0, 8, link, None, 5e-6)


def test_expert_parallelism_swaps_moe_all_reduces_for_all_to_alls() -> None:
    model, hw = find_model("mixtral-8x7b"), find_gpu("h100")
    tp_only = coefficients(model, hw, Precision(), 8, CostModelParams())
    with_ep = coefficients(model, hw, Precision(), 8, CostModelParams(), ep=8)
    assert tp_only.a2a_fixed_s == 0.0 and with_ep.a2a_fixed_s > 0.0
    assert with_ep.ar_ring_fixed_s == pytest.approx(tp_only.ar_ring_fixed_s / 2)  # 32 of 64 left
    assert with_ep.expert_bytes == tp_only.expert_bytes  # same bytes per touched expert per chip


def test_compiled_chips_pay_no_kernel_floor_or_launch() -> None:
    for chip in ("groq-lpu-v1", "cerebras-cs3", "tpu-v6e"):
        c = coefficients(find_model("llama-3.2-1b"), find_gpu(chip), Precision(), 1, CostModelParams())
        assert c.kernel_fixed_s == c.prefill_launch_floor_s == c.decode_launch_floor_s == 0.0
    gpu = coefficients(find_model("llama-3.2-1b"), find_gpu("h100"), Precision(), 1, CostModelParams())
    assert gpu.kernel_fixed_s > 0.0 and gpu.prefill_launch_floor_s > 0.0


def test_eager_steps_take_at_least_their_launch_floor() -> None:
    p = CostModelParams(launch_us=200.0, cuda_graphs=True, graph_max_batch=8)
    c = coefficients(find_model("llama-3.2-1b"), find_gpu("h100"), Precision(), 1, p)
    small = StepShape(decode_tokens=4, logit_tokens=4, decode_context=40)
    big = StepShape(decode_tokens=16, logit_tokens=16, decode_context=160)
    assert step_seconds(c, small) < c.decode_launch_floor_s  # captured graph: no launch floor
    framework = c.overhead_decode_s + c.overhead_per_token_s * 16
    assert step_seconds(c, big) == pytest.approx(framework + c.decode_launch_floor_s)


def test_legacy_step_overhead_sets_both_overheads() -> None:
    p = CostModelParams(step_overhead_ms=3.0)
    assert p.prefill_step_overhead_ms == p.decode_step_overhead_ms == 3.0
    q = CostModelParams(step_overhead_ms=3.0, decode_step_overhead_ms=1.0)
    assert (q.prefill_step_overhead_ms, q.decode_step_overhead_ms) == (3.0, 1.0)
    with pytest.raises(ValueError, match="compute_efficiency"):
        CostModelParams(compute_efficiency=1.5)


def test_expert_spread_limits_the_experts_a_step_touches() -> None:
    model, hw = find_model("mixtral-8x7b"), find_gpu("h100")
    uniform = coefficients(model, hw, Precision(), 2, CostModelParams())
    skewed = coefficients(model, hw, Precision(), 2, CostModelParams(expert_spread=0.5))
    assert (uniform.num_experts, skewed.num_experts) == (8.0, 4.0)
    big = StepShape(decode_tokens=64, logit_tokens=64, decode_context=6400)
    assert step_seconds(skewed, big) < step_seconds(uniform, big)


def test_fixed_cost_coefficients_make_every_step_one_unit() -> None:
    c = CostCoefficients.fixed(1.0)
    for args in _random_shapes(np.random.default_rng(11), 50):
        assert step_seconds(c, StepShape(*args)) == 1.0 == _core.step_time(c.to_array(), *args)
    assert math.isclose(c.to_array().shape[0], len(_core.COST_FIELDS))
