"""`tokenmill info` and `tokenmill list`, and the catalogue flags `tokenmill run` gains.

Kept apart from cli.py so the catalogue's commands can grow without touching the run command:
cli.py only registers them. `info` prints a model card (parameters, bytes, FLOPs and the memory
fit of a plan); `list` prints the chips, models, systems or fabrics with their key figures.
Both take --output json. Bad input exits with status 2 and a message naming the field.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Optional

from pydantic import ValidationError

from ._validation import describe_validation_error
from .catalogue import (announced_models, fabric_presets, find_gpu, find_model, find_system,
                        gpu_presets, model_presets, system_presets)
from .errors import ConfigError
from .model_card import model_card, render_card
from .precision import Precision, split_variant
from .scenario import Plan, SchedulerPolicy

# run-flag dest -> Scenario field path, merged into cli.FLAG_FIELDS.
CATALOGUE_FLAG_FIELDS: dict[str, tuple[str, ...]] = {
    "pp": ("plan", "pp"),
    "ep": ("plan", "ep"),
    "sparsity": ("precision", "sparsity"),
    "system": ("system",),
}
PRECISION_HELP = {
    "weights": "weight format: bf16, fp16, fp8, int8, int4 (w4a16), fp4/nvfp4, mxfp4 (default bf16)",
    "activations": "activation format, sets the FLOPS tier: bf16, fp16, fp8, int8, fp4 (default bf16)",
    "kv_cache": "KV-cache format: bf16, fp16, fp8, fp4 (default 16-bit, also for weight-only quantisation)",
}


def add_run_flags(group: argparse._ArgumentGroup, whole: Callable[[str], Any]) -> None:
    """The catalogue's extra `run` flags: pipeline/expert parallelism, sparsity, system."""
    group.add_argument("--pp", type=whole, help="pipeline stages (memory fit only; run refuses > 1)")
    group.add_argument("--ep", type=whole, help="expert-parallel groups (memory fit only; run refuses > 1)")
    group.add_argument("--sparsity", choices=["2:4"], help="2:4 structured sparsity of the weights")
    group.add_argument("--system", help="system preset (dgx-h100, gb200-nvl72, ...): its chip and domain")


def add_commands(sub: Any, whole: Callable[[str], Any], real: Callable[[str], Any]) -> None:
    """Register `info` and `list` on the top-level subparsers."""
    info = sub.add_parser("info", help="print a model card and the memory fit of a plan",
                          description="Print a model's derived figures and whether a plan fits.")
    info.add_argument("--model", default="llama-3.1-8b", help="model preset, quantised preset name, "
                      "or config.json path (default llama-3.1-8b)")
    info.add_argument("--gpu", help="chip preset or .toml/.json/.yaml file (default h100)")
    info.add_argument("--system", help="system preset: selects the chip and scale-up domain")
    for flag in ("tp", "pp", "ep"):
        info.add_argument(f"--{flag}", type=whole, default=None, help=f"{flag} degree (default 1)")
    for dest, text in PRECISION_HELP.items():
        info.add_argument(f"--{dest.replace('_', '-')}", dest=dest, help=text)
    info.add_argument("--sparsity", choices=["2:4"], help="2:4 structured sparsity")
    info.add_argument("--context", type=whole, help="context length for KV bytes and attention "
                      "FLOPs (default min(max context, 8192))")
    info.add_argument("--gpu-memory-utilization", type=real, help="fraction of memory used (default 0.9)")
    info.add_argument("--max-num-seqs", type=whole, help="most running requests (default 256)")
    info.add_argument("--max-batch-tokens", type=whole, help="token budget per step (default 8192)")
    info.add_argument("--kv-block-size", type=whole, help="tokens per KV block (default 16)")
    info.add_argument("--output", choices=["text", "json"], default="text", help="format (default text)")
    lst = sub.add_parser("list", help="list the catalogue: gpus, models, systems or fabrics",
                         description="List built-in presets with their key figures.")
    lst.add_argument("what", choices=["gpus", "models", "systems", "fabrics"])
    lst.add_argument("--output", choices=["text", "json"], default="text", help="format (default text)")


def _validated(cls: Any, data: dict[str, Any], what: str) -> Any:
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, what)) from None


