"""Measurement files: read the CSV formats tokenmill calibrates on and validates against.

Why: public measurements come in several shapes. This module reads each into one `Measurement`
per data point, with the metrics named the same way whatever the source, so `calibrate` and
`validate` never care where a number came from. Formats, recognised by their header:

* serving measurements (shared/data/measurements/serving_measurements.csv and
  argonne_static_batch.csv): one row per benchmark point with hardware, model, precision, TP,
  framework, ISL/OSL, rate or concurrency or batch, and measured TTFT/TPOT/ITL/E2E and tokens/s;
  `measurement_class` says what kind of run it was.
* Splitwise profiles (splitwise_profile.csv): static batches with the whole prompt phase
  (`prompt_time_ms`), the mean decode step (`token_time_ms`) and the end-to-end time.
* kernel tables (gpu, model, op, batch_size, seq_len, latency_ms[, tp]): measured step or
  per-layer operator times, as `--kernel-table` reads them.
* NCCL all-reduce profiles (Vidur's network/*/all_reduce.csv, or the same columns): size in
  bytes, ranks, ranks per node, median time.

Metric names (the keys of Measurement.metrics): ttft_{mean,median,p99}_ms,
tpot_{mean,median,p99}_ms, itl_{mean,median,p99}_ms, e2e_{mean,median,p99}_ms,
batch_latency_ms (a static batch from start to last token), batch_ttft_ms (a static batch's
prompt phase), decode_step_ms (a static batch's mean decode step), output_tok_s, total_tok_s,
req_s, step_ms and op_ms (kernel tables), allreduce_ms.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .errors import ConfigError

KINDS = ("static_batch", "throughput", "poisson", "concurrency", "step", "op", "allreduce")
_CLASS_KIND = {
    "static_batch": "static_batch",
    "throughput_max_offline": "throughput",
    "latency_at_fixed_rate_poisson": "poisson",
    "latency_at_fixed_concurrency": "concurrency",
}
# Serving-format columns that hold a metric, and the metric's name here.
_SERVING_METRICS = ("ttft_mean_ms", "ttft_median_ms", "ttft_p99_ms", "tpot_mean_ms",
                    "tpot_median_ms", "tpot_p99_ms", "itl_mean_ms", "itl_median_ms", "itl_p99_ms",
                    "e2e_mean_ms", "e2e_median_ms", "e2e_p99_ms", "output_tok_s", "total_tok_s",
                    "req_s")


@dataclass(frozen=True)
class Measurement:
    """One measured data point, whatever file it came from."""

    id: str
    source: str                 # source id (S01, S14, S15, ...) or the file name
    kind: str                   # one of KINDS
    hardware: str               # as written in the file
    model: str = ""
    framework: str = ""
    version: str = ""
    precision_weights: str = ""
    precision_kv: str = ""
    tp: int = 1
    pp: int = 1
    ep: int = 1
    replicas: int = 1                     # data-parallel replicas behind one endpoint
    dataset: str = ""
    isl: Optional[float] = None           # nominal input tokens
    osl: Optional[float] = None           # nominal output tokens
    isl_mean: Optional[float] = None      # measured mean input tokens
    osl_mean: Optional[float] = None
    batch: Optional[int] = None
    rate: Optional[float] = None          # requests per second (inf: all at once)
    concurrency: Optional[int] = None
    num_requests: Optional[int] = None
    op: str = ""                          # kernel tables: decode, prefill, qkv_proj, ...
    seq_len: Optional[int] = None
    size_bytes: Optional[float] = None    # all-reduce message
    ranks_per_node: Optional[int] = None
    metrics: dict[str, float] = field(default_factory=dict)
    notes: str = ""

    @property
    def label(self) -> str:
        """A short description for reports: what ran and how."""
        what = {"static_batch": f"batch {self.batch} in {_n(self.isl)} out {_n(self.osl)}",
                "throughput": f"offline {self.num_requests or '?'} req in {_n(self.isl or self.isl_mean)} "
                              f"out {_n(self.osl or self.osl_mean)}",
                "poisson": f"{_n(self.rate)} req/s in {_n(self.isl_mean or self.isl)} "
                           f"out {_n(self.osl_mean or self.osl)}",
                "concurrency": f"concurrency {self.concurrency}",
                "step": f"{self.op} batch {self.batch} seq {self.seq_len}",
                "op": f"{self.op} rows {self.batch}",
                "allreduce": f"{_n(self.size_bytes)} B over {self.tp}"}[self.kind]
        return what


def _n(x: Optional[float]) -> str:
    if x is None:
        return "?"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:g}"


def _num(text: str) -> Optional[float]:
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value


def _int(text: str, default: Optional[int] = None) -> Optional[int]:
    value = _num(text)
    return int(value) if value is not None and math.isfinite(value) else default


def load_measurements(path: Path | str) -> list[Measurement]:
    """Every data point of a measurement file, in file order (format found from the header)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"--measurements {path}: cannot read it ({err.strerror})") from err
    return parse_measurements(text, path.name)


