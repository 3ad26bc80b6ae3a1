"""The steps a batch of identical requests takes, in closed form, and the metrics they yield.

Why: fitting a calibration prices the same benchmark rows hundreds of times with different
parameters. A static-batch benchmark (B requests of the same prompt and output length, all
queued at once) goes through a schedule that does not depend on the prices: which prompts each
step prefills and which requests decode in it. This module writes that schedule down once, as
arrays of step shapes, following the kernel's rules for the 'orca' and 'static' policies
(docs/schedulers.md); tests check it against tokenmill.simulate step for step. With the step
durations from tokenmill.steptimes, every metric of the batch is a sum over steps.

It assumes the KV cache holds the whole batch (no preemption); callers check that with the
memory fit and simulate the rows where it does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .steptimes import StepShapes


@dataclass(frozen=True)
class BatchPlan:
    """The steps of a batch and when each admission group gets its first and last token."""

    shapes: StepShapes
    first_step: np.ndarray   # per group: index of the step that prefills it
    last_step: np.ndarray    # per group: index of the step that produces its last token
    sizes: np.ndarray        # requests per group
    output_tokens: int

    def metrics(self, durations: np.ndarray) -> dict[str, float]:
        """Metrics of the batch, in ms, given every step's duration in seconds."""
        cum = np.cumsum(durations)
        ttft = cum[self.first_step]
        e2e = cum[self.last_step]
        n = float(self.sizes.sum())
        out = {
            "batch_latency_ms": float(cum[-1]) * 1e3,
            "batch_ttft_ms": float(ttft.max()) * 1e3,
            "ttft_mean_ms": float((ttft * self.sizes).sum() / n) * 1e3,
            "e2e_mean_ms": float((e2e * self.sizes).sum() / n) * 1e3,
        }
        if self.output_tokens > 1:
            tpot = (e2e - ttft) / (self.output_tokens - 1)
            out["tpot_mean_ms"] = float((tpot * self.sizes).sum() / n) * 1e3
            out["decode_step_ms"] = (out["batch_latency_ms"] - out["batch_ttft_ms"]) / (self.output_tokens - 1)
        return out


def batch_plan(batch: int, prompt: int, output: int, *, policy: str, max_batch_tokens: int,
               max_num_seqs: int) -> BatchPlan:
    """Steps of `batch` requests of `prompt` and `output` tokens queued at time 0.

    'orca': each step decodes every running request and admits waiting prompts, whole, while
    the token budget (decodes included) and the sequence limit allow. 'static': a batch is
    formed only when nothing runs, and runs until all of it finishes."""
    if policy not in ("orca", "static"):
        raise ValueError(f"closed-form schedules cover 'orca' and 'static'; got {policy!r}")
    if prompt > max_batch_tokens:
        raise ValueError(f"a {prompt}-token prompt never fits the {max_batch_tokens}-token budget")
    admit: list[int] = []   # step of each group's prefill
    sizes: list[int] = []
    cols: list[list[float]] = [[], [], [], [], [], []]
    waiting, step, head = batch, 0, 0   # head: first group not yet finished
    pairs = prompt * (prompt + 1) // 2
    while waiting > 0 or head < len(admit):
        while head < len(admit) and admit[head] + output - 1 < step:
            head += 1
        decoding = [g for g in range(head, len(admit)) if admit[g] < step]
        d = sum(sizes[g] for g in decoding)
        running = sum(sizes[g] for g in range(head, len(admit)))
        n = 0
        if waiting > 0 and (policy == "orca" or running == 0):
            n = min(waiting, (max_batch_tokens - d) // prompt, max_num_seqs - running)
        if n == 0 and d == 0:
            if waiting > 0 and head >= len(admit):
                raise ValueError("the schedule cannot make progress")  # not reachable: n >= 1
            step += 1
            continue
        context = sum(sizes[g] * (prompt + step - admit[g]) for g in decoding)
        for col, value in zip(cols, (n * prompt, n * pairs, 0, n + d, d, context)):
            col.append(float(value))
        if n > 0:
            admit.append(step)
            sizes.append(n)
            waiting -= n
        step += 1
    shapes = StepShapes(*(np.array(c, dtype=np.float64) for c in cols))
    first = np.array(admit, dtype=np.int64)
    # Steps are only recorded when something runs, and something runs every step from the
    # first admission on, so step indices are positions in the arrays.
    return BatchPlan(shapes, first, first + output - 1, np.array(sizes, dtype=np.float64), output)
