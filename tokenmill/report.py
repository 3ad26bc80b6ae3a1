"""Render a Result as text for people, or as JSON or CSV for other tools."""

from __future__ import annotations

import csv
import io
import math

from .metrics import LatencyStats
from .result import Result
from .workloads.report import class_lines, workload_line, workload_notes


def _ms(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:,.2f}"


def _latency_row(label: str, s: LatencyStats) -> str:
    cells = (s.mean, s.p50, s.p90, s.p95, s.p99, s.max)
    return f"  {label:<10}" + "".join(f"{_ms(v):>11}" for v in cells) + f"{s.count:>11,}"


def to_text(r: Result) -> str:
    sc = r.scenario
    lines = [
        f"tokenmill - {r.model_name} ({sc.precision.weights} weights, {sc.precision.kv_dtype} KV) "
        f"on {sc.plan.tp} x {r.gpu_name} (tp={sc.plan.tp})",
        f"scheduler  {_policy_line(r)}",
        workload_line(r),
        "",
        f"requests   arrived {r.num_arrived:,}  finished {r.num_finished:,}  "
        f"unfinished {r.num_unfinished:,}  rejected {r.num_rejected:,}",
        f"throughput {r.request_throughput:,.2f} req/s  {r.output_token_throughput:,.1f} output tok/s  "
        f"{r.total_token_throughput:,.1f} total tok/s  (over {r.duration_s:,.2f} s simulated)",
        "",
        "  latency ms      mean        p50        p90        p95        p99        max      count",
        _latency_row("TTFT", r.ttft_ms),
        _latency_row("TPOT", r.tpot_ms),
        _latency_row("ITL", r.itl_ms),
        _latency_row("E2E", r.e2e_ms),
        *class_lines(r),
        "",
        f"KV cache   {r.memory.kv_capacity_blocks:,} blocks of {r.memory.kv_block_size} tokens "
        f"({r.memory.kv_capacity_tokens:,} tokens); mean use {100 * r.kv_mean_utilization:.1f}%, "
        f"peak {100 * r.kv_peak_utilization:.1f}%",
        f"preemption {r.preemptions:,} preemptions ({r.policy.preemption}), "
        f"{r.recomputed_tokens:,} prompt tokens recomputed, "
        f"{r.swapped_out_bytes / 1e9:,.2f} GB swapped out"
        + (f"; prefix cache hit rate {100 * r.prefix_hit_rate:.1f}%" if r.policy.prefix_caching else ""),
        f"simulation {r.events:,} events, {r.steps:,} steps; wall time {r.wall_time_s * 1e3:,.1f} ms "
        f"(core {r.core_wall_time_s * 1e3:,.1f} ms)",
    ]
    notes = workload_notes(r)
    if r.num_unfinished:
        notes.append(f"{r.num_unfinished:,} requests were still queued or running when the "
                     f"simulation stopped at {r.duration_s:g} s; latencies cover finished ones only")
    if r.num_rejected_token_budget:
        notes.append(f"{r.num_rejected_token_budget:,} requests were rejected: a prompt needs more "
                     f"tokens than max_batch_tokens = {r.policy.max_batch_tokens:,} in one step")
    if r.num_rejected_kv_capacity:
        notes.append(f"{r.num_rejected_kv_capacity:,} requests were rejected: they need more KV "
                     "cache than the replica has")
    if r.num_arrived < r.num_requests:
        notes.append(f"{r.num_requests - r.num_arrived:,} requests of the workload arrive after "
                     "the stop time and were not simulated")
    if notes:
        lines.append("")
        lines.extend(f"note: {n}" for n in notes)
    return "\n".join(lines) + "\n"


def _policy_line(r: Result) -> str:
    p = r.policy
    parts = [p.name, f"budget {p.max_batch_tokens:,} tokens/step", f"max {p.max_num_seqs:,} seqs",
             "chunked prefill" if p.chunked_prefill else "whole-prompt prefill",
             f"prefix caching {'on' if p.prefix_caching else 'off'}"]
    if p.priority_scheduling:
        parts.append("priority scheduling")
    return ", ".join(parts)


def to_json(r: Result) -> str:
    return r.to_json(indent=2) + "\n"


def to_csv(r: Result) -> str:
    """One header row and one data row of the flattened summary (latencies in ms)."""
    row = r.flat_summary()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(row), lineterminator="\n")
    writer.writeheader()
    writer.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v)
                     for k, v in row.items()})
    return buf.getvalue()


RENDERERS = {"text": to_text, "json": to_json, "csv": to_csv}
