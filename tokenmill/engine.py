"""simulate(): the path from a Scenario to a Result.

Resolve presets, fit the model in memory, compute the step-cost coefficients, draw the
workload, hand plain arrays to the compiled core, and summarise what it wrote. Everything
here runs once per simulation; the per-event work is all in tokenmill._core.
"""

from __future__ import annotations

import math
import time
from typing import Optional

import numpy as np

from . import _core
from .costmodel import coefficients
from .memory import plan_memory
from .metrics import LatencyStats, itl_stats
from .result import RequestRecords, Result
from .scenario import Scenario
from .workload import WorkloadArrays, generate
from .workloads.report import with_workload_details


def simulate(scenario: Optional[Scenario] = None, *,
             workload: Optional[WorkloadArrays] = None) -> Result:
    """Run one simulation. `workload` replaces the scenario's generated requests if given.

    With a closed loop (scenario.workload.concurrency), the workload's arrival times are the
    earliest send times; the kernel decides the actual ones, which the result reports.
    """
    started = time.perf_counter()
    scenario = scenario if scenario is not None else Scenario()
    model = scenario.model_arch()
    hw = scenario.hardware()
    tp = scenario.plan.tp
    policy = scenario.scheduler
    fit = plan_memory(model, hw, scenario.precision, tp, policy)
    coeffs = coefficients(model, hw, scenario.precision, tp, scenario.cost)
    arrays = workload if workload is not None else generate(scenario.workload, scenario.seed)

    core_started = time.perf_counter()
    raw = _core.run(
        np.ascontiguousarray(arrays.arrival_s, dtype=np.float64),
        np.ascontiguousarray(arrays.prompt_tokens, dtype=np.int32),
        np.ascontiguousarray(arrays.output_tokens, dtype=np.int32),
        coeffs.to_array(),
        num_replicas=1,
        max_batch_tokens=policy.max_batch_tokens,
        max_num_seqs=policy.max_num_seqs,
        block_size=policy.kv_block_size,
        kv_capacity_blocks=fit.kv_capacity_blocks,
        stop_time_s=scenario.stop_time_s if scenario.stop_time_s is not None else math.inf,
        concurrency=scenario.workload.concurrency or 0,
        think_time_s=scenario.workload.think_time_s,
    )
    core_wall = time.perf_counter() - core_started

    records = RequestRecords(
        arrival_s=raw["arrival_s"], prompt_tokens=arrays.prompt_tokens,
        output_tokens=arrays.output_tokens, admitted_s=raw["admitted_s"],
        first_token_s=raw["first_token_s"], completion_s=raw["completion_s"],
        generated_tokens=raw["generated_tokens"], preemptions=raw["preemptions"],
        status=raw["status"], replica=raw["replica"], class_id=arrays.class_id,
        priority=arrays.priority)
    result = summarise(scenario, model.name, hw.name, fit, coeffs, records, raw, core_wall, started)
    return with_workload_details(result, scenario, arrays)


def summarise(scenario: Scenario, model_name: str, gpu_name: str, fit, coeffs,
              records: RequestRecords, raw: dict, core_wall: float, started: float) -> Result:
    """Build the Result's summary figures from the kernel's raw output."""
    status = records.status
    counts = np.bincount(status, minlength=6)
    finished = status == _core.STATUS_FINISHED
    arrival = records.arrival_s[finished]
    first = records.first_token_s[finished]
    done = records.completion_s[finished]
    out = records.output_tokens[finished]
    multi = out > 1
    tpot = (done[multi] - first[multi]) / (out[multi] - 1)
    duration = float(raw["end_time_s"])
    reps = raw["replicas"]
    capacity = fit.kv_capacity_blocks
    out_tokens = int(out.sum(dtype=np.int64))
    in_tokens = int(records.prompt_tokens[finished].sum(dtype=np.int64))
    per_s = (lambda x: x / duration) if duration > 0 else (lambda x: float("nan"))
    return Result(
        scenario=scenario,
        model_name=model_name,
        gpu_name=gpu_name,
        memory=fit,
        cost=coeffs,
        requests=records,
        num_requests=len(records),
        num_arrived=int(len(records) - counts[_core.STATUS_PENDING]),
        num_finished=int(counts[_core.STATUS_FINISHED]),
        num_unfinished=int(counts[_core.STATUS_WAITING] + counts[_core.STATUS_RUNNING]),
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
        kv_mean_utilization=(float(reps["kv_block_seconds"].sum()) / (duration * capacity)
                             if duration > 0 else 0.0),
        kv_peak_utilization=float(reps["kv_peak_blocks"].max()) / capacity,
        kv_peak_blocks=int(reps["kv_peak_blocks"].max()),
        preemptions=int(reps["preemptions"].sum()),
        steps=int(reps["steps"].sum()),
        events=int(raw["events"]),
        prefill_tokens_computed=int(reps["prefill_tokens"].sum()),
        core_wall_time_s=core_wall,
        wall_time_s=time.perf_counter() - started,
    )
