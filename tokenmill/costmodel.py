"""Price of one batch step: coefficients for the compiled kernel, and the same formula in Python.

The kernel prices every step from its shape (prompt tokens, their causal attention pairs and
cached context, tokens that need logits, decodes, and cached tokens the decodes attend to). This
module turns a model, a chip, a precision, a plan and the calibratable parameters
(tokenmill.costparams) into the numbers that convert those counts into seconds, for ONE CHIP of
a tensor-parallel group running ONE SET OF LAYERS (a pipeline stage; the first stage holds the
embedding, the last the LM head). The formula itself is documented in src/step_cost.pxd: a
per-operator roofline (QKV, output projection, MLP or routed experts, LM head, prefill and decode
attention, element-wise kernels), each operator at an efficiency that depends on its size, plus
collectives (TP all-reduce, EP all-to-all, PP send), per-kernel floors, eager-launch floors and
framework overheads.

`step_seconds` is the formula written once more in Python, operation for operation as in
src/step_cost.pxd, so the pure-Python reference simulator reproduces the kernel exactly (tests
assert bit-for-bit equality).

Where the numbers are a ceiling, not a prediction: chips whose program is compiled for the whole
step (Groq LPU and Cerebras, whose weights live in SRAM, and TPUs under XLA) get no per-kernel
floor and no launch cost, and the efficiencies default to those measured on NVIDIA GPUs; nothing
in ../shared/data measures them, so their prices are what the datasheet allows at GPU-like
efficiency, an optimistic bound. A model that does not fit in one SRAM chip is spread over many
(tensor parallelism here); the pipeline-style layer placement those systems use is not modelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal, Optional

import numpy as np

from . import _core
from .architecture import ModelArch
from .collectives import Affine, all_reduce, all_to_all, fabric_link, scale_up_link, send
from .costparams import CostModelParams
from .hardware import Hardware
from .operators import StageOperators, stage_operators
from .precision import Precision
from .systems import Fabric

if TYPE_CHECKING:
    from .kernel_table import KernelTable

GRID = _core.KERNEL_TABLE_GRID
OPS = _core.KERNEL_TABLE_OPS
ROWS = _core.KERNEL_TABLE_ROWS
# The op tables, in the kernel's order (gemm_seconds' `op` argument).
OP_NAMES = ("qkv_proj", "o_proj", "mlp_up", "mlp_down", "lm_head")
# Chips whose whole step is one compiled program: no per-kernel floor, no launches.
COMPILED_VENDORS = ("google", "groq", "cerebras")


def _zeros(n: int) -> tuple[float, ...]:
    return (0.0,) * n


@dataclass(frozen=True)
class CostCoefficients:
    """Per-chip, per-stage coefficients of the step-time formula (field order = the kernel's
    layout, src/step_cost.pxd). Rates that divide are at fields 4 and 8; every other rate is
    stored as seconds per unit so that zero means free."""

    overhead_prefill_s: float = 0.0
    overhead_decode_s: float = 0.0
    overhead_per_token_s: float = 0.0
    gemm_half_rows: float = 0.0
    flops_per_s: float = 1.0
    attn_s_per_flop: float = 0.0
    attn_half_pairs: float = 0.0
    kv_s_per_byte: float = 0.0
    bytes_per_s: float = 1.0
    elementwise_s_per_byte: float = 0.0
    kernel_fixed_s: float = 0.0
    prefill_launch_floor_s: float = 0.0
    decode_launch_floor_s: float = 0.0
    graph_max_decodes: float = 0.0
    qkv_flops_per_row: float = 0.0
    qkv_weight_bytes: float = 0.0
    qkv_act_bytes_per_row: float = 0.0
    o_flops_per_row: float = 0.0
    o_weight_bytes: float = 0.0
    o_act_bytes_per_row: float = 0.0
    mlp_in_flops_per_row: float = 0.0
    mlp_in_weight_bytes: float = 0.0
    mlp_in_act_bytes_per_row: float = 0.0
    mlp_out_flops_per_row: float = 0.0
    mlp_out_weight_bytes: float = 0.0
    mlp_out_act_bytes_per_row: float = 0.0
    lm_head_flops_per_row: float = 0.0
    lm_head_weight_bytes: float = 0.0
    lm_head_act_bytes_per_row: float = 0.0
    expert_flops_per_row: float = 0.0
    expert_bytes: float = 0.0
    expert_act_bytes_per_row: float = 0.0
    num_experts: float = 0.0
    expert_miss: float = 1.0
    experts_per_token: float = 0.0
    flops_per_attn_pair: float = 0.0
    flops_per_decode_pair_extra: float = 0.0
    flops_per_window_pair: float = 0.0
    kv_bytes_per_token: float = 0.0
    kv_window_bytes_per_token: float = 0.0
    window_tokens: float = 0.0
    elementwise_bytes_per_token: float = 0.0
    ar_ring_fixed_s: float = 0.0
    ar_ring_per_token_s: float = 0.0
    ar_tree_fixed_s: float = 0.0
    ar_tree_per_token_s: float = 0.0
    a2a_fixed_s: float = 0.0
    a2a_per_token_s: float = 0.0
    send_fixed_s: float = 0.0
    send_per_token_s: float = 0.0
    kt_decode_nb: float = 0.0
    kt_decode_ns: float = 0.0
    kt_decode_batch: tuple[float, ...] = field(default=_zeros(GRID))
    kt_decode_seq: tuple[float, ...] = field(default=_zeros(GRID))
    kt_decode_s: tuple[float, ...] = field(default=_zeros(GRID * GRID))
    kt_prefill_nb: float = 0.0
    kt_prefill_ns: float = 0.0
    kt_prefill_batch: tuple[float, ...] = field(default=_zeros(GRID))
    kt_prefill_seq: tuple[float, ...] = field(default=_zeros(GRID))
    kt_prefill_s: tuple[float, ...] = field(default=_zeros(GRID * GRID))
    kt_op_n: tuple[float, ...] = field(default=_zeros(OPS))
    kt_op_rows: tuple[float, ...] = field(default=_zeros(OPS * ROWS))
    kt_op_s: tuple[float, ...] = field(default=_zeros(OPS * ROWS))

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                size = dict(_core.COST_ARRAYS)[f.name]
                if len(value) != size:
                    raise ValueError(f"CostCoefficients.{f.name} needs {size} values; got {len(value)}")

    def to_array(self) -> np.ndarray:
        """The kernel's coefficient vector (tokenmill._core.COST_FIELDS order)."""
        flat: list[float] = []
        for f in fields(self):  # not dataclasses.astuple: it deep-copies ~1,000 floats
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                flat.extend(value)
            else:
                flat.append(value)
        return np.array(flat, dtype=np.float64)

    @classmethod
    def fixed(cls, seconds: float) -> "CostCoefficients":
        """Every step takes exactly `seconds`, whatever it holds (for hand-checked schedules)."""
        return cls(overhead_prefill_s=seconds, overhead_decode_s=seconds)

    def with_updates(self, **changes: Any) -> "CostCoefficients":
        return replace(self, **changes)

    @property
    def weight_bytes(self) -> float:
        """Weights one chip streams every step whatever the batch (all but routed experts)."""
        return (self.qkv_weight_bytes + self.o_weight_bytes + self.mlp_in_weight_bytes
                + self.mlp_out_weight_bytes + self.lm_head_weight_bytes)

    @property
    def flops_per_token(self) -> float:
        """Matmul FLOPs of one token on one chip (active experts only, LM head excluded)."""
        return (self.qkv_flops_per_row + self.o_flops_per_row + self.mlp_in_flops_per_row
                + self.mlp_out_flops_per_row + self.experts_per_token * self.expert_flops_per_row)

    @property
    def has_kernel_table(self) -> bool:
        return self.kt_decode_nb > 0 or self.kt_prefill_nb > 0 or any(n > 0 for n in self.kt_op_n)


