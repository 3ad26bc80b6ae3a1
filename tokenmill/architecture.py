"""Model architectures described by the fields of a Hugging Face config.json.

Everything the simulator needs about a model (parameter counts, weight bytes, KV bytes per
token, FLOPs per token) is derived here exactly from those fields, per chip of a tensor-parallel
group. Dense decoder-only transformers (Llama, Mistral, Qwen) are supported; mixture-of-experts
and multi-head latent attention are refused with a clear error rather than mis-modelled.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field, PositiveInt, model_validator

from ._validation import NameTuple, StrictModel
from .errors import ConfigError

DTYPE_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0}

# Keys that mark an architecture the dense model below would price wrongly.
_MOE_KEYS = ("num_local_experts", "n_routed_experts", "num_experts", "moe_intermediate_size")
_MLA_KEYS = ("kv_lora_rank", "q_lora_rank")


class ModelArch(StrictModel):
    """A dense decoder-only transformer, in Hugging Face config.json terms."""

    name: str = Field(description="Preset name, lower case (e.g. 'llama-3.1-8b').")
    hf_id: Optional[str] = Field(default=None, description="Hugging Face repository id.")
    aliases: NameTuple = Field(default=(), description="Other names accepted for this model.")
    source: Optional[str] = Field(default=None, description="Where the architecture figures come from.")
    hidden_size: PositiveInt = Field(description="Width of the residual stream (hidden_size).")
    num_layers: PositiveInt = Field(description="Transformer blocks (num_hidden_layers).")
    num_attention_heads: PositiveInt = Field(description="Query heads per layer.")
    num_kv_heads: PositiveInt = Field(description="Key/value heads per layer (GQA when fewer than query heads).")
    head_dim: PositiveInt = Field(description="Width of one attention head.")
    intermediate_size: PositiveInt = Field(description="Width of the MLP's hidden layer.")
    vocab_size: PositiveInt = Field(description="Vocabulary size (rows of the embedding and LM head).")
    tie_word_embeddings: bool = Field(default=False, description="LM head shares the embedding matrix.")
    gated_mlp: bool = Field(default=True, description="SwiGLU-style MLP with gate, up and down matrices.")
    attention_bias: bool = Field(default=False, description="Q, K and V projections carry biases (Qwen2).")
    max_position_embeddings: Optional[PositiveInt] = Field(
        default=None, description="Longest context the model was trained for, tokens.")
    published_params: Optional[float] = Field(
        default=None, description="Parameter count the model's authors publish, for cross-checks.")

    @model_validator(mode="after")
    def _check_heads(self) -> "ModelArch":
        if self.num_attention_heads % self.num_kv_heads != 0:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})")
        return self

    # ---- parameter counts (whole model) --------------------------------------------------

    @property
    def q_width(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.num_kv_heads * self.head_dim

    def attention_params_per_layer(self) -> int:
        h = self.hidden_size
        params = h * self.q_width + 2 * h * self.kv_width + self.q_width * h
        if self.attention_bias:
            params += self.q_width + 2 * self.kv_width
        return params

    def mlp_params_per_layer(self) -> int:
        return (3 if self.gated_mlp else 2) * self.hidden_size * self.intermediate_size

    def norm_params(self) -> int:
        return (2 * self.num_layers + 1) * self.hidden_size

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    def total_params(self) -> int:
        per_layer = self.attention_params_per_layer() + self.mlp_params_per_layer()
        return (self.num_layers * per_layer + self.norm_params() + self.embedding_params()
                + self.lm_head_params())

    # ---- per chip of a tensor-parallel group -----------------------------------------------

    def check_tensor_parallel(self, tp: int) -> None:
        """Refuse a TP degree the attention heads cannot be split over (as vLLM does)."""
        if self.num_attention_heads % tp != 0:
            raise ConfigError(
                f"plan.tp = {tp} does not divide {self.name}'s {self.num_attention_heads} "
                f"attention heads; valid: {valid_tp_degrees(self)}")
        if self.num_kv_heads % tp != 0 and tp % self.num_kv_heads != 0:
            raise ConfigError(
                f"plan.tp = {tp} neither divides nor is a multiple of {self.name}'s "
                f"{self.num_kv_heads} KV heads; valid: {valid_tp_degrees(self)}")

    def kv_heads_per_chip(self, tp: int) -> int:
        """KV heads each chip stores; heads are replicated when TP exceeds their number."""
        return max(1, self.num_kv_heads // tp)

    def linear_params_per_chip(self, tp: int) -> float:
        """Projection and MLP weights one chip holds and multiplies by every token."""
        h = self.hidden_size
        hd = self.head_dim
        q = self.num_attention_heads // tp * hd
        kv = self.kv_heads_per_chip(tp) * hd
        attn = h * q + 2 * h * kv + q * h
        if self.attention_bias:
            attn += q + 2 * kv
        mlp = self.mlp_params_per_layer() / tp
        return self.num_layers * (attn + mlp)

    def weight_bytes_per_chip(self, tp: int, weight_bytes: float) -> float:
        """Bytes of weights one chip stores: linear layers and vocab-parallel embeddings split,
        norms replicated. Quantised weights use `weight_bytes` per element for the matmuls;
        embeddings, LM head and norms stay 16-bit, as the common FP8 checkpoints keep them."""
        vocab = (self.embedding_params() + self.lm_head_params()) / tp
        return self.linear_params_per_chip(tp) * weight_bytes + (vocab + self.norm_params()) * 2.0

    def weight_bytes_read_per_step(self, tp: int, weight_bytes: float) -> float:
        """Weights one chip streams from memory in a forward pass: all but the embedding table,
        of which only the rows of the step's tokens are read."""
        lm_head = self.vocab_size * self.hidden_size / tp
        return self.linear_params_per_chip(tp) * weight_bytes + (lm_head + self.norm_params()) * 2.0

    def kv_bytes_per_token(self, tp: int, kv_bytes: float) -> float:
        """KV-cache bytes one chip stores per token: K and V for its heads in every layer."""
        return self.num_layers * 2 * self.kv_heads_per_chip(tp) * self.head_dim * kv_bytes

    def matmul_flops_per_token(self, tp: int) -> float:
        """Multiply-add FLOPs of the projections and MLP for one token on one chip."""
        return 2.0 * self.linear_params_per_chip(tp)

    def lm_head_flops_per_token(self, tp: int) -> float:
        return 2.0 * self.vocab_size * self.hidden_size / tp

    def attention_flops_per_pair(self, tp: int) -> float:
        """FLOPs for one (query, key) pair in all layers on one chip: QK^T and PV."""
        return 4.0 * self.num_layers * (self.num_attention_heads // tp) * self.head_dim

    def activation_bytes_per_token(self, tp: int, act_bytes: float) -> float:
        """Activation traffic per token on one chip: each intermediate tensor of a layer is
        written by one kernel and read by the next (hidden in/out of attention and MLP, QKV,
        attention output, gate/up, activation), so counted twice."""
        h = self.hidden_size
        q = self.num_attention_heads // tp * self.head_dim
        kv = self.kv_heads_per_chip(tp) * self.head_dim
        inter = self.intermediate_size / tp
        mlp_hidden = (2 * inter if self.gated_mlp else inter) + inter
        per_layer = 4 * h + (q + 2 * kv) + q + mlp_hidden
        return self.num_layers * 2.0 * per_layer * act_bytes

    @classmethod
    def from_hf_config(cls, config: dict[str, Any], *, name: str, hf_id: Optional[str] = None,
                       aliases: tuple[str, ...] = (), source: Optional[str] = None,
                       published_params: Optional[float] = None) -> "ModelArch":
        """Read the architecture from a Hugging Face config.json dictionary."""
        if "text_config" in config:
            config = {**config["text_config"], **{k: v for k, v in config.items() if k == "architectures"}}
        for key in _MOE_KEYS:
            if config.get(key):
                raise ConfigError(
                    f"model {name!r}: mixture-of-experts configs ({key} = {config[key]!r}) are not "
                    "supported yet; tokenmill prices dense decoder-only transformers only")
        for key in _MLA_KEYS:
            if config.get(key):
                raise ConfigError(
                    f"model {name!r}: multi-head latent attention ({key} = {config[key]!r}) is not "
                    "supported yet; tokenmill prices dense decoder-only transformers only")
        required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "vocab_size")
        missing = [k for k in required if k not in config]
        if missing:
            raise ConfigError(f"model {name!r}: config.json lacks {', '.join(missing)}")
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        arch = (config.get("architectures") or [""])[0]
        # Llama, Mistral, Qwen and Gemma use gated MLPs with these activations.
        gated = config.get("hidden_act", "silu") in ("silu", "swiglu", "gelu_pytorch_tanh")
        return cls(
            name=name,
            hf_id=hf_id,
            aliases=aliases,
            source=source,
            hidden_size=config["hidden_size"],
            num_layers=config["num_hidden_layers"],
            num_attention_heads=heads,
            num_kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=head_dim,
            intermediate_size=config["intermediate_size"],
            vocab_size=config["vocab_size"],
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            gated_mlp=gated,
            attention_bias=bool(config.get("attention_bias", arch.startswith("Qwen2"))),
            max_position_embeddings=config.get("max_position_embeddings"),
            published_params=published_params,
        )


def valid_tp_degrees(model: ModelArch, limit: int = 64) -> list[int]:
    """TP degrees up to `limit` that split the model's heads evenly."""
    out = []
    for tp in range(1, limit + 1):
        if model.num_attention_heads % tp == 0 and (
                model.num_kv_heads % tp == 0 or tp % model.num_kv_heads == 0):
            out.append(tp)
    return out
