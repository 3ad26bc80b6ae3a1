"""Step cost of MoE, MLA and windowed models: the terms, and exact C/Python agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tokenmill import _core
from tokenmill.architecture import expected_experts_touched
from tokenmill.catalogue import find_gpu, find_model
from tokenmill.costmodel import (CostCoefficients, StepShape, coefficients, decode_seconds,
                                 step_seconds)
from tokenmill.precision import Precision
from tokenmill.reference import simulate_reference
from tokenmill.scenario import CostModelParams

from conftest import run_kwargs

CASES = [("mixtral-8x7b", "h100", Precision(), 2),
         ("deepseek-v3", "h200", Precision(weights="fp8"), 8),
         ("gpt-oss-120b", "h100", Precision(weights="mxfp4"), 1),
         ("llama-4-scout", "h100", Precision(weights="fp8", activations="fp8"), 4),
         ("qwen3-30b-a3b", "b200", Precision(weights="nvfp4", activations="fp4", sparsity="2:4"), 1),
         ("mistral-7b", "l40s", Precision(kv_cache="fp8"), 1)]


def _cost(model: str, gpu: str, precision: Precision, tp: int) -> CostCoefficients:
    return coefficients(find_model(model), find_gpu(gpu), precision, tp, CostModelParams())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_compiled_price_matches_python_twin_exactly(case) -> None:
    c = _cost(*case)
    arr = c.to_array()
    rng = np.random.default_rng(1)
    for _ in range(300):
        args = [float(x) for x in rng.integers(0, 20_000, 6)]
        if rng.random() < 0.3:
            args[4] = float(rng.integers(0, 4))  # few tokens: the expert term is far from saturated
            args[0] = 0.0
        assert _core.step_time(arr, *args) == step_seconds(c, StepShape(*args))


def test_dense_full_attention_models_have_no_new_terms() -> None:
    c = _cost("llama-3.1-8b", "h100", Precision(), 1)
    assert (c.expert_bytes, c.num_experts, c.expert_miss) == (0.0, 0.0, 1.0)
    assert c.flops_per_decode_pair_extra == c.flops_per_window_pair == c.window_tokens == 0.0
    assert c.kv_window_bytes_per_token == 0.0


def test_moe_weight_reads_follow_distinct_experts() -> None:
    m = find_model("mixtral-8x7b")
    c = _cost("mixtral-8x7b", "h100", Precision(), 2)
    assert c.num_experts == 8 and c.expert_miss == 1 - 2 / 8
    assert c.expert_bytes == m.expert_bytes_per_chip(2, 2.0) == 32 * 3 * 4096 * 14336 * 2 / 2
    # One decode reads 2 experts per layer, a big batch all 8, on top of the always-read weights.
    def weight_read(tokens: int) -> float:
        return c.weight_bytes + c.expert_bytes * expected_experts_touched(8, 2, tokens)
    assert weight_read(1) == pytest.approx(c.weight_bytes + 2 * c.expert_bytes)
    assert weight_read(512) == pytest.approx(c.weight_bytes + 8 * c.expert_bytes)
    full = m.weight_bytes_per_chip(2, 2.0, first=False)
    # All the stored weights but the norms' (read by the element-wise kernels, 0.001%).
    assert c.weight_bytes + 8 * c.expert_bytes == pytest.approx(full, rel=1e-4)
    # Memory-bound decode: a batch of 1 costs less than a batch of 64 reading every expert.
    assert decode_seconds(c, 1, 600) < decode_seconds(c, 64, 64 * 600)
    # Active-parameter FLOPs, not total.
    assert c.flops_per_token == m.matmul_flops_per_token(2)
    assert c.flops_per_token < 2 * m.total_params() / 2 / 3


def test_mla_prices_latent_kv_and_absorbed_decode() -> None:
    c = _cost("deepseek-v3", "h200", Precision(weights="fp8"), 8)
    assert c.kv_bytes_per_token == 61 * 576 * 2
    heads = 128 / 8
    assert c.flops_per_attn_pair == 61 * heads * 2 * (192 + 128)
    assert c.flops_per_decode_pair_extra == 61 * heads * 2 * (2 * 512 + 64) - c.flops_per_attn_pair
    base = step_seconds(c, StepShape(decode_tokens=1, logit_tokens=1, decode_context=1000))
    nomla = step_seconds(CostCoefficients(**{**c.__dict__, "flops_per_decode_pair_extra": 0.0}),
                         StepShape(decode_tokens=1, logit_tokens=1, decode_context=1000))
    assert base >= nomla


def test_windowed_layers_cap_reads_and_pairs() -> None:
    c = _cost("gpt-oss-120b", "h100", Precision(weights="mxfp4"), 1)
    assert c.window_tokens == 128
    assert c.kv_window_bytes_per_token == c.kv_bytes_per_token == 18 * 2 * 8 * 64 * 2
    assert c.flops_per_window_pair == c.flops_per_attn_pair
    long = StepShape(decode_tokens=4, logit_tokens=4, decode_context=4 * 50_000)
    short_window = CostCoefficients(**{**c.__dict__, "window_tokens": 1e12})
    # With the cap, the windowed half reads 4 x 128 tokens, not 200k.
    assert step_seconds(c, long) < step_seconds(short_window, long)


def test_fp8_and_fp4_tiers_and_bytes() -> None:
    bf16 = _cost("llama-3.1-70b", "b200", Precision(), 4)
    fp8 = _cost("llama-3.1-70b", "b200", Precision(weights="fp8", activations="fp8"), 4)
    fp4 = _cost("llama-3.1-70b", "b200", Precision(weights="nvfp4", activations="fp4"), 4)
    assert fp8.flops_per_s == 2 * bf16.flops_per_s and fp4.flops_per_s == 4 * bf16.flops_per_s
    assert fp8.weight_bytes < 0.55 * bf16.weight_bytes
    assert fp4.weight_bytes < fp8.weight_bytes
    w4a16 = _cost("llama-3.1-70b", "h100", Precision(weights="int4"), 4)
    assert w4a16.flops_per_s == bf16.flops_per_s * 989.4 / 2250


def test_kernel_matches_reference_on_an_moe_mla_model() -> None:
    c = _cost("deepseek-v3", "h200", Precision(weights="fp8"), 8)
    rng = np.random.default_rng(7)
    n = 40
    arrival = np.cumsum(rng.exponential(0.05, n))
    prompt = rng.integers(1, 400, n).astype(np.int32)
    output = rng.integers(1, 80, n).astype(np.int32)
    kw = run_kwargs(max_batch_tokens=512, max_num_seqs=16, kv_capacity_blocks=120)
    a = _core.run(arrival, prompt, output, c.to_array(), **kw)
    b = simulate_reference(arrival, prompt, output, c, **kw)
    for name in ("first_token_s", "completion_s", "status", "preemptions"):
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert a["end_time_s"] == b["end_time_s"] and math.isfinite(a["end_time_s"])