def _field_names() -> tuple[str, ...]:
    names: list[str] = []
    for f in fields(CostCoefficients):
        size = dict(_core.COST_ARRAYS).get(f.name, 1)
        names.extend([f.name] if size == 1 else [f"{f.name}[{k}]" for k in range(size)])
    return tuple(names)


assert _field_names() == _core.COST_FIELDS, "CostCoefficients must mirror src/step_cost.pxd"

NextStage = Literal["scale-up", "scale-out"]


def coefficients(model: ModelArch, hw: Hardware, precision: Precision, tp: int,
                 params: CostModelParams, *, layers: Optional[range] = None, first: bool = True,
                 last: bool = True, ep: int = 1, fabric: Optional[Fabric] = None,
                 next_stage: Optional[NextStage] = None,
                 kernel_table: Optional["KernelTable"] = None) -> CostCoefficients:
    """Coefficients for one chip of a `tp`-way group running `layers` of `model` on `hw`.

    Defaults price a whole replica without pipeline stages (all layers, embedding and LM head).
    `ep` > 1 splits the experts over that many chips of the group and replaces the MoE layers'
    all-reduce by a dispatch and a combine all-to-all (tokens spread over the EP ranks, as
    DeepEP-style layouts do). `fabric` is the scale-out network, needed only when the group is
    wider than the chip's scale-up domain. `next_stage` prices sending the stage's hidden states
    to the next pipeline stage over NVLink ("scale-up") or the fabric ("scale-out"); None for the
    last stage. `kernel_table` replaces modelled times with measured ones where it covers them.
    """
    ops = stage_operators(model, precision, tp, layers=layers, first=first, last=last)
    peak = hw.dense_flops(precision.compute_dtype)
    attention_peak = hw.dense_flops("bf16")  # attention runs in 16 bits (softmax, P.V)
    bandwidth = hw.memory_bandwidth_tbps * 1e12
    compiled = hw.vendor in COMPILED_VENDORS or hw.memory_kind == "sram"
    floor_s = 0.0 if compiled else params.kernel_floor_us * 1e-6
    launch_s = 0.0 if compiled else params.launch_us * 1e-6

    allreduces, a2a_calls = _collective_counts(ops, tp, ep)
    ring, tree, a2a, to_next = _collectives(ops, hw, params, tp, ep, fabric, next_stage,
                                            allreduces, a2a_calls)
    kernels = ops.kernels_per_step + allreduces + a2a_calls + (1 if next_stage else 0)
    # Skewed routing spreads a step's tokens over fewer experts than E (at least k of them).
    spread_experts = (max(float(ops.experts_per_token), ops.num_experts * params.expert_spread)
                      if ops.num_experts else 0.0)
    coeffs = CostCoefficients(
        overhead_prefill_s=params.prefill_step_overhead_ms * 1e-3,
        overhead_decode_s=params.decode_step_overhead_ms * 1e-3,
        overhead_per_token_s=(params.per_sequence_overhead_us
                              + params.per_sequence_per_rank_us * (tp - 1)) * 1e-6,
        gemm_half_rows=params.gemm_half_rows,
        flops_per_s=peak * params.compute_efficiency,
        attn_s_per_flop=1.0 / (attention_peak * params.attention_efficiency),
        attn_half_pairs=params.attention_half_pairs,
        kv_s_per_byte=1.0 / (bandwidth * params.kv_read_efficiency),
        bytes_per_s=bandwidth * params.memory_efficiency,
        elementwise_s_per_byte=1.0 / (bandwidth * params.elementwise_efficiency),
        kernel_fixed_s=ops.kernels_per_step * floor_s,
        prefill_launch_floor_s=0.0 if params.prefill_graphs else kernels * launch_s,
        decode_launch_floor_s=kernels * launch_s,
        graph_max_decodes=float(params.graph_max_batch) if params.cuda_graphs else 0.0,
        qkv_flops_per_row=ops.qkv.flops_per_row, qkv_weight_bytes=ops.qkv.weight_bytes,
        qkv_act_bytes_per_row=ops.qkv.act_bytes_per_row,
        o_flops_per_row=ops.o.flops_per_row, o_weight_bytes=ops.o.weight_bytes,
        o_act_bytes_per_row=ops.o.act_bytes_per_row,
        mlp_in_flops_per_row=ops.mlp_in.flops_per_row, mlp_in_weight_bytes=ops.mlp_in.weight_bytes,
        mlp_in_act_bytes_per_row=ops.mlp_in.act_bytes_per_row,
        mlp_out_flops_per_row=ops.mlp_out.flops_per_row,
        mlp_out_weight_bytes=ops.mlp_out.weight_bytes,
        mlp_out_act_bytes_per_row=ops.mlp_out.act_bytes_per_row,
        lm_head_flops_per_row=ops.lm_head.flops_per_row,
        lm_head_weight_bytes=ops.lm_head.weight_bytes,
        lm_head_act_bytes_per_row=ops.lm_head.act_bytes_per_row,
        expert_flops_per_row=ops.expert.flops_per_row, expert_bytes=ops.expert.weight_bytes,
        expert_act_bytes_per_row=ops.expert.act_bytes_per_row,
        num_experts=spread_experts,
        expert_miss=1.0 - ops.experts_per_token / spread_experts if ops.num_experts else 1.0,
        experts_per_token=float(ops.experts_per_token),
        flops_per_attn_pair=ops.flops_per_attn_pair,
        flops_per_decode_pair_extra=ops.flops_per_decode_pair_extra,
        flops_per_window_pair=ops.flops_per_window_pair,
        kv_bytes_per_token=ops.kv_bytes_per_token,
        kv_window_bytes_per_token=ops.kv_window_bytes_per_token,
        window_tokens=ops.window_tokens,
        elementwise_bytes_per_token=ops.elementwise_bytes_per_token,
        ar_ring_fixed_s=ring.fixed_s, ar_ring_per_token_s=ring.per_token_s,
        ar_tree_fixed_s=tree.fixed_s, ar_tree_per_token_s=tree.per_token_s,
        a2a_fixed_s=a2a.fixed_s, a2a_per_token_s=a2a.per_token_s,
        send_fixed_s=to_next.fixed_s, send_per_token_s=to_next.per_token_s,
    )
    if kernel_table is not None:
        coeffs = replace(coeffs, **kernel_table.coefficient_fields(
            model=model.name, gpu=hw.name, operators=ops, tp=tp))
    return coeffs


