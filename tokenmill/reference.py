"""A slow, plain-Python twin of the compiled core, for differential tests on small cases.

It implements the same serving semantics the obvious way: every running request carries its
own token count and block count, and every step visits every running request. None of the
kernel's shortcuts (step-indexed bases, block-phase buckets, running context sums) appear here,
so agreement between the two is evidence that the shortcuts are exact.

The rules, shared with src/_core.pyx:
* Events at one instant: steps ending then finish first, then requests arriving then are queued
  (round robin over replicas), then every idle replica with news starts its next step.
* A step first gives each running decode that crosses a KV block boundary one more block,
  preempting the most recently admitted running request (recompute: its blocks are freed and
  it is requeued at the front) while blocks are short; a request that alone fills the whole
  cache is rejected. Then, unless it preempted, it admits waiting requests first come first
  served while the token budget (decodes + whole prompts), the sequence limit and the free
  blocks allow. A prompt (plus generated tokens, after a preemption) larger than the budget or
  the whole cache is rejected.
* A step produces one token for every request in it; a request finishes when it has produced
  its output length, and frees its blocks then.
* Closed loop (concurrency C > 0): requests are sent in index order and at most C are
  outstanding. Requests 0..C-1 arrive at their arrival_s; whenever a request finishes or is
  rejected at time t, the next unsent request k arrives at max(arrival_s[k], t + think_time_s),
  and is queued with the other arrivals of that instant (one rejected while a step is being
  chosen arrives after that choice, at the same instant).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from . import _core
from .costmodel import CostCoefficients, StepShape, step_seconds
from .metrics import itl_bin_of

PENDING = _core.STATUS_PENDING
WAITING = _core.STATUS_WAITING
RUNNING = _core.STATUS_RUNNING
FINISHED = _core.STATUS_FINISHED
REJECTED_BUDGET = _core.STATUS_REJECTED_BUDGET
REJECTED_KV = _core.STATUS_REJECTED_KV


@dataclass
class _Replica:
    free_blocks: int
    waiting: deque = field(default_factory=deque)
    running: list = field(default_factory=list)   # admission order
    busy: bool = False
    step_start: float = 0.0
    step_dur: float = 0.0
    step_blocks: int = 0
    step_prefills: list = field(default_factory=list)
    step_decodes: list = field(default_factory=list)
    steps: int = 0
    preemptions: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    busy_s: float = 0.0
    kv_block_s: float = 0.0
    kv_peak: int = 0


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def simulate_reference(arrival_s: np.ndarray, prompt_tokens: np.ndarray,
                       output_tokens: np.ndarray, cost: CostCoefficients, *, num_replicas: int,
                       max_batch_tokens: int, max_num_seqs: int, block_size: int,
                       kv_capacity_blocks: int, stop_time_s: float = math.inf,
                       concurrency: int = 0, think_time_s: float = 0.0) -> dict:
    """Same inputs and outputs as tokenmill._core.run (cost as coefficients, not an array)."""
    n = len(arrival_s)
    send_at = [float(x) for x in arrival_s]
    # arrival[k] is known for k < n_issued: all of them in open loop, the first C in closed loop
    if 0 < concurrency < n:
        arrival = send_at[:concurrency] + [math.nan] * (n - concurrency)
        n_issued = concurrency
    else:
        arrival = list(send_at)
        n_issued = n
    prompt = [int(x) for x in prompt_tokens]
    output = [int(x) for x in output_tokens]
    first_token = [math.nan] * n
    completion = [math.nan] * n
    admitted = [math.nan] * n
    preemptions = [0] * n
    generated = [0] * n
    blocks = [0] * n
    status = [PENDING] * n
    replica_of = [-1] * n
    last_token = [0.0] * n
    hist = np.zeros(_core.ITL_BINS, dtype=np.int64)
    itl = {"sum": 0.0, "count": 0, "max": 0.0}
    reps = [_Replica(free_blocks=kv_capacity_blocks) for _ in range(num_replicas)]
    events: list[tuple[float, int, int]] = []
    seq = 0
    events_processed = 0

    def gap(g: float, count: int) -> None:
        hist[itl_bin_of(g)] += count
        itl["sum"] += g * count
        itl["count"] += count
        if g > itl["max"]:
            itl["max"] = g

    def issue_next(now: float) -> None:
        nonlocal n_issued
        if n_issued < n:
            arrival[n_issued] = max(send_at[n_issued], now + think_time_s)
            n_issued += 1

    def release(rep: _Replica, i: int) -> None:
        rep.running.remove(i)
        rep.free_blocks += blocks[i]
        blocks[i] = 0

    def start_step(r: int, now: float) -> None:
        nonlocal seq
        rep = reps[r]
        preempted = False
        while True:
            needing = [i for i in rep.running
                       if _ceil_div(prompt[i] + generated[i], block_size) > blocks[i]]
            if len(needing) <= rep.free_blocks:
                break
            victim = rep.running[-1]
            if len(rep.running) == 1:
                release(rep, victim)
                status[victim] = REJECTED_KV
                issue_next(now)
            else:
                release(rep, victim)
                status[victim] = WAITING
                preemptions[victim] += 1
                last_token[victim] = now
                rep.preemptions += 1
                rep.waiting.appendleft(victim)
                preempted = True
        for i in needing:
            blocks[i] += 1
            rep.free_blocks -= 1
        decodes = list(rep.running)

        prefills: list[int] = []
        if not preempted or not rep.running:
            budget = max_batch_tokens - len(decodes)
            while rep.waiting and len(rep.running) < max_num_seqs:
                i = rep.waiting[0]
                eff = prompt[i] + generated[i]
                need = _ceil_div(eff, block_size)
                if eff > max_batch_tokens:
                    rep.waiting.popleft()
                    status[i] = REJECTED_BUDGET
                    issue_next(now)
                    continue
                if need > kv_capacity_blocks:
                    rep.waiting.popleft()
                    status[i] = REJECTED_KV
                    issue_next(now)
                    continue
                if eff > budget or need > rep.free_blocks:
                    break
                rep.waiting.popleft()
                rep.running.append(i)
                status[i] = RUNNING
                if math.isnan(admitted[i]):
                    admitted[i] = now
                blocks[i] = need
                rep.free_blocks -= need
                prefills.append(i)
                budget -= eff
        if not prefills and not decodes:
            return
        prefill_tokens = sum(prompt[i] + generated[i] for i in prefills)
        pairs = sum((prompt[i] + generated[i]) * (prompt[i] + generated[i] + 1) // 2 for i in prefills)
        context = sum(prompt[i] + generated[i] for i in decodes)
        dur = step_seconds(cost, StepShape(
            prefill_tokens=float(prefill_tokens), prefill_pairs=float(pairs), prefill_context=0.0,
            logit_tokens=float(len(prefills) + len(decodes)), decode_tokens=float(len(decodes)),
            decode_context=float(context)))
        rep.busy = True
        rep.step_start = now
        rep.step_dur = dur
        rep.step_prefills = prefills
        rep.step_decodes = decodes
        rep.step_blocks = kv_capacity_blocks - rep.free_blocks
        rep.steps += 1
        rep.prefill_tokens += prefill_tokens
        rep.decode_tokens += len(decodes)
        rep.busy_s += dur
        rep.kv_block_s += rep.step_blocks * dur
        rep.kv_peak = max(rep.kv_peak, rep.step_blocks)
        heapq.heappush(events, (now + dur, seq, r))
        seq += 1

    def end_step(r: int, now: float) -> None:
        rep = reps[r]
        if rep.step_decodes:
            gap(rep.step_dur, len(rep.step_decodes))
        for i in rep.step_prefills:
            generated[i] += 1
            if generated[i] == 1:
                first_token[i] = now
            else:
                gap(now - last_token[i], 1)
        for i in rep.step_decodes:
            generated[i] += 1
        for i in rep.step_prefills + rep.step_decodes:
            if generated[i] >= output[i]:
                release(rep, i)
                status[i] = FINISHED
                completion[i] = now
                issue_next(now)
        rep.busy = False

    cursor = 0
    rr = 0
    end_time = 0.0
    while True:
        t_arrival = arrival[cursor] if cursor < n_issued else math.inf
        t_event = events[0][0] if events else math.inf
        now = min(t_arrival, t_event)
        if now == math.inf:
            break
        if now > stop_time_s:
            end_time = stop_time_s
            break
        dirty: list[int] = []
        while events and events[0][0] <= now:
            _, _, r = heapq.heappop(events)
            events_processed += 1
            end_step(r, now)
            if r not in dirty:
                dirty.append(r)
        while cursor < n_issued and arrival[cursor] <= now:
            r = rr
            rr = (rr + 1) % num_replicas
            replica_of[cursor] = r
            status[cursor] = WAITING
            reps[r].waiting.append(cursor)
            events_processed += 1
            if r not in dirty:
                dirty.append(r)
            cursor += 1
        for r in reversed(dirty):
            if not reps[r].busy:
                start_step(r, now)
        end_time = now

    for rep in reps:
        if rep.busy and rep.step_start + rep.step_dur > stop_time_s:
            over = rep.step_start + rep.step_dur - stop_time_s
            rep.busy_s -= over
            rep.kv_block_s -= rep.step_blocks * over

    def col(values: list, dtype: type) -> np.ndarray:
        return np.array(values, dtype=dtype)

    return {
        "arrival_s": col(arrival, np.float64),
        "first_token_s": col(first_token, np.float64),
        "completion_s": col(completion, np.float64),
        "admitted_s": col(admitted, np.float64),
        "preemptions": col(preemptions, np.int32),
        "generated_tokens": col(generated, np.int32),
        "status": col(status, np.int8),
        "replica": col(replica_of, np.int32),
        "replicas": {
            "steps": col([x.steps for x in reps], np.int64),
            "preemptions": col([x.preemptions for x in reps], np.int64),
            "prefill_tokens": col([x.prefill_tokens for x in reps], np.int64),
            "decode_tokens": col([x.decode_tokens for x in reps], np.int64),
            "busy_s": col([x.busy_s for x in reps], np.float64),
            "kv_block_seconds": col([x.kv_block_s for x in reps], np.float64),
            "kv_peak_blocks": col([x.kv_peak for x in reps], np.int64),
            "kv_blocks_in_use_at_end": col([kv_capacity_blocks - x.free_blocks for x in reps], np.int64),
        },
        "itl_histogram": hist,
        "itl_sum_s": itl["sum"],
        "itl_count": itl["count"],
        "itl_max_s": itl["max"],
        "events": events_processed,
        "end_time_s": end_time,
    }
