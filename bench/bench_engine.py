"""Speed of the simulator: wall time, requests/s, events/s and peak memory per case.

Cases (default model and chip, seed 42):
  * orca (iteration-level batching): 10k, 100k and 1M requests arriving at 20 req/s;
  * vllm, sarathi and static: 1M requests at 20 req/s (static cannot keep up with that rate:
    its queue grows without bound, which is the point of the baseline, and it runs ~5x the
    steps per request);
  * an overloaded orca replica: arrivals at 3x the rate it can serve (measured first with an
    offline run), 25k, 50k and 100k arrivals, to show the cost grows linearly with arrivals;
  * one evaluation inside an optimisation loop: the same process calls simulate() again and
    again on a 1,000-request scenario (after one warm-up call), median of 50, with and without
    the time series.

Each case runs in a fresh process (so peak RSS is its own) `--repeat` times; the table shows
the median. "simulate" is the whole tokenmill.simulate() call (workload generation, kernel,
metrics) with imports excluded; "core" is the compiled event loop alone.

    python bench/bench_engine.py [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def one_case(num_requests: int, rate: float, scheduler: str) -> dict:
    import tokenmill as tm  # imported before the clock starts

    scenario = tm.Scenario(scheduler=tm.SchedulerPolicy(name=scheduler),
                           workload=tm.Workload(arrival_rate=rate, num_requests=num_requests))
    started = time.perf_counter()
    result = tm.simulate(scenario)
    wall = time.perf_counter() - started
    return {
        "requests": num_requests,
        "rate": rate,
        "wall_s": wall,
        "core_s": result.core_wall_time_s,
        "events": result.events,
        "steps": result.steps,
        "finished": result.num_finished,
        "preemptions": result.preemptions,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def run_in_child(num_requests: int, rate: float, scheduler: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(num_requests), str(rate),
                          scheduler], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def evaluation_ms(num_requests: int, timeseries: bool, calls: int = 50) -> tuple[float, float]:
    """Median wall and core milliseconds of repeated simulate() calls in one warm process."""
    import tokenmill as tm

    metrics = {} if timeseries else {"timeseries_resolution_s": 0.0}
    scenario = tm.Scenario(workload=tm.Workload(arrival_rate=20.0, num_requests=num_requests),
                           metrics=metrics)
    tm.simulate(scenario)
    walls, cores = [], []
    for _ in range(calls):
        started = time.perf_counter()
        result = tm.simulate(scenario)
        walls.append(time.perf_counter() - started)
        cores.append(result.core_wall_time_s)
    return statistics.median(walls) * 1e3, statistics.median(cores) * 1e3


def capacity_req_per_s() -> float:
    """Requests per second one replica sustains when every request is queued at once."""
    import tokenmill as tm

    r = tm.simulate(tm.Scenario(workload=tm.Workload(arrival_rate=1e6, num_requests=20_000)))
    return r.num_finished / r.duration_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="skip the 1M-request case")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one_case(int(args.child[0]), float(args.child[1]), args.child[2])))
        return

    cap = capacity_req_per_s()
    cases = [("orca 20 req/s", 10_000, 20.0, "orca"), ("orca 20 req/s", 100_000, 20.0, "orca")]
    if not args.quick:
        cases.append(("orca 20 req/s", 1_000_000, 20.0, "orca"))
        cases += [(f"{name} 20 req/s", 1_000_000, 20.0, name) for name in ("vllm", "sarathi", "static")]
    over = 3.0 * cap
    cases += [(f"orca overload {over:.0f}/s", n, over, "orca") for n in (25_000, 50_000, 100_000)]

    print(f"tokenmill bench: llama-3.1-8b on h100; orca replica capacity ~{cap:.1f} req/s "
          f"(offline run); median of {args.repeat}")
    header = (f"{'case':<24}{'requests':>10}{'simulate s':>12}{'core s':>9}{'req/s':>12}"
              f"{'events/s':>13}{'us/arrival':>12}{'peak MB':>9}{'preempt':>9}")
    print(header)
    print("-" * len(header))
    for label, n, rate, scheduler in cases:
        runs = [run_in_child(n, rate, scheduler) for _ in range(args.repeat)]
        wall = statistics.median(r["wall_s"] for r in runs)
        core = statistics.median(r["core_s"] for r in runs)
        rss = max(r["peak_rss_mb"] for r in runs)
        ev = runs[0]["events"]
        print(f"{label:<24}{n:>10,}{wall:>12.3f}{core:>9.3f}{n / wall:>12,.0f}{ev / wall:>13,.0f}"
              f"{wall / n * 1e6:>12.2f}{rss:>9.0f}{runs[0]['preemptions']:>9,}")
    print()
    for timeseries in (True, False):
        wall_ms, core_ms = evaluation_ms(1_000, timeseries)
        print(f"repeated evaluation, 1,000 requests, time series {'on ' if timeseries else 'off'}: "
              f"simulate {wall_ms:.2f} ms (core {core_ms:.2f} ms), median of 50")


if __name__ == "__main__":
    main()
