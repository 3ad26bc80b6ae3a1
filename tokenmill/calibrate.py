"""Fit the cost model's efficiencies and overheads for one (chip, engine) pair to measurements.

Why: the datasheet gives peaks; how close real kernels and real engines come to them has to be
measured. `tokenmill calibrate` takes measurement files, keeps the rows of one chip and engine,
and fits in stages, each on the data that pins its parameters down, by least squares on the log
of predicted over measured (relative errors, so fast and slow points weigh alike):

1. GEMM operators (per-layer kernel times, e.g. Vidur's profiles as a kernel table): the GEMM
   ceiling efficiency, its half-saturation rows, weight-streaming efficiency, per-kernel floor.
2. All-reduce profiles: the collectives' bandwidth efficiency and per-call latency.
3. Steps and static batches (step-level kernel tables, static-batch benchmarks, Splitwise
   profiles): framework overheads (prefill, decode, per sequence), attention and KV-read
   efficiencies, element-wise efficiency, expert spread for MoE models, and the GEMM and
   collective parameters when no operator or all-reduce data pinned them.

Each stage starts from the previous stage's result (or a base calibration), and a weak prior
(0.05 x the move as a fraction of the parameter's allowed range) keeps parameters the data
cannot see where they started.
Static batches are priced with the closed-form schedule of tokenmill.schedule (the kernel's
'orca'/'static' rules), so a fit takes seconds; rows whose batch would not fit in the KV cache
(preemption) or whose engine chunks prefills are left to `validate`, which simulates them.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from ._version import __version__
from .calibration import Calibration, FitResiduals, FitStage
from .catalogue import find_gpu, find_model
from .collectives import all_reduce, scale_up_link
from .costmodel import coefficients
from .costparams import CostModelParams
from .errors import ConfigError
from .fitting import Bound, least_squares
from .kernel_table import GEMM_OPS
from .measurements import Measurement, chip_for, model_for
from .memory import memory_fit
from .operators import Gemm, stage_operators
from .precision import Precision
from .replay import Resolved, Skip, resolve
from .schedule import BatchPlan, batch_plan
from .steptimes import StepShapes, gpu_seconds_array, step_seconds_array

BOUNDS: dict[str, Bound] = {
    "compute_efficiency": Bound(0.2, 1.0), "gemm_half_rows": Bound(0.0, 4096.0),
    "memory_efficiency": Bound(0.3, 1.0), "kv_read_efficiency": Bound(0.2, 1.0),
    "elementwise_efficiency": Bound(0.05, 1.0), "attention_efficiency": Bound(0.15, 0.9),
    "attention_half_pairs": Bound(0.0, 1e8), "expert_spread": Bound(0.1, 1.0),
    "kernel_floor_us": Bound(0.0, 50.0), "collective_efficiency": Bound(0.05, 1.0),
    "collective_base_us": Bound(0.0, 200.0), "prefill_step_overhead_ms": Bound(0.0, 20.0),
    "decode_step_overhead_ms": Bound(0.0, 20.0), "per_sequence_overhead_us": Bound(0.0, 5000.0),
    "per_sequence_per_rank_us": Bound(0.0, 5000.0),
}
GEMM_PARAMS = ("compute_efficiency", "gemm_half_rows", "memory_efficiency", "kernel_floor_us",
               "elementwise_efficiency")
COLLECTIVE_PARAMS = ("collective_efficiency", "collective_base_us")
STEP_PARAMS = ("decode_step_overhead_ms", "per_sequence_overhead_us", "kv_read_efficiency")
# Static batches cannot tell a prefill step's overhead from a decode step's (both grow with the
# batch's steps), nor prefill attention from KV reads (both grow as batch x length^2): the
# prefill overhead follows the decode overhead, and attention keeps its published efficiency.
TIED = {"prefill_step_overhead_ms": "decode_step_overhead_ms"}
PRIOR_WEIGHT = 0.05


@dataclass
class StageReport:
    """What one stage did, for the command's report and the calibration file."""

    name: str
    parameters: tuple[str, ...]
    before: dict[str, float]
    after: dict[str, float]
    rows: int
    residuals: FitResiduals
    worst: list[tuple[str, str, float, float]]   # (id, label, measured, predicted)
    skipped: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class Problem:
    """Measured values and a function predicting them from a parameter set."""

    ids: list[str]
    labels: list[str]
    measured: np.ndarray
    predict: Callable[[CostModelParams], np.ndarray]
    skipped: Counter


