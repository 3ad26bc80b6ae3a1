"""Type stub of the compiled core (src/_core.pyx): the event loop and the batch-step kernel."""

from typing import Any

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

STATUS_PENDING: int
STATUS_WAITING: int
STATUS_RUNNING: int
STATUS_FINISHED: int
STATUS_REJECTED_BUDGET: int
STATUS_REJECTED_KV: int
STATUS_SWAPPED: int

POLICY_ORCA: int
POLICY_CHUNKED: int
POLICY_STATIC: int
PREEMPT_RECOMPUTE: int
PREEMPT_SWAP: int

COST_SCALARS: tuple[str, ...]
COST_ARRAYS: tuple[tuple[str, int], ...]
COST_FIELDS: tuple[str, ...]
KERNEL_TABLE_GRID: int
KERNEL_TABLE_OPS: int
KERNEL_TABLE_ROWS: int
ITL_BINS: int
ITL_BIN_MANTISSA_BITS: int
ITL_BIN_MIN_EXPONENT: int

def run(
    arrival_s: npt.NDArray[np.float64],
    prompt_tokens: npt.NDArray[np.int32],
    output_tokens: npt.NDArray[np.int32],
    cost: npt.NDArray[np.float64],
    *,
    num_replicas: int,
    max_batch_tokens: int,
    max_num_seqs: int,
    block_size: int,
    kv_capacity_blocks: int,
    policy: int = ...,
    priority: npt.NDArray[np.int32] | None = ...,
    priority_scheduling: bool = ...,
    preemption: int = ...,
    swap_capacity_blocks: int = ...,
    swap_seconds_per_block: float = ...,
    prefix_offsets: npt.NDArray[np.int64] | None = ...,
    prefix_ids: npt.NDArray[np.int64] | None = ...,
    prefix_granule_tokens: int = ...,
    prefix_caching: bool = ...,
    stop_time_s: float = ...,
) -> dict[str, Any]:
    """Simulate replicas serving requests under a batching policy (docs/schedulers.md).

    Returns per-request arrays (first_token_s, completion_s, admitted_s, preemptions,
    generated_tokens, status, replica, prefix_hit_tokens), a dict "replicas" of per-replica
    arrays (steps, preemptions, swap_out_blocks, swap_in_blocks, prefill_tokens,
    recompute_tokens, decode_tokens, prefix_query_tokens, prefix_hit_tokens, max_step_tokens,
    kv_peak_blocks, kv_blocks_in_use_at_end, swapped_at_end, busy_s, kv_block_seconds), the
    inter-token-gap histogram (itl_histogram, itl_sum_s, itl_count, itl_max_s), the number of
    events processed and end_time_s.
    """

def _check_inputs(
    arrival_s: npt.NDArray[np.float64],
    prompt_tokens: npt.NDArray[np.int32],
    output_tokens: npt.NDArray[np.int32],
    cost: npt.NDArray[np.float64],
    num_replicas: int,
    max_batch_tokens: int,
    max_num_seqs: int,
    block_size: int,
    kv_capacity_blocks: int,
    policy: int,
    priority: npt.NDArray[np.int32] | None,
    preemption: int,
    swap_capacity_blocks: int,
    swap_seconds_per_block: float,
    prefix_offsets: npt.NDArray[np.int64] | None,
    prefix_ids: npt.NDArray[np.int64] | None,
    prefix_granule_tokens: int,
    prefix_caching: bool,
    stop_time_s: float,
) -> None: ...

@disjoint_base
class EventQueue:
    """The core's event heap, ordered by (time, insertion sequence)."""

    def __init__(self) -> None: ...
    def push(self, time: float, kind: int = 0, target: int = 0) -> None: ...
    def pop(self) -> tuple[float, int, int, int]: ...
    def __len__(self) -> int: ...

def itl_bin_index(gap: float) -> int: ...
def step_time(
    cost: npt.NDArray[np.float64],
    prefill_tokens: float,
    prefill_pairs: float,
    prefill_context: float,
    logit_tokens: float,
    decode_tokens: float,
    decode_context: float,
) -> float: ...
