"""Model architectures: exact parameter counts, KV bytes, FLOPs and the HF config rules."""

from __future__ import annotations

import pytest

from tokenmill import ConfigError
from tokenmill.architecture import (agrees_with_published, expected_experts_touched,
                                    parse_count)
from tokenmill.catalogue import find_model, model_presets
from tokenmill.hf_config import arch_from_hf_config

LLAMA = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
         "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
         "vocab_size": 128256, "hidden_act": "silu"}


@pytest.mark.parametrize("name", sorted(model_presets()))
def test_every_preset_matches_its_published_counts(name: str) -> None:
    m = model_presets()[name]
    p = m.published
    assert p is not None and p.source
    # Totals: within 1%, counting what the published total covers (Llama 4's vision tower).
    served = m.total_params() + p.non_text_params
    assert abs(served / p.total_value() - 1) <= 0.01, (served, p.total)
    if m.is_moe:
        assert p.active, f"{name}: an MoE preset needs its published active count"
        active = m.active_params(p.active_counts_input_embedding)
        assert agrees_with_published(active, p.active), (active, p.active)
        assert active < 0.5 * m.total_params()
    else:
        assert m.active_params(True) == m.total_params()


@pytest.mark.parametrize("name, total, active, counts_embedding", [
    ("llama-3.1-8b", 8.03e9, None, True),
    ("llama-3.1-70b", 70.6e9, None, True),
    ("mixtral-8x7b", 46.7e9, 12.9e9, True),
    ("deepseek-v3", 671e9, 36.6e9, False),
    ("gpt-oss-120b", 116.8e9, 5.13e9, False),
    ("gpt-oss-20b", 20.9e9, 3.61e9, False),
    ("mixtral-8x22b", 141e9, 39e9, True),
    ("qwen3-235b-a22b", 235e9, 22e9, True),
])
def test_headline_counts_within_one_percent(name, total, active, counts_embedding) -> None:
    m = find_model(name)
    assert m.total_params() == pytest.approx(total, rel=0.01)
    if active:
        assert m.active_params(counts_embedding) == pytest.approx(active, rel=0.01)


def test_exact_counts_by_hand() -> None:
    # Mixtral-8x7B, every term written out.
    h, L, V, inter = 4096, 32, 32000, 14336
    attn = h * 4096 * 2 + h * 1024 * 2
    expert = 3 * h * inter
    per_layer = attn + 8 * expert + 8 * h + 2 * h
    assert find_model("mixtral-8x7b").total_params() == L * per_layer + 2 * V * h + h
    active = L * (attn + 2 * expert + 8 * h + 2 * h) + V * h + h
    assert find_model("mixtral-8x7b").active_params() == active
    # DeepSeek-V3's attention block (MLA) and its MoE layer.
    ds = find_model("deepseek-v3")
    mla = 7168 * 1536 + 1536 + 1536 * 128 * 192 + 7168 * 576 + 512 + 512 * 128 * 256 + 128 * 128 * 7168
    moe = 257 * 3 * 7168 * 2048 + 256 * 7168 + 256
    dense = 3 * 7168 * 18432
    total = 61 * (mla + 2 * 7168) + 58 * moe + 3 * dense + 2 * 129280 * 7168 + 7168
    assert ds.total_params() == total


def test_parse_and_agree_with_published_figures() -> None:
    assert parse_count("8.03B") == (8.03e9, 3)
    assert parse_count("1026.5B") == (1026.5e9, 5)
    assert parse_count("17B") == (17e9, 2)
    assert agrees_with_published(17.17e9, "17B")       # stated to two digits
    assert agrees_with_published(3.353e9, "3.3B")      # Qwen cuts rather than rounds
    assert not agrees_with_published(16.14e9, "17B")
    assert not agrees_with_published(107.77e9, "109B")
    with pytest.raises(ValueError, match="must look like"):
        parse_count("about 7 billion")


def test_kv_bytes_per_token_by_hand() -> None:
    assert find_model("llama-3.1-70b").kv_bytes_per_token(1, 2.0) == 80 * 2 * 8 * 128 * 2
    assert find_model("qwen3-235b-a22b").kv_bytes_per_token(1, 2.0) == 94 * 2 * 4 * 128 * 2
    assert find_model("llama-2-7b").kv_bytes_per_token(1, 2.0) == 32 * 2 * 32 * 128 * 2
    ds = find_model("deepseek-v3")
    # MLA: latent 512 + rope key 64 per layer, shared by every head and replicated over TP.
    assert ds.kv_bytes_per_token(1, 2.0) == 61 * (512 + 64) * 2 == 70_272
    assert ds.kv_bytes_per_token(8, 1.0) == 61 * 576 == 35_136
    assert find_model("mixtral-8x7b").kv_bytes_per_token(4, 2.0) == 32 * 2 * 2 * 128 * 2