# ---- stage 1: GEMM operators ------------------------------------------------------------------

ELEMENTWISE_KERNELS = 6   # per layer in Vidur's profiles: 2 norms, rotary, activation, 2 adds


def _op_gemm(model: str, op: str, tp: int) -> Gemm:
    """Per-layer figures of one operator; 'elementwise' as a Gemm of bytes only."""
    ops = stage_operators(find_model(model), Precision(), tp, first=False, last=False)
    if op == "elementwise":
        return Gemm(0.0, 0.0, ops.elementwise_bytes_per_token / ops.layers, ELEMENTWISE_KERNELS)
    if op == "lm_head":
        ops = stage_operators(find_model(model), Precision(), tp)
    g = {"qkv_proj": ops.qkv, "o_proj": ops.o, "mlp_up": ops.mlp_in, "mlp_down": ops.mlp_out,
         "lm_head": ops.lm_head}[op]
    n = max(g.layers, 1)
    return Gemm(g.flops_per_row / n, g.weight_bytes / n, g.act_bytes_per_row / n, 1)


def op_problem(rows: Sequence[Measurement], chip: str) -> Problem:
    skipped: Counter = Counter()
    keep: list[tuple[Measurement, Gemm]] = []
    cache: dict[tuple[str, str, int], Gemm] = {}
    for m in rows:
        if m.kind != "op":
            continue
        if chip_for(m.hardware)[0] != chip:
            continue
        model, why = model_for(m.model)
        if model is None:
            skipped[why] += 1
            continue
        if m.op not in GEMM_OPS + ("elementwise",):
            skipped[f"op {m.op} is not a GEMM or the element-wise kernels"] += 1
            continue
        key = (model, m.op, m.tp)
        if key not in cache:
            cache[key] = _op_gemm(model, m.op, m.tp)
        keep.append((m, cache[key]))
    hw = find_gpu(chip)
    peak = hw.dense_flops("bf16")
    bw = hw.memory_bandwidth_tbps * 1e12
    flops = np.array([g.flops_per_row for _, g in keep])
    wbytes = np.array([g.weight_bytes for _, g in keep])
    act = np.array([g.act_bytes_per_row for _, g in keep])
    kernels = np.array([float(g.layers) for _, g in keep])
    elementwise = np.array([m.op == "elementwise" for m, _ in keep])
    rows_m = np.array([float(m.batch or 1) for m, _ in keep])

    def predict(p: CostModelParams) -> np.ndarray:
        compute = flops * (rows_m + p.gemm_half_rows) / (peak * p.compute_efficiency)
        memory = (wbytes + act * rows_m) / (bw * p.memory_efficiency)
        gemm = np.maximum(compute, memory)
        moved = act * rows_m / (bw * p.elementwise_efficiency)
        return (kernels * p.kernel_floor_us * 1e-6 + np.where(elementwise, moved, gemm)) * 1e3

    return Problem([m.id for m, _ in keep], [f"{m.model} {m.op} tp{m.tp} M={m.batch}" for m, _ in keep],
                   np.array([m.metrics["op_ms"] for m, _ in keep]), predict, skipped)


# ---- stage 2: collectives ---------------------------------------------------------------------

def allreduce_problem(rows: Sequence[Measurement], chip: str) -> Problem:
    skipped: Counter = Counter()
    keep: list[Measurement] = []
    for m in rows:
        if m.kind != "allreduce" or chip_for(m.hardware)[0] != chip:
            continue
        if m.tp > (m.ranks_per_node or m.tp):
            skipped["all-reduce across nodes (needs the fabric between them)"] += 1
            continue
        keep.append(m)
    hw = find_gpu(chip)

    def predict(p: CostModelParams) -> np.ndarray:
        link = scale_up_link(hw, p.collective_efficiency)
        out = np.empty(len(keep))
        for i, m in enumerate(keep):
            ring, tree = all_reduce(m.tp, float(m.size_bytes or 0.0), hw.scale_up_domain, link,
                                    None, p.collective_base_us * 1e-6)
            out[i] = min(ring.fixed_s + ring.per_token_s, tree.fixed_s + tree.per_token_s) * 1e3
        return out

    return Problem([m.id for m in keep], [f"all-reduce {m.size_bytes:g} B x{m.tp}" for m in keep],
                   np.array([m.metrics["allreduce_ms"] for m in keep]), predict, skipped)


# ---- stage 3: steps and static batches ----------------------------------------------------------

