"""simulate(): the path from a Scenario to a Result.

Resolve presets, fit the model in memory, compute the step-cost coefficients, draw the
workload, hand plain arrays to the compiled core, and summarise what it wrote. Everything
here runs once per simulation; the per-event work is all in tokenmill._core.
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional

import numpy as np

from . import _core
from .cluster import ClusterBuild, build_cluster
from .cluster_stats import cluster_stats
from .errors import ConfigError
from .hardware import GIB
from .kernel_table import KernelTable
from .metrics import LatencyStats, itl_stats
from .policy import ResolvedPolicy
from .result import RequestRecords, Result
from .scenario import Scenario
from .workload import WorkloadArrays, generate
from .outcome import outcome_figures
from .timeseries import AUTO_MAX_BUCKETS, auto_resolution
from .workloads.report import with_workload_details


def simulate(scenario: Optional[Scenario] = None, *,
             workload: Optional[WorkloadArrays] = None,
             kernel_table: Optional[KernelTable] = None) -> Result:
    """Run one simulation. `workload` replaces the scenario's generated requests if given;
    `kernel_table` (else the scenario's kernel_table file) overrides modelled step times.

    With a closed loop (scenario.workload.concurrency), the workload's arrival times are the
    earliest send times; the kernel decides the actual ones, which the result reports.
    """
    started = time.perf_counter()
    scenario = scenario if scenario is not None else Scenario()
    model = scenario.model_arch()
    if kernel_table is None and scenario.kernel_table is not None:
        kernel_table = KernelTable.load(scenario.kernel_table)
    build = build_cluster(scenario, kernel_table=kernel_table)
    entry = build.entry
    policy = entry.policy
    arrays = workload if workload is not None else generate(scenario.workload, scenario.seed)
    resolution = scenario.metrics.timeseries_resolution_s
    max_buckets = 0  # a resolution the user chose is kept
    if resolution is None:
        resolution, max_buckets = auto_resolution(arrays.arrival_s), AUTO_MAX_BUCKETS

    core_started = time.perf_counter()
    raw = _core.run(
        np.ascontiguousarray(arrays.arrival_s, dtype=np.float64),
        np.ascontiguousarray(arrays.prompt_tokens, dtype=np.int32),
        np.ascontiguousarray(arrays.output_tokens, dtype=np.int32),
        block_size=policy.kv_block_size,
        policy=policy.kernel_policy,
        priority_scheduling=policy.priority_scheduling,
        stop_time_s=scenario.stop_time_s if scenario.stop_time_s is not None else math.inf,
        concurrency=scenario.workload.concurrency or 0,
        think_time_s=scenario.workload.think_time_s,
        timeseries_dt=resolution,
        timeseries_max_buckets=max_buckets,
        **build.kernel_args,
        **_priority_args(arrays),
        **_swap_args(build),
        **_prefix_args(policy, arrays),
    )
    core_wall = time.perf_counter() - core_started

    records = RequestRecords(
        arrival_s=raw["arrival_s"], prompt_tokens=arrays.prompt_tokens,
        output_tokens=arrays.output_tokens, admitted_s=raw["admitted_s"],
        first_token_s=raw["first_token_s"], completion_s=raw["completion_s"],
        generated_tokens=raw["generated_tokens"], preemptions=raw["preemptions"],
        prefix_hit_tokens=raw["prefix_hit_tokens"], status=raw["status"],
        replica=raw["replica"], decode_replica=raw["decode_replica"],
        kv_ready_s=raw["kv_ready_s"], class_id=arrays.class_id, priority=arrays.priority,
        handoff_s=raw["handoff_s"], prefill_busy_s=raw["prefill_busy_s"],
        prefill_lost_s=raw["prefill_lost_s"])
    result = summarise(scenario, model.name, build, records, raw, core_wall, started,
                       timeseries_dt=float(raw["timeseries_dt"]))
    return with_workload_details(result, scenario, arrays)


def _priority_args(arrays: WorkloadArrays) -> dict[str, Any]:
    if arrays.priority is None:
        return {}
    return {"priority": np.ascontiguousarray(arrays.priority, dtype=np.int32)}


def _swap_args(build: ClusterBuild) -> dict[str, Any]:
    """Host capacity for swapped KV (per replica: every chip has its swap space) and the time
    to copy one block over the host link (chips copy their shares in parallel)."""
    policy = build.entry.policy
    if policy.preemption != "swap":
        return {}
    args: dict[str, Any] = {"preemption": _core.PREEMPT_SWAP}
    for prefix, pool in zip(("", "decode_"), build.pools):
        block_bytes = pool.fit.kv_bytes_per_token * pool.fit.kv_block_size  # per chip
        args[f"{prefix}swap_capacity_blocks"] = int(policy.swap_space_gib * GIB // block_bytes)
        args[f"{prefix}swap_seconds_per_block"] = block_bytes / (pool.hw.host_link_gbps * 1e9)
    return args


def _prefix_args(policy: ResolvedPolicy, arrays: WorkloadArrays) -> dict[str, Any]:
    """Prefix ids for the cache; a workload without them simply never hits."""
    if not policy.prefix_caching:
        return {}
    if arrays.prefix_ids is None or arrays.prefix_offsets is None:
        return {"prefix_caching": True, "prefix_granule_tokens": policy.kv_block_size,
                "prefix_offsets": np.zeros(len(arrays) + 1, dtype=np.int64),
                "prefix_ids": np.zeros(0, dtype=np.int64)}
    granule = arrays.prefix_block_tokens
    if granule % policy.kv_block_size != 0:
        raise ConfigError(
            f"the workload's prefix ids cover {granule} tokens each, which scheduler.kv_block_size "
            f"= {policy.kv_block_size} does not divide; choose a block size that divides {granule}")
    return {"prefix_caching": True, "prefix_granule_tokens": granule,
            "prefix_offsets": np.ascontiguousarray(arrays.prefix_offsets, dtype=np.int64),
            "prefix_ids": np.ascontiguousarray(arrays.prefix_ids, dtype=np.int64)}


def summarise(scenario: Scenario, model_name: str, build: ClusterBuild, records: RequestRecords,
              raw: dict, core_wall: float, started: float, timeseries_dt: float = 0.0) -> Result:
    """Build the Result's summary figures from the kernel's raw output."""
    status = records.status
    counts = np.bincount(status, minlength=8)
    finished = status == _core.STATUS_FINISHED
    arrival = records.arrival_s[finished]
    first = records.first_token_s[finished]
    done = records.completion_s[finished]
    out = records.output_tokens[finished]
    multi = out > 1
    tpot = (done[multi] - first[multi]) / (out[multi] - 1)
    duration = float(raw["end_time_s"])
    reps = raw["replicas"]
    capacity = reps["capacity_blocks"]
    out_tokens = int(out.sum(dtype=np.int64))
    in_tokens = int(records.prompt_tokens[finished].sum(dtype=np.int64))
    per_s = (lambda x: x / duration) if duration > 0 else (lambda x: float("nan"))
    entry = build.entry
    swapped_bytes = sum(
        float(reps["swap_out_blocks"][reps["pool"] == k].sum())
        * pool.fit.kv_bytes_per_token * pool.fit.kv_block_size * pool.tp * pool.pp
        for k, pool in enumerate(build.pools))
    return Result(
        scenario=scenario,
        model_name=model_name,
        gpu_name=entry.hw.name,
        policy=entry.policy,
        memory=entry.fit,
        cost=entry.costs[0],
        requests=records,
        num_requests=len(records),
        num_arrived=int(len(records) - counts[_core.STATUS_PENDING]),
        num_finished=int(counts[_core.STATUS_FINISHED]),
        num_unfinished=int(counts[_core.STATUS_WAITING] + counts[_core.STATUS_RUNNING]
                           + counts[_core.STATUS_SWAPPED] + counts[_core.STATUS_TRANSFER]),
        num_rejected_token_budget=int(counts[_core.STATUS_REJECTED_BUDGET]),
        num_rejected_kv_capacity=int(counts[_core.STATUS_REJECTED_KV]),
        ttft_ms=LatencyStats.from_seconds(first - arrival),
        tpot_ms=LatencyStats.from_seconds(tpot),
        itl_ms=itl_stats(raw["itl_histogram"], raw["itl_sum_s"], raw["itl_count"], raw["itl_max_s"]),
        e2e_ms=LatencyStats.from_seconds(done - arrival),
        duration_s=duration,
        request_throughput=per_s(float(finished.sum())),
        output_token_throughput=per_s(float(out_tokens)),
        total_token_throughput=per_s(float(out_tokens + in_tokens)),
        kv_mean_utilization=(float(reps["kv_block_seconds"].sum()) / (duration * float(capacity.sum()))
                             if duration > 0 else 0.0),
        kv_peak_utilization=float((reps["kv_peak_blocks"] / capacity).max()),
        kv_peak_blocks=int(reps["kv_peak_blocks"].max()),
        preemptions=int(reps["preemptions"].sum()),
        recomputed_tokens=int(reps["recompute_tokens"].sum()),
        swapped_out_bytes=swapped_bytes,
        prefix_hit_rate=(float(reps["prefix_hit_tokens"].sum()) / float(reps["prefix_query_tokens"].sum())
                         if reps["prefix_query_tokens"].sum() > 0 else 0.0),
        max_step_tokens=int(reps["max_step_tokens"].max()),
        steps=int(reps["steps"].sum()),
        events=int(raw["events"]),
        prefill_tokens_computed=int(reps["prefill_tokens"].sum()),
        core_wall_time_s=core_wall,
        wall_time_s=time.perf_counter() - started,
        cluster=cluster_stats(build, raw, duration),
        **outcome_figures(scenario, build, records, raw, duration, timeseries_dt),
    )