def test_windowed_layers_are_capped_at_their_window() -> None:
    oss = find_model("gpt-oss-120b")
    per_layer = 2 * 8 * 64 * 2  # K and V, 8 heads of 64, bf16
    assert oss.num_windowed_layers == 18 and oss.window == 128
    assert oss.kv_bytes_per_token(1, 2.0) == 36 * per_layer
    assert oss.kv_bytes_per_token_full(1, 2.0) == 18 * per_layer
    assert oss.kv_bytes_for_context(100, 1, 2.0) == 36 * 100 * per_layer
    assert oss.kv_bytes_for_context(8192, 1, 2.0) == 18 * (8192 + 128) * per_layer
    mistral = find_model("mistral-7b")  # v0.1: every layer slides over 4096 tokens
    assert mistral.kv_bytes_for_context(8192, 1, 2.0) == 32 * 4096 * 2 * 8 * 128 * 2
    scout = find_model("llama-4-scout")  # 3 of 4 layers chunked (8192), every 4th global
    assert scout.layer_attention[:4] == ("chunked", "chunked", "chunked", "full")
    per = 2 * 8 * 128 * 2
    assert scout.kv_bytes_for_context(10_000, 1, 2.0) == 12 * 10_000 * per + 36 * 1_808 * per


def test_attention_flops_at_a_context() -> None:
    m = find_model("llama-3.1-8b")
    assert m.attention_flops_per_token(1000) == 32 * 32 * 4 * 128 * 1000
    oss = find_model("gpt-oss-20b")
    pair = 64 * 4 * 64
    assert oss.attention_flops_per_token(1000) == pair * (12 * 1000 + 12 * 128)
    ds = find_model("deepseek-v3")  # decode attends in the latent: 2*(512+64) + 2*512 per head
    assert ds.attention_flops_per_token(10) == 61 * 128 * (2 * 576 + 2 * 512) * 10
    assert ds.attention_flops_per_token(10, decode=False) == 61 * 128 * (2 * 192 + 2 * 128) * 10
    assert m.flops_per_token(1000) == (m.matmul_flops_per_token(1) + m.lm_head_flops_per_token(1)
                                       + m.attention_flops_per_token(1000))


def test_moe_matmul_flops_use_active_experts_only() -> None:
    mx = find_model("mixtral-8x7b")
    linear = mx.active_params() - mx.vocab_size * mx.hidden_size  # no LM head
    norms_and_router = 32 * (2 * 4096 + 8 * 4096) + 4096
    router_flops = 2 * 4096 * 8 * 32
    assert mx.matmul_flops_per_token(1) == 2 * (linear - norms_and_router) + router_flops
    assert mx.matmul_flops_per_token(2) < mx.matmul_flops_per_token(1)


def test_expected_experts_touched() -> None:
    assert expected_experts_touched(8, 2, 1) == pytest.approx(2.0)
    assert expected_experts_touched(256, 8, 1) == pytest.approx(8.0)
    assert expected_experts_touched(256, 8, 10_000) == pytest.approx(256.0)
    assert expected_experts_touched(0, 0, 5) == 0.0
    assert 8 < expected_experts_touched(256, 8, 2) < 16


