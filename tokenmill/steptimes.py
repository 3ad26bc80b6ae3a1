"""The step-time formula over arrays of step shapes, for fitting and for batch what-ifs.

Why: calibration evaluates the same formula on hundreds of thousands of steps for every trial
parameter set; a numpy version does that in milliseconds. It is the model of
tokenmill.costmodel.step_seconds (kernel tables aside, which fitting never uses) written with
array operations; tests check it against the scalar twin to 1e-12.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .costmodel import CostCoefficients


@dataclass(frozen=True)
class StepShapes:
    """Columns of step shapes (the fields of costmodel.StepShape), one entry per step."""

    prefill_tokens: np.ndarray
    prefill_pairs: np.ndarray
    prefill_context: np.ndarray
    logit_tokens: np.ndarray
    decode_tokens: np.ndarray
    decode_context: np.ndarray

    def __len__(self) -> int:
        return int(self.prefill_tokens.shape[0])

    @staticmethod
    def concat(parts: list["StepShapes"]) -> "StepShapes":
        return StepShapes(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = ("prefill_tokens", "prefill_pairs", "prefill_context", "logit_tokens", "decode_tokens",
           "decode_context")


def _gemm(flops: float, wbytes: float, act: float, rows: np.ndarray, s_per_flop: np.ndarray,
          s_per_byte: float) -> np.ndarray:
    return np.maximum(flops * s_per_flop, (wbytes + act * rows) * s_per_byte)


def gpu_seconds_array(c: CostCoefficients, s: StepShapes) -> np.ndarray:
    """The model's GPU time of every step (no kernel tables)."""
    if c.has_kernel_table:
        raise ValueError("gpu_seconds_array prices the model only; drop the kernel table first")
    P, Q, X, L, D, C = (getattr(s, f) for f in _FIELDS)
    tokens = P + D
    s_per_byte = 1.0 / c.bytes_per_s
    s_per_flop = (tokens + c.gemm_half_rows) / c.flops_per_s
    g = np.full(tokens.shape, c.kernel_fixed_s)
    g = g + _gemm(c.qkv_flops_per_row, c.qkv_weight_bytes, c.qkv_act_bytes_per_row, tokens,
                  s_per_flop, s_per_byte)
    g = g + _gemm(c.o_flops_per_row, c.o_weight_bytes, c.o_act_bytes_per_row, tokens,
                  s_per_flop, s_per_byte)
    g = g + _gemm(c.mlp_in_flops_per_row, c.mlp_in_weight_bytes, c.mlp_in_act_bytes_per_row,
                  tokens, s_per_flop, s_per_byte)
    g = g + _gemm(c.mlp_out_flops_per_row, c.mlp_out_weight_bytes, c.mlp_out_act_bytes_per_row,
                  tokens, s_per_flop, s_per_byte)
    if c.lm_head_weight_bytes > 0.0:
        lm = _gemm(c.lm_head_flops_per_row, c.lm_head_weight_bytes, c.lm_head_act_bytes_per_row,
                   L, (L + c.gemm_half_rows) / c.flops_per_s, s_per_byte)
        g = g + np.where(L > 0.0, lm, 0.0)
    if c.num_experts > 0.0:
        touched = c.num_experts * (1.0 - np.power(c.expert_miss, tokens))
        rows = c.experts_per_token * tokens
        compute = c.expert_flops_per_row * (rows + c.gemm_half_rows * touched) / c.flops_per_s
        memory = (c.expert_bytes * touched + c.expert_act_bytes_per_row * rows) * s_per_byte
        g = g + np.maximum(compute, memory)
    pre = P > 0.0
    wcap = c.window_tokens * P
    flops = c.flops_per_attn_pair * Q + c.flops_per_window_pair * np.minimum(Q, wcap)
    safe_q = np.where(pre, Q, 1.0)
    compute = flops * (Q + c.attn_half_pairs) / safe_q * c.attn_s_per_flop
    context = X + P
    nbytes = c.kv_bytes_per_token * context + c.kv_window_bytes_per_token * np.minimum(context, wcap)
    g = g + np.where(pre, np.maximum(compute, nbytes * c.kv_s_per_byte), 0.0)
    wcap = c.window_tokens * D
    flops = ((c.flops_per_attn_pair + c.flops_per_decode_pair_extra) * C
             + c.flops_per_window_pair * np.minimum(C, wcap))
    nbytes = c.kv_bytes_per_token * C + c.kv_window_bytes_per_token * np.minimum(C, wcap)
    g = g + np.where(D > 0.0, np.maximum(flops * c.attn_s_per_flop, nbytes * c.kv_s_per_byte), 0.0)
    g = g + c.elementwise_bytes_per_token * tokens * c.elementwise_s_per_byte
    ring = c.ar_ring_fixed_s + c.ar_ring_per_token_s * tokens
    tree = c.ar_tree_fixed_s + c.ar_tree_per_token_s * tokens
    g = g + np.minimum(ring, tree)
    g = g + (c.a2a_fixed_s + c.a2a_per_token_s * tokens)
    g = g + (c.send_fixed_s + c.send_per_token_s * tokens)
    return g


def step_seconds_array(c: CostCoefficients, s: StepShapes) -> np.ndarray:
    """Duration of every step (costmodel.step_seconds over arrays, kernel tables aside)."""
    pre = s.prefill_tokens > 0.0
    framework = np.where(pre, c.overhead_prefill_s, c.overhead_decode_s) + c.overhead_per_token_s * s.logit_tokens
    eager = np.where(s.decode_tokens > c.graph_max_decodes, c.decode_launch_floor_s, 0.0)
    launch = np.where(pre, c.prefill_launch_floor_s, eager)
    return framework + np.maximum(gpu_seconds_array(c, s), launch)
