"""Built-in presets: sourced figures, exact derived quantities, and the memory fit."""

from __future__ import annotations

import json

import pytest

from tokenmill import ConfigError
from tokenmill.architecture import ModelArch
from tokenmill.catalogue import find_gpu, find_model, gpu_presets, model_presets
from tokenmill.hardware import GIB, Hardware
from tokenmill.memory import plan_memory
from tokenmill.scenario import Precision, SchedulerPolicy

@pytest.mark.parametrize("name", sorted(gpu_presets()))
def test_every_chip_figure_has_a_source(name: str) -> None:
    hw = gpu_presets()[name]
    figures = [k for k, v in hw.model_dump().items() if isinstance(v, (int, float))]
    assert "memory_gib" in figures and "sparsity_2_4" in figures
    for field in figures:
        assert hw.sources.get(field), f"{name}.{field} has no source"
    for field in hw.estimates:
        assert field in Hardware.model_fields and "estimate" in hw.sources[field].lower()


@pytest.mark.parametrize("name", sorted(model_presets()))
def test_every_model_has_a_source_and_matches_its_published_size(name: str) -> None:
    model = model_presets()[name]
    assert model.source and model.source.startswith("https://")
    assert model.published is not None and model.published.source
    served = model.total_params() + model.published.non_text_params
    assert served == pytest.approx(model.published.total_value(), rel=0.01)


def test_llama_3_1_8b_exact_figures() -> None:
    m = find_model("llama-3.1-8b")
    assert m.total_params() == 8_030_261_248  # the Hub's safetensors parameter count
    # 32 layers x (K and V) x 8 KV heads x 128 dims x 2 bytes
    assert m.kv_bytes_per_token(1, 2.0) == 32 * 2 * 8 * 128 * 2 == 131_072
    assert m.kv_bytes_per_token(2, 2.0) == 65_536
    assert m.kv_bytes_per_token(16, 2.0) == 32 * 2 * 1 * 128 * 2  # heads replicated past 8
    assert m.weight_bytes_per_chip(1, 2.0) == pytest.approx(14.96 * GIB, rel=1e-3)


def test_aliases_resolve_to_the_same_preset() -> None:
    assert find_model("llama-8b") is find_model("Llama-3.1-8B")
    assert find_gpu("h100-sxm") is find_gpu("H100")


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="known models: .*llama-3.1-8b \\(also llama-8b"):
        find_model("gpt-17")
    with pytest.raises(ConfigError, match="known gpus: .*h100 \\(also h100-sxm"):
        find_gpu("tpu-v99")


def test_memory_fit_reproduces_vllms_budget_for_llama3_8b_on_h100() -> None:
    # vLLM PR #10511: 79.22 GiB x 0.90 = 71.29 GiB; weights 14.96 GiB, non-torch 1.79 GiB,
    # activation peak 1.26 GiB, leaving 53.29 GiB of KV cache.
    fit = plan_memory(find_model("llama-3.1-8b"), find_gpu("h100"), Precision(), 1, SchedulerPolicy())
    assert fit.usable_bytes / GIB == pytest.approx(71.29, abs=0.01)
    assert fit.activation_reserve_bytes / GIB == pytest.approx(1.26, rel=0.02)
    assert fit.kv_bytes_available / GIB == pytest.approx(53.29, rel=0.005)
    assert fit.kv_capacity_blocks == int(fit.kv_bytes_available // (131_072 * 16))


def test_model_that_does_not_fit_names_need_and_smallest_tp(tmp_path) -> None:
    small = find_gpu("h100").model_copy(update={"name": "h100-16g", "memory_gib": 16.0})
    m = find_model("llama-3.1-8b")
    with pytest.raises(ConfigError) as err:
        plan_memory(m, small, Precision(), 1, SchedulerPolicy())
    text = str(err.value)
    assert "does not fit on 1 x h100-16g" in text and "GiB" in text
    assert "smallest tensor-parallel degree that fits is tp = 2" in text


def test_hf_config_file_is_accepted_and_a_hybrid_is_refused(tmp_path) -> None:
    cfg = {"architectures": ["MistralForCausalLM"], "hidden_size": 4096, "num_hidden_layers": 32,
           "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
           "vocab_size": 32000, "tie_word_embeddings": False, "hidden_act": "silu"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    m = find_model(str(path))
    assert m.total_params() == pytest.approx(7.24e9, rel=0.01)  # Mistral-7B: 7.24B
    moe = tmp_path / "moe.json"
    moe.write_text(json.dumps({**cfg, "num_local_experts": 8, "num_experts_per_tok": 2}))
    assert find_model(str(moe)).total_params() == pytest.approx(46.7e9, rel=0.01)  # Mixtral
    hybrid = tmp_path / "jamba.json"
    hybrid.write_text(json.dumps({**cfg, "attn_layer_period": 8, "attn_layer_offset": 4}))
    with pytest.raises(ConfigError, match="attn_layer_period = 8"):
        find_model(str(hybrid))


def test_head_split_must_be_even() -> None:
    m = find_model("llama-3.1-8b")
    with pytest.raises(ConfigError, match="valid: \\[1, 2, 4, 8, 16, 32\\]"):
        m.check_tensor_parallel(3)
    with pytest.raises(ValueError):
        ModelArch(name="x", hidden_size=64, num_layers=1, num_attention_heads=6, num_kv_heads=4,
                  head_dim=8, intermediate_size=64, vocab_size=10)
