"""Read a Hugging Face config.json into a ModelArch, refusing what tokenmill cannot price.

Why a separate module: config.json files describe the same ideas under different keys per
model family (experts are `num_local_experts`, `n_routed_experts` or `num_experts`; which
layers are MoE is `first_k_dense_replace`, `decoder_sparse_step`/`mlp_only_layers`,
`interleave_moe_layer_step` or `moe_layers`; windows are `sliding_window`, `layer_types` or
Llama 4's chunked attention). This module knows those spellings, following the layer rules of
the transformers implementations, and turns them into one explicit description. Anything that
would be mis-priced (state-space or linear-attention layers, encoder-decoders, cross-attention,
configs that do not say which layers slide) is refused with the key that gave it away.
"""

from __future__ import annotations

from typing import Any, Optional

from .architecture import AttentionKind, ModelArch, PublishedSize
from .errors import ConfigError

# Keys that mark layer types tokenmill does not model.
_UNSUPPORTED_KEYS = {
    "mamba_d_state": "state-space (Mamba) layers",
    "ssm_state_size": "state-space layers",
    "attn_layer_period": "hybrid attention/state-space layers (Jamba)",
    "layers_block_type": "hybrid layer blocks",
    "hybrid_override_pattern": "hybrid Mamba/attention layers (Nemotron-H)",
    "block_types": "recurrent blocks (RecurrentGemma)",
    "linear_num_value_heads": "linear-attention layers (Qwen3-Next)",
    "cross_attention_layers": "cross-attention layers (Llama 3.2 Vision)",
    "ffn_config": "a nested FFN config (DBRX)",
}
_UNSUPPORTED_TYPES = {
    "mamba", "mamba2", "jamba", "falcon_h1", "nemotron_h", "qwen3_next", "recurrent_gemma",
    "rwkv", "mllama", "t5", "bart", "whisper", "dbrx", "bert",
}
_LAYER_TYPES: dict[str, AttentionKind] = {
    "full_attention": "full", "sliding_attention": "sliding", "chunked_attention": "chunked",
}
# Families whose config may slide only some layers without listing them in layer_types.
_NEEDS_LAYER_TYPES = {"gemma2", "gemma3", "gemma3_text", "cohere2"}
_GATED_ACTS = {"silu", "swiglu", "gelu_pytorch_tanh", "geglu", "gelu"}


def _refuse(name: str, why: str) -> ConfigError:
    return ConfigError(f"model {name!r}: {why}; tokenmill refuses it rather than mis-price it")


def _flatten(config: dict[str, Any]) -> dict[str, Any]:
    """Multimodal configs keep the language model under text_config: serve that."""
    if isinstance(config.get("text_config"), dict):
        outer = {k: v for k, v in config.items() if k in ("architectures", "tie_word_embeddings",
                                                           "quantization_config")}
        return {**outer, **config["text_config"]}
    return config


def _moe_layers(c: dict[str, Any], num_layers: int, mtype: str) -> tuple[int, ...]:
    """Indices of the MoE layers, by each family's rule (transformers' modelling code)."""
    if isinstance(c.get("moe_layers"), list):
        return tuple(int(i) for i in c["moe_layers"])
    if mtype.startswith("llama4") or "interleave_moe_layer_step" in c:
        step = int(c.get("interleave_moe_layer_step") or 1)
        return tuple(range(step - 1, num_layers, step))
    if "first_k_dense_replace" in c or "moe_layer_freq" in c:
        first = int(c.get("first_k_dense_replace") or 0)
        freq = int(c.get("moe_layer_freq") or 1)
        return tuple(i for i in range(num_layers) if i >= first and i % freq == 0)
    if "decoder_sparse_step" in c or "mlp_only_layers" in c:
        step = int(c.get("decoder_sparse_step") or 1)
        dense = set(c.get("mlp_only_layers") or [])
        return tuple(i for i in range(num_layers) if i not in dense and (i + 1) % step == 0)
    return tuple(range(num_layers))


def _layer_attention(c: dict[str, Any], num_layers: int, mtype: str,
                     name: str) -> tuple[tuple[AttentionKind, ...], Optional[int], Optional[int]]:
    """(per-layer attention kinds, sliding_window, attention_chunk_size)."""
    window = c.get("sliding_window")
    chunk = c.get("attention_chunk_size")
    if isinstance(c.get("layer_types"), list):
        kinds: list[AttentionKind] = []
        for t in c["layer_types"]:
            if t not in _LAYER_TYPES:
                raise _refuse(name, f"layer_types holds {t!r} layers (known: "
                                    f"{', '.join(_LAYER_TYPES)})")
            kinds.append(_LAYER_TYPES[t])
        if len(kinds) != num_layers:
            raise ConfigError(f"model {name!r}: layer_types lists {len(kinds)} layers but "
                              f"num_hidden_layers is {num_layers}")
        return (tuple(kinds) if set(kinds) != {"full"} else ()), window, chunk
    if mtype in _NEEDS_LAYER_TYPES and window:
        raise _refuse(name, f"a {mtype} config with sliding_window = {window} but no layer_types "
                            "does not say which layers slide")
    if mtype.startswith("llama4"):
        if not chunk:
            return (), None, None
        rope = c.get("no_rope_layers") or [int((i + 1) % 4 != 0) for i in range(num_layers)]
        return tuple("chunked" if r else "full" for r in rope), None, int(chunk)
    if "use_sliding_window" in c:  # Qwen2-style: off unless asked, then from max_window_layers
        if not c["use_sliding_window"] or not window:
            return (), None, None
        first = int(c.get("max_window_layers") or 0)
        slide: AttentionKind = "sliding"
        full: AttentionKind = "full"
        return tuple(slide if i >= first else full for i in range(num_layers)), int(window), None
    if window and (not c.get("max_position_embeddings") or window < c["max_position_embeddings"]):
        slide_all: AttentionKind = "sliding"
        return (slide_all,) * num_layers, int(window), None
    return (), None, None


