"""A Workload and a seed -> WorkloadArrays: the columns the kernel reads, with an account.

Determinism: one numpy Generator per column, each spawned from the scenario's seed
(SeedSequence(seed).spawn: arrivals, prompt lengths, output lengths, classes), so the same
workload and seed give identical arrays, and changing, say, the output distribution does not
move the arrival times or the prompts.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..workload import WorkloadArrays
from .arrivals import arrival_times
from .classes import assign_classes, class_priorities
from .config import LengthDistribution, Workload
from .empirical import Pool, load_pool
from .info import WorkloadInfo
from .lengths import LengthStats, draw_lengths
from .traces import load_trace

STREAMS = ("arrivals", "prompt", "output", "classes")


def streams(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.Generator(np.random.PCG64(c)) for name, c in zip(STREAMS, children)}


def generate(workload: Workload, seed: int) -> WorkloadArrays:
    """The requests of `workload` for this seed (a trace is read and replayed instead)."""
    if workload.trace is not None:
        return load_trace(workload.trace, duration_s=workload.duration_s,
                          num_requests=workload.num_requests)
    rng = streams(seed)
    arrival = arrival_times(rng["arrivals"], workload)
    n = arrival.shape[0]
    pools: dict[tuple[str, str], Pool] = {}
    notes: list[str] = []
    counts: dict[str, int] = {}

    def draw(role: str, dist: LengthDistribution, k: int, label: str) -> np.ndarray:
        pool = None
        if dist.kind == "empirical":
            key = (dist.source or "", dist.column or role)
            if key not in pools:
                pools[key] = load_pool(dist, role)
                if pools[key].zeros_left_out:
                    notes.append(f"{role} lengths: {pools[key].zeros_left_out:,} zero values of "
                                 f"{pools[key].source} left out of the sample pool")
                    counts[f"{role}_pool_zeros"] = pools[key].zeros_left_out
            pool = pools[key].values
        values, stats = draw_lengths(rng[role], dist, k, pool)
        _count(counts, role, stats)
        notes.extend(stats.notes(label, dist))
        return values

    classes = workload.classes
    class_id: Optional[np.ndarray] = None
    priority: Optional[np.ndarray] = None
    if classes:
        class_id = assign_classes(rng["classes"], classes, n)
        priority = class_priorities(classes, class_id)
        prompt = np.empty(n, dtype=np.int32)
        output = np.empty(n, dtype=np.int32)
        for k, cls in enumerate(classes):
            idx = np.flatnonzero(class_id == k)
            p_dist = cls.prompt or workload.prompt
            o_dist = cls.output or workload.output
            assert p_dist is not None and o_dist is not None
            prompt[idx] = draw("prompt", p_dist, idx.size, f"prompt (class {cls.name})")
            output[idx] = draw("output", o_dist, idx.size, f"output (class {cls.name})")
    else:
        assert workload.prompt is not None and workload.output is not None
        prompt = draw("prompt", workload.prompt, n, "prompt")
        output = draw("output", workload.output, n, "output")
    info = WorkloadInfo(source=workload_label(workload), counts=counts, notes=tuple(notes),
                        class_names=tuple(c.name for c in classes))
    return WorkloadArrays(arrival_s=np.ascontiguousarray(arrival, dtype=np.float64),
                          prompt_tokens=prompt, output_tokens=output, class_id=class_id,
                          priority=priority, info=info)


def _count(counts: dict[str, int], role: str, stats: LengthStats) -> None:
    for name in ("raised", "lowered", "redrawn"):
        value = getattr(stats, name)
        if value:
            counts[f"{role}_{name}"] = counts.get(f"{role}_{name}", 0) + value


def workload_label(w: Workload) -> str:
    """One line saying what a Workload asks for (used by reports and describe)."""
    think = f", think time {w.think_time_s:g} s" if w.think_time_s else ""
    if w.trace is not None:
        t = w.trace
        head = f"trace {t.path}"  # the format found is in WorkloadInfo.source
        if w.concurrency is not None:
            head += f", at most {w.concurrency} outstanding{think}"
    else:
        rate = w.arrival_rate
        assert rate is not None
        if math.isinf(rate):
            head = ("offline (all at t=0)" if w.concurrency is None
                    else f"closed loop of {w.concurrency} clients{think}")
        else:
            proc = (f"gamma (CV {w.burstiness:g})" if w.arrival_process == "gamma" else
                    {"poisson": "Poisson", "constant": "constant-rate"}[w.arrival_process or "poisson"])
            profile = "" if w.rate_profile.kind == "constant" else f", {w.rate_profile.label()}"
            head = f"{proc} {rate:g} req/s{profile}"
            if w.concurrency is not None:
                head += f", at most {w.concurrency} outstanding{think}"
    limits = []
    if w.duration_s is not None:
        limits.append(f"{w.duration_s:g} s")
    if w.num_requests is not None:
        limits.append(f"{w.num_requests:,} requests")
    parts = [head + (" for " + " or ".join(limits) if limits else "")]
    if w.prompt is not None and w.output is not None:
        parts.append(f"prompt {w.prompt.label()}, output {w.output.label()}")
    if w.classes:
        parts.append("classes " + ", ".join(f"{c.name} ({c.share:g})" for c in w.classes))
    return "; ".join(parts)
