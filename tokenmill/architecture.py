"""Model architectures in Hugging Face config.json terms, and the exact quantities derived from them.

Everything the planner and the cost model need about a model is computed here from its
structure: parameter counts (total, and active per token for mixture-of-experts), weight bytes,
KV-cache bytes per token (grouped-query attention, or multi-head latent attention's compressed
latent plus its rope key; sliding-window and chunked layers capped at their window), and FLOPs
per token for the matmuls and for attention at a given context. The same counts are available
per chip of a parallel plan (tensor parallelism splits heads, MLPs, experts and the vocabulary;
expert parallelism only regroups the experts inside the tensor-parallel group; pipeline
parallelism gives each stage a contiguous range of layers).

Reading a config.json into a ModelArch is tokenmill.hf_config's job; this module only computes.

Conventions (so the figures can be checked by hand):
* A layer is either dense (an MLP of `intermediate_size`) or MoE (`num_experts` routed experts
  of `moe_intermediate_size`, `experts_per_token` of them per token, plus always-on shared
  experts of total width `shared_expert_intermediate_size` and a router).
* "Active" parameters are those one token's forward pass multiplies by: everything except the
  routed experts it is not sent to and (unless asked) the input embedding table, which is a
  lookup rather than a matmul. Publishers differ on the embedding; see `active_params`.
* MLA caches kv_lora_rank + qk_rope_head_dim values per token per layer, shared by all heads and
  replicated on every tensor-parallel chip (vLLM's layout).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Literal, Optional

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from ._validation import NameTuple, StrictModel
from .errors import ConfigError
from .precision import UNQUANTISED_BYTES

AttentionKind = Literal["full", "sliding", "chunked"]

# Kept for callers of the foundation's API: bytes per element of the 16- and 8-bit formats.
DTYPE_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0}

_SCALE = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
_COUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMBT])\s*$")


def parse_count(text: str) -> tuple[float, int]:
    """'8.03B' -> (8.03e9, 3 significant digits). Published counts keep their stated precision."""
    m = _COUNT.match(text)
    if not m:
        raise ValueError(f"parameter count {text!r} must look like '8.03B' or '1.04T'")
    digits = len(m.group(1).replace(".", "").lstrip("0")) or 1
    return float(Decimal(m.group(1)) * Decimal(int(_SCALE[m.group(2)]))), digits


def agrees_with_published(computed: float, stated: str, rel: float = 0.01) -> bool:
    """Whether an exact count agrees with a published one: within `rel`, or equal to it at the
    precision it was stated with (rounded or cut, as publishers do both: 17.17B is '17B')."""
    value, digits = parse_count(stated)
    if abs(computed - value) <= rel * value:
        return True
    scale = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    target = round(value / scale)
    return round(computed / scale) == target or math.floor(computed / scale) == target


class PublishedSize(StrictModel):
    """Parameter counts the model's authors publish, kept to check the derived counts against."""

    total: str = Field(description="Published total parameter count as stated, e.g. '8.03B'.")
    active: Optional[str] = Field(
        default=None, description="Published parameters active per token as stated (MoE), e.g. '36.6B'.")
    source: str = Field(description="Where the published counts are stated.")
    active_counts_input_embedding: bool = Field(
        default=False, description="Whether the publisher's active count includes the input "
        "embedding table (Mistral, Meta and Qwen count it; DeepSeek and OpenAI do not).")
    non_text_params: NonNegativeInt = Field(
        default=0, description="Parameters the published total includes that tokenmill does not "
        "serve (a vision encoder and projector), derived from the checkpoint's own config.")
    note: Optional[str] = Field(default=None, description="How the published figures were counted.")

    def total_value(self) -> float:
        return parse_count(self.total)[0]

    def active_value(self) -> Optional[float]:
        return parse_count(self.active)[0] if self.active else None


