"""Predict measured runs with tokenmill and report the error: `tokenmill validate`.

Why: a latency model is only worth what its errors on real measurements are. Every row of the
given files that tokenmill can simulate is replayed through tokenmill.simulate (tokenmill.replay)
with the calibration of its chip and engine, and compared metric by metric; rows it cannot
simulate are counted with the reason. Rows a calibration was fitted on are reported apart from
the held-out rows, so the held-out error is the honest one.

Calibration per row: the shipped calibration named `<chip>-<engine>` (e.g. h100-vllm); SGLang
rows without their own calibration use the vLLM one of the chip (said so in the table); rows
with no calibration at all use the defaults and are marked 'default'. `--calibration` forces one
calibration for every row instead.

Metric groups (the issue's goals): 'batch' = static-batch and step-level metrics
(batch_latency_ms, batch_ttft_ms, decode_step_ms), goal MAPE <= 10%; 'serving' = TTFT, TPOT, ITL,
E2E and throughput of serving and offline runs, goal <= 15%.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np

from .calibration import Calibration, load_calibration, shipped_calibrations
from .catalogue import find_gpu, find_model
from .costparams import CostModelParams
from .errors import ConfigError
from .measurements import Measurement
from .operators import stage_operators
from .replay import Resolved, Skip, predict, resolve

BATCH_METRICS = ("batch_latency_ms", "batch_ttft_ms", "decode_step_ms")
GOALS = {"batch": 10.0, "serving": 15.0}


@dataclass(frozen=True)
class Comparison:
    """One metric of one measurement, measured and predicted."""

    measurement: Measurement
    chip: str
    model: str
    engine: str
    calibration: str
    held_out: bool
    metric: str
    measured: float
    predicted: float
    kv_bound: bool = False

    @property
    def error_pct(self) -> float:
        return (self.predicted / self.measured - 1.0) * 100.0

    @property
    def group(self) -> str:
        return "batch" if self.metric in BATCH_METRICS else "serving"

    @property
    def family(self) -> str:
        """batch, ttft, tpot (TPOT and ITL), e2e or throughput."""
        if self.metric in BATCH_METRICS:
            return "batch"
        for prefix, name in (("ttft", "ttft"), ("tpot", "tpot"), ("itl", "tpot"), ("e2e", "e2e")):
            if self.metric.startswith(prefix):
                return name
        return "throughput"


@dataclass
class ValidationReport:
    comparisons: list[Comparison] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)          # rows, by reason
    skipped_metrics: Counter = field(default_factory=Counter)  # metric values of simulated rows
    rows: int = 0
    duplicates: int = 0

    def table(self, keys: Sequence[str], held_out: Optional[bool] = True,
              kv_bound: Optional[bool] = None) -> list[dict]:
        """MAPE grouped by `keys` (attributes of Comparison), held-out rows by default."""
        groups: dict[tuple, list[Comparison]] = defaultdict(list)
        for c in self.comparisons:
            if (held_out is None or c.held_out == held_out) and (kv_bound is None or c.kv_bound == kv_bound):
                groups[tuple(getattr(c, k) for k in keys)].append(c)
        out = []
        for key, cs in sorted(groups.items()):
            errs = np.array([abs(c.error_pct) for c in cs])
            bias = float(np.mean([c.error_pct for c in cs]))
            out.append({**dict(zip(keys, key)), "n": len(cs), "mape": float(errs.mean()),
                        "bias": bias, "max": float(errs.max())})
        return out

    def worst(self, n: int = 10, held_out: bool = True) -> list[Comparison]:
        cs = [c for c in self.comparisons if c.held_out == held_out]
        return sorted(cs, key=lambda c: -abs(math.log(c.predicted / c.measured)))[:n]

    def summary(self) -> dict:
        def mape(cs: list[Comparison]) -> Optional[float]:
            return float(np.mean([abs(c.error_pct) for c in cs])) if cs else None
        out = {}
        for held in (False, True):
            for group in GOALS:
                cs = [c for c in self.comparisons if c.held_out == held and c.group == group]
                name = f"{'held_out' if held else 'fit'}_{group}"
                out[name] = {"n": len(cs), "mape": mape(cs)}
                fits = [c for c in cs if not c.kv_bound]
                if len(fits) != len(cs):
                    out[name + "_kv_fits"] = {"n": len(fits), "mape": mape(fits)}
        return out


def _dedupe(rows: Iterable[Measurement]) -> tuple[list[Measurement], int, dict[str, set[str]]]:
    """Rows with duplicates (the same point in two files) dropped, and every kept row's ids."""
    seen: dict[tuple, Measurement] = {}
    ids: dict[str, set[str]] = {}
    out, dup = [], 0
    for m in rows:
        key = (m.source, m.kind, m.hardware, m.model, m.framework, m.tp, m.isl, m.osl, m.batch,
               m.rate, m.num_requests, m.dataset, tuple(sorted(m.metrics.items())))
        if key in seen:
            dup += 1
            ids[seen[key].id].add(m.id)
            continue
        seen[key] = m
        ids[m.id] = {m.id}
        out.append(m)
    return out, dup, ids


