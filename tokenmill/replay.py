"""Replay a measured run in the simulator: the scenario and requests that reproduce it.

Why: validation and calibration both need, for every measurement, the model, chip, precision
and plan it ran, the way its engine batched, and the requests it served. `resolve` works that out
or says why the row cannot be simulated; `predict` runs tokenmill.simulate and reads back the
same metrics the measurement reports.

Requests by dataset:
* fixed lengths ('fixed', 'synthetic fixed-length', 'random fixed', 'dummy fixed'): every request
  has the nominal input and output length;
* vLLM/SGLang 'random' with range ratio 0: lengths uniform in [1, nominal] (the runs' measured
  means are half the nominal lengths);
* ShareGPT: the conversation lengths are not in ../shared/data, so they are drawn log-normal
  (sigma 1.0) with the run's measured means where given, else the means sglang.bench_serving and
  vLLM's benchmark scripts produce on ShareGPT (224 input, 190 output tokens: S07's measured
  means). This is an emulation; TTFT/TPOT percentiles depend on the real length mix.
Offline runs queue every request at time 0; Poisson runs draw arrivals at the stated rate
(seeded); fixed-concurrency runs keep that many requests outstanding (a closed loop with no
think time, as vLLM's `--max-concurrency` and GenAI-Perf run them). The measured plan is
replayed as given: tp, pp (stages with micro-batches in flight), ep, and data-parallel replicas
behind a round-robin router.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .catalogue import find_gpu, find_model
from .costparams import CostModelParams
from .engine import simulate
from .engines import EngineRun, engine_run
from .errors import CapacityError, ConfigError
from .measurements import Measurement, chip_for, engine_for, model_for, precision_for
from .memory import memory_fit
from .precision import Precision
from .result import Result
from .scenario import Plan, Scenario, SchedulerPolicy, Workload
from .workload import WorkloadArrays

SHAREGPT_MEANS = (224.0, 190.0)   # input, output tokens (S07's measured ShareGPT means)
SHAREGPT_SIGMA = 1.0
MAX_REQUESTS = 30_000             # offline runs longer than this are cut (throughput is steady)
PREDICTABLE = ("ttft_mean_ms", "ttft_median_ms", "ttft_p99_ms", "tpot_mean_ms", "tpot_median_ms",
               "tpot_p99_ms", "itl_mean_ms", "itl_median_ms", "itl_p99_ms", "e2e_mean_ms",
               "e2e_median_ms", "e2e_p99_ms", "output_tok_s", "total_tok_s", "req_s",
               "batch_latency_ms", "batch_ttft_ms", "decode_step_ms")


@dataclass(frozen=True)
class Resolved:
    """A measurement in tokenmill's terms."""

    measurement: Measurement
    model: str
    chip: str
    precision: Precision
    tp: int
    engine: EngineRun
    pp: int = 1
    ep: int = 1
    replicas: int = 1
    model_note: str = ""
    kv_capacity_tokens: int = 0   # per replica, from the memory fit

    @property
    def kv_bound(self) -> bool:
        """A static batch whose whole KV does not fit: the engine must queue or preempt, so the
        prediction rests on the memory model as much as on the latency model."""
        m = self.measurement
        if m.kind != "static_batch" or not (m.batch and m.isl and m.osl):
            return False
        return m.batch * (m.isl + m.osl) > self.kv_capacity_tokens

    @property
    def calibration_name(self) -> str:
        return f"{self.chip}-{self.engine.calibration_engine}"

    def scenario(self, params: Optional[CostModelParams] = None) -> Scenario:
        m = self.measurement
        closed = Workload(concurrency=m.concurrency, num_requests=_request_count(m)) \
            if m.kind == "concurrency" else Workload()
        return Scenario(model=self.model, gpu=self.chip, precision=self.precision,
                        plan=Plan(tp=self.tp, pp=self.pp, ep=self.ep, replicas=self.replicas),
                        scheduler=SchedulerPolicy(**self.engine.scheduler),  # type: ignore[arg-type]
                        workload=closed, cost=params or CostModelParams(), seed=42)


