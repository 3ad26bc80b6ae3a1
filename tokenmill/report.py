"""Render a Result as text for people, or as JSON or CSV for other tools."""

from __future__ import annotations

import csv
import io
import math

from .metrics import LatencyStats
from .result import Result
from .vllm_bench import to_vllm_bench
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
        f"on {_cluster_line(r)}",
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
        *_breakdown_lines(r),
        *_steady_lines(r),
        *_goodput_lines(r),
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
    lines[-1:-1] = _load_lines(r) + _energy_lines(r) + _cluster_lines(r)
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


def _pool_text(p) -> str:
    stages = f", pp={p.pp}" if p.pp > 1 else ""
    return f"{p.replicas} x {p.tp * p.pp} {p.gpu} (tp={p.tp}{stages})"


def _cluster_line(r: Result) -> str:
    c = r.cluster
    if c is None:
        return r.gpu_name
    if len(c.pools) == 1:
        text = _pool_text(c.pools[0])
    else:
        text = f"prefill {_pool_text(c.pools[0])} + decode {_pool_text(c.pools[1])}"
    if c.pools[0].replicas > 1:
        text += f", router {c.router}"
    return text


def _cluster_lines(r: Result) -> list[str]:
    """Per pool and per replica, when there is more than one replica or pool."""
    c = r.cluster
    if c is None or (len(c.pools) == 1 and c.pools[0].replicas == 1 and r.scenario.speculative is None):
        return []
    lines = [""]
    for p in c.pools:
        lines.append(f"pool       {p.role}: {_pool_text(p)}, busy {100 * p.busy_fraction:.1f}% "
                     "(busiest stage, mean over replicas)")
    if len(c.replicas) > 1:
        shown = c.replicas[:8]
        lines.append("replicas   " + "; ".join(
            f"#{x.index} {x.pool} {x.requests:,} req, busy {100 * x.busy_fraction:.0f}%" for x in shown)
            + ("; ..." if len(c.replicas) > len(shown) else ""))
    if len(c.pools) == 2:
        t = c.kv_transfer_ms
        lines.append(f"KV moves   {t.count:,} transfers, p50 {_ms(t.p50)} ms, p99 {_ms(t.p99)} ms "
                     f"(prefill done -> KV on decode side); link use {100 * c.kv_link_utilization:.1f}%")
    if r.scenario.speculative is not None:
        lines.append(f"speculation {c.spec_tokens_per_step:.2f} tokens per decode step "
                     f"(expected {r.scenario.speculative.expected_tokens_per_step():.2f})")
    return lines


def _policy_line(r: Result) -> str:
    p = r.policy
    parts = [p.name, f"budget {p.max_batch_tokens:,} tokens/step", f"max {p.max_num_seqs:,} seqs",
             "chunked prefill" if p.chunked_prefill else "whole-prompt prefill",
             f"prefix caching {'on' if p.prefix_caching else 'off'}"]
    if p.priority_scheduling:
        parts.append("priority scheduling")
    return ", ".join(parts)


def _breakdown_lines(r: Result) -> list[str]:
    b = r.ttft_breakdown_ms
    if not b or not math.isfinite(b.get("queue", math.nan)):
        return []
    parts = f"queue {_ms(b['queue'])}, prefill {_ms(b['prefill'])}"
    if b.get("recompute", 0.0) > 0.0:
        parts += f", discarded by preemption {_ms(b['recompute'])}"
    if r.cluster is not None and len(r.cluster.pools) == 2:
        parts += f", KV transfer {_ms(b['kv_transfer'])}"
    return [f"  TTFT parts (mean ms): {parts}, other {_ms(b['other'])} "
            "(requeued after preemption, chunk and stage waits, first decode step)"]


def _steady_lines(r: Result) -> list[str]:
    st = r.steady
    if st is None:
        return []
    return ["", f"steady state: requests arriving in [{st.start_s:g}, {st.end_s:g}] s "
            f"({st.measured:,} measured, {st.finished:,} finished); "
            f"{st.request_throughput:,.2f} req/s, {st.output_token_throughput:,.1f} output tok/s",
            _latency_row("TTFT", st.ttft_ms), _latency_row("TPOT", st.tpot_ms),
            _latency_row("E2E", st.e2e_ms)]


def _goodput_lines(r: Result) -> list[str]:
    g = r.goodput
    if g is None:
        return []
    slo = ", ".join(f"{name} <= {v:g} ms" for name, v in
                    (("TTFT", g.slo_ttft_ms), ("TPOT", g.slo_tpot_ms), ("E2E", g.slo_e2e_ms))
                    if v is not None) or "per-class SLOs"
    pct = "-" if not math.isfinite(g.attainment) else f"{100 * g.attainment:.1f}%"
    return ["", f"goodput    {g.goodput_rps:,.2f} req/s within {slo}: {g.met:,} of "
            f"{g.measured:,} measured requests ({pct})"]


def _load_lines(r: Result) -> list[str]:
    ld = r.load
    if ld is None or ld.mean_queue is None:
        return []
    return [f"load       time-weighted: queue {ld.mean_queue:,.2f} requests (peak bucket "
            f"{ld.max_queue:,.1f}), running batch {ld.mean_running:,.2f}, KV use "
            f"{100 * (ld.mean_kv_utilization or 0.0):.1f}%"]


def _energy_lines(r: Result) -> list[str]:
    lines = []
    e = r.energy
    if e is not None:
        chips = sum(p.chips for p in e.pools)
        per_chip = e.mean_power_kw * 1e3 / e.pue / chips if chips else 0.0
        lines.append(f"energy     {e.energy_kj:,.1f} kJ, mean power {e.mean_power_kw:,.3f} kW "
                     f"({per_chip:,.0f} W per chip, {chips} chip{'s' if chips != 1 else ''}"
                     f"{', PUE %g' % e.pue if e.pue != 1 else ''}); "
                     f"{e.joules_per_output_token:,.3f} J per output token, "
                     f"{e.joules_per_request:,.1f} J per request")
    c = r.spend
    if c is not None:
        if c.cost_usd is None:
            unknown = ", ".join(p.gpu for p in c.pools if p.price_per_chip_hour_usd is None)
            lines.append(f"cost       unknown: no price per chip-hour for {unknown} "
                         "(give --price-per-hour)")
        else:
            prices = " + ".join(f"{p.chips} x ${p.price_per_chip_hour_usd:g}/h" for p in c.pools)
            lines.append(f"cost       ${c.cost_usd:,.4f} ({c.chip_hours:,.3f} chip-hours, {prices}); "
                         f"${_money(c.usd_per_million_output_tokens)} per million output tokens, "
                         f"${_money(c.usd_per_request, 6)} per request")
    return lines


def _money(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


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


RENDERERS = {"text": to_text, "json": to_json, "csv": to_csv, "vllm-bench": to_vllm_bench}