def _collective_counts(ops: StageOperators, tp: int, ep: int) -> tuple[int, int]:
    """TP all-reduces and EP all-to-alls per step: two all-reduces per layer (after attention
    and after the MLP); with expert parallelism the MoE layers dispatch and combine instead."""
    if tp <= 1 and ep <= 1:
        return 0, 0
    if ep > 1:
        return (2 * ops.layers - ops.moe_layers if tp > 1 else 0), 2 * ops.moe_layers
    return 2 * ops.layers, 0


def _collectives(ops: StageOperators, hw: Hardware, params: CostModelParams, tp: int, ep: int,
                 fabric: Optional[Fabric], next_stage: Optional[NextStage], allreduces: int,
                 a2a_calls: int) -> tuple[Affine, Affine, Affine, Affine]:
    intra = scale_up_link(hw, params.collective_efficiency)
    inter = fabric_link(fabric, params.collective_efficiency) if fabric is not None else None
    base = params.collective_base_us * 1e-6
    domain = hw.scale_up_domain
    ring, tree = all_reduce(tp, ops.hidden_bytes_per_token, domain, intra, inter, base)
    a2a = all_to_all(ep, ops.experts_per_token * ops.hidden_bytes_per_token, domain, intra, inter,
                     base)
    to_next = Affine()
    if next_stage is not None:
        link = intra if next_stage == "scale-up" else inter
        if link is None:
            raise ValueError(f"next_stage = {next_stage!r} but {hw.name} has no such link "
                             "(give a fabric for scale-out)")
        to_next = send(ops.hidden_bytes_per_token, link, base)
    return ring.times(allreduces), tree.times(allreduces), a2a.times(a2a_calls), to_next


