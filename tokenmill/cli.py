"""The `tokenmill` command. Flags keep the names users of the original Rust tokenmill know.

A run's settings come from, in increasing precedence: the Scenario defaults, a TOML file given
with --config (laid out like the Scenario: top-level model/gpu/seed, then [plan], [scheduler],
[workload], [workload.prompt], [workload.output], [precision], [cost]), and the flags.
Bad input exits with status 2 and a message naming the field, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from pydantic import ValidationError

from ._validation import describe_validation_error
from ._version import __version__
from . import cli_catalogue, cli_latency
from .catalogue import tomllib
from .cli_cluster import CLUSTER_FLAG_FIELDS, add_cluster_arguments, apply_cluster_flags
from . import cli_results, cli_sweep
from .cli_workload import (WORKLOAD_FLAG_FIELDS, add_workload_arguments, apply_workload_flags,
                           number_type)
from .cli_workload import register as register_workload_command
from .engine import simulate
from .errors import ConfigError
from .scenario import Scenario
from .sweep import set_path

EXIT_BAD_INPUT = 2

# flag dest -> path of the Scenario field it sets
FLAG_FIELDS: dict[str, tuple[str, ...]] = {
    "model": ("model",),
    "gpu": ("gpu",),
    "seed": ("seed",),
    "stop_time": ("stop_time_s",),
    "tp": ("plan", "tp"),
    "scheduler": ("scheduler", "name"),
    "max_batch_tokens": ("scheduler", "max_batch_tokens"),
    "max_num_seqs": ("scheduler", "max_num_seqs"),
    "kv_block_size": ("scheduler", "kv_block_size"),
    "kv_blocks": ("scheduler", "kv_blocks"),
    "gpu_memory_utilization": ("scheduler", "gpu_memory_utilization"),
    "priority_scheduling": ("scheduler", "priority_scheduling"),
    "preemption": ("scheduler", "preemption"),
    "swap_space": ("scheduler", "swap_space_gib"),
    "prefix_caching": ("scheduler", "prefix_caching"),
    **WORKLOAD_FLAG_FIELDS,
    "weights": ("precision", "weights"),
    "kv_cache": ("precision", "kv_cache"),
    "activations": ("precision", "activations"),
    "step_overhead_ms": ("cost", "step_overhead_ms"),
    **cli_catalogue.CATALOGUE_FLAG_FIELDS,
    **CLUSTER_FLAG_FIELDS,
    **cli_latency.LATENCY_FLAG_FIELDS,
    **cli_results.RESULTS_FLAG_FIELDS,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokenmill", description="Simulate LLM inference clusters, event by event.")
    parser.add_argument("--version", action="version", version=f"tokenmill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="simulate one scenario and print its summary",
                         description="Simulate one scenario and print its summary.")
    real = number_type(float, "number")
    whole = number_type(int, "whole number")
    g = run.add_argument_group("scenario")
    g.add_argument("--config", type=Path, help="TOML file laid out like the Scenario; flags override it")
    g.add_argument("--model", help="model preset, alias, or path to a Hugging Face config.json (default llama-3.1-8b)")
    g.add_argument("--gpu", help="chip preset or alias, or a chip TOML/JSON file (default h100)")
    g.add_argument("--tp", type=whole, help="tensor-parallel degree (default 1)")
    g.add_argument("--weights", help=cli_catalogue.PRECISION_HELP["weights"])
    g.add_argument("--activations", help=cli_catalogue.PRECISION_HELP["activations"])
    g.add_argument("--kv-cache", help=cli_catalogue.PRECISION_HELP["kv_cache"])
    cli_catalogue.add_run_flags(g, whole)
    g.add_argument("--seed", type=whole, help="random seed (default 42)")
    g = run.add_argument_group("scheduler")
    g.add_argument("--scheduler", help="orca (alias continuous-batch), vllm, sarathi (alias "
                   "chunked-prefill) or static; default orca (docs/schedulers.md)")
    g.add_argument("--max-batch-tokens", "--chunk-size", type=whole, dest="max_batch_tokens",
                   help="token budget per step, decodes included (--chunk-size is the original "
                   "tokenmill's name); default: orca/static 8192, sarathi 512, vllm by chip")
    g.add_argument("--max-num-seqs", type=whole,
                   help="most running requests; default 256 (vllm: 1024 on >= 70 GiB chips)")
    g.add_argument("--priority-scheduling", action="store_true", default=None,
                   help="serve and preempt by request priority (vLLM's priority policy)")
    g.add_argument("--preemption", help="recompute (default) or swap")
    g.add_argument("--swap-space", type=real, help="host GiB per chip for swapped KV (default 4)")
    g.add_argument("--prefix-caching", action=argparse.BooleanOptionalAction, default=None,
                   help="reuse cached KV of shared prefixes (default: on for vllm, off otherwise)")
    g.add_argument("--kv-block-size", type=whole, help="tokens per KV block (default 16)")
    g.add_argument("--kv-blocks", type=whole, help="KV capacity in blocks (default: from memory)")
    g.add_argument("--gpu-memory-utilization", type=real, help="fraction of memory used (default 0.9)")
    g.add_argument("--step-overhead-ms", type=real, help="framework time per step, prefill and "
                   "decode alike (default: the calibration's, else 1.0)")
    g = run.add_argument_group("latency model")
    cli_latency.add_run_flags(g)
    add_workload_arguments(run)
    add_cluster_arguments(run, whole, real)
    g = run.add_argument_group("simulation")
    g.add_argument("--stop-time", type=real, help="stop the simulation at this time (s) and "
                   "report what is unfinished (default: run until drained)")
    cli_results.add_metric_arguments(run, real)
    cli_results.add_output_arguments(run)
    cli_catalogue.add_commands(sub, whole, real)
    cli_sweep.register(sub, run)
    register_workload_command(sub)
    cli_latency.add_commands(sub, real)
    return parser


def _load_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as err:
        raise ConfigError(f"--config {path}: cannot read it ({err.strerror})") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"--config {path}: not valid TOML ({err})") from err


def scenario_from_args(args: argparse.Namespace,
                       overrides: Optional[dict[str, Any]] = None) -> Scenario:
    """Merge the config file, the flags and `overrides` (dotted Scenario paths, as sweep's
    --set gives them) into a validated Scenario."""
    data: dict[str, Any] = _load_config(args.config) if args.config else {}
    source = f"scenario from {args.config}" if args.config else "scenario"
    for dest, path in FLAG_FIELDS.items():
        value = getattr(args, dest, None)
        if value is not None:
            set_path(data, ".".join(path), value)
    apply_workload_flags(args, data)
    apply_cluster_flags(args, data)
    for field_path, field_value in (overrides or {}).items():
        set_path(data, field_path, field_value)
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, source)) from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in cli_sweep.COMMANDS:  # their flags are run's, with lists of values
        return cli_sweep.main(argv, parser)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    done = cli_catalogue.run_command(args)
    if done is None:
        done = cli_latency.run_command(args)
    if done is not None:
        return done
    if getattr(args, "handler", None) is not None:  # other commands (tokenmill workload ...)
        return int(args.handler(args))
    try:
        scenario = scenario_from_args(args)
        result = simulate(scenario)
        cli_results.emit(result, args)
    except ConfigError as err:
        print(f"tokenmill: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
