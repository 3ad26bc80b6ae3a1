"""Memory fit: do the weights fit on the chips of a replica, and how much KV cache is left.

Follows vLLM's accounting: the engine may use `gpu_memory_utilization` of each chip's memory;
from that it subtracts the weights, the peak activation memory of a forward pass at the full
token budget, and memory outside PyTorch (CUDA context, cuBLAS workspaces, NCCL buffers,
CUDA graphs). What remains holds KV blocks.

The activation and runtime reserves are estimates fitted to the one published breakdown we
have (vLLM PR #10511, Llama-3-8B on H100 80GB at TP1 and TP2: activation peak 1.26 GiB at
both; memory outside PyTorch 1.79 GiB at TP1 and 3.58 GiB at TP2). Chips whose memory is
on-chip SRAM (Groq, Cerebras) stream activations through the fabric and run no CUDA runtime:
they hold weights and KV only.

A plan is tensor-parallel degree x pipeline stages; expert parallelism regroups the experts
inside the tensor-parallel group and does not change the bytes per chip. With pipeline stages,
each stage holds its own layers (the first the embedding, the last the LM head) and the KV of
its layers; the replica's KV capacity is that of its tightest stage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from .architecture import ModelArch, valid_tp_degrees
from .errors import CapacityError, ConfigError
from .hardware import GIB, Hardware
from .policy import resolve_policy
from .precision import ACTIVATION_TRAFFIC_BYTES, Precision
from .scenario import SchedulerPolicy

# Memory outside PyTorch's allocator, per chip (estimate; see the module docstring).
RUNTIME_RESERVE_BYTES = 1.79 * GIB
# Extra for NCCL buffers when the replica spans several chips (estimate, same source).
COLLECTIVE_RESERVE_BYTES = 1.79 * GIB


@dataclass(frozen=True)
class MemoryFit:
    """Per-chip memory budget of one replica (its tightest pipeline stage) and its KV capacity."""

    chip_memory_bytes: float
    usable_bytes: float
    weight_bytes: float
    activation_reserve_bytes: float
    runtime_reserve_bytes: float
    kv_bytes_available: float
    kv_bytes_per_token: float
    kv_block_size: int
    kv_capacity_blocks: int
    kv_capacity_tokens: int
    kv_blocks_overridden: bool
    tp: int = 1
    pp: int = 1
    ep: int = 1
    fits: bool = True
    needed_bytes: float = 0.0
    model_weight_bytes: float = 0.0
    smallest_fitting_tp: Optional[int] = None

    @property
    def chips(self) -> int:
        return self.tp * self.pp

    def to_dict(self) -> dict[str, float | int | bool | None]:
        return {**asdict(self), "chips": self.chips}


def activation_reserve_bytes(model: ModelArch, max_batch_tokens: int, max_num_seqs: int,
                             precision: Precision, hw: Optional[Hardware] = None) -> float:
    """Peak activation memory of a forward pass over a full token budget (estimate).

    The MLP's gate/up output, its activation and the residual stream at the full budget of
    tokens, plus float32 logits for the largest batch of sequences; fitted to vLLM's profile
    of Llama-3-8B (1.26 GiB at 8192 tokens, 256 sequences, unchanged at TP2). MoE layers use the
    width of the experts a token is routed to plus the shared experts."""
    if hw is not None and hw.memory_kind == "sram":
        return 0.0
    per_token = (4 * model.peak_mlp_width() + 4 * model.hidden_size) * ACTIVATION_TRAFFIC_BYTES
    logits = max_num_seqs * model.vocab_size * 4.0
    return max_batch_tokens * per_token + logits


def runtime_reserve_bytes(hw: Hardware, chips: int) -> float:
    if hw.memory_kind == "sram":
        return 0.0
    return RUNTIME_RESERVE_BYTES + (COLLECTIVE_RESERVE_BYTES if chips > 1 else 0.0)


def memory_fit(model: ModelArch, hw: Hardware, precision: Precision, tp: int,
               policy: SchedulerPolicy, *, pp: int = 1, ep: int = 1,
               search_tp: bool = True) -> MemoryFit:
    """The memory budget of one replica on tp x pp chips; `fits` says whether a KV block fits.
    Never raises for lack of memory (see plan_memory for that); raises ConfigError for a plan
    the model cannot be split over."""
    model.check_tensor_parallel(tp)
    model.check_expert_parallel(tp, ep)
    wb, kvb, sparse = precision.weight_bytes, precision.kv_bytes, precision.sparsity_factor
    usable = hw.memory_bytes * policy.gpu_memory_utilization
    limits = resolve_policy(policy, hw)  # the reserve depends on the policy's limits
    act = activation_reserve_bytes(model, limits.max_batch_tokens, limits.max_num_seqs, precision, hw)
    runtime = runtime_reserve_bytes(hw, tp * pp)
    block = policy.kv_block_size
    worst: Optional[tuple[float, float, float]] = None  # (tokens, weights, kv per token)
    for stage in range(pp):
        layers = model.stage_layers(pp, stage)
        weights = model.weight_bytes_per_chip(tp, wb, layers=layers, first=stage == 0,
                                              last=stage == pp - 1, sparsity=sparse)
        per_token = model.kv_bytes_per_token(tp, kvb, layers=layers)
        tokens = (usable - weights - act - runtime) / per_token
        if worst is None or tokens < worst[0]:
            worst = (tokens, weights, per_token)
    assert worst is not None
    _, weights, per_token = worst
    available = usable - weights - act - runtime
    blocks = int(available // (per_token * block)) if available > 0 else 0
    fits = blocks >= 1
    smallest = None
    if not fits and search_tp:
        smallest = _smallest_fitting_tp(model, hw, precision, tp, pp, ep, policy)
    overridden = policy.kv_blocks is not None
    if policy.kv_blocks is not None and fits:
        blocks = policy.kv_blocks
    return MemoryFit(
        chip_memory_bytes=hw.memory_bytes, usable_bytes=usable, weight_bytes=weights,
        activation_reserve_bytes=act, runtime_reserve_bytes=runtime,
        kv_bytes_available=available, kv_bytes_per_token=per_token, kv_block_size=block,
        kv_capacity_blocks=blocks, kv_capacity_tokens=blocks * block,
        kv_blocks_overridden=overridden, tp=tp, pp=pp, ep=ep, fits=fits,
        needed_bytes=weights + act + runtime + per_token * block,
        model_weight_bytes=model.total_weight_bytes(wb, sparse), smallest_fitting_tp=smallest)


def plan_memory(model: ModelArch, hw: Hardware, precision: Precision, tp: int,
                policy: SchedulerPolicy, *, pp: int = 1, ep: int = 1) -> MemoryFit:
    """KV capacity of one replica of `model` on tp x pp chips; CapacityError if it does not fit."""
    fit = memory_fit(model, hw, precision, tp, policy, pp=pp, ep=ep)
    if not fit.fits:
        raise CapacityError(does_not_fit_message(model, hw, precision, policy, fit))
    return fit


def _smallest_fitting_tp(model: ModelArch, hw: Hardware, precision: Precision, tp: int, pp: int,
                         ep: int, policy: SchedulerPolicy) -> Optional[int]:
    for bigger in valid_tp_degrees(model, limit=hw.scale_up_domain):
        if bigger <= tp or bigger % ep:
            continue
        try:
            if memory_fit(model, hw, precision, bigger, policy, pp=pp, ep=ep, search_tp=False).fits:
                return bigger
        except ConfigError:
            continue
    return None


def does_not_fit_message(model: ModelArch, hw: Hardware, precision: Precision,
                         policy: SchedulerPolicy, fit: MemoryFit) -> str:
    """Needed versus available per chip, and the smallest tensor-parallel degree that fits."""
    plan = f"{fit.tp} x {hw.name}" if fit.pp == 1 else f"{fit.tp * fit.pp} x {hw.name} (tp {fit.tp}, pp {fit.pp})"
    reserves = fit.activation_reserve_bytes + fit.runtime_reserve_bytes
    msg = (f"{model.name} ({precision.weights} weights) does not fit on {plan}: each chip needs "
           f"{fit.needed_bytes / GIB:.2f} GiB (weights {fit.weight_bytes / GIB:.2f} GiB, activation "
           f"and runtime reserve {reserves / GIB:.2f} GiB, one KV block) but has "
           f"{fit.usable_bytes / GIB:.2f} GiB usable ({hw.memory_gib:g} GiB x "
           f"gpu_memory_utilization {policy.gpu_memory_utilization:g}).")
    if fit.smallest_fitting_tp is not None:
        return msg + f" The smallest tensor-parallel degree that fits is tp = {fit.smallest_fitting_tp}."
    return msg + (f" No tensor-parallel degree within {hw.name}'s scale-up domain of "
                  f"{hw.scale_up_domain} chips fits; use a quantised format, pipeline stages or "
                  "a larger chip.")