def stage_coefficients(model: ModelArch, hw: Hardware, precision: Precision, tp: int, pp: int,
                       params: CostModelParams, *, ep: int = 1, fabric: Optional[Fabric] = None,
                       kernel_table: Optional["KernelTable"] = None) -> list[CostCoefficients]:
    """One coefficient set per pipeline stage, layers split as vLLM splits them. Stage s runs on
    chips [s*tp, (s+1)*tp); its send to stage s+1 crosses the fabric when the two stages sit
    in different scale-up domains."""
    out = []
    for stage in range(pp):
        nxt: Optional[NextStage] = None
        if stage < pp - 1:
            here = (stage * tp) // hw.scale_up_domain
            there = ((stage + 1) * tp) // hw.scale_up_domain
            nxt = "scale-up" if here == there else "scale-out"
        out.append(coefficients(model, hw, precision, tp, params,
                                layers=model.stage_layers(pp, stage), first=stage == 0,
                                last=stage == pp - 1, ep=ep, fabric=fabric, next_stage=nxt,
                                kernel_table=kernel_table))
    return out


@dataclass(frozen=True)
class StepShape:
    """What one step computes (the Python twin of StepShape in src/step_cost.pxd)."""

    prefill_tokens: float = 0.0   # prompt tokens computed in the step
    prefill_pairs: float = 0.0    # causal (query, key) pairs of those tokens
    prefill_context: float = 0.0  # cached tokens the prefills attend to
    logit_tokens: float = 0.0     # tokens that need logits
    decode_tokens: float = 0.0    # sequences decoding one token each
    decode_context: float = 0.0   # cached tokens the decodes attend to


