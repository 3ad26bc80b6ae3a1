"""Memory fit: do the weights fit on the chips of a replica, and how much KV cache is left.

Follows vLLM's accounting: the engine may use `gpu_memory_utilization` of each chip's memory;
from that it subtracts the weights, the peak activation memory of a forward pass at the full
token budget, and memory outside PyTorch (CUDA context, cuBLAS workspaces, NCCL buffers,
CUDA graphs). What remains holds KV blocks.

The activation and runtime reserves are estimates fitted to the one published breakdown we
have (vLLM PR #10511, Llama-3-8B on H100 80GB at TP1 and TP2: activation peak 1.26 GiB at
both; memory outside PyTorch 1.79 GiB at TP1 and 3.58 GiB at TP2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .architecture import DTYPE_BYTES, ModelArch, valid_tp_degrees
from .errors import CapacityError
from .hardware import GIB, Hardware
from .policy import resolve_policy
from .scenario import Precision, SchedulerPolicy

# Memory outside PyTorch's allocator, per chip (estimate; see the module docstring).
RUNTIME_RESERVE_BYTES = 1.79 * GIB
# Extra for NCCL buffers when the replica spans several chips (estimate, same source).
COLLECTIVE_RESERVE_BYTES = 1.79 * GIB


@dataclass(frozen=True)
class MemoryFit:
    """Per-chip memory budget of one replica and the KV capacity it leaves."""

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

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def activation_reserve_bytes(model: ModelArch, max_batch_tokens: int, max_num_seqs: int,
                             precision: Precision) -> float:
    """Peak activation memory of a forward pass over a full token budget (estimate).

    The MLP's gate/up output, its activation and the residual stream at the full budget of
    tokens, plus float32 logits for the largest batch of sequences; fitted to vLLM's profile
    of Llama-3-8B (1.26 GiB at 8192 tokens, 256 sequences, unchanged at TP2)."""
    act = DTYPE_BYTES[precision.compute_dtype if precision.compute_dtype != "fp8" else "bf16"]
    per_token = (4 * model.intermediate_size + 4 * model.hidden_size) * act
    logits = max_num_seqs * model.vocab_size * 4.0
    return max_batch_tokens * per_token + logits


def plan_memory(model: ModelArch, hw: Hardware, precision: Precision, tp: int,
                policy: SchedulerPolicy) -> MemoryFit:
    """KV capacity of one replica of `model` on `tp` chips; CapacityError if it does not fit."""
    weight_bytes = model.weight_bytes_per_chip(tp, DTYPE_BYTES[precision.weights])
    usable = hw.memory_bytes * policy.gpu_memory_utilization
    limits = resolve_policy(policy, hw)
    act = activation_reserve_bytes(model, limits.max_batch_tokens, limits.max_num_seqs, precision)
    runtime = RUNTIME_RESERVE_BYTES + (COLLECTIVE_RESERVE_BYTES if tp > 1 else 0.0)
    available = usable - weight_bytes - act - runtime
    kv_per_token = model.kv_bytes_per_token(tp, DTYPE_BYTES[precision.kv_dtype])
    block = policy.kv_block_size
    blocks = int(available // (kv_per_token * block)) if available > 0 else 0
    if blocks < 1:
        raise CapacityError(_does_not_fit(model, hw, precision, tp, policy, weight_bytes, usable,
                                          act + runtime, kv_per_token * block))
    overridden = policy.kv_blocks is not None
    if policy.kv_blocks is not None:
        blocks = policy.kv_blocks
    return MemoryFit(
        chip_memory_bytes=hw.memory_bytes, usable_bytes=usable, weight_bytes=weight_bytes,
        activation_reserve_bytes=act, runtime_reserve_bytes=runtime,
        kv_bytes_available=available, kv_bytes_per_token=kv_per_token, kv_block_size=block,
        kv_capacity_blocks=blocks, kv_capacity_tokens=blocks * block,
        kv_blocks_overridden=overridden)


def _does_not_fit(model: ModelArch, hw: Hardware, precision: Precision, tp: int,
                  policy: SchedulerPolicy, weight_bytes: float, usable: float, reserves: float,
                  block_bytes: float) -> str:
    need = weight_bytes + reserves + block_bytes
    msg = (f"{model.name} ({precision.weights} weights) does not fit on {tp} x {hw.name}: each chip "
           f"needs {need / GIB:.2f} GiB (weights {weight_bytes / GIB:.2f} GiB, activation and runtime "
           f"reserve {reserves / GIB:.2f} GiB, one KV block) but has {usable / GIB:.2f} GiB usable "
           f"({hw.memory_gib:g} GiB x gpu_memory_utilization {policy.gpu_memory_utilization:g}).")
    for bigger in valid_tp_degrees(model, limit=hw.scale_up_domain):
        if bigger <= tp:
            continue
        try:
            plan_memory(model, hw, precision, bigger, policy)
        except CapacityError:
            continue
        return msg + f" The smallest tensor-parallel degree that fits is tp = {bigger}."
    return msg + (f" No tensor-parallel degree within {hw.name}'s scale-up domain of "
                  f"{hw.scale_up_domain} chips fits; use a quantised format or a larger chip.")
