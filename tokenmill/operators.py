"""The operators one chip runs in a forward step over a set of layers, with their FLOPs and bytes.

Why a separate module: the step-cost model prices each operator on its own roofline (a GEMM
with few rows is bandwidth-bound, one with many is compute-bound; attention has its own
efficiency; element-wise kernels only move bytes), so it needs the model broken into operators
rather than a single FLOPs-per-token figure. This module does that breakdown, once per
simulation, for one chip of a tensor-parallel group running a pipeline stage's layers (the
first stage also holds the embedding, the last the final norm and the LM head). Identical layers
are folded together: each operator's figures are summed over the stage's layers, so the kernel
never loops over layers.

Conventions, per chip:
* A GEMM of K inputs and N outputs costs 2*K*N FLOPs per row (token) and reads K*N weights once
  per step; its activation traffic is (K + N) elements per row, read and written once.
* 2:4 sparsity halves the pruned matmuls' FLOPs and weight bytes (attention projections, MLPs
  and experts; never routers, embeddings or the LM head), as tokenmill.precision documents.
* Routed experts are a grouped GEMM: a step of T tokens sends k*T rows to the distinct experts
  they touch; FLOPs are per routed row, bytes per touched expert (see tokenmill.costmodel).
  Routers and shared experts run on every token and join the MLP input/output operators.
* Element-wise traffic per token per layer, in 16-bit elements: two fused residual-add +
  RMSNorm kernels (read x and the residual, write both: 4h each), rotary embedding of the
  queries and keys (read and write), the gated activation (read 2w, write w), and for MoE
  layers the permutation of the k expert copies of each token there and back (4kh). The first
  stage adds the embedding gather (2h), the last the final norm (4h).
* Kernels per layer count the launches the GPU executes (norms, projections, rotary, attention,
  activation, routing), the figure the per-kernel floor and eager-launch costs multiply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .architecture import ModelArch
from .precision import ACTIVATION_TRAFFIC_BYTES, UNQUANTISED_BYTES, Precision

# Bytes of one logit the LM head writes (float32) and the sampler reads back.
LOGIT_BYTES = 4.0


@dataclass(frozen=True)
class Gemm:
    """One matmul operator of a stage, summed over the layers it appears in, on one chip."""

    flops_per_row: float      # FLOPs per row (token, or routed token-expert pair)
    weight_bytes: float       # weight bytes read once per step (routed experts: per touched expert)
    act_bytes_per_row: float  # activation bytes read and written per row
    layers: int               # layers it appears in (kernel launches per step)

    @staticmethod
    def zero() -> "Gemm":
        return Gemm(0.0, 0.0, 0.0, 0)


@dataclass(frozen=True)
class StageOperators:
    """The operators of one pipeline stage on one chip of its tensor-parallel group."""

    qkv: Gemm          # Q/K/V projections (MLA: latent down-projections and up-projections)
    o: Gemm            # attention output projection
    mlp_in: Gemm       # dense MLP gate+up, shared experts' gate+up, routers
    mlp_out: Gemm      # dense MLP down, shared experts' down
    lm_head: Gemm      # rows are the tokens that need logits (last stage only)
    expert: Gemm       # one routed expert: per routed row; weight bytes per touched expert
    num_experts: int
    experts_per_token: int
    flops_per_attn_pair: float        # full-attention layers, prefill form
    flops_per_decode_pair_extra: float  # MLA's absorbed decode, extra per cached key
    flops_per_window_pair: float      # windowed layers
    kv_bytes_per_token: float         # full-attention layers' KV, per token
    kv_window_bytes_per_token: float  # windowed layers' KV, per token
    window_tokens: float              # keys a windowed layer attends to at most (0: none)
    elementwise_bytes_per_token: float
    hidden_bytes_per_token: float     # one token's hidden state (messages of the collectives)
    layers: int
    moe_layers: int
    kernels_per_step: int

    @property
    def weight_bytes(self) -> float:
        """Weights read every step whatever the batch (all but the routed experts)."""
        return (self.qkv.weight_bytes + self.o.weight_bytes + self.mlp_in.weight_bytes
                + self.mlp_out.weight_bytes + self.lm_head.weight_bytes)


def _gemm(params: float, inputs: float, outputs: float, layers: int, weight_bytes: float,
          sparsity: float, dense_params: float = 0.0) -> Gemm:
    """A GEMM with `params` sparsifiable and `dense_params` 16-bit weights per layer, `inputs`
    and `outputs` activations per row, in each of `layers` layers."""
    flops = (2.0 * params * sparsity + 2.0 * dense_params) * layers
    nbytes = (params * weight_bytes * sparsity + dense_params * UNQUANTISED_BYTES) * layers
    return Gemm(flops, nbytes, (inputs + outputs) * ACTIVATION_TRAFFIC_BYTES * layers, layers)


def _add(a: Gemm, b: Gemm) -> Gemm:
    """Two GEMMs that run on the same rows, priced as one operator (their layer counts add
    only where they are different layers: a dense MLP and a shared expert never share one)."""
    return Gemm(a.flops_per_row + b.flops_per_row, a.weight_bytes + b.weight_bytes,
                a.act_bytes_per_row + b.act_bytes_per_row, max(a.layers, b.layers))


def stage_operators(model: ModelArch, precision: Precision, tp: int, *,
                    layers: Optional[range] = None, first: bool = True,
                    last: bool = True) -> StageOperators:
    """Operators of `layers` (default: all) on one chip of a `tp`-way group."""
    layers = range(model.num_layers) if layers is None else layers
    wb, kvb, sparse = precision.weight_bytes, precision.kv_bytes, precision.sparsity_factor
    h = float(model.hidden_size)
    act = ACTIVATION_TRAFFIC_BYTES
    n = len(layers)
    moe = [i for i in layers if model.is_moe_layer(i)]
    dense = n - len(moe)
    windowed = sum(1 for i in layers if model.attention_kind(i) != "full")
    full = n - windowed

    qkv_p, o_p = model.attention_projections(tp)
    heads = model.num_attention_heads / tp
    o_in = heads * ((model.v_head_dim or 0) if model.is_mla else model.head_dim)
    qkv = _gemm(qkv_p, h, qkv_p / h, n, wb, sparse)
    o = _gemm(o_p, o_in, h, n, wb, sparse)

    mlp_in = mlp_out = Gemm.zero()
    if dense:
        d_in, d_out, _ = model.mlp_params(model.intermediate_size, tp)
        mlp_in = _gemm(d_in, h, d_in / h, dense, wb, sparse)
        mlp_out = _gemm(d_out, d_out / h, h, dense, wb, sparse)
    expert = Gemm.zero()
    if moe:
        m = len(moe)
        router = model.router_params()
        mlp_in = _add(mlp_in, _gemm(0.0, 0.0, 0.0, m, wb, sparse, dense_params=router))
        if model.shared_expert_intermediate_size:
            s_in, s_out, _ = model.mlp_params(model.shared_expert_intermediate_size, tp)
            mlp_in = _add(mlp_in, _gemm(s_in, h, s_in / h, m, wb, sparse))
            mlp_out = _add(mlp_out, _gemm(s_out, s_out / h, h, m, wb, sparse))
        e_in, e_out, _ = model.mlp_params(model.moe_intermediate_size, tp)
        expert = _gemm(e_in + e_out, 2 * h, (e_in + e_out) / h, m, wb, sparse)

    lm_head = Gemm.zero()
    if last:
        vocab = model.vocab_size / tp
        lm_head = Gemm(2.0 * vocab * h, vocab * h * UNQUANTISED_BYTES,
                       h * act + vocab * LOGIT_BYTES * 2.0, 1)

    kv_layer = model.kv_elements_per_token_layer(tp) * kvb
    window = float(model.window or 0) if windowed else 0.0
    pair = model.pair_flops(tp)
    extra = model.pair_flops(tp, absorbed=True) - pair if model.is_mla else 0.0

    # Element-wise traffic (see the module docstring), in 16-bit elements per token.
    if model.is_mla:
        q = heads * ((model.qk_nope_head_dim or 0) + (model.qk_rope_head_dim or 0))
        k = float(model.qk_rope_head_dim or 0)
    else:
        q = heads * model.head_dim
        k = float(model.kv_heads_per_chip(tp) * model.head_dim)
    per_layer = 8 * h + 2 * (q + k)
    elements = per_layer * n
    if dense:
        elements += 3 * model.intermediate_size / tp * dense
    if moe:
        width = (model.experts_per_token * model.moe_intermediate_size
                 + model.shared_expert_intermediate_size) / tp
        elements += (3 * width + 4 * model.experts_per_token * h) * len(moe)
    if first:
        elements += 2 * h
    if last:
        elements += 4 * h

    # Kernel launches: per layer norms x2, QKV, rotary, attention, output projection, and the
    # MLP (in, activation, out) or the MoE block (router, top-k, permute, experts in,
    # activation, experts out, unpermute; shared experts in, activation, out); MLA adds its
    # two latent norms; the step adds the embedding, the final norm, LM head and sampling.
    per_attention = 6 + (2 if model.is_mla else 0)
    kernels = per_attention * n + 3 * dense
    if moe:
        kernels += (7 + (3 if model.shared_expert_intermediate_size else 0)) * len(moe)
    kernels += (1 if first else 0) + (3 if last else 0)

    return StageOperators(
        qkv=qkv, o=o, mlp_in=mlp_in, mlp_out=mlp_out, lm_head=lm_head, expert=expert,
        num_experts=model.num_experts if moe else 0,
        experts_per_token=model.experts_per_token if moe else 0,
        flops_per_attn_pair=pair * full,
        flops_per_decode_pair_extra=extra * full,
        flops_per_window_pair=pair * windowed,
        kv_bytes_per_token=kv_layer * full,
        kv_window_bytes_per_token=kv_layer * windowed,
        window_tokens=window,
        elementwise_bytes_per_token=elements * act,
        hidden_bytes_per_token=h * act,
        layers=n, moe_layers=len(moe), kernels_per_step=kernels)