def _roofline_violation(r: Resolved) -> Optional[str]:
    """A static batch faster than reading the weights once per decode step at peak bandwidth
    allows did not generate what it says (it stopped early); such rows are skipped."""
    m = r.measurement
    if m.kind != "static_batch" or not m.osl or m.osl < 2:
        return None
    ops = stage_operators(find_model(r.model), r.precision, r.tp)
    bandwidth = find_gpu(r.chip).memory_bandwidth_tbps * 1e12
    floor_ms = ops.weight_bytes / bandwidth * 1e3
    steps = m.osl - 1
    # every decode step reads the weights and the KV of every sequence's context
    kv_ms = (ops.kv_bytes_per_token * (m.batch or 1) * ((m.isl or 0) * steps + steps * (steps + 1) / 2)
             / bandwidth * 1e3)
    if "batch_latency_ms" in m.metrics and m.metrics["batch_latency_ms"] < 0.9 * (floor_ms * steps + kv_ms):
        return ("faster than reading the weights at peak bandwidth for every decode step allows "
                "(the run stopped before its output length)")
    if "decode_step_ms" in m.metrics and m.metrics["decode_step_ms"] < 0.9 * floor_ms:
        return "decode step faster than reading the weights at peak bandwidth allows"
    return None


def _calibration_for(r: Resolved, forced: Optional[Calibration],
                     shipped: dict[str, Calibration]) -> tuple[str, Optional[Calibration]]:
    if forced is not None:
        return forced.name, forced
    name = r.calibration_name
    if name in shipped:
        return name, shipped[name]
    if r.engine.calibration_engine == "sglang" and f"{r.chip}-vllm" in shipped:
        return f"{r.chip}-vllm (for sglang)", shipped[f"{r.chip}-vllm"]
    return "default", None


def _held_out(ids: set[str], cal: Optional[Calibration]) -> bool:
    """Held out unless the calibration's fit used this very row (under any of its ids)."""
    return cal is None or not (ids & set(cal.fitted_rows))


def validate(measurements: Iterable[Measurement], *, calibration: Optional[str] = None,
             chips: Optional[Sequence[str]] = None, sources: Optional[Sequence[str]] = None,
             models: Optional[str] = None) -> ValidationReport:
    """Predict every row that can be simulated; count the others with their reason. `chips`,
    `sources` and `models` (a regular expression on the model preset) select rows."""
    import re

    model_re = re.compile(models, re.IGNORECASE) if models else None
    forced = load_calibration(calibration) if calibration else None
    shipped = shipped_calibrations()
    rows, dup, ids = _dedupe(measurements)
    report = ValidationReport(rows=len(rows), duplicates=dup)
    for m in rows:
        if sources and m.source not in sources:
            report.skipped["source not selected"] += 1
            continue
        r = resolve(m)
        if isinstance(r, Skip):
            report.skipped[r.reason] += 1
            continue
        if chips and r.chip not in chips:
            report.skipped["chip not selected"] += 1
            continue
        if model_re is not None and not model_re.search(r.model):
            report.skipped["model not selected"] += 1
            continue
        why = _roofline_violation(r)
        if why:
            report.skipped[why] += 1
            continue
        name, cal = _calibration_for(r, forced, shipped)
        params = cal.params if cal is not None else CostModelParams()
        try:
            got = predict(r, params)
        except ConfigError as err:
            report.skipped[f"simulation refused: {str(err).splitlines()[0][:80]}"] += 1
            continue
        held = _held_out(ids[m.id], cal)
        for metric, value in got.items():
            measured = m.metrics[metric]
            if not (measured > 0 and value > 0):
                continue
            if metric.startswith("itl") and "multi-step" in m.notes.lower():
                report.skipped_metrics["ITL of a multi-step run (a gap spans several tokens; TPOT is compared)"] += 1
                continue
            if m.kind == "poisson" and metric in ("output_tok_s", "total_tok_s", "req_s") and (
                    m.rate and m.metrics.get("req_s", 0) >= 0.95 * m.rate):
                report.skipped_metrics["throughput of an unsaturated fixed-rate run (it equals the offered "
                               "load; not a test of the model)"] += 1
                continue
            report.comparisons.append(Comparison(m, r.chip, r.model, r.engine.engine, name, held,
                                                 metric, measured, value, r.kv_bound))
    return report


# ---- rendering ----------------------------------------------------------------------------------