def parse_measurements(text: str, name: str = "measurements") -> list[Measurement]:
    reader = csv.DictReader(text.splitlines())
    header = set(h.strip() for h in (reader.fieldnames or []))
    rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k is not None} for r in reader]
    if {"measurement_class", "hardware", "model"} <= header:
        return [_serving(r) for r in rows]
    if {"prompt_time_ms", "token_time_ms", "tensor_parallel"} <= header:
        return [_splitwise(r, k) for k, r in enumerate(rows)]
    if {"gpu", "model", "op", "batch_size", "seq_len", "latency_ms"} <= header:
        return [_kernel(r, k, name) for k, r in enumerate(rows)]
    if {"size", "num_workers", "time_stats.all_reduce.median"} <= header:
        return [_allreduce(r, k, name) for k, r in enumerate(rows)]
    raise ConfigError(f"{name}: unrecognised measurement format (header {sorted(header)[:8]}...); "
                      "known: serving measurements (measurement_class, hardware, model, ...), "
                      "Splitwise profiles (prompt_time_ms, token_time_ms, ...), kernel tables "
                      "(gpu, model, op, batch_size, seq_len, latency_ms) and all-reduce profiles "
                      "(size, num_workers, time_stats.all_reduce.median)")


def _serving(r: dict[str, str]) -> Measurement:
    kind = _CLASS_KIND.get(r["measurement_class"], r["measurement_class"])
    metrics = {k: v for k in _SERVING_METRICS if (v := _num(r.get(k, ""))) is not None}
    if kind == "static_batch":
        # A static batch's E2E is the batch's latency; its tokens/s are derived from it, so
        # they are not kept as separate metrics.
        latency = metrics.get("e2e_mean_ms")
        metrics = {k: v for k, v in metrics.items()
                   if k.startswith(("ttft", "tpot", "itl"))}
        if latency is not None:
            metrics["batch_latency_ms"] = latency
    rate = _num(r.get("request_rate_rps", ""))
    if (r.get("request_rate_rps", "").strip().lower() in ("inf", "max (infinite rate)")
            or r.get("num_requests", "").startswith("max")):
        rate = math.inf
    if kind == "throughput":
        rate = math.inf
    return Measurement(
        id=r["point_id"], source=r["source_id"], kind=kind, hardware=r["hardware"],
        model=r["model"], framework=r["framework"], version=r.get("framework_version", ""),
        precision_weights=r.get("precision_weights", ""), precision_kv=r.get("precision_kv", ""),
        tp=_int(r.get("tp", ""), 1) or 1, pp=_int(r.get("pp", ""), 1) or 1,
        ep=_int(r.get("ep", ""), 1) or 1, replicas=_int(r.get("dp_or_replicas", ""), 1) or 1,
        dataset=r.get("dataset", ""),
        isl=_num(r.get("isl", "")), osl=_num(r.get("osl", "")),
        isl_mean=_num(r.get("isl_mean_actual", "")), osl_mean=_num(r.get("osl_mean_actual", "")),
        batch=_int(r.get("batch_size", "")), rate=rate,
        concurrency=_int(r.get("concurrency", "")), num_requests=_int(r.get("num_requests", "")),
        metrics=metrics, notes=r.get("notes", ""))


