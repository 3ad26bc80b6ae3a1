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
STATUS_TRANSFER: int

TIMESERIES_FIELDS: tuple[str, ...]

ROUTER_ROUND_ROBIN: int
ROUTER_RANDOM: int
ROUTER_LEAST_REQUESTS: int
ROUTER_LEAST_TOKENS: int
ROUTER_POWER_OF_TWO: int
ROUTER_PREFIX_AFFINITY: int

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
    cost: npt.ArrayLike,
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
    concurrency: int = ...,
    think_time_s: float = ...,
    pipeline_stages: int = ...,
    router: int = ...,
    seed: int = ...,
    balance_abs: int = ...,
    balance_rel: float = ...,
    cache_threshold: float = ...,
    decode_replicas: int = ...,
    decode_pipeline_stages: int = ...,
    decode_max_batch_tokens: int = ...,
    decode_max_num_seqs: int = ...,
    decode_kv_capacity_blocks: int = ...,
    decode_cost: npt.ArrayLike | None = ...,
    decode_swap_capacity_blocks: int = ...,
    decode_swap_seconds_per_block: float = ...,
    kv_link_bytes_per_s: float = ...,
    kv_link_latency_s: float = ...,
    kv_bytes_per_token: float = ...,
    spec_tokens: int = ...,
    spec_acceptance: npt.ArrayLike | None = ...,
    draft_cost: npt.ArrayLike | None = ...,
    timeseries_dt: float = ...,
    timeseries_max_buckets: int = ...,
) -> dict[str, Any]:
    """Simulate a cluster serving the requests (docs/schedulers.md, docs/cluster.md).

    `cost` (and `decode_cost`) hold one row of len(COST_FIELDS) coefficients per pipeline
    stage; `draft_cost` one row per pool. Returns per-request arrays (arrival_s,
    first_token_s, completion_s, admitted_s, kv_ready_s, handoff_s, prefill_busy_s,
    prefill_lost_s, preemptions,
    generated_tokens, status, replica, decode_replica, prefix_hit_tokens), a dict "replicas"
    of per-engine arrays (steps, preemptions, swap_out_blocks, swap_in_blocks,
    prefill_tokens, recompute_tokens, decode_tokens, prefix_query_tokens, prefix_hit_tokens,
    max_step_tokens, kv_peak_blocks, kv_blocks_in_use_at_end, swapped_at_end,
    capacity_blocks, pool, pipe, spec_tokens, kv_sent, kv_received, busy_s,
    kv_block_seconds, compute_s, memory_s: the compute-time and memory-time terms of every
    step, summed over a pipelined engine's stages), a dict "pipes" of per-replica arrays (pool, stages, kv_transfers,
    busiest_stage_busy_s, mean_stage_busy_s, kv_link_busy_s), "timeseries" (None, or with
    timeseries_dt > 0 an array [bucket, engine, TIMESERIES_FIELDS] of time integrals; compute
    and memory are each step's compute and memory time spread evenly over its duration;
    with timeseries_max_buckets M > 0 bucket pairs merge whenever more than M would be needed),
    "timeseries_dt" (the final bucket length), the
    inter-token-gap histogram
    (itl_histogram, itl_sum_s, itl_count, itl_max_s), the events processed and end_time_s.
    """

def _check_inputs(
    arrival_s: npt.NDArray[np.float64],
    prompt_tokens: npt.NDArray[np.int32],
    output_tokens: npt.NDArray[np.int32],
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
def _cost_rows(cost: npt.ArrayLike, rows: int, name: str) -> npt.NDArray[np.float64]: ...
def _check_pool(
    name: str,
    replicas: int,
    stages: int,
    max_batch_tokens: int,
    max_num_seqs: int,
    capacity: int,
    swap_capacity: int,
    swap_s: float,
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
def step_activity_time(
    cost: npt.NDArray[np.float64],
    prefill_tokens: float,
    prefill_pairs: float,
    prefill_context: float,
    logit_tokens: float,
    decode_tokens: float,
    decode_context: float,
) -> tuple[float, float]: ...