@dataclass(frozen=True)
class Skip:
    """Why a measurement cannot be simulated."""

    measurement: Measurement
    reason: str


def resolve(m: Measurement) -> Resolved | Skip:
    """The scenario pieces of a serving-level measurement, or the reason it is skipped."""
    if m.kind in ("op", "step", "allreduce"):
        return Skip(m, f"{m.kind}-level measurement: used by calibrate, not replayed")
    if m.kind == "concurrency" and not m.concurrency:
        return Skip(m, "fixed-concurrency run without its concurrency")
    chip, why = chip_for(m.hardware)
    if chip is None:
        return Skip(m, why)
    model, note = model_for(m.model)
    if model is None:
        return Skip(m, note)
    engine, why = engine_for(m.framework)
    if engine is None:
        return Skip(m, why)
    fields, why = precision_for(m.precision_weights, m.precision_kv, m.framework)
    if fields is None:
        return Skip(m, why)
    if not any(k in PREDICTABLE for k in m.metrics):
        return Skip(m, "no metric tokenmill predicts")
    try:
        precision = Precision(**fields)  # type: ignore[arg-type]
        arch = find_model(model)
        hw = find_gpu(chip)
        run = engine_run(m, engine, arch)
        Scenario(model=model, gpu=chip, precision=precision,
                 plan=Plan(tp=m.tp, pp=m.pp, ep=m.ep, replicas=m.replicas),
                 scheduler=SchedulerPolicy(**run.scheduler))  # type: ignore[arg-type]
    except (ConfigError, ValueError) as err:
        return Skip(m, f"not a valid scenario: {str(err).splitlines()[0]}")
    fit = memory_fit(arch, hw, precision, m.tp, SchedulerPolicy(**run.scheduler),  # type: ignore[arg-type]
                     pp=m.pp, ep=m.ep)
    if not fit.fits:
        chips = f"{m.tp} x {chip}" if m.pp == 1 else f"{m.tp} x {m.pp} x {chip} (tp x pp)"
        return Skip(m, f"{model} does not fit on {chips} as modelled (vLLM's memory accounting)")
    lengths = _lengths_known(m)
    if lengths is not None:
        return Skip(m, lengths)
    if engine == "trtllm" and m.isl and m.osl:
        run = _no_evict(run, fit.kv_capacity_tokens, m)
    return Resolved(m, model, chip, precision, m.tp, run, m.pp, m.ep, m.replicas, note,
                    fit.kv_capacity_tokens)