def _splitwise(r: dict[str, str], k: int) -> Measurement:
    metrics = {"batch_ttft_ms": float(r["prompt_time_ms"]), "decode_step_ms": float(r["token_time_ms"])}
    e2e = _num(r.get("e2e_time_ms", ""))
    tokens = float(r["token_size"])
    # The profiler's end-to-end time stops growing past ~25 s (its generations were capped);
    # it is kept only where it agrees with the prompt phase plus token_size decode steps.
    expected = metrics["batch_ttft_ms"] + (tokens - 1) * metrics["decode_step_ms"]
    if e2e is not None and 0.7 * expected <= e2e <= 1.3 * expected:
        metrics["batch_latency_ms"] = e2e
    hardware = r["hardware"]
    return Measurement(
        id=f"SW{k + 1:04d}", source=r.get("source_id", "S15"), kind="static_batch",
        hardware=hardware, model=r["model"], framework="splitwise-vllm",
        version=r.get("framework_note", ""), precision_weights="FP16", precision_kv="FP16",
        tp=int(r["tensor_parallel"]), dataset="fixed", isl=float(r["prompt_size"]),
        osl=float(r["token_size"]), batch=int(r["batch_size"]), metrics=metrics,
        notes="Splitwise profile (power-capped H100)" if "pcap" in hardware else "Splitwise profile")


def _kernel(r: dict[str, str], k: int, name: str) -> Measurement:
    from .kernel_table import OP_ALIASES, STEP_OPS

    op = OP_ALIASES.get(r["op"].lower(), r["op"].lower())
    kind = "step" if op in STEP_OPS else "op"
    batch, seq = int(float(r["batch_size"])), int(float(r["seq_len"]))
    metric = "step_ms" if kind == "step" else "op_ms"
    return Measurement(
        id=f"K{k + 1:05d}", source=r.get("source", "") or name, kind=kind, hardware=r["gpu"],
        model=r["model"], tp=_int(r.get("tp", ""), 1) or 1, op=op,
        batch=batch if kind == "step" else batch * seq, seq_len=seq,
        metrics={metric: float(r["latency_ms"])})


def _allreduce(r: dict[str, str], k: int, name: str) -> Measurement:
    workers = int(r["num_workers"])
    per_node = _int(r.get("devices_per_node", ""), workers) or workers
    return Measurement(
        id=f"AR{k + 1:05d}", source=r.get("source", "") or name, kind="allreduce",
        hardware=r.get("gpu", "") or r.get("node", "") or name, tp=workers,
        size_bytes=float(r["size"]), ranks_per_node=per_node,
        metrics={"allreduce_ms": float(r["time_stats.all_reduce.median"])})


# ---- what a row describes, in tokenmill's terms ------------------------------------------------

# Hardware strings -> chip presets. Order matters: the first pattern that matches wins.
_CHIPS: tuple[tuple[str, Optional[str], str], ...] = (
    (r"gh200", None, "no GH200 preset (Grace Hopper: H100 compute, 96-144 GB HBM3/3e)"),
    (r"a100.*pcie", None, "no A100 PCIe preset (PCIe card, 1.94 TB/s, no NVLink switch)"),
    (r"a100.*40gb|a100 \(argonne", "a100-40gb", ""),
    (r"a100", "a100", ""),
    (r"h100.*pcap", None, "power-capped H100: not modelled"),
    (r"h100.*pcie", "h100-pcie", ""),
    (r"h100", "h100", ""),
    (r"h200", "h200", ""),
    (r"gb200", "gb200", ""),
    (r"b200", "b200", ""),
    (r"mi300x", "mi300x", ""),
    (r"mi250", None, "MI250: the CSV does not say whether figures are per GCD or per card"),
    (r"l40s", "l40s", ""),
)

