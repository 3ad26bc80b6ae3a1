"""Price of one batch step: coefficients for the compiled kernel, and the same formula in Python.

The kernel prices every step from its shape (prompt tokens, their causal attention pairs and
cached context, tokens that need logits, decodes, and cached tokens the decodes attend to). This module
turns a model, chip, precision, plan and cost parameters into the coefficients that convert
those counts into seconds: the larger of compute time and memory time (a roofline), plus the
tensor-parallel all-reduces and a fixed per-step overhead.

`step_seconds` is the formula written once more in Python, operation for operation as in
src/step_cost.pxd, so the pure-Python reference simulator reproduces the kernel exactly.

How the architectures are priced (a simple roofline; the calibrated per-operator model is
separate work):
* FLOPs per token are those of the active parameters: attention projections, dense MLPs, the
  k routed experts and the shared experts a token uses, the routers (2 FLOPs per weight). 2:4
  sparsity halves the pruned matmuls' FLOPs and bytes. The tier (BF16, FP8, FP4, INT8 peak)
  is that of the activations' format.
* Weights read per step: everything but the embedding table and the routed experts, plus
  expert_bytes for each distinct expert the step's T tokens touch, E * (1 - (1 - k/E)^T) per
  MoE layer in expectation; with expert parallelism each chip reads its share of those.
* Attention: prefill pairs and decode keys at the prefill-form FLOPs per pair; MLA decodes pay
  the absorbed form's extra FLOPs per key; MLA's KV bytes are its latent plus rope key.
  Windowed layers (sliding window, Llama 4 chunks) cap pairs and KV reads at window x tokens.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass, fields

import numpy as np

from . import _core
from .architecture import ModelArch
from .hardware import Hardware
from .precision import ACTIVATION_TRAFFIC_BYTES, Precision
from .scenario import CostModelParams


@dataclass(frozen=True)
class CostCoefficients:
    """Per-chip coefficients of the step-time formula (field order = the kernel's layout)."""

    overhead_s: float
    flops_per_token: float
    flops_per_logit: float
    flops_per_attn_pair: float
    flops_per_s: float
    weight_bytes: float
    kv_bytes_per_token: float
    act_bytes_per_token: float
    bytes_per_s: float
    comm_fixed_s: float
    comm_per_token_s: float
    expert_bytes: float = 0.0
    num_experts: float = 0.0
    expert_miss: float = 1.0
    flops_per_decode_pair_extra: float = 0.0
    flops_per_window_pair: float = 0.0
    kv_window_bytes_per_token: float = 0.0
    window_tokens: float = 0.0

    def to_array(self) -> np.ndarray:
        return np.array(astuple(self), dtype=np.float64)


assert tuple(f.name for f in fields(CostCoefficients)) == _core.COST_FIELDS


def coefficients(model: ModelArch, hw: Hardware, precision: Precision, tp: int,
                 params: CostModelParams) -> CostCoefficients:
    """Coefficients for one replica of `model` on `tp` chips of `hw` (per chip)."""
    act_bytes = ACTIVATION_TRAFFIC_BYTES
    wb, kvb, sparse = precision.weight_bytes, precision.kv_bytes, precision.sparsity_factor
    comm_fixed = 0.0
    comm_per_token = 0.0
    if tp > 1:
        # Two ring all-reduces of the hidden state per layer (after attention and after the
        # MLP): each moves 2(tp-1)/tp of the message over a chip's link and takes 2(tp-1) hops.
        reductions = 2 * model.num_layers
        link = hw.scale_up_bytes_per_s_per_direction() * params.collective_efficiency
        comm_fixed = reductions * 2 * (tp - 1) * hw.scale_up_latency_us * 1e-6
        comm_per_token = reductions * 2 * (tp - 1) / tp * model.hidden_size * act_bytes / link
    window = model.window or 0
    return CostCoefficients(
        overhead_s=params.step_overhead_ms * 1e-3,
        flops_per_token=model.matmul_flops_per_token(tp, sparse),
        flops_per_logit=model.lm_head_flops_per_token(tp),
        flops_per_attn_pair=model.attention_flops_per_pair(tp),
        flops_per_s=hw.dense_flops(precision.compute_dtype) * params.compute_efficiency,
        weight_bytes=model.weight_bytes_read_per_step(tp, wb, sparse),
        kv_bytes_per_token=model.kv_bytes_per_token_full(tp, kvb),
        act_bytes_per_token=model.activation_bytes_per_token(tp, act_bytes),
        bytes_per_s=hw.memory_bandwidth_tbps * 1e12 * params.memory_efficiency,
        comm_fixed_s=comm_fixed,
        comm_per_token_s=comm_per_token,
        expert_bytes=model.expert_bytes_per_chip(tp, wb, sparse),
        num_experts=float(model.num_experts),
        expert_miss=1.0 - model.experts_per_token / model.num_experts if model.is_moe else 1.0,
        flops_per_decode_pair_extra=model.decode_extra_flops_per_pair(tp),
        flops_per_window_pair=model.window_flops_per_pair(tp),
        kv_window_bytes_per_token=model.kv_bytes_per_token_windowed(tp, kvb),
        window_tokens=float(window),
    )


@dataclass(frozen=True)
class StepShape:
    """What one step computes (the Python twin of StepShape in src/step_cost.pxd)."""

    prefill_tokens: float = 0.0   # prompt tokens computed in the step
    prefill_pairs: float = 0.0    # causal (query, key) pairs of those tokens
    prefill_context: float = 0.0  # cached tokens the prefills attend to
    logit_tokens: float = 0.0     # tokens that need logits
    decode_tokens: float = 0.0    # sequences decoding one token each
    decode_context: float = 0.0   # cached tokens the decodes attend to


def _capped(x: float, cap: float) -> float:
    return x if x < cap else cap


def step_seconds(c: CostCoefficients, s: StepShape) -> float:
    """Duration of one step; the Python twin of step_seconds in src/step_cost.pxd."""
    tokens = s.prefill_tokens + s.decode_tokens
    window_cap = c.window_tokens * tokens
    pairs = s.prefill_pairs + s.decode_context
    context = s.decode_context + s.prefill_context + s.prefill_tokens
    experts = 0.0
    if c.num_experts > 0.0:  # as in the kernel: dense models skip the pow() call
        experts = c.num_experts * (1.0 - math.pow(c.expert_miss, tokens))
    flops = (c.flops_per_token * tokens
             + c.flops_per_logit * s.logit_tokens
             + c.flops_per_attn_pair * pairs
             + c.flops_per_decode_pair_extra * s.decode_context
             + c.flops_per_window_pair * _capped(pairs, window_cap))
    nbytes = (c.weight_bytes
              + c.expert_bytes * experts
              + c.kv_bytes_per_token * context
              + c.kv_window_bytes_per_token * _capped(context, window_cap)
              + c.act_bytes_per_token * tokens)
    compute_s = flops / c.flops_per_s
    memory_s = nbytes / c.bytes_per_s
    roofline_s = compute_s if compute_s > memory_s else memory_s
    return c.overhead_s + (c.comm_fixed_s + c.comm_per_token_s * tokens) + roofline_s


def step_activity(c: CostCoefficients, s: StepShape) -> tuple[float, float]:
    """The compute time and memory time of one step (the two sides of its roofline); the
    Python twin of step_activity in src/step_cost.pxd, operation for operation."""
    tokens = s.prefill_tokens + s.decode_tokens
    window_cap = c.window_tokens * tokens
    pairs = s.prefill_pairs + s.decode_context
    context = s.decode_context + s.prefill_context + s.prefill_tokens
    experts = 0.0
    if c.num_experts > 0.0:
        experts = c.num_experts * (1.0 - math.pow(c.expert_miss, tokens))
    flops = (c.flops_per_token * tokens
             + c.flops_per_logit * s.logit_tokens
             + c.flops_per_attn_pair * pairs
             + c.flops_per_decode_pair_extra * s.decode_context
             + c.flops_per_window_pair * _capped(pairs, window_cap))
    nbytes = (c.weight_bytes
              + c.expert_bytes * experts
              + c.kv_bytes_per_token * context
              + c.kv_window_bytes_per_token * _capped(context, window_cap)
              + c.act_bytes_per_token * tokens)
    return flops / c.flops_per_s, nbytes / c.bytes_per_s


def prefill_seconds(c: CostCoefficients, prompt_tokens: int) -> float:
    """Time of a step that only prefills one prompt: the unloaded TTFT of that prompt."""
    p = float(prompt_tokens)
    return step_seconds(c, StepShape(prefill_tokens=p, prefill_pairs=p * (p + 1) / 2,
                                     logit_tokens=1.0))


def decode_seconds(c: CostCoefficients, batch: int, context_tokens: int) -> float:
    """Time of a decode-only step of `batch` sequences attending to `context_tokens` in all."""
    return step_seconds(c, StepShape(logit_tokens=float(batch), decode_tokens=float(batch),
                                     decode_context=float(context_tokens)))
