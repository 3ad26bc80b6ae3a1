"""Calibrate and validate tokenmill's power model against measured GPU power.

Model (tokenmill.power): a chip draws idle_w plus a share of (tdp_w - idle_w) that follows the
activity of its steps,

    P = idle_w + (tdp_w - idle_w) * min(1, busy_weight * b + compute_weight * c + memory_weight * m)

where b is the fraction of wall time the chip is inside a step, and c and m the fractions it
spends on the compute side and on the memory side of the step roofline (tokenmill's
step_activity terms over the run's duration). In these static-batch runs b = 1.

Data (../shared/data/measurements, see its README and sources.json):
  * Argonne LLM-Inference-Bench (S14): single-GPU static batches, input = output = 1024, batch
    1-64, Llama-2-7B and Llama-3-8B, vLLM / TensorRT-LLM / DeepSpeed-MII, average power per GPU
    in W, on A100 SXM4 (400 W) and H100 SXM (700 W; readings up to 595 W rule out the 350 W
    PCIe card). GH200 rows are left out: tokenmill has no GH200 preset.
  * Splitwise (S15): DGX-A100 Llama-2-70B at TP 2/4/8, batch 1-16, prompts 128-4096, 128
    output tokens; average power normalised to TDP. Rows with 8192-token prompts read 0.17-0.18
    of TDP, below the same GPUs' batch-1 decode figures, and are left out as failed readings;
    BLOOM-176B rows are left out (no preset).

For each measured run the script prices the same run with tokenmill's cost model (one
prefill step of the batch, then one decode step per output token with the context growing)
and divides the compute and memory time by the *measured* duration, so the power fit does
not inherit the step-time model's error. A100 Llama-2-7B runs at batch 32 and 64 are left out:
their KV cache (batch x 2048 tokens x 512 KiB) exceeds the 40 GB A100s Argonne ran on, so the
engine preempted and recomputed, which the static-batch pricing does not count.

Calibration and validation sets are kept apart by configuration: calibrate on Argonne's H100
runs and Splitwise's TP2 and TP8 runs; validate on Argonne's A100 runs and Splitwise's TP4 runs.
A two-weight model (no busy term) and fits on each source alone are printed for comparison.
Run from the repository root:

    python bench/fit_power.py [--data ../shared/data/measurements]
"""

from __future__ import annotations

import argparse
import csv
import itertools
from pathlib import Path

import numpy as np

from tokenmill.catalogue import find_gpu, find_model
from tokenmill.costmodel import StepShape, coefficients, step_activity
from tokenmill.scenario import CostModelParams, Precision

MODELS = {"meta-llama/Llama-2-7b-hf": "llama-2-7b", "meta-llama/Meta-Llama-3-8B": "llama-3.1-8b",
          "llama2-70b": "llama-2-70b"}


def run_activity(model: str, gpu: str, tp: int, batch: int, prompt: int, output: int) -> tuple[float, float]:
    """Compute and memory seconds (per chip) of a static batch: one prefill, then decodes."""
    c = coefficients(find_model(model), find_gpu(gpu), Precision(weights="fp16", activations="fp16",
                     kv_cache="fp16"), tp, CostModelParams())
    p = float(prompt)
    comp, mem = step_activity(c, StepShape(prefill_tokens=batch * p, prefill_pairs=batch * p * (p + 1) / 2,
                                           logit_tokens=float(batch)))
    for k in range(1, output):
        dc, dm = step_activity(c, StepShape(logit_tokens=float(batch), decode_tokens=float(batch),
                                            decode_context=float(batch * (prompt + k))))
        comp += dc
        mem += dm
    return comp, mem


def argonne(folder: Path) -> list[dict]:
    rows = []
    with (folder / "serving_measurements.csv").open() as fh:
        for r in csv.DictReader(fh):
            if not r["avg_power_w_per_gpu"] or r["hardware"].startswith("GH200"):
                continue
            gpu = "a100" if r["hardware"].startswith("A100") else "h100"
            hw = find_gpu(gpu)
            seconds = float(r["e2e_mean_ms"]) / 1e3
            comp, mem = run_activity(MODELS[r["model"]], gpu, 1, int(r["batch_size"]),
                                     int(r["isl"]), int(r["osl"]))
            batch, tokens = int(r["batch_size"]), int(r["isl"]) + int(r["osl"])
            model = find_model(MODELS[r["model"]])
            kv = batch * tokens * model.kv_bytes_per_token(1, 2.0)
            oversubscribed = gpu == "a100" and kv + model.weight_bytes_per_chip(1, 2.0) > 0.9 * 40e9
            rows.append(dict(set="argonne", gpu=gpu, tp=1, oversubscribed=oversubscribed,
                             label=f"{gpu} {r['framework'][:8]} {r['model'][-10:]} b{r['batch_size']}",
                             c=comp / seconds, m=mem / seconds, idle=hw.idle_w / hw.tdp_w,
                             power=float(r["avg_power_w_per_gpu"]) / hw.tdp_w))
    return rows


