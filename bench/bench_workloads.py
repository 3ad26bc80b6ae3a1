"""Speed of workload construction: trace loading, synthetic generation, closed-loop simulation.

Cases:
  * loading a synthetic trace of `--rows` requests (default 1,000,000) in each format:
    tokenmill native CSV, Azure CSV (absolute timestamps), BurstGPT CSV (with 2% failed
    requests), Mooncake JSONL (with 8 prefix blocks per request); the files are written
    first (not timed) into a temporary directory;
  * generating 1M synthetic requests: Poisson + lognormal (the default), gamma, a diurnal
    rate, and three classes;
  * simulating a closed loop of 64 clients for 100k requests (kernel feedback path), next to
    the open-loop run of the same requests.

Each case runs `--repeat` times in a fresh process (so peak RSS is its own); the table shows
the median wall time and the largest peak RSS. Imports are excluded from the times.

    python bench/bench_workloads.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


FILES = {"tokenmill": "native.csv", "azure": "azure.csv", "burstgpt": "burstgpt.csv",
         "mooncake": "mooncake.jsonl"}


def write_traces(folder: Path, n: int) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    gaps = rng.exponential(0.1, n)
    t = np.cumsum(gaps)
    prompt = rng.integers(1, 8000, n)
    output = rng.integers(1, 1000, n)
    paths = {}
    p = folder / "native.csv"
    with p.open("w") as fh:
        fh.write("timestamp_ms,prompt_tokens,output_tokens\n")
        fh.write("\n".join(f"{a * 1e3:.3f},{b},{c}" for a, b, c in zip(t, prompt, output)))
        fh.write("\n")
    paths["tokenmill"] = p
    base = np.datetime64("2024-05-10T00:00:00", "ns")
    stamps = np.datetime_as_string(base + (t * 1e9).astype("timedelta64[ns]"), unit="us")
    p = folder / "azure.csv"
    with p.open("w") as fh:
        fh.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        fh.write("\n".join(f"{s.replace('T', ' ')}0,{b},{c}" for s, b, c in zip(stamps, prompt, output)))
        fh.write("\n")
    paths["azure"] = p
    p = folder / "burstgpt.csv"
    failed = rng.random(n) < 0.02
    resp = np.where(failed, 0, output)
    models = np.where(rng.random(n) < 0.8, "ChatGPT", "GPT-4")
    logs = np.where(rng.random(n) < 0.7, "Conversation log", "API log")
    with p.open("w") as fh:
        fh.write("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n")
        fh.write("\n".join(f"{a:.0f},{m},{b},{c},{b + c},{lg}"
                           for a, m, b, c, lg in zip(t, models, prompt, resp, logs)))
        fh.write("\n")
    paths["burstgpt"] = p
    p = folder / "mooncake.jsonl"
    with p.open("w") as fh:
        for i, (a, b, c) in enumerate(zip(t, prompt, output)):
            ids = ", ".join(str(i % 1000 * 8 + k) for k in range(8))
            fh.write(f'{{"timestamp": {int(a * 1e3)}, "input_length": {b}, '
                     f'"output_length": {c}, "hash_ids": [{ids}]}}\n')
    paths["mooncake"] = p
    return paths


def child(case: str, arg: str) -> dict:
    import tokenmill as tm
    from tokenmill.workloads.config import TraceSource
    from tokenmill.workloads.generate import generate
    from tokenmill.workloads.traces import load_trace

    started = time.perf_counter()
    if case == "trace":
        arrays = load_trace(TraceSource(path=arg))
        n = len(arrays)
    elif case == "generate":
        n = 1_000_000
        w = {
            "poisson+lognormal": tm.Workload(arrival_rate=20.0, num_requests=n),
            "gamma CV 3": tm.Workload(arrival_rate=20.0, burstiness=3.0, num_requests=n),
            "diurnal": tm.Workload(arrival_rate=20.0, num_requests=n,
                                   rate_profile={"kind": "diurnal", "amplitude": 0.7,
                                                 "period_s": 86400.0}),
            "3 classes": tm.Workload(arrival_rate=20.0, num_requests=n, classes=[
                {"name": "a"}, {"name": "b", "prompt": {"kind": "normal", "mean": 900, "sigma": 300}},
                {"name": "c", "output": {"kind": "uniform", "min": 1, "max": 500}}]),
        }[arg]
        n = len(generate(w, 42))
    else:
        n = 100_000
        w = tm.Workload(num_requests=n, concurrency=64) if arg == "closed" else \
            tm.Workload(num_requests=n, arrival_rate=20.0)
        r = tm.simulate(tm.Scenario(workload=w))
        assert r.num_finished == n
    return {"wall_s": time.perf_counter() - started, "n": n,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def run_child(case: str, arg: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", case, arg], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--write", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write:
        write_traces(Path(args.write[0]), int(args.write[1]))
        return
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    print(f"tokenmill workload bench: median of {args.repeat}, fresh process per run")
    header = f"{'case':<34}{'requests':>11}{'file MB':>9}{'wall s':>9}{'rows/s':>13}{'peak MB':>9}"
    print(header)
    print("-" * len(header))

    def row(label: str, case: str, arg: str, size_mb: float | None = None) -> None:
        runs = [run_child(case, arg) for _ in range(args.repeat)]
        wall = statistics.median(r["wall_s"] for r in runs)
        n = runs[0]["n"]
        size = f"{size_mb:9.1f}" if size_mb is not None else f"{'':9}"
        print(f"{label:<34}{n:>11,}{size}{wall:>9.3f}{n / wall:>13,.0f}"
              f"{max(r['peak_rss_mb'] for r in runs):>9.0f}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        # written by a child, so that this process (whose peak RSS its children inherit on
        # Linux) stays small
        subprocess.run([sys.executable, __file__, "--write", tmp, str(args.rows)], check=True)
        paths = {fmt: Path(tmp) / name for fmt, name in FILES.items()}
        for fmt, path in paths.items():
            row(f"load trace: {fmt}", "trace", str(path), path.stat().st_size / 2**20)
    for name in ("poisson+lognormal", "gamma CV 3", "diurnal", "3 classes"):
        row(f"generate: {name}", "generate", name)
    row("simulate 100k: open loop 20 req/s", "sim", "open")
    row("simulate 100k: closed loop, 64 clients", "sim", "closed")


if __name__ == "__main__":
    main()