# Model strings (lower case, organisation stripped) -> model presets; None = not simulated.
_MODELS: tuple[tuple[str, Optional[str], str], ...] = (
    (r"^(meta-)?llama-3-8b", "llama-3.1-8b", "Llama-3-8B priced as Llama-3.1-8B (same layers)"),
    (r"^(meta-)?llama-3-70b", "llama-3.1-70b", "Llama-3-70B priced as Llama-3.1-70B (same layers)"),
    (r"^llama-3\.1-8b", "llama-3.1-8b", ""),
    (r"^llama-3\.1-70b", "llama-3.1-70b", ""),
    (r"^llama-3\.3-70b", "llama-3.3-70b", ""),
    (r"^llama-3\.1-405b", "llama-3.1-405b", ""),
    (r"^llama-2-7b|^llama2-7b", "llama-2-7b", ""),
    (r"^llama-2-70b|^llama2-70b", "llama-2-70b", ""),
    (r"^mistral-7b", "mistral-7b", ""),
    (r"^mixtral-8x7b", "mixtral-8x7b", ""),
    (r"^mixtral-8x22b", "mixtral-8x22b", ""),
    (r"^llama-4-scout", "llama-4-scout", ""),
    (r"^llama-4-maverick", "llama-4-maverick", ""),
    (r"^qwen3-235b", "qwen3-235b-a22b", ""),
    (r"^qwen3-30b", "qwen3-30b-a3b", ""),
    (r"^qwen2-7b", "qwen2.5-7b", "Qwen2-7B priced as Qwen2.5-7B (same layers)"),
    (r"^qwen2-72b", "qwen2.5-72b", "Qwen2-72B priced as Qwen2.5-72B (same layers)"),
)

# Context length the engine was started with where it is not the model's own (drives vLLM V0's
# token budget). Meta-Llama-3 checkpoints have an 8K context even though they are priced as 3.1.
_CONTEXT = ((r"^(meta-)?llama-3-", 8192),)


def chip_for(hardware: str) -> tuple[Optional[str], str]:
    """(chip preset, reason when None) for a hardware string."""
    text = hardware.lower()
    for pattern, chip, why in _CHIPS:
        if re.search(pattern, text):
            return chip, why
    return None, f"no chip preset for hardware {hardware!r}"


def _model_key(model: str) -> str:
    return model.strip().lower().split("/")[-1]


def model_for(model: str) -> tuple[Optional[str], str]:
    """(model preset, note or reason when None) for a model string."""
    key = _model_key(model)
    for pattern, preset, note in _MODELS:
        if re.search(pattern, key):
            return preset, note
    return None, f"no model preset for {model!r}"


def context_for(model: str) -> Optional[int]:
    key = _model_key(model)
    for pattern, context in _CONTEXT:
        if re.search(pattern, key):
            return context
    return None


def precision_for(weights: str, kv: str, framework: str = "") -> tuple[Optional[dict[str, str]], str]:
    """Precision fields for a row's weight and KV strings, or a reason it is not modelled."""
    w = weights.lower()
    fields: dict[str, str]
    if w.startswith(("fp16", "bf16")):
        fields = {"weights": "bf16", "activations": "bf16"}
    elif w.startswith("nvfp4"):
        fields = {"weights": "nvfp4", "activations": "fp4"}
    elif w.startswith("fp8"):
        fields = {"weights": "fp8", "activations": "fp8"}
    else:
        return None, f"precision {weights!r} not modelled"
    k = kv.lower()
    trtllm_fp8 = w.startswith("fp8") and "tensorrt" in framework.lower()
    if "fp8-kv" in w or k.startswith("fp8") or "modelopt" in w or trtllm_fp8:
        # ModelOpt FP8/FP4 checkpoints and AMD's -FP8-KV ones quantise the KV cache to FP8, and
        # so does `trtllm-bench build --quantization FP8` (its FP8 rows run twice the FP16 ones'
        # output throughput on long outputs, which only a halved KV cache explains).
        fields["kv_cache"] = "fp8"
    return fields, ""


def engine_for(framework: str) -> tuple[Optional[str], str]:
    """Engine family (vllm, trtllm, sglang, splitwise-vllm) or a reason it is not simulated."""
    f = framework.lower()
    if f.startswith("splitwise"):
        return "splitwise-vllm", ""
    if "tensorrt" in f or "trt" in f:
        return "trtllm", ""
    if "sglang" in f:
        return "sglang", ""
    if "vllm" in f:
        return "vllm", ""
    return None, f"framework {framework!r} is not a batching engine tokenmill models"