def _fmt_table(rows: list[dict], keys: Sequence[str], markdown: bool) -> list[str]:
    head = list(keys) + ["n", "MAPE %", "bias %", "max %"]
    body = [[str(r[k]) for k in keys] + [str(r["n"]), f"{r['mape']:.1f}", f"{r['bias']:+.1f}",
                                          f"{r['max']:.1f}"] for r in rows]
    if markdown:
        return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    return ["  ".join(h.ljust(w) for h, w in zip(head, widths))] + \
        ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]


def render(report: ValidationReport, *, worst: int = 10, markdown: bool = False) -> str:
    h = (lambda t: f"\n### {t}\n") if markdown else (lambda t: f"\n{t}\n{'-' * len(t)}")
    lines = [f"{report.rows} measurements ({report.duplicates} duplicates dropped); "
             f"{len({id(c.measurement) for c in report.comparisons})} simulated, "
             f"{len(report.comparisons)} metric values compared"]
    s = report.summary()
    lines.append(h("Summary (MAPE %; goals: batch <= 10, serving <= 15)"))
    for key, v in s.items():
        mape = f"{v['mape']:.1f}" if v["mape"] is not None else "-"
        lines.append(f"{'- ' if markdown else '  '}{key}: {mape} over {v['n']} values")
    fkeys = ("chip", "family")
    lines.append(h("Held-out rows: MAPE by chip and metric family (static batches larger than "
                   "the KV cache apart)"))
    lines += _fmt_table(report.table(fkeys, True, kv_bound=False), fkeys, markdown)
    keys = ("chip", "model", "metric")
    lines.append(h("Held-out rows: MAPE by chip, model and metric"))
    lines += _fmt_table(report.table(keys, True, kv_bound=False), keys, markdown)
    bound = report.table(keys, True, kv_bound=True)
    if bound:
        lines.append(h("Held-out static batches larger than the simulated KV cache (the engine "
                       "queued or preempted; the memory model decides these)"))
        lines += _fmt_table(bound, keys, markdown)
    lines.append(h("Held-out rows: MAPE by source, chip, engine and calibration"))
    skeys = ("source", "chip", "engine", "calibration")
    lines += _fmt_table([{**r, "source": r["source"]} for r in _by_source(report, True)], skeys, markdown)
    lines.append(h("Fit rows (the calibration saw them): MAPE by chip, model and metric"))
    lines += _fmt_table(report.table(keys, False), keys, markdown)
    lines.append(h(f"Worst {worst} held-out values"))
    for c in report.worst(worst, True):
        m = c.measurement
        lines.append(f"{'- ' if markdown else '  '}{m.id} {m.source} {c.chip} {c.model} tp{m.tp} "
                     f"{c.engine} [{c.calibration}] {m.label}: {c.metric} measured "
                     f"{c.measured:.4g} predicted {c.predicted:.4g} ({c.error_pct:+.1f}%)")
    lines.append(h("Skipped rows"))
    for reason, n in report.skipped.most_common():
        lines.append(f"{'- ' if markdown else '  '}{n:5d}  {reason}")
    if report.skipped_metrics:
        lines.append(h("Metric values not compared (of simulated rows)"))
        for reason, n in report.skipped_metrics.most_common():
            lines.append(f"{'- ' if markdown else '  '}{n:5d}  {reason}")
    return "\n".join(lines) + "\n"


def _by_source(report: ValidationReport, held_out: bool) -> list[dict]:
    groups: dict[tuple, list[Comparison]] = defaultdict(list)
    for c in report.comparisons:
        if c.held_out == held_out:
            groups[(c.measurement.source, c.chip, c.engine, c.calibration)].append(c)
    out = []
    for (src, chip, eng, cal), cs in sorted(groups.items()):
        errs = np.array([abs(c.error_pct) for c in cs])
        out.append({"source": src, "chip": chip, "engine": eng, "calibration": cal, "n": len(cs),
                    "mape": float(errs.mean()), "bias": float(np.mean([c.error_pct for c in cs])),
                    "max": float(errs.max())})
    return out


def to_json(report: ValidationReport) -> str:
    return json.dumps({
        "rows": report.rows, "duplicates": report.duplicates, "summary": report.summary(),
        "held_out": report.table(("chip", "model", "metric"), True),
        "fit": report.table(("chip", "model", "metric"), False),
        "skipped": dict(report.skipped.most_common()),
        "skipped_metrics": dict(report.skipped_metrics.most_common()),
        "comparisons": [{"id": c.measurement.id, "source": c.measurement.source, "chip": c.chip,
                         "model": c.model, "engine": c.engine, "calibration": c.calibration,
                         "held_out": c.held_out, "metric": c.metric, "measured": c.measured,
                         "predicted": c.predicted} for c in report.comparisons],
    }, indent=1) + "\n"