def _checkpoint_format(c: dict[str, Any]) -> Optional[str]:
    q = c.get("quantization_config")
    if isinstance(q, dict):
        method = str(q.get("quant_method", "")).lower()
        if method in ("fp8", "mxfp4"):
            return method
        if method in ("awq", "gptq"):
            return "int4"
        return method or None
    return {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(str(c.get("torch_dtype")))


def arch_from_hf_config(config: dict[str, Any], *, name: str, **meta: Any) -> ModelArch:
    """A ModelArch from a config.json dictionary; `meta` fills the descriptive fields
    (hf_id, aliases, source, provenance, notes, published)."""
    if not isinstance(config, dict):
        raise ConfigError(f"model {name!r}: config must be a JSON object")
    c = _flatten(config)
    mtype = str(c.get("model_type") or c.get("text_model_type") or "").lower()
    if mtype in _UNSUPPORTED_TYPES:
        raise _refuse(name, f"model_type {mtype!r} is not a decoder-only transformer tokenmill models")
    if c.get("is_encoder_decoder"):
        raise _refuse(name, "encoder-decoder models (is_encoder_decoder = true) are not modelled")
    for key, what in _UNSUPPORTED_KEYS.items():
        if c.get(key) is not None:
            raise _refuse(name, f"{what} ({key} = {c[key]!r}) are not modelled")
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    missing = [k for k in required if not isinstance(c.get(k), int) or isinstance(c.get(k), bool)]
    if missing:
        raise ConfigError(f"model {name!r}: config.json lacks integer {', '.join(missing)} "
                          f"(needed: {', '.join(required)})")
    h, L, heads = c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"]

    experts = int(c.get("num_local_experts") or c.get("n_routed_experts") or c.get("num_experts") or 0)
    moe: dict[str, Any] = {}
    dense_width = c.get("intermediate_size_mlp") if mtype.startswith("llama4") else c.get("intermediate_size")
    if experts:
        k = c.get("num_experts_per_tok") or c.get("experts_per_token")
        if not k:
            raise _refuse(name, f"an MoE config ({experts} experts) without num_experts_per_tok")
        expert_width = c.get("moe_intermediate_size") or c.get("intermediate_size")
        if not expert_width:
            raise ConfigError(f"model {name!r}: MoE config lacks moe_intermediate_size")
        shared = 0
        if c.get("n_shared_experts"):
            shared = int(c["n_shared_experts"]) * int(expert_width)
        elif c.get("shared_expert_intermediate_size"):
            shared = int(c["shared_expert_intermediate_size"])
        elif mtype.startswith("llama4"):
            shared = int(c["intermediate_size"])  # one shared expert as wide as a routed one
        moe = dict(
            num_experts=experts, experts_per_token=int(k), moe_intermediate_size=int(expert_width),
            shared_expert_intermediate_size=shared,
            shared_expert_gate=bool(c.get("shared_expert_intermediate_size")) and mtype == "qwen2_moe",
            router_bias=mtype == "gpt_oss" or c.get("topk_method") == "noaux_tc",
            moe_layers=_moe_layers(c, L, mtype))
        if len(moe["moe_layers"]) < L and not dense_width:
            raise ConfigError(f"model {name!r}: dense layers need intermediate_size")
    elif not dense_width:
        raise ConfigError(f"model {name!r}: config.json lacks intermediate_size")

    mla: dict[str, Any] = {}
    if c.get("kv_lora_rank"):
        need = ("qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
        lacking = [key for key in need if not c.get(key)]
        if lacking:
            raise ConfigError(f"model {name!r}: multi-head latent attention needs {', '.join(lacking)}")
        mla = {key: int(c[key]) for key in need}
        mla["kv_lora_rank"] = int(c["kv_lora_rank"])
        mla["q_lora_rank"] = int(c["q_lora_rank"]) if c.get("q_lora_rank") else None
        head_dim = mla["qk_nope_head_dim"] + mla["qk_rope_head_dim"]
        kv_heads = heads
    else:
        head_dim = c.get("head_dim") or h // heads
        kv_heads = c.get("num_key_value_heads") or heads

    kinds, window, chunk = _layer_attention(c, L, mtype, name)
    qwen2 = mtype in ("qwen2", "qwen2_moe")
    attention_bias = bool(c.get("attention_bias", False))
    published = meta.pop("published", None)
    return ModelArch(
        name=name,
        published=PublishedSize.model_validate(published) if isinstance(published, dict) else published,
        checkpoint_format=_checkpoint_format(c),
        hidden_size=h, num_layers=L, vocab_size=c["vocab_size"],
        tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
        max_position_embeddings=c.get("max_position_embeddings"),
        num_attention_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
        qkv_bias=qwen2 or attention_bias, o_bias=attention_bias and not qwen2,
        qk_norm=mtype in ("qwen3", "qwen3_moe"), attention_sinks=mtype == "gpt_oss",
        layer_attention=kinds, sliding_window=window if "sliding" in kinds else None,
        attention_chunk_size=chunk if "chunked" in kinds else None,
        intermediate_size=int(dense_width or 0),
        gated_mlp=bool(experts) or c.get("hidden_act", "silu") in _GATED_ACTS,
        mlp_bias=bool(c.get("mlp_bias", False)) or mtype == "gpt_oss",
        **mla, **moe, **meta)
