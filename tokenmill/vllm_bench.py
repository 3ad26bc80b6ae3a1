"""`--output vllm-bench`: a result JSON with the keys vLLM's `vllm bench serve --save-result`
writes, so a simulated run diffs directly against a measured one.

Matched to vllm/benchmarks/serve.py at commit 009e6d4a (vllm-project/vllm): the setup keys
(endpoint_type, backend, label, model_id, tokenizer_id, num_prompts, request_rate, burstiness,
max_concurrency), then duration, completed, failed, total_input_tokens, total_output_tokens,
request_throughput, request_goodput (null without SLOs, as vLLM without --goodput),
output_throughput, total_token_throughput, max_output_tokens_per_s, max_concurrent_requests,
rtfx, and mean/median/std/pNN _ms of ttft, tpot, itl and e2el. vLLM writes percentiles named
by --metric-percentiles (default 99); these are p90, p95 and p99 (its "90,95,99").

Definitions as vLLM's calculate_metrics: over completed requests; TPOT excludes one-token
outputs; goodput counts completed requests within every SLO (TPOT of a one-token output is 0);
std is numpy's population standard deviation; "failed" are requests that arrived and did not
complete (rejected, or unfinished at --stop-time). Where tokenmill's definition differs it is
said: ITL percentiles and std come from the kernel's histogram (within 0.05%); the peak output
tokens per second spreads each request's tokens after the first evenly between its first token
and its completion (vLLM times every token); there is no date key (runs are reproducible), and
the per-request lists (input_lens, ttfts, itls, ...) are left out, as vLLM leaves them out
without --save-detailed. "tokenmill" holds the version and the resolved scenario.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ._json import json_safe
from ._version import __version__
from .goodput import slo_met

PERCENTILES = ("p90", "p95", "p99")


def peak_tokens_per_s(first: np.ndarray, done: np.ndarray, out: np.ndarray) -> float:
    """Most output tokens in one second-long bucket from the first token on (vLLM's
    max_output_tokens_per_s), each request's later tokens spread evenly to its completion."""
    if first.size == 0:
        return 0.0
    t0 = float(first.min())
    edges = np.arange(0.0, math.ceil(float(done.max()) - t0) + 2.0) + t0
    span = done - first
    rate = np.where(span > 0, (out - 1) / np.where(span > 0, span, 1.0), 0.0)

    def integral(starts: np.ndarray) -> np.ndarray:  # sum_i rate_i * max(0, t - start_i)
        order = np.argsort(starts)
        s, r = starts[order], rate[order]
        k = np.searchsorted(s, edges, side="right")
        cr = np.concatenate(([0.0], np.cumsum(r)))
        crs = np.concatenate(([0.0], np.cumsum(r * s)))
        return edges * cr[k] - crs[k]

    spread = integral(first) - integral(done)
    decoded = np.diff(spread)
    firsts = np.histogram(first, bins=edges)[0]
    instant = out <= 1  # a one-token output is all first token; zero-span decodes at once
    lumps = np.histogram(done[(span <= 0) & ~instant], bins=edges,
                         weights=(out - 1)[(span <= 0) & ~instant])[0]
    return float((decoded + firsts + lumps).max())


def peak_concurrency(start: np.ndarray, end: np.ndarray) -> int:
    """Most requests in flight at once over half-open [start, end) intervals."""
    if start.size == 0:
        return 0
    times = np.concatenate((start, end))
    delta = np.concatenate((np.ones(start.size), -np.ones(end.size)))
    order = np.lexsort((delta, times))  # departures before arrivals at equal times
    return int(np.cumsum(delta[order]).max())


def _stats(values_ms: np.ndarray) -> dict[str, float]:
    if values_ms.size == 0:
        values_ms = np.zeros(1)  # vLLM reports 0 for an empty metric (np.mean(... or 0))
    p90, p95, p99 = np.percentile(values_ms, (90, 95, 99))
    return {"mean": float(values_ms.mean()), "median": float(np.median(values_ms)),
            "std": float(values_ms.std()), "p90": float(p90), "p95": float(p95), "p99": float(p99)}


def vllm_bench_dict(r: Any) -> dict[str, Any]:
    rec = r.requests
    w = r.scenario.workload
    done = rec.finished
    arrival, first, end = rec.arrival_s[done], rec.first_token_s[done], rec.completion_s[done]
    out = rec.output_tokens[done]
    duration = r.duration_s
    total_in = int(rec.prompt_tokens[done].sum(dtype=np.int64))
    total_out = int(out.sum(dtype=np.int64))
    m = r.scenario.metrics
    goodput = None
    if m.has_slo:
        good = int((done & slo_met(rec, m.slo_ttft_ms, m.slo_tpot_ms, m.slo_e2e_ms)).sum())
        goodput = good / duration if duration > 0 else None
    rate = w.arrival_rate
    cv = w.burstiness
    data: dict[str, Any] = {
        "endpoint_type": "tokenmill",
        "backend": "tokenmill",
        "label": None,
        "model_id": r.model_name,
        "tokenizer_id": r.model_name,
        "num_prompts": r.num_requests,
        "request_rate": "inf" if rate is None or math.isinf(rate) else rate,
        "burstiness": 1.0 / (cv * cv) if cv is not None else 1.0,  # vLLM's gamma shape k
        "max_concurrency": w.concurrency,
        "duration": duration,
        "completed": r.num_finished,
        "failed": r.num_arrived - r.num_finished,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": r.num_finished / duration if duration > 0 else 0.0,
        "request_goodput": goodput,
        "output_throughput": total_out / duration if duration > 0 else 0.0,
        "total_token_throughput": (total_in + total_out) / duration if duration > 0 else 0.0,
        "max_output_tokens_per_s": peak_tokens_per_s(first, end, out),
        "max_concurrent_requests": peak_concurrency(arrival, end),
        "rtfx": 0.0,
    }
    multi = out > 1
    series = {"ttft": (first - arrival) * 1e3,
              "tpot": (end[multi] - first[multi]) / (out[multi] - 1) * 1e3,
              "e2el": (end - arrival) * 1e3}
    for name in ("ttft", "tpot"):
        _put(data, name, _stats(series[name]))
    itl = r.itl_ms
    _put(data, "itl", {"mean": _num(itl.mean), "median": _num(itl.p50), "std": _num(itl.std),
                       "p90": _num(itl.p90), "p95": _num(itl.p95), "p99": _num(itl.p99)})
    _put(data, "e2el", _stats(series["e2el"]))
    data["tokenmill"] = {"version": __version__,
                         "scenario": r.scenario.model_dump(mode="json")}
    return data


def _num(x: float) -> float:
    return 0.0 if not math.isfinite(x) else x


def _put(data: dict[str, Any], name: str, stats: dict[str, float]) -> None:
    data[f"mean_{name}_ms"] = stats["mean"]
    data[f"median_{name}_ms"] = stats["median"]
    data[f"std_{name}_ms"] = stats["std"]
    for p in PERCENTILES:
        data[f"{p}_{name}_ms"] = stats[p]


def to_vllm_bench(r: Any) -> str:

    return json.dumps(json_safe(vllm_bench_dict(r)), indent=2) + "\n"