@dataclass
class _Group:
    """Rows sharing model, chip, precision and plan: one coefficient set per evaluation."""

    model: str
    chip: str
    precision: Precision
    tp: int
    plans: list[BatchPlan | StepShapes] = field(default_factory=list)
    gpu_only: list[bool] = field(default_factory=list)
    metrics: list[list[str]] = field(default_factory=list)


def _step_shape(m: Measurement) -> StepShapes:
    b, s = float(m.batch or 1), float(m.seq_len or 1)
    z = np.zeros(1)
    if m.op == "decode":
        return StepShapes(z, z, z, np.array([b]), np.array([b]), np.array([b * s]))
    return StepShapes(np.array([b * s]), np.array([b * s * (s + 1) / 2]), z, np.array([b]), z, z)


def step_problem(rows: Sequence[Measurement], chip: str, engine: str) -> Problem:
    skipped: Counter = Counter()
    groups: dict[tuple, _Group] = {}
    order: list[tuple[tuple, int, str, Measurement]] = []
    for m in rows:
        if m.kind == "step":
            if chip_for(m.hardware)[0] != chip:
                continue
            model, why = model_for(m.model)
            if model is None:
                skipped[why] += 1
                continue
            key = (model, chip, "bf16", m.tp)
            g = groups.setdefault(key, _Group(model, chip, Precision(), m.tp))
            g.plans.append(_step_shape(m))
            g.gpu_only.append(True)
            g.metrics.append(["step_ms"])
            order.append((key, len(g.plans) - 1, "step_ms", m))
            continue
        if m.kind != "static_batch":
            continue
        r = resolve(m)
        if isinstance(r, Skip):
            if chip_for(m.hardware)[0] == chip:
                skipped[r.reason] += 1
            continue
        if r.chip != chip or r.engine.calibration_engine != engine:
            continue
        plan_or_reason = _plan(r)
        if isinstance(plan_or_reason, str):
            skipped[plan_or_reason] += 1
            continue
        key = (r.model, r.chip, r.precision.model_dump_json(), r.tp)
        g = groups.setdefault(key, _Group(r.model, r.chip, r.precision, r.tp))
        g.plans.append(plan_or_reason)
        g.gpu_only.append(False)
        names = [k for k in m.metrics if k in ("batch_latency_ms", "batch_ttft_ms", "decode_step_ms",
                                                "ttft_mean_ms", "tpot_mean_ms", "e2e_mean_ms")]
        g.metrics.append(names)
        for name in names:
            order.append((key, len(g.plans) - 1, name, m))
    archs = {key: (find_model(g.model), find_gpu(g.chip)) for key, g in groups.items()}
    shapes = {key: StepShapes.concat([p.shapes if isinstance(p, BatchPlan) else p for p in g.plans])
              for key, g in groups.items()}

    def predict(p: CostModelParams) -> np.ndarray:
        values: dict[tuple, dict[tuple[int, str], float]] = {}
        for key, g in groups.items():
            model, hw = archs[key]
            c = coefficients(model, hw, g.precision, g.tp, p)
            steps = step_seconds_array(c, shapes[key])
            gpu = gpu_seconds_array(c, shapes[key]) if any(g.gpu_only) else steps
            got: dict[tuple[int, str], float] = {}
            start = 0
            for i, plan in enumerate(g.plans):
                n = len(plan.shapes) if isinstance(plan, BatchPlan) else len(plan)
                if isinstance(plan, BatchPlan):
                    ms = plan.metrics(steps[start:start + n])
                    for name in g.metrics[i]:
                        got[(i, name)] = ms.get(name, math.nan)
                else:
                    got[(i, "step_ms")] = float(gpu[start]) * 1e3
                start += n
            values[key] = got
        return np.array([values[key][(i, name)] for key, i, name, _ in order])

    return Problem([m.id for _, _, _, m in order],
                   [f"{m.model.split('/')[-1]} tp{m.tp} {m.label} {name}" for _, _, name, m in order],
                   np.array([m.metrics[name] for _, _, name, m in order]), predict, skipped)