# ---- the twin of src/step_cost.pxd, operation for operation ---------------------------------

def _capped(x: float, cap: float) -> float:
    return x if x < cap else cap


def _larger(a: float, b: float) -> float:
    return a if a > b else b


def _bracket(x: tuple[float, ...], start: int, n: int, v: float) -> int:
    i = 0
    while i < n - 2 and x[start + i + 1] <= v:
        i += 1
    return i


def _interp1(x: tuple[float, ...], xs: int, y: tuple[float, ...], ys: int, n: int, v: float) -> float:
    if n == 1:
        return y[ys]
    i = _bracket(x, xs, n, v)
    dx = x[xs + i + 1] - x[xs + i]
    if dx <= 0.0:
        return y[ys + i]
    return y[ys + i] + (y[ys + i + 1] - y[ys + i]) * ((v - x[xs + i]) / dx)


def _interp2(bx: tuple[float, ...], nb: int, sx: tuple[float, ...], ns: int,
             t: tuple[float, ...], b: float, sv: float) -> float:
    if nb == 1:
        return _interp1(sx, 0, t, 0, ns, sv)
    i = _bracket(bx, 0, nb, b)
    lo = _interp1(sx, 0, t, i * GRID, ns, sv)
    hi = _interp1(sx, 0, t, (i + 1) * GRID, ns, sv)
    dx = bx[i + 1] - bx[i]
    if dx <= 0.0:
        return lo
    return lo + (hi - lo) * ((b - bx[i]) / dx)


def _gemm_seconds(c: CostCoefficients, op: int, flops: float, wbytes: float, act: float,
                  rows: float, s_per_flop: float, s_per_byte: float) -> float:
    if c.kt_op_n[op] > 0.0:
        n = int(c.kt_op_n[op])
        start = op * ROWS
        if rows >= c.kt_op_rows[start] and rows <= c.kt_op_rows[start + n - 1]:
            return _interp1(c.kt_op_rows, start, c.kt_op_s, start, n, rows)
    return _larger(flops * s_per_flop, (wbytes + act * rows) * s_per_byte)


def _table_step_seconds(c: CostCoefficients, s: StepShape) -> float:
    nb = int(c.kt_decode_nb)
    if nb > 0 and s.prefill_tokens == 0.0 and s.decode_tokens > 0.0:
        ns = int(c.kt_decode_ns)
        per = s.decode_context / s.decode_tokens
        if (s.decode_tokens >= c.kt_decode_batch[0] and s.decode_tokens <= c.kt_decode_batch[nb - 1]
                and per >= c.kt_decode_seq[0] and per <= c.kt_decode_seq[ns - 1]):
            return _interp2(c.kt_decode_batch, nb, c.kt_decode_seq, ns, c.kt_decode_s,
                            s.decode_tokens, per)
    nb = int(c.kt_prefill_nb)
    if (nb > 0 and s.decode_tokens == 0.0 and s.prefill_context == 0.0 and s.logit_tokens > 0.0
            and s.prefill_tokens > 0.0):
        ns = int(c.kt_prefill_ns)
        per = s.prefill_tokens / s.logit_tokens
        if (s.logit_tokens >= c.kt_prefill_batch[0] and s.logit_tokens <= c.kt_prefill_batch[nb - 1]
                and per >= c.kt_prefill_seq[0] and per <= c.kt_prefill_seq[ns - 1]):
            return _interp2(c.kt_prefill_batch, nb, c.kt_prefill_seq, ns, c.kt_prefill_s,
                            s.logit_tokens, per)
    return -1.0


