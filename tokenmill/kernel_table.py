"""Measured kernel or step times (`--kernel-table FILE.csv`) that override the modelled ones.

Why: where someone has profiled their own chip and model, a measured time beats any model.
The file keeps the original tokenmill's format, one measurement per line:

    gpu,model,op,batch_size,seq_len,latency_ms[,tp]

How each op is used (all inside the C kernel, per step, without Python):
* `decode`: the GPU time of a decode-only step of `batch_size` sequences whose cached context is
  `seq_len` tokens each. A decode-only step whose batch and mean context per sequence fall
  inside the table's range takes the bilinear interpolation of the table.
* `prefill`: the GPU time of a step that prefills `batch_size` whole prompts of `seq_len` tokens
  (no cached prefix, no decodes in the step). Steps of that kind inside the range interpolate;
  a step's prompt count is its number of finishing prompts and its length their mean.
* Per-layer GEMM operators on one chip, `qkv_proj` (Vidur's `attn_pre_proj`), `o_proj`
  (`attn_post_proj`), `mlp_up` (`mlp_up_proj`, gate and up fused), `mlp_down` (`mlp_down_proj`)
  and `lm_head`: the time of that operator for batch_size x seq_len rows (tokens), which the
  kernel interpolates in rows and multiplies by the number of layers the stage runs it in.
* Outside a table's range, for mixed prefill-and-decode steps, for steps with a cached prefix
  and for every operator without a table, the model prices the step. To make those prices
  consistent with the table, fit the model to it: `tokenmill calibrate --measurements FILE.csv`
  accepts the same file.

The framework overhead (CPU time per step and per sequence) is added on top of a step table's
GPU time, as it is added to the model's; set the overheads to zero if the measured latencies
already include the framework. Step tables hold up to 16 points per axis and op tables up to 32
points; larger tables keep evenly spaced points (both ends included) and say so.

Rows are matched to the simulated chip and model by preset name or alias (`h100`, `H100-SXM`,
`llama-3.1-8b`, ...); a `tp` column, if present, must equal the plan's tensor parallelism for the
row to apply (without it every row applies). Latencies must be positive and finite; an unknown
op, a missing column or a bad number is refused with its line number.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import _core
from .errors import ConfigError
from .operators import StageOperators

GRID = _core.KERNEL_TABLE_GRID
ROWS = _core.KERNEL_TABLE_ROWS
STEP_OPS = ("decode", "prefill")
GEMM_OPS = ("qkv_proj", "o_proj", "mlp_up", "mlp_down", "lm_head")
OP_ALIASES = {
    "attn_pre_proj": "qkv_proj", "qkv": "qkv_proj", "o": "o_proj", "attn_post_proj": "o_proj",
    "out_proj": "o_proj", "mlp_up_proj": "mlp_up", "gate_up_proj": "mlp_up",
    "mlp_down_proj": "mlp_down", "down_proj": "mlp_down", "logits": "lm_head",
}
REQUIRED = ("gpu", "model", "op", "batch_size", "seq_len", "latency_ms")


@dataclass(frozen=True)
class KernelTableRow:
    """One measured time."""

    gpu: str
    model: str
    op: str
    batch_size: int
    seq_len: int
    latency_ms: float
    tp: Optional[int] = None


@dataclass(frozen=True)
class KernelTable:
    """A parsed kernel table; `coefficient_fields` turns it into the kernel's grids."""

    rows: tuple[KernelTableRow, ...]
    source: str = "kernel table"

    @classmethod
    def load(cls, path: Path | str) -> "KernelTable":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise ConfigError(f"--kernel-table {path}: cannot read it ({err.strerror})") from err
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str = "kernel table") -> "KernelTable":
        reader = csv.DictReader(text.splitlines())
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise ConfigError(f"{source}: missing column(s) {', '.join(missing)}; a kernel table "
                              f"has columns {', '.join(REQUIRED)} (and optionally tp)")
        rows = []
        for line, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            rows.append(_row(row, source, line))
        if not rows:
            raise ConfigError(f"{source}: no measurements")
        return cls(tuple(rows), source)

    def matching(self, *, model: str, gpu: str, tp: int) -> list[KernelTableRow]:
        """Rows for this chip, model and tensor-parallel degree."""
        out = [r for r in self.rows if _same_gpu(r.gpu, gpu) and _same_model(r.model, model)
               and (r.tp is None or r.tp == tp)]
        if not out:
            pairs = sorted({(r.gpu, r.model) for r in self.rows})
            raise ConfigError(f"{self.source}: no rows for gpu {gpu!r}, model {model!r} at tp {tp}; "
                              f"it has (gpu, model): {', '.join(f'{g}/{m}' for g, m in pairs[:10])}")
        return out

    def coefficient_fields(self, *, model: str, gpu: str, operators: StageOperators,
                           tp: int) -> dict[str, Any]:
        """The kernel-table fields of CostCoefficients for one stage of this chip and model."""
        rows = self.matching(model=model, gpu=gpu, tp=tp)
        fields: dict[str, Any] = {}
        for op, prefix in (("decode", "kt_decode"), ("prefill", "kt_prefill")):
            points = {(r.batch_size, r.seq_len): r.latency_ms for r in rows if r.op == op}
            if points:
                fields.update(_grid_fields(prefix, _averaged(rows, op), self.source, op))
        layers = {"qkv_proj": operators.qkv.layers, "o_proj": operators.o.layers,
                  "mlp_up": operators.mlp_in.layers, "mlp_down": operators.mlp_out.layers,
                  "lm_head": operators.lm_head.layers}
        counts = [0.0] * len(GEMM_OPS)
        xs = [0.0] * (len(GEMM_OPS) * ROWS)
        ys = [0.0] * (len(GEMM_OPS) * ROWS)
        for k, op in enumerate(GEMM_OPS):
            series: dict[int, list[float]] = {}
            for r in rows:
                if r.op == op:
                    series.setdefault(r.batch_size * r.seq_len, []).append(r.latency_ms)
            if not series or layers[op] == 0:
                continue
            keys = _spread(sorted(series), ROWS)
            counts[k] = float(len(keys))
            for j, m in enumerate(keys):
                xs[k * ROWS + j] = float(m)
                ys[k * ROWS + j] = sum(series[m]) / len(series[m]) * 1e-3 * layers[op]
        if any(counts):
            fields.update(kt_op_n=tuple(counts), kt_op_rows=tuple(xs), kt_op_s=tuple(ys))
        return fields