def _plan(r: Resolved) -> BatchPlan | str:
    m = r.measurement
    sched = r.engine.scheduler
    policy = str(sched["name"])
    if policy not in ("orca", "static"):
        return f"'{policy}' schedule (chunked prefill): validated by simulation, not fitted"
    assert m.batch and m.isl and m.osl
    batch, isl, osl = int(m.batch), int(m.isl), int(m.osl)
    from .scenario import SchedulerPolicy

    policy_obj = SchedulerPolicy(**sched)  # type: ignore[arg-type]
    fit = memory_fit(find_model(r.model), find_gpu(r.chip), r.precision, r.tp, policy_obj)
    per_request = -(-(isl + osl) // policy_obj.kv_block_size)
    if batch * per_request > fit.kv_capacity_blocks:
        return "batch exceeds the KV cache (preemption): validated by simulation, not fitted"
    try:
        return batch_plan(batch, isl, osl, policy=policy, max_batch_tokens=int(sched["max_batch_tokens"]),  # type: ignore[call-overload]
                          max_num_seqs=int(sched["max_num_seqs"]))  # type: ignore[call-overload]
    except ValueError as err:
        return str(err)


# ---- the fit ----------------------------------------------------------------------------------

def _residuals(measured: np.ndarray, predicted: np.ndarray) -> FitResiduals:
    ratio = predicted / measured
    ok = np.isfinite(ratio) & (ratio > 0)
    err = np.abs(ratio[ok] - 1.0) * 100.0
    logs = np.log(ratio[ok])
    return FitResiduals(rows=int(ok.sum()), mape_before=0.0, mape_after=float(err.mean()) if err.size else 0.0,
                        max_abs_pct_error=float(err.max()) if err.size else 0.0,
                        rms_log_error=float(np.sqrt(np.mean(logs ** 2))) if logs.size else 0.0)


def _width(name: str) -> float:
    b = BOUNDS[name]
    assert b.upper is not None
    return b.upper - b.lower


def fit_stage(name: str, problem: Problem, params: CostModelParams,
              free: Sequence[str]) -> tuple[CostModelParams, StageReport]:
    """Fit `free` parameters of `params` to `problem`; the rest stay fixed."""
    start = {k: float(getattr(params, k)) for k in free}

    def with_x(x: np.ndarray) -> CostModelParams:
        update = {k: float(v) for k, v in zip(free, x)}
        update.update({t: update[s] for t, s in TIED.items() if s in update})
        return params.model_copy(update=update)

    def residuals(x: np.ndarray) -> np.ndarray:
        pred = problem.predict(with_x(x))
        r = np.log(np.maximum(pred, 1e-300) / problem.measured)
        prior = [PRIOR_WEIGHT * (v - start[k]) / _width(k) for k, v in zip(free, x)]
        return np.concatenate([r, np.array(prior)])

    before = problem.predict(params)
    outcome = least_squares(residuals, [start[k] for k in free], [BOUNDS[k] for k in free])
    fitted = with_x(outcome.x)
    after = problem.predict(fitted)
    res = _residuals(problem.measured, after)
    res = res.model_copy(update={"mape_before": float(np.nanmean(np.abs(before / problem.measured - 1)) * 100)})
    worst_idx = np.argsort(-np.abs(np.log(after / problem.measured)))[:5]
    worst = [(problem.ids[i], problem.labels[i], float(problem.measured[i]), float(after[i]))
             for i in worst_idx]
    shown = tuple(free) + tuple(t for t, s in TIED.items() if s in free)
    start.update({t: float(getattr(params, t)) for t in shown if t not in start})
    return fitted, StageReport(name, shown, start, {k: float(getattr(fitted, k)) for k in shown},
                               len(problem.ids), res, worst, problem.skipped)


@dataclass
class CalibrationRun:
    calibration: Calibration
    stages: list[StageReport]
    skipped: Counter


def calibrate(measurements: Sequence[Measurement], *, chip: str, engine: str,
              base: Optional[CostModelParams] = None, name: Optional[str] = None,
              engine_label: Optional[str] = None, data_names: Sequence[str] = (),
              notes: Optional[str] = None, operator_chip: Optional[str] = None,
              models: Optional[str] = None) -> CalibrationRun:
    """Fit a calibration of `chip` with `engine` (vllm, trtllm, sglang, splitwise) to the rows
    of `measurements` that describe that pair.

    `operator_chip` takes the operator and all-reduce profiles of another chip of the same
    silicon (an A100 80GB's for an A100 40GB: the efficiencies are fractions of each chip's own
    peaks). `models` (a regular expression) keeps only the step and batch rows of matching
    models, leaving the others held out."""
    find_gpu(chip)
    params = base or CostModelParams()
    reports: list[StageReport] = []
    fitted: list[str] = []
    sources: set[str] = set()
    if models is not None:
        pattern = re.compile(models, re.IGNORECASE)
        measurements = [m for m in measurements
                        if m.kind not in ("static_batch", "step") or pattern.search(m.model)]
    ops = op_problem(measurements, operator_chip or chip)
    if len(ops.ids) >= len(GEMM_PARAMS) + 2:
        params, rep = fit_stage("gemm operators", ops, params, GEMM_PARAMS)
        reports.append(rep)
        fitted += GEMM_PARAMS
    ar = allreduce_problem(measurements, operator_chip or chip)
    if len(ar.ids) >= 4:
        params, rep = fit_stage("collectives", ar, params, COLLECTIVE_PARAMS)
        reports.append(rep)
        fitted += COLLECTIVE_PARAMS
    steps = step_problem(measurements, chip, engine)
    if len(steps.ids) >= 4:
        free = list(STEP_PARAMS)
        if not ops.ids:
            free += ["compute_efficiency", "memory_efficiency", "elementwise_efficiency"]
        if _has_tp(measurements, chip):
            free += ["per_sequence_per_rank_us"] + ([] if ar.ids else ["collective_base_us"])
        if _has_moe(measurements, chip):
            free += ["expert_spread"]
        params, rep = fit_stage("steps and static batches", steps, params, free)
        reports.append(rep)
        fitted += free + [t for t, s in TIED.items() if s in free]
    if not reports:
        raise ConfigError(f"no measurements of chip {chip!r} with engine {engine!r} to fit "
                          "(operator profiles, all-reduce profiles, step tables or static batches)")
    for m in measurements:
        if m.id in set(ops.ids) | set(ar.ids) | set(steps.ids):
            sources.add(m.source)
    stages = tuple(FitStage(name=r.name, parameters=r.parameters,
                            data=tuple(sorted(sources)) + tuple(data_names), residuals=r.residuals)
                   for r in reports)
    cal = Calibration(
        name=name or f"{chip}-{engine}", chip=chip, engine=engine_label or engine, params=params,
        fitted=tuple(dict.fromkeys(fitted)), fitted_sources=tuple(sorted(sources)),
        fitted_models=models,
        fitted_rows=tuple(dict.fromkeys(steps.ids)) if len(steps.ids) >= 4 else (),
        stages=stages, notes=notes, tokenmill_version=__version__)
    skipped: Counter = Counter()
    for r in reports:
        skipped.update(r.skipped)
    return CalibrationRun(cal, reports, skipped)


def _has_tp(rows: Sequence[Measurement], chip: str) -> bool:
    return any(m.tp > 1 and chip_for(m.hardware)[0] == chip for m in rows if m.kind == "static_batch")


def _has_moe(rows: Sequence[Measurement], chip: str) -> bool:
    for m in rows:
        if m.kind == "static_batch" and chip_for(m.hardware)[0] == chip:
            model, _ = model_for(m.model)
            if model and find_model(model).is_moe:
                return True
    return False


def transferred(base: Calibration, chip: str, *, name: str, why: str) -> Calibration:
    """`base`'s parameters for another chip of the same silicon family, saying so."""
    find_gpu(chip)
    note = f"transferred from {base.name} ({why})" + (f"; {base.notes}" if base.notes else "")
    # Nothing of this chip was fitted: every one of its rows is held out.
    return base.model_copy(update={"name": name, "chip": chip, "notes": note, "fitted_rows": (),
                                   "tokenmill_version": __version__})


def describe(run: CalibrationRun) -> str:
    """The command's report: per stage, parameters before and after, residuals, worst rows."""
    lines = [f"calibration {run.calibration.name}: {run.calibration.chip} with {run.calibration.engine}"]
    for r in run.stages:
        lines.append(f"\n[{r.name}] {r.rows} values; MAPE {r.residuals.mape_before:.1f}% -> "
                     f"{r.residuals.mape_after:.1f}% (max {r.residuals.max_abs_pct_error:.1f}%, "
                     f"rms log {r.residuals.rms_log_error:.3f})")
        for k in r.parameters:
            lines.append(f"  {k:28s} {r.before[k]:12.5g} -> {r.after[k]:12.5g}")
        lines.append("  largest residuals:")
        for ident, label, measured, predicted in r.worst:
            lines.append(f"    {ident:8s} {label:60.60s} measured {measured:10.4g} predicted "
                         f"{predicted:10.4g} ({(predicted / measured - 1) * 100:+.1f}%)")
    if run.skipped:
        lines.append("\nrows of this chip not fitted:")
        for reason, n in run.skipped.most_common():
            lines.append(f"  {n:5d}  {reason}")
    return "\n".join(lines) + "\n"