def gpu_seconds(c: CostCoefficients, s: StepShape) -> float:
    """The model's GPU time of one step (the twin of gpu_seconds in src/step_cost.pxd)."""
    tokens = s.prefill_tokens + s.decode_tokens
    g = c.kernel_fixed_s
    s_per_byte = 1.0 / c.bytes_per_s
    s_per_flop = (tokens + c.gemm_half_rows) / c.flops_per_s
    g += _gemm_seconds(c, 0, c.qkv_flops_per_row, c.qkv_weight_bytes, c.qkv_act_bytes_per_row,
                       tokens, s_per_flop, s_per_byte)
    g += _gemm_seconds(c, 1, c.o_flops_per_row, c.o_weight_bytes, c.o_act_bytes_per_row,
                       tokens, s_per_flop, s_per_byte)
    g += _gemm_seconds(c, 2, c.mlp_in_flops_per_row, c.mlp_in_weight_bytes,
                       c.mlp_in_act_bytes_per_row, tokens, s_per_flop, s_per_byte)
    g += _gemm_seconds(c, 3, c.mlp_out_flops_per_row, c.mlp_out_weight_bytes,
                       c.mlp_out_act_bytes_per_row, tokens, s_per_flop, s_per_byte)
    if s.logit_tokens > 0.0 and c.lm_head_weight_bytes > 0.0:
        g += _gemm_seconds(c, 4, c.lm_head_flops_per_row, c.lm_head_weight_bytes,
                           c.lm_head_act_bytes_per_row, s.logit_tokens,
                           (s.logit_tokens + c.gemm_half_rows) / c.flops_per_s, s_per_byte)
    if c.num_experts > 0.0:  # as in the kernel: dense models skip the pow() call
        touched = c.num_experts * (1.0 - math.pow(c.expert_miss, tokens))
        rows = c.experts_per_token * tokens
        compute = c.expert_flops_per_row * (rows + c.gemm_half_rows * touched) / c.flops_per_s
        memory = (c.expert_bytes * touched + c.expert_act_bytes_per_row * rows) * s_per_byte
        g += _larger(compute, memory)
    if s.prefill_tokens > 0.0:
        wcap = c.window_tokens * s.prefill_tokens
        flops = (c.flops_per_attn_pair * s.prefill_pairs
                 + c.flops_per_window_pair * _capped(s.prefill_pairs, wcap))
        compute = flops * (s.prefill_pairs + c.attn_half_pairs) / s.prefill_pairs * c.attn_s_per_flop
        context = s.prefill_context + s.prefill_tokens
        nbytes = c.kv_bytes_per_token * context + c.kv_window_bytes_per_token * _capped(context, wcap)
        g += _larger(compute, nbytes * c.kv_s_per_byte)
    if s.decode_tokens > 0.0:
        wcap = c.window_tokens * s.decode_tokens
        flops = ((c.flops_per_attn_pair + c.flops_per_decode_pair_extra) * s.decode_context
                 + c.flops_per_window_pair * _capped(s.decode_context, wcap))
        nbytes = (c.kv_bytes_per_token * s.decode_context
                  + c.kv_window_bytes_per_token * _capped(s.decode_context, wcap))
        g += _larger(flops * c.attn_s_per_flop, nbytes * c.kv_s_per_byte)
    g += c.elementwise_bytes_per_token * tokens * c.elementwise_s_per_byte
    ring = c.ar_ring_fixed_s + c.ar_ring_per_token_s * tokens
    tree = c.ar_tree_fixed_s + c.ar_tree_per_token_s * tokens
    g += ring if ring < tree else tree
    g += c.a2a_fixed_s + c.a2a_per_token_s * tokens
    g += c.send_fixed_s + c.send_per_token_s * tokens
    return g


def step_seconds(c: CostCoefficients, s: StepShape) -> float:
    """Duration of one step; the Python twin of step_seconds in src/step_cost.pxd."""
    gpu = -1.0
    if s.prefill_tokens > 0.0:
        framework = c.overhead_prefill_s
        launch = c.prefill_launch_floor_s
    else:
        framework = c.overhead_decode_s
        launch = c.decode_launch_floor_s if s.decode_tokens > c.graph_max_decodes else 0.0
    framework = framework + c.overhead_per_token_s * s.logit_tokens
    if c.kt_decode_nb > 0.0 or c.kt_prefill_nb > 0.0:
        gpu = _table_step_seconds(c, s)
    if gpu < 0.0:
        gpu = gpu_seconds(c, s)
    return framework + _larger(gpu, launch)