def _row(row: dict[str, str], source: str, line: int) -> KernelTableRow:
    def fail(col: str, why: str) -> ConfigError:
        return ConfigError(f"{source} line {line}: {col} = {row.get(col)!r} {why}")

    op = row["op"].lower()
    op = OP_ALIASES.get(op, op)
    if op not in STEP_OPS + GEMM_OPS:
        raise fail("op", f"is not a known op; valid: {', '.join(STEP_OPS + GEMM_OPS)} "
                         f"(aliases: {', '.join(OP_ALIASES)})")
    ints = {}
    for col in ("batch_size", "seq_len"):
        try:
            ints[col] = int(row[col])
        except ValueError:
            raise fail(col, "is not a whole number") from None
        if ints[col] < 1:
            raise fail(col, "must be >= 1")
    try:
        latency = float(row["latency_ms"])
    except ValueError:
        raise fail("latency_ms", "is not a number") from None
    if not (math.isfinite(latency) and latency > 0):
        raise fail("latency_ms", "must be positive and finite")
    tp = None
    if row.get("tp"):
        try:
            tp = int(row["tp"])
        except ValueError:
            raise fail("tp", "is not a whole number") from None
        if tp < 1:
            raise fail("tp", "must be >= 1")
    if not row["gpu"] or not row["model"]:
        raise fail("gpu" if not row["gpu"] else "model", "must not be empty")
    return KernelTableRow(row["gpu"], row["model"], op, ints["batch_size"], ints["seq_len"],
                          latency, tp)


def _same_gpu(name: str, gpu: str) -> bool:
    from .catalogue import find_gpu

    try:
        return find_gpu(name).name == gpu
    except ConfigError:
        return name.strip().lower() == gpu


def _same_model(name: str, model: str) -> bool:
    from .catalogue import find_model

    try:
        return find_model(name).name == model
    except ConfigError:
        return name.strip().lower() == model


def _averaged(rows: list[KernelTableRow], op: str) -> dict[tuple[int, int], float]:
    """(batch, seq) -> mean latency in ms over repeated measurements."""
    acc: dict[tuple[int, int], list[float]] = {}
    for r in rows:
        if r.op == op:
            acc.setdefault((r.batch_size, r.seq_len), []).append(r.latency_ms)
    return {k: sum(v) / len(v) for k, v in acc.items()}


def _spread(values: list[int], most: int) -> list[int]:
    """At most `most` of the sorted `values`, evenly spaced, both ends kept."""
    if len(values) <= most:
        return values
    idx = sorted({round(i * (len(values) - 1) / (most - 1)) for i in range(most)})
    return [values[i] for i in idx]


def _grid_fields(prefix: str, points: dict[tuple[int, int], float], source: str,
                 op: str) -> dict[str, Any]:
    """A full batch x seq grid in seconds; missing cells are refused (a table is a grid)."""
    batches = _spread(sorted({b for b, _ in points}), GRID)
    seqs = _spread(sorted({s for _, s in points}), GRID)
    values = [0.0] * (GRID * GRID)
    for i, b in enumerate(batches):
        for j, s in enumerate(seqs):
            if (b, s) not in points:
                raise ConfigError(f"{source}: the {op} table has no entry for batch_size {b}, "
                                  f"seq_len {s}; a step table must hold every batch_size x "
                                  "seq_len combination it uses")
            values[i * GRID + j] = points[(b, s)] * 1e-3
    pad = [0.0] * GRID
    return {
        f"{prefix}_nb": float(len(batches)), f"{prefix}_ns": float(len(seqs)),
        f"{prefix}_batch": tuple([float(b) for b in batches] + pad[len(batches):]),
        f"{prefix}_seq": tuple([float(s) for s in seqs] + pad[len(seqs):]),
        f"{prefix}_s": tuple(values),
    }