class ModelArch(StrictModel):
    """A decoder-only transformer (dense or MoE; GQA or MLA attention), in config.json terms."""

    name: str = Field(description="Preset name, lower case (e.g. 'llama-3.1-8b').")
    hf_id: Optional[str] = Field(default=None, description="Hugging Face repository id.")
    aliases: NameTuple = Field(default=(), description="Other names accepted for this model.")
    source: Optional[str] = Field(default=None, description="Where the architecture figures come from.")
    provenance: Optional[str] = Field(
        default=None, description="How the config was obtained (verbatim copy, reconstructed, ...).")
    notes: Optional[str] = Field(default=None, description="Caveats about the architecture or its figures.")
    published: Optional[PublishedSize] = Field(
        default=None, description="Published parameter counts, for cross-checks.")
    checkpoint_format: Optional[str] = Field(
        default=None, description="Format the published checkpoint stores its matmul weights in "
        "(informational: the simulated precision is chosen separately).")
    # ---- trunk ----
    hidden_size: PositiveInt = Field(description="Width of the residual stream (hidden_size).")
    num_layers: PositiveInt = Field(description="Transformer blocks (num_hidden_layers).")
    vocab_size: PositiveInt = Field(description="Vocabulary size (rows of the embedding and LM head).")
    tie_word_embeddings: bool = Field(default=False, description="LM head shares the embedding matrix.")
    max_position_embeddings: Optional[PositiveInt] = Field(
        default=None, description="Longest context the model supports, tokens.")
    # ---- attention ----
    num_attention_heads: PositiveInt = Field(description="Query heads per layer.")
    num_kv_heads: PositiveInt = Field(
        description="Key/value heads per layer (GQA when fewer than query heads; unused by MLA).")
    head_dim: PositiveInt = Field(description="Width of one attention head (GQA).")
    qkv_bias: bool = Field(default=False, description="Q, K and V projections carry biases (Qwen2, gpt-oss).")
    o_bias: bool = Field(default=False, description="The attention output projection carries a bias (gpt-oss).")
    qk_norm: bool = Field(default=False, description="Per-head RMSNorm weights on queries and keys (Qwen3).")
    attention_sinks: bool = Field(default=False, description="One learned sink logit per head per layer (gpt-oss).")
    kv_lora_rank: Optional[PositiveInt] = Field(
        default=None, description="MLA: width of the compressed KV latent; None for GQA attention.")
    q_lora_rank: Optional[PositiveInt] = Field(
        default=None, description="MLA: width of the compressed query latent; None: full query projection.")
    qk_rope_head_dim: Optional[PositiveInt] = Field(
        default=None, description="MLA: per-head width of the rotary part of queries and keys.")
    qk_nope_head_dim: Optional[PositiveInt] = Field(
        default=None, description="MLA: per-head width of the non-rotary part of queries and keys.")
    v_head_dim: Optional[PositiveInt] = Field(default=None, description="MLA: per-head width of values.")
    layer_attention: tuple[AttentionKind, ...] = Field(
        default=(), description="Attention kind of each layer: 'full', 'sliding' (window of "
        "sliding_window tokens) or 'chunked' (local attention within chunks of "
        "attention_chunk_size tokens). Empty: every layer full.")
    sliding_window: Optional[PositiveInt] = Field(
        default=None, description="Tokens a sliding-window layer attends to.")
    attention_chunk_size: Optional[PositiveInt] = Field(
        default=None, description="Chunk length of chunked local-attention layers (Llama 4).")
    # ---- MLP / experts ----
    intermediate_size: NonNegativeInt = Field(
        description="Width of the MLP hidden layer of dense layers (0 if every layer is MoE).")
    gated_mlp: bool = Field(default=True, description="SwiGLU-style MLPs with gate, up and down matrices.")
    mlp_bias: bool = Field(default=False, description="MLP and expert matrices carry biases (gpt-oss).")
    num_experts: NonNegativeInt = Field(default=0, description="Routed experts per MoE layer (0: dense model).")
    experts_per_token: NonNegativeInt = Field(default=0, description="Routed experts each token is sent to.")
    moe_intermediate_size: NonNegativeInt = Field(default=0, description="Hidden width of one routed expert.")
    shared_expert_intermediate_size: NonNegativeInt = Field(
        default=0, description="Total hidden width of the always-active shared expert(s) of an MoE layer.")
    shared_expert_gate: bool = Field(
        default=False, description="A sigmoid gate (hidden_size weights) scales the shared expert (Qwen2-MoE).")
    router_bias: bool = Field(
        default=False, description="The router carries one bias per expert (gpt-oss; DeepSeek's "
        "score-correction bias).")
    moe_layers: tuple[NonNegativeInt, ...] = Field(
        default=(), description="Indices of the MoE layers; the others are dense.")

    @model_validator(mode="after")
    def _check(self) -> "ModelArch":
        L = self.num_layers
        if self.layer_attention and len(self.layer_attention) != L:
            raise ValueError(f"layer_attention has {len(self.layer_attention)} entries for "
                             f"{L} layers")
        kinds = set(self.layer_attention)
        if "sliding" in kinds and self.sliding_window is None:
            raise ValueError("sliding layers need sliding_window")
        if "chunked" in kinds and self.attention_chunk_size is None:
            raise ValueError("chunked layers need attention_chunk_size")
        if {"sliding", "chunked"} <= kinds:
            raise ValueError("a model with both sliding-window and chunked layers is not supported")
        if self.is_mla:
            missing = [k for k in ("qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
                       if getattr(self, k) is None]
            if missing:
                raise ValueError(f"multi-head latent attention needs {', '.join(missing)}")
        elif self.num_attention_heads % self.num_kv_heads != 0:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) must be a "
                             f"multiple of num_kv_heads ({self.num_kv_heads})")
        if self.num_experts:
            if not 0 < self.experts_per_token <= self.num_experts:
                raise ValueError(f"experts_per_token ({self.experts_per_token}) must be between 1 "
                                 f"and num_experts ({self.num_experts})")
            if self.moe_intermediate_size == 0:
                raise ValueError("an MoE model needs moe_intermediate_size > 0")
            if not self.moe_layers:
                raise ValueError("an MoE model needs at least one MoE layer in moe_layers")
            if any(i >= L for i in self.moe_layers) or len(set(self.moe_layers)) != len(self.moe_layers):
                raise ValueError(f"moe_layers must be distinct layer indices below {L}")
        elif self.moe_layers or self.experts_per_token or self.shared_expert_intermediate_size:
            raise ValueError("moe_layers, experts_per_token and shared experts need num_experts > 0")
        if self.num_dense_layers and self.intermediate_size == 0:
            raise ValueError("dense layers need intermediate_size > 0")
        return self

    # ---- structure ---------------------------------------------------------------------

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def num_moe_layers(self) -> int:
        return len(self.moe_layers)

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - len(self.moe_layers)

    def attention_kind(self, layer: int) -> AttentionKind:
        return self.layer_attention[layer] if self.layer_attention else "full"

    @property
    def window(self) -> Optional[int]:
        """Tokens a windowed layer attends to at most (sliding window or attention chunk)."""
        kinds = set(self.layer_attention)
        if "sliding" in kinds:
            return self.sliding_window
        if "chunked" in kinds:
            return self.attention_chunk_size
        return None

    @property
    def num_windowed_layers(self) -> int:
        return sum(1 for k in self.layer_attention if k != "full")

    @property
    def num_full_layers(self) -> int:
        return self.num_layers - self.num_windowed_layers

    def describe(self) -> str:
        """One line: 'MoE 256x top-8 + 1 shared, MLA (latent 512 + rope 64), 61 layers'."""
        parts = []
        if self.is_moe:
            shared = (f" + shared {self.shared_expert_intermediate_size}"
                      if self.shared_expert_intermediate_size else "")
            parts.append(f"MoE {self.num_experts} experts, top-{self.experts_per_token}{shared}, "
                         f"{self.num_moe_layers} MoE + {self.num_dense_layers} dense layers")
        else:
            parts.append(f"dense, {self.num_layers} layers")
        if self.is_mla:
            parts.append(f"MLA (latent {self.kv_lora_rank} + rope {self.qk_rope_head_dim}, "
                         f"{self.num_attention_heads} heads)")
        else:
            kind = "MHA" if self.num_kv_heads == self.num_attention_heads else "GQA"
            parts.append(f"{kind} {self.num_attention_heads}/{self.num_kv_heads} heads of {self.head_dim}")
        if self.num_windowed_layers:
            kind = "sliding-window" if self.sliding_window and "sliding" in self.layer_attention else "chunked"
            parts.append(f"{self.num_windowed_layers} {kind} layers of {self.window} tokens")
        return "; ".join(parts)

    # ---- parameters of one layer, split into matmul weights and the rest ------------------
    # `tp` is the tensor-parallel degree; tp=1 gives whole-model figures.

    def kv_heads_per_chip(self, tp: int) -> int:
        """KV heads each chip stores; heads are replicated when TP exceeds their number."""
        return max(1, self.num_kv_heads // tp)

    def _attention(self, tp: int) -> tuple[float, float]:
        """(matmul weights, other parameters) of one attention block on one chip."""
        h = self.hidden_size
        heads = self.num_attention_heads / tp
        if self.is_mla:
            assert self.kv_lora_rank and self.qk_rope_head_dim and self.qk_nope_head_dim and self.v_head_dim
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            kvl, rope = self.kv_lora_rank, self.qk_rope_head_dim
            # Replicated on every chip: the down-projections to the latents and their norms.
            replicated = h * (kvl + rope)
            other = float(kvl)
            if self.q_lora_rank:
                replicated += h * self.q_lora_rank
                other += self.q_lora_rank
                q_up = self.q_lora_rank * heads * qk
            else:
                q_up = h * heads * qk
            split = q_up + kvl * heads * (self.qk_nope_head_dim + self.v_head_dim) + heads * self.v_head_dim * h
            return replicated + split, other
        q = heads * self.head_dim
        kv = self.kv_heads_per_chip(tp) * self.head_dim
        linear = h * q + 2 * h * kv + q * h
        other = 0.0
        if self.qkv_bias:
            other += q + 2 * kv
        if self.o_bias:
            other += h
        if self.attention_sinks:
            other += heads
        if self.qk_norm:
            other += 2 * self.head_dim
        return linear, other

    def attention_projections(self, tp: int) -> tuple[float, float]:
        """(QKV-side, output-projection) matmul weights of one attention block on one chip.

        The QKV side holds everything before attention: Q/K/V projections (GQA), or MLA's
        replicated down-projections to the latents plus the per-head query and KV
        up-projections. The output projection maps the heads back to the hidden size."""
        lin, _ = self._attention(tp)
        heads = self.num_attention_heads / tp
        width = self.v_head_dim if self.is_mla else self.head_dim
        assert width is not None
        o = heads * width * self.hidden_size
        return lin - o, o

    def mlp_params(self, width: float, tp: int) -> tuple[float, float, float]:
        """(input side: gate+up, output side: down, biases) of one MLP of hidden `width` on one chip."""
        h = self.hidden_size
        lin, bias = self._mlp(width, tp)
        down = width / tp * h
        return lin - down, down, bias

    def router_params(self) -> float:
        """Router (and shared-expert gate) parameters of one MoE layer, replicated per chip."""
        return float(self._router()) if self.is_moe else 0.0

    def is_moe_layer(self, layer: int) -> bool:
        return layer in self._moe_set

    def _mlp(self, width: float, tp: int) -> tuple[float, float]:
        """(matmul weights, biases) of one MLP or expert of hidden width `width` on one chip."""
        h = self.hidden_size
        linear = (3 if self.gated_mlp else 2) * h * width / tp
        bias = ((2 if self.gated_mlp else 1) * width / tp + h) if self.mlp_bias else 0.0
        return linear, bias

    def _router(self) -> float:
        """Router parameters of one MoE layer (replicated on every chip)."""
        p = self.hidden_size * self.num_experts + (self.num_experts if self.router_bias else 0)
        return p + (self.hidden_size if self.shared_expert_gate else 0)

    def _layer(self, layer: int, tp: int, experts: float) -> tuple[float, float]:
        """(matmul weights, other) of one layer on one chip, counting `experts` routed experts
        (per MoE layer, before the tensor-parallel split)."""
        lin, other = self._attention(tp)
        other += 2 * self.hidden_size  # the two RMSNorms
        if layer in self._moe_set:
            e_lin, e_bias = self._mlp(self.moe_intermediate_size, tp)
            lin += experts * e_lin
            other += experts * e_bias + self._router()
            if self.shared_expert_intermediate_size:
                s_lin, s_bias = self._mlp(self.shared_expert_intermediate_size, tp)
                lin += s_lin
                other += s_bias
        else:
            d_lin, d_bias = self._mlp(self.intermediate_size, tp)
            lin += d_lin
            other += d_bias
        return lin, other

    @property
    def _moe_set(self) -> frozenset[int]:
        return frozenset(self.moe_layers)

    # ---- whole-model parameter counts ------------------------------------------------------

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    def total_params(self) -> int:
        """Every parameter of the text model (main model only: no MTP or vision modules)."""
        body = sum(sum(self._layer(i, 1, self.num_experts)) for i in range(self.num_layers))
        return round(body) + self.embedding_params() + self.lm_head_params() + self.hidden_size

    def active_params(self, include_input_embedding: bool = False) -> int:
        """Parameters one token's forward pass uses: all but the unselected routed experts and,
        unless asked, the input embedding table (a lookup). The LM head always counts (with tied
        embeddings it is the embedding matrix)."""
        body = sum(sum(self._layer(i, 1, self.experts_per_token)) for i in range(self.num_layers))
        head = self.vocab_size * self.hidden_size
        emb = self.lm_head_params() if include_input_embedding else 0
        return round(body) + head + emb + self.hidden_size

    def published_total(self) -> Optional[float]:
        return self.published.total_value() if self.published else None

    @property
    def published_params(self) -> Optional[float]:
        """Published total parameter count (the foundation's name for it)."""
        return self.published_total()

    # ---- tensor/expert parallel validity ---------------------------------------------------

    def check_tensor_parallel(self, tp: int) -> None:
        """Refuse a TP degree the attention heads cannot be split over (as vLLM does)."""
        if self.num_attention_heads % tp != 0:
            raise ConfigError(
                f"plan.tp = {tp} does not divide {self.name}'s {self.num_attention_heads} "
                f"attention heads; valid: {valid_tp_degrees(self)}")
        if not self.is_mla and self.num_kv_heads % tp != 0 and tp % self.num_kv_heads != 0:
            raise ConfigError(
                f"plan.tp = {tp} neither divides nor is a multiple of {self.name}'s "
                f"{self.num_kv_heads} KV heads; valid: {valid_tp_degrees(self)}")

    def check_expert_parallel(self, tp: int, ep: int) -> None:
        """Experts are split over `ep` groups inside the tensor-parallel group (SGLang's layout;
        vLLM's --enable-expert-parallel is ep = tp), so ep must divide tp and the experts."""
        if ep == 1:
            return
        if not self.is_moe:
            raise ConfigError(f"plan.ep = {ep} but {self.name} is a dense model; valid: 1")
        valid = [e for e in range(1, tp + 1) if tp % e == 0 and self.num_experts % e == 0]
        if tp % ep != 0 or self.num_experts % ep != 0:
            raise ConfigError(
                f"plan.ep = {ep} must divide plan.tp = {tp} (experts are split over ep groups "
                f"inside the tensor-parallel group) and {self.name}'s {self.num_experts} experts; "
                f"valid with tp = {tp}: {valid}")

    # ---- per chip: weights ---------------------------------------------------------------

    def stage_layers(self, pp: int, stage: int) -> range:
        """Layers of pipeline stage `stage` of `pp`, split as vLLM does: evenly, with the
        remainder given one each to the stages before the last."""
        if not 1 <= pp <= self.num_layers:
            raise ConfigError(f"plan.pp = {pp} must be between 1 and {self.name}'s "
                              f"{self.num_layers} layers")
        sizes = [self.num_layers // pp] * pp
        for i in range(self.num_layers % pp):
            sizes[-(i + 2) if pp > 1 else 0] += 1
        start = sum(sizes[:stage])
        return range(start, start + sizes[stage])

    def weight_bytes_per_chip(self, tp: int, weight_bytes: float, *, layers: Optional[range] = None,
                              first: bool = True, last: bool = True, sparsity: float = 1.0) -> float:
        """Bytes of weights one chip stores for `layers` (default: all). Matmul weights use
        `weight_bytes` per element (x `sparsity` for 2:4 pruning); embeddings, LM head, norms,
        biases and routers stay 16-bit. Vocab-parallel embedding and LM head are split by tp; a
        pipeline's first stage holds the embedding, its last the final norm and the LM head."""
        layers = range(self.num_layers) if layers is None else layers
        lin = other = 0.0
        for i in layers:
            a, b = self._layer(i, tp, self.num_experts)
            lin += a
            other += b
        vocab = 0.0
        if first:
            vocab += self.embedding_params() / tp
        if last:
            head = self.vocab_size * self.hidden_size if (not first or not self.tie_word_embeddings) else 0
            vocab += head / tp + self.hidden_size
        return lin * weight_bytes * sparsity + (other + vocab) * UNQUANTISED_BYTES

    def total_weight_bytes(self, weight_bytes: float, sparsity: float = 1.0) -> float:
        """Bytes of the whole model's weights at the given matmul format."""
        return self.weight_bytes_per_chip(1, weight_bytes, sparsity=sparsity)

    # ---- per chip: what one step reads and computes --------------------------------------------

    def _routed_expert(self, tp: int) -> tuple[float, float]:
        """(matmul weights, biases) of one routed expert in all MoE layers, on one chip."""
        if not self.is_moe:
            return 0.0, 0.0
        lin, bias = self._mlp(self.moe_intermediate_size, tp)
        return lin * self.num_moe_layers, bias * self.num_moe_layers

    def expert_bytes_per_chip(self, tp: int, weight_bytes: float, sparsity: float = 1.0) -> float:
        """Bytes of one routed expert, summed over the MoE layers, that one chip reads when the
        expert is used: its 1/tp slice. With expert parallelism a chip instead owns E/ep whole
        experts sliced tp/ep ways, which is the same number of bytes per touched expert on
        average."""
        lin, bias = self._routed_expert(tp)
        return lin * weight_bytes * sparsity + bias * UNQUANTISED_BYTES

    def linear_params_per_chip(self, tp: int) -> float:
        """Matmul weights one chip multiplies every token by (active experts only)."""
        return sum(self._layer(i, tp, self.experts_per_token)[0] for i in range(self.num_layers))

    def router_flops_per_token(self) -> float:
        """Router matmul FLOPs per token (replicated on every chip)."""
        return 2.0 * self.hidden_size * self.num_experts * self.num_moe_layers

    def matmul_flops_per_token(self, tp: int, sparsity: float = 1.0) -> float:
        """Multiply-add FLOPs of projections, MLPs, active experts and routers for one token on
        one chip (2:4 sparsity halves the pruned matmuls; routers stay dense)."""
        return 2.0 * self.linear_params_per_chip(tp) * sparsity + self.router_flops_per_token()

    def lm_head_flops_per_token(self, tp: int) -> float:
        return 2.0 * self.vocab_size * self.hidden_size / tp

    def pair_flops(self, tp: int, absorbed: bool = False) -> float:
        """FLOPs of one (query, key) pair in one layer on one chip: scores and weighted values.
        MLA prefill decompresses keys and values per head (qk = nope + rope, v); MLA decode
        absorbs the up-projections and attends in the latent (kv_lora + rope, then kv_lora)."""
        heads = self.num_attention_heads / tp
        if self.is_mla:
            assert self.kv_lora_rank and self.qk_rope_head_dim and self.qk_nope_head_dim and self.v_head_dim
            if absorbed:
                return heads * 2.0 * (2 * self.kv_lora_rank + self.qk_rope_head_dim)
            return heads * 2.0 * (self.qk_nope_head_dim + self.qk_rope_head_dim + self.v_head_dim)
        return heads * 4.0 * self.head_dim

    def attended_keys(self, layer: int, context: int) -> int:
        """Keys a token at position context-1 attends to in `layer` (itself included)."""
        kind = self.attention_kind(layer)
        if kind == "sliding":
            assert self.sliding_window
            return min(context, self.sliding_window)
        if kind == "chunked":
            assert self.attention_chunk_size
            return (context - 1) % self.attention_chunk_size + 1 if context > 0 else 0
        return context

    def attention_flops_per_token(self, context: int, tp: int = 1, decode: bool = True) -> float:
        """Attention FLOPs (scores and values) of one new token attending to a context of
        `context` tokens, itself included, on one chip."""
        pair = self.pair_flops(tp, absorbed=decode and self.is_mla)
        return sum(pair * self.attended_keys(i, context) for i in range(self.num_layers))

    def flops_per_token(self, context: int, tp: int = 1, sparsity: float = 1.0) -> float:
        """All FLOPs of decoding one token at `context`: matmuls, LM head and attention."""
        return (self.matmul_flops_per_token(tp, sparsity) + self.lm_head_flops_per_token(tp)
                + self.attention_flops_per_token(context, tp))

    # ---- KV cache ------------------------------------------------------------------------

    def kv_elements_per_token_layer(self, tp: int = 1) -> int:
        """Cached values per token in one layer on one chip: K and V of its heads, or MLA's
        latent plus rope key (replicated on every chip)."""
        if self.is_mla:
            assert self.kv_lora_rank and self.qk_rope_head_dim
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.kv_heads_per_chip(tp) * self.head_dim

    def kv_bytes_per_token(self, tp: int, kv_bytes: float, layers: Optional[range] = None) -> float:
        """KV-cache bytes one chip allocates per token when every layer keeps every token (what a
        paged cache without window-aware freeing allocates; the simulator's per-token charge)."""
        n = self.num_layers if layers is None else len(layers)
        return n * self.kv_elements_per_token_layer(tp) * kv_bytes

    def kv_bytes_per_token_full(self, tp: int, kv_bytes: float) -> float:
        """KV bytes per token of the full-attention layers: the cache's growth past the window."""
        return self.num_full_layers * self.kv_elements_per_token_layer(tp) * kv_bytes

    def kv_tokens_kept(self, layer: int, context: int) -> int:
        """Tokens of a `context`-token sequence `layer` must keep to decode the next token."""
        kind = self.attention_kind(layer)
        if kind == "sliding":
            assert self.sliding_window
            return min(context, self.sliding_window)
        if kind == "chunked":
            assert self.attention_chunk_size
            return context % self.attention_chunk_size
        return context

    def kv_bytes_for_context(self, context: int, tp: int = 1, kv_bytes: float = 2.0) -> float:
        """Exact KV bytes one chip holds for one sequence of `context` tokens, windowed layers
        capped at their window (sliding) or trimmed to the current chunk (chunked)."""
        per = self.kv_elements_per_token_layer(tp) * kv_bytes
        return float(sum(per * self.kv_tokens_kept(i, context) for i in range(self.num_layers)))

    def peak_mlp_width(self) -> float:
        """Widest per-token MLP hidden activation of any layer (sizes the activation reserve)."""
        widths = [float(self.intermediate_size)] if self.num_dense_layers else []
        if self.is_moe:
            widths.append(float(self.experts_per_token * self.moe_intermediate_size
                                + self.shared_expert_intermediate_size))
        return max(widths)


def valid_tp_degrees(model: ModelArch, limit: int = 64) -> list[int]:
    """TP degrees up to `limit` that split the model's heads evenly."""
    out = []
    for tp in range(1, limit + 1):
        if model.num_attention_heads % tp:
            continue
        if model.is_mla or model.num_kv_heads % tp == 0 or tp % model.num_kv_heads == 0:
            out.append(tp)
    return out


def expected_experts_touched(num_experts: int, experts_per_token: int, tokens: float) -> float:
    """Distinct experts a step of `tokens` tokens uses in one MoE layer, in expectation when each
    token picks its experts uniformly: E * (1 - (1 - k/E)^tokens)."""
    if num_experts == 0:
        return 0.0
    return num_experts * (1.0 - math.pow(1.0 - experts_per_token / num_experts, tokens))