def step_activity(c: CostCoefficients, s: StepShape) -> tuple[float, float]:
    """How long one step keeps the compute side and the memory side of a chip busy (FLOPs and
    bytes at the calibrated rates, summed over operators); the Python twin of step_activity in
    src/step_cost.pxd, operation for operation. tokenmill.power turns them into watts."""
    tokens = s.prefill_tokens + s.decode_tokens
    logits = s.logit_tokens if c.lm_head_weight_bytes > 0.0 else 0.0
    gemm_flops = ((c.qkv_flops_per_row + c.o_flops_per_row + c.mlp_in_flops_per_row
                   + c.mlp_out_flops_per_row) * tokens
                  + c.lm_head_flops_per_row * logits)
    weight_bytes = (c.qkv_weight_bytes + c.o_weight_bytes + c.mlp_in_weight_bytes
                    + c.mlp_out_weight_bytes)
    act_bytes = ((c.qkv_act_bytes_per_row + c.o_act_bytes_per_row
                  + c.mlp_in_act_bytes_per_row + c.mlp_out_act_bytes_per_row) * tokens)
    attn_flops = 0.0
    kv_bytes = 0.0
    if logits > 0.0:
        weight_bytes = weight_bytes + c.lm_head_weight_bytes
        act_bytes = act_bytes + c.lm_head_act_bytes_per_row * logits
    if c.num_experts > 0.0:
        touched = c.num_experts * (1.0 - math.pow(c.expert_miss, tokens))
        rows = c.experts_per_token * tokens
        gemm_flops = gemm_flops + c.expert_flops_per_row * rows
        weight_bytes = weight_bytes + c.expert_bytes * touched
        act_bytes = act_bytes + c.expert_act_bytes_per_row * rows
    if s.prefill_tokens > 0.0:
        wcap = c.window_tokens * s.prefill_tokens
        attn_flops = (c.flops_per_attn_pair * s.prefill_pairs
                      + c.flops_per_window_pair * _capped(s.prefill_pairs, wcap))
        context = s.prefill_context + s.prefill_tokens
        kv_bytes = (c.kv_bytes_per_token * context
                    + c.kv_window_bytes_per_token * _capped(context, wcap))
    if s.decode_tokens > 0.0:
        wcap = c.window_tokens * s.decode_tokens
        attn_flops = attn_flops + ((c.flops_per_attn_pair + c.flops_per_decode_pair_extra)
                                   * s.decode_context
                                   + c.flops_per_window_pair * _capped(s.decode_context, wcap))
        kv_bytes = kv_bytes + (c.kv_bytes_per_token * s.decode_context
                               + c.kv_window_bytes_per_token * _capped(s.decode_context, wcap))
    compute_s = gemm_flops / c.flops_per_s + attn_flops * c.attn_s_per_flop
    memory_s = ((weight_bytes + act_bytes) / c.bytes_per_s + kv_bytes * c.kv_s_per_byte
                + c.elementwise_bytes_per_token * tokens * c.elementwise_s_per_byte)
    return compute_s, memory_s


def prefill_seconds(c: CostCoefficients, prompt_tokens: int) -> float:
    """Time of a step that only prefills one prompt: the unloaded TTFT of that prompt."""
    p = float(prompt_tokens)
    return step_seconds(c, StepShape(prefill_tokens=p, prefill_pairs=p * (p + 1) / 2,
                                     logit_tokens=1.0))


def decode_seconds(c: CostCoefficients, batch: int, context_tokens: int) -> float:
    """Time of a decode-only step of `batch` sequences attending to `context_tokens` in all."""
    return step_seconds(c, StepShape(logit_tokens=float(batch), decode_tokens=float(batch),
                                     decode_context=float(context_tokens)))


def gemm_efficiency(rows: float, params: CostModelParams) -> float:
    """Achieved fraction of the dense peak of a compute-bound GEMM of `rows` rows: the
    efficiency curve the coefficients encode, compute_efficiency x M / (M + gemm_half_rows)."""
    return params.compute_efficiency * rows / (rows + params.gemm_half_rows)