def test_hf_layer_rules() -> None:
    ds = find_model("deepseek-v3")
    assert ds.moe_layers == tuple(range(3, 61))
    mav = find_model("llama-4-maverick")
    assert mav.moe_layers == tuple(range(1, 48, 2)) and mav.intermediate_size == 16384
    q = arch_from_hf_config({**LLAMA, "model_type": "qwen3_moe", "num_experts": 16,
                             "num_experts_per_tok": 2, "moe_intermediate_size": 256,
                             "decoder_sparse_step": 2, "mlp_only_layers": [3]}, name="q")
    assert q.moe_layers == tuple(i for i in range(32) if (i + 1) % 2 == 0 and i != 3)
    qwen_sw = arch_from_hf_config({**LLAMA, "model_type": "qwen2", "use_sliding_window": True,
                                   "sliding_window": 4096, "max_window_layers": 28}, name="q2")
    assert qwen_sw.layer_attention.count("sliding") == 4 and qwen_sw.qkv_bias
    off = arch_from_hf_config({**LLAMA, "model_type": "qwen2", "use_sliding_window": False,
                               "sliding_window": 4096}, name="q2off")
    assert off.layer_attention == ()
    shared = arch_from_hf_config({**LLAMA, "model_type": "qwen2_moe", "num_experts": 60,
                                  "num_experts_per_tok": 4, "moe_intermediate_size": 1408,
                                  "shared_expert_intermediate_size": 5632}, name="qmoe")
    assert shared.shared_expert_gate and shared.shared_expert_intermediate_size == 5632
    oss = find_model("gpt-oss-120b")
    assert oss.attention_sinks and oss.qkv_bias and oss.o_bias and oss.mlp_bias and oss.router_bias
    assert find_model("qwen2.5-7b").qkv_bias and not find_model("qwen2.5-7b").o_bias
    assert find_model("qwen3-8b").qk_norm


@pytest.mark.parametrize("extra, needle", [
    ({"model_type": "jamba"}, "model_type 'jamba'"),
    ({"mamba_d_state": 16}, "state-space"),
    ({"layer_types": ["linear_attention"] * 32}, "'linear_attention' layers"),
    ({"is_encoder_decoder": True}, "encoder-decoder"),
    ({"model_type": "gemma2", "sliding_window": 4096}, "does not say which layers slide"),
    ({"num_local_experts": 8}, "without num_experts_per_tok"),
    ({"kv_lora_rank": 512}, "multi-head latent attention needs qk_rope_head_dim"),
    ({"layer_types": ["full_attention"] * 3}, "lists 3 layers"),
])
def test_unmodellable_configs_are_refused(extra, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        arch_from_hf_config({**LLAMA, **extra}, name="x")


def test_missing_fields_are_named() -> None:
    cfg = {k: v for k, v in LLAMA.items() if k not in ("vocab_size", "hidden_size")}
    with pytest.raises(ConfigError, match="lacks integer hidden_size, vocab_size"):
        arch_from_hf_config(cfg, name="x")
    with pytest.raises(ConfigError, match="lacks intermediate_size"):
        arch_from_hf_config({k: v for k, v in LLAMA.items() if k != "intermediate_size"}, name="x")


def test_parallel_splits() -> None:
    ds = find_model("deepseek-v3")
    ds.check_tensor_parallel(8)
    ds.check_expert_parallel(8, 8)
    with pytest.raises(ConfigError, match=r"must divide plan.tp = 4 .* valid with tp = 4: \[1, 2, 4\]"):
        ds.check_expert_parallel(4, 8)
    with pytest.raises(ConfigError, match="dense model; valid: 1"):
        find_model("llama-3.1-8b").check_expert_parallel(2, 2)
    m = find_model("llama-3.1-8b")
    # vLLM's split: 32 // 3 each, the remainder to the stages before the last.
    assert [len(m.stage_layers(3, s)) for s in range(3)] == [11, 11, 10]
    assert m.stage_layers(3, 2) == range(22, 32)
    with pytest.raises(ConfigError, match="plan.pp = 40"):
        m.stage_layers(40, 0)


def test_pipeline_stages_split_weights_exactly() -> None:
    m = find_model("llama-3.1-70b")
    whole = m.weight_bytes_per_chip(1, 2.0)
    stages = [m.weight_bytes_per_chip(1, 2.0, layers=m.stage_layers(4, s), first=s == 0,
                                      last=s == 3) for s in range(4)]
    assert sum(stages) == pytest.approx(whole, rel=1e-12)
    assert stages[0] > stages[1]  # the embedding lives on the first stage


def test_weight_bytes_follow_the_format() -> None:
    m = find_model("llama-3.1-8b")
    embed = 2 * 128256 * 4096
    other = 2 * (65 * 4096)  # norms
    linear = m.total_params() - embed - 65 * 4096
    assert m.total_weight_bytes(1.0) == linear * 1.0 + (embed * 2.0 + other)
    assert m.total_weight_bytes(0.5625, sparsity=0.5) == pytest.approx(
        linear * 0.5625 * 0.5 + embed * 2.0 + other)