def _info(args: argparse.Namespace) -> str:
    model_name = args.model
    precision_fields: dict[str, Any] = {}
    variant = split_variant(model_name)
    if variant is not None:
        model_name, precision_fields = variant[0], dict(variant[1])
    for dest in ("weights", "activations", "kv_cache", "sparsity"):
        if getattr(args, dest) is not None:
            precision_fields[dest] = getattr(args, dest)
    precision = _validated(Precision, precision_fields, "precision")
    plan = _validated(Plan, {k: getattr(args, k) for k in ("tp", "pp", "ep")
                             if getattr(args, k) is not None}, "plan")
    policy = _validated(SchedulerPolicy, {k: getattr(args, k) for k in (
        "gpu_memory_utilization", "max_num_seqs", "max_batch_tokens", "kv_block_size")
        if getattr(args, k) is not None}, "scheduler")
    model = find_model(model_name)
    system = find_system(args.system) if args.system else None
    hw = find_gpu(args.gpu or (system.chip if system else "h100"))
    if system is not None:
        if hw.name != find_gpu(system.chip).name:
            raise ConfigError(f"system {system.name!r} is built from {system.chip}, not {hw.name}")
        hw = hw.model_copy(update={"scale_up_domain": system.scale_up_domain})
    if precision.sparsity and not hw.sparsity_2_4:
        raise ConfigError(f"precision.sparsity = '2:4' but {hw.name}'s tensor cores do not "
                          "accelerate 2:4 sparsity; valid: none")
    if hw.tier_tflops(precision.compute_dtype) is None:
        raise ConfigError(f"precision.activations = {precision.compute_dtype!r} needs tensor cores "
                          f"{hw.name} lacks; valid activations on {hw.name}: {', '.join(hw.compute_tiers())}")
    if args.context is not None and args.context < 1:
        raise ConfigError(f"--context must be >= 1; got {args.context}")
    card = model_card(model, hw, precision, plan, policy, context=args.context, system=system)
    if args.output == "json":
        return json.dumps(card, indent=2) + "\n"
    return render_card(card)


def catalogue_rows(what: str) -> list[dict[str, Any]]:
    """One dictionary of key figures per preset."""
    if what == "gpus":
        return [{"name": h.name, "display_name": h.display_name, "aliases": list(h.aliases),
                 "memory_kind": h.memory_kind, "memory_gib": h.memory_gib,
                 "memory_bandwidth_tbps": h.memory_bandwidth_tbps, "bf16_tflops": h.bf16_tflops,
                 "fp8_tflops": h.fp8_tflops, "fp4_tflops": h.fp4_tflops, "int8_tops": h.int8_tops,
                 "sparsity_2_4": h.sparsity_2_4, "scale_up_gbps": h.scale_up_bandwidth_gbps,
                 "scale_up_domain": h.scale_up_domain, "tdp_w": h.tdp_w,
                 "price_per_hour_usd": h.price_per_hour_usd, "estimates": list(h.estimates)}
                for h in gpu_presets().values()]
    if what == "models":
        rows: list[dict[str, Any]] = [
            {"name": m.name, "hf_id": m.hf_id, "aliases": list(m.aliases),
             "architecture": m.describe(), "total_params": m.total_params(),
             "active_params": m.active_params(), "kv_bytes_per_token_bf16": m.kv_bytes_per_token(1, 2.0),
             "max_context": m.max_position_embeddings, "status": "released"}
            for m in model_presets().values()]
        rows += [{"name": name, "hf_id": None, "aliases": list(d.get("aliases", ())),
                  "architecture": "unpublished", "total_params": None, "active_params": None,
                  "kv_bytes_per_token_bf16": None, "max_context": None, "status": "announced",
                  "announced": d.get("announced")} for name, d in announced_models().items()]
        return rows
    if what == "systems":
        return [{"name": s.name, "display_name": s.display_name, "aliases": list(s.aliases),
                 "chip": s.chip, "chips_per_node": s.chips_per_node,
                 "scale_up_domain": s.scale_up_domain, "default_fabric": s.default_fabric}
                for s in system_presets().values()]
    return [{"name": f.name, "display_name": f.display_name, "aliases": list(f.aliases),
             "kind": f.kind, "line_rate_gbit": f.line_rate_gbit,
             "bandwidth_per_chip_gbps": f.bandwidth_per_chip_gbps, "latency_us": f.latency_us}
            for f in fabric_presets().values()]


def _fmt(column: str, v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if column.endswith("_params"):
        return f"{v / 1e9:,.2f}B"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.6g}"
    return str(v)


_TEXT_COLUMNS = {
    "gpus": ["name", "memory_kind", "memory_gib", "memory_bandwidth_tbps", "bf16_tflops",
             "fp8_tflops", "fp4_tflops", "sparsity_2_4", "scale_up_gbps", "scale_up_domain", "tdp_w",
             "price_per_hour_usd"],
    "models": ["name", "total_params", "active_params", "kv_bytes_per_token_bf16", "max_context",
               "architecture"],
    "systems": ["name", "chip", "chips_per_node", "scale_up_domain", "default_fabric", "display_name"],
    "fabrics": ["name", "kind", "line_rate_gbit", "bandwidth_per_chip_gbps", "latency_us", "display_name"],
}


def _list(args: argparse.Namespace) -> str:
    rows = catalogue_rows(args.what)
    if args.output == "json":
        return json.dumps(rows, indent=2) + "\n"
    cols = _TEXT_COLUMNS[args.what]
    table = [cols] + [[_fmt(c, r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    return "\n".join(lines) + "\n"


COMMANDS: dict[str, Callable[[argparse.Namespace], str]] = {"info": _info, "list": _list}


def run_command(args: argparse.Namespace) -> Optional[int]:
    """Run `info` or `list`; None if `args.command` is not one of them."""
    handler = COMMANDS.get(args.command)
    if handler is None:
        return None
    try:
        text = handler(args)
    except ConfigError as err:
        print(f"tokenmill: error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0
