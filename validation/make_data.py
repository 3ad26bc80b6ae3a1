"""Derive the measurement files tokenmill's validation uses from ../shared/data.

Run once from the repository root with the shared data beside it:

    python validation/make_data.py ../shared/data

It writes validation/data/ (see validation/data/PROVENANCE.md for what each file holds and where
it comes from). The outputs are committed, so CI and `tokenmill validate` never need
../shared/data; rerunning this script reproduces them byte for byte.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

OUT = Path(__file__).parent / "data"
VIDUR_MODELS = {  # vidur folder -> model name tokenmill resolves
    "meta-llama/Llama-2-7b-hf": "Llama-2-7b-hf",
    "meta-llama/Llama-2-70b-hf": "Llama-2-70b-hf",
    "meta-llama/Meta-Llama-3-8B": "Meta-Llama-3-8B",
    "meta-llama/Meta-Llama-3-70B": "Meta-Llama-3-70B",
}
VIDUR_OPS = {"attn_pre_proj": "qkv_proj", "attn_post_proj": "o_proj", "mlp_up_proj": "mlp_up",
             "mlp_down_proj": "mlp_down"}
ELEMENTWISE = ("input_layernorm", "post_attention_layernorm", "attn_rope", "mlp_act", "add")
TOKENS = {1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096}
ARGONNE_CHIPS = {"A100", "H100", "MI300X"}
ARGONNE_FRAMEWORKS = {"vLLM", "TensorRT-LLM"}


def gemm_ops(shared: Path) -> None:
    rows = []
    for chip in ("a100", "h100"):
        for folder, name in VIDUR_MODELS.items():
            path = shared / "profiling" / "compute" / chip / folder / "mlp.csv"
            if not path.exists():
                continue
            seen = set()
            for r in csv.DictReader(path.open()):
                tokens = int(r["num_tokens"])
                tp = int(r["num_tensor_parallel_workers"])
                if tokens not in TOKENS or (tokens, tp) in seen:
                    continue  # a few token counts appear twice: keep the first
                seen.add((tokens, tp))
                for op, ours in VIDUR_OPS.items():
                    rows.append([chip, name, ours, tokens, 1, r[f"time_stats.{op}.median"], tp, "vidur"])
                # Element-wise kernels of one layer: two norms, rotary, activation, two adds.
                elementwise = sum(float(r[f"time_stats.{op}.median"]) for op in ELEMENTWISE)
                elementwise += float(r["time_stats.add.median"])
                rows.append([chip, name, "elementwise", tokens, 1, f"{elementwise:.4f}", tp, "vidur"])
    with (OUT / "vidur_gemm_ops.csv").open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["gpu", "model", "op", "batch_size", "seq_len", "latency_ms", "tp", "source"])
        w.writerows(rows)


def all_reduce(shared: Path) -> None:
    rows = []
    for node, chip in (("a100_dgx", "a100"), ("h100_dgx", "h100")):
        path = shared / "profiling" / "network" / node / "all_reduce.csv"
        seen = set()
        for r in csv.DictReader(path.open()):
            size, n, per = int(r["size"]), int(r["num_workers"]), int(r["devices_per_node"])
            if size & (size - 1) or n != per or (size, n) in seen:
                continue  # powers of two inside one node, first of duplicates
            seen.add((size, n))
            rows.append([chip, node, size, n, per, r["time_stats.all_reduce.median"], "vidur"])
    with (OUT / "vidur_all_reduce.csv").open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["gpu", "node", "size", "num_workers", "devices_per_node",
                    "time_stats.all_reduce.median", "source"])
        w.writerows(rows)


def measurements(shared: Path) -> None:
    src = shared / "measurements"
    for name in ("serving_measurements.csv", "splitwise_profile.csv", "sources.json"):
        shutil.copyfile(src / name, OUT / name)
    with (src / "argonne_static_batch.csv").open() as fh, \
            (OUT / "argonne_static_batch.csv").open("w", newline="") as out:
        reader = csv.DictReader(fh)
        w = csv.DictWriter(out, fieldnames=reader.fieldnames, lineterminator="\n")
        w.writeheader()
        for r in reader:
            if r["gpu_family"] in ARGONNE_CHIPS and r["framework"] in ARGONNE_FRAMEWORKS:
                w.writerow(r)


if __name__ == "__main__":
    shared = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
    OUT.mkdir(exist_ok=True)
    gemm_ops(shared)
    all_reduce(shared)
    measurements(shared)