def _no_evict(run: EngineRun, capacity_tokens: int, m: Measurement) -> EngineRun:
    """TensorRT-LLM's default capacity policy (GUARANTEED_NO_EVICT) admits a request only when
    the KV of its whole input and output fits; with equal requests that caps the running batch
    at capacity / (input + output) and nothing is ever preempted."""
    assert m.isl and m.osl
    per_request = m.isl + m.osl if "range_ratio" not in m.dataset else (m.isl + m.osl) / 2
    cap = max(1, int(capacity_tokens // per_request))
    seqs = min(int(run.scheduler.get("max_num_seqs", 2048)), cap)  # type: ignore[call-overload]
    tokens = max(int(run.scheduler.get("max_batch_tokens", 8192)), seqs)  # type: ignore[call-overload]
    return EngineRun(run.engine, {**run.scheduler, "max_num_seqs": seqs, "max_batch_tokens": tokens},
                     run.calibration_engine, run.note + f"; GUARANTEED_NO_EVICT: at most {seqs} running")


def _lengths_known(m: Measurement) -> Optional[str]:
    if m.kind == "static_batch" and not (m.batch and m.isl and m.osl):
        return "static batch without batch size and lengths"
    if "sharegpt" in m.dataset.lower() or _fixed(m) or _uniform(m):
        return None
    if m.isl_mean and m.osl_mean:
        return None
    return f"dataset {m.dataset!r} without lengths"


def _fixed(m: Measurement) -> bool:
    d = m.dataset.lower()
    return bool(m.isl and m.osl) and ("fixed" in d or m.kind == "static_batch" or d == "")


def _uniform(m: Measurement) -> bool:
    return bool(m.isl and m.osl) and bool(re.search(r"range_ratio 0(\.0)?\b", m.dataset.lower()))


def _request_count(m: Measurement) -> int:
    if m.kind == "static_batch":
        return int(m.batch or 1)
    return int(min(m.num_requests or 1000, MAX_REQUESTS))


def workload(m: Measurement, seed: int = 42) -> WorkloadArrays:
    """The requests that reproduce run `m` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n = _request_count(m)
    if _uniform(m):
        assert m.isl and m.osl
        prompt = rng.integers(1, int(m.isl) + 1, n)
        output = rng.integers(1, int(m.osl) + 1, n)
    elif _fixed(m) and "sharegpt" not in m.dataset.lower():
        assert m.isl and m.osl
        prompt = np.full(n, int(m.isl))
        output = np.full(n, int(m.osl))
    else:
        means = (m.isl_mean or SHAREGPT_MEANS[0], m.osl_mean or SHAREGPT_MEANS[1])
        mu = [math.log(x) - SHAREGPT_SIGMA ** 2 / 2 for x in means]
        prompt = np.maximum(1, np.rint(rng.lognormal(mu[0], SHAREGPT_SIGMA, n)))
        output = np.maximum(1, np.rint(rng.lognormal(mu[1], SHAREGPT_SIGMA, n)))
        prompt = np.minimum(prompt, 1024)   # the benchmark scripts drop longer ShareGPT prompts
        output = np.minimum(output, 2048 - prompt)
    if m.kind == "poisson" and m.rate and math.isfinite(m.rate):
        arrival = np.cumsum(rng.exponential(1.0 / m.rate, n))
    else:
        arrival = np.zeros(n)
    return WorkloadArrays(arrival_s=arrival.astype(np.float64), prompt_tokens=prompt.astype(np.int32),
                          output_tokens=output.astype(np.int32))


def metrics_of(result: Result, m: Measurement) -> dict[str, float]:
    """The simulated values of the metrics `m` reports."""
    req = result.requests
    fin = req.finished
    out: dict[str, float] = {
        "ttft_mean_ms": result.ttft_ms.mean, "ttft_median_ms": result.ttft_ms.p50,
        "ttft_p99_ms": result.ttft_ms.p99, "tpot_mean_ms": result.tpot_ms.mean,
        "tpot_median_ms": result.tpot_ms.p50, "tpot_p99_ms": result.tpot_ms.p99,
        "itl_mean_ms": result.itl_ms.mean, "itl_median_ms": result.itl_ms.p50,
        "itl_p99_ms": result.itl_ms.p99, "e2e_mean_ms": result.e2e_ms.mean,
        "e2e_median_ms": result.e2e_ms.p50, "e2e_p99_ms": result.e2e_ms.p99,
        "output_tok_s": result.output_token_throughput, "total_tok_s": result.total_token_throughput,
        "req_s": result.request_throughput,
    }
    if fin.any():
        start = float(req.arrival_s.min())
        last = float(np.nanmax(req.completion_s[fin])) - start
        first = float(np.nanmax(req.first_token_s[fin])) - start
        out["batch_latency_ms"] = last * 1e3
        out["batch_ttft_ms"] = first * 1e3
        if m.osl and m.osl > 1:
            out["decode_step_ms"] = (last - first) / (m.osl - 1) * 1e3
    return {k: v for k, v in out.items() if k in m.metrics and v is not None and math.isfinite(v)}


def predict(r: Resolved, params: CostModelParams, seed: int = 42) -> dict[str, float]:
    """Simulate measurement `r` with cost parameters `params`; its metrics as simulated."""
    try:
        result = simulate(r.scenario(params), workload=workload(r.measurement, seed))
    except CapacityError as err:
        raise ConfigError(str(err)) from err
    return metrics_of(result, r.measurement)