def splitwise(folder: Path) -> list[dict]:
    rows = []
    with (folder / "splitwise_profile.csv").open() as fh:
        for r in csv.DictReader(fh):
            power = float(r["average_power_norm"])
            if r["model"] not in MODELS or power < 0.3:
                continue
            hw = find_gpu("a100")
            tp, batch = int(r["tensor_parallel"]), int(r["batch_size"])
            prompt, output = int(r["prompt_size"]), int(r["token_size"])
            seconds = (float(r["prompt_time_ms"]) + (output - 1) * float(r["token_time_ms"])) / 1e3
            comp, mem = run_activity(MODELS[r["model"]], "a100", tp, batch, prompt, output)
            rows.append(dict(set="splitwise", gpu="a100", tp=tp, label=f"a100 70b tp{tp} b{batch} p{prompt}",
                             c=comp / seconds, m=mem / seconds, idle=hw.idle_w / hw.tdp_w,
                             power=power))
    return rows


def predict(rows: list[dict], wb: float, wc: float, wm: float) -> np.ndarray:
    return np.array([r["idle"] + (1 - r["idle"]) * min(1.0, wb + wc * r["c"] + wm * r["m"])
                     for r in rows])


def mape(rows: list[dict], *w: float) -> float:
    want = np.array([r["power"] for r in rows])
    return float(np.mean(np.abs(predict(rows, *w) - want) / want) * 100)


def fit(rows: list[dict], busy: bool = True) -> tuple[float, float, float]:
    """Grid search of the weights (busy in [0, 0.8), compute and memory in [0, 1.5]) that
    minimise the mean absolute percentage error of the power."""
    grid = np.round(np.arange(0.0, 1.5001, 0.02), 2)
    busy_grid = np.round(np.arange(0.0, 0.8, 0.02), 2) if busy else [0.0]
    best = min(itertools.product(busy_grid, grid, grid), key=lambda w: mape(rows, *w))
    return tuple(float(x) for x in best)  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/measurements"))
    parser.add_argument("--rows", action="store_true", help="print every row")
    args = parser.parse_args()
    argonne_rows = [r for r in argonne(args.data) if not r["oversubscribed"]]
    split_rows = splitwise(args.data)
    cal = [r for r in argonne_rows if r["gpu"] == "h100"] + [r for r in split_rows if r["tp"] != 4]
    val = [r for r in argonne_rows if r["gpu"] == "a100"] + [r for r in split_rows if r["tp"] == 4]
    w = fit(cal)
    print(f"calibration: {len(cal)} runs (Argonne H100, Splitwise A100 TP2/TP8); "
          f"validation: {len(val)} runs (Argonne A100, Splitwise A100 TP4)")
    print(f"fit: busy_weight {w[0]:.2f}, compute_weight {w[1]:.2f}, memory_weight {w[2]:.2f}")
    print(f"  MAPE of average power: calibration {mape(cal, *w):.1f}%, validation {mape(val, *w):.1f}%"
          f" (Argonne {mape(argonne_rows, *w):.1f}%, Splitwise {mape(split_rows, *w):.1f}%)")
    w2 = fit(cal, busy=False)
    print(f"two weights only (no busy term): compute {w2[1]:.2f}, memory {w2[2]:.2f}; MAPE "
          f"calibration {mape(cal, *w2):.1f}%, validation {mape(val, *w2):.1f}%")
    for name, rows, other in (("Argonne", argonne_rows, split_rows), ("Splitwise", split_rows, argonne_rows)):
        wx = fit(rows)
        print(f"fitted on {name} alone: {wx[0]:.2f}/{wx[1]:.2f}/{wx[2]:.2f}, MAPE {mape(rows, *wx):.1f}% "
              f"there, {mape(other, *wx):.1f}% on the other source")
    print(f"idle power alone: MAPE {mape(cal + val, 0.0, 0.0, 0.0):.1f}%")
    if args.rows:
        for r, p in zip(cal + val, predict(cal + val, *w)):
            print(f"  {r['set']:<10}{r['label']:<34} c {r['c']:.3f} m {r['m']:.3f} "
                  f"measured {r['power']:.3f} model {p:.3f}")


if __name__ == "__main__":
    main()
