"""A slow, plain-Python twin of the compiled core, for differential tests on small cases.

It implements the same serving semantics the obvious way: every request carries its own token
count, prefill progress and block count, every step visits every running request, queues are
Python lists searched linearly, and the prefix cache is a dict with an OrderedDict for its
eviction order. None of the kernel's shortcuts (step-indexed bases, block-phase buckets, running
context sums, heaps, hash tables) appear here, so agreement between the two is evidence that
the shortcuts are exact. The rules themselves are written down in docs/schedulers.md.

Closed loop (concurrency C > 0): requests are sent in index order and at most C are
outstanding. Requests 0..C-1 arrive at their arrival_s; whenever a request finishes or is
rejected at time t, the next unsent request k arrives at max(arrival_s[k], t + think_time_s),
and is queued with the other arrivals of that instant (one rejected while a step is being
chosen arrives after that choice, at the same instant).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

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
SWAPPED = _core.STATUS_SWAPPED

ORCA = _core.POLICY_ORCA
CHUNKED = _core.POLICY_CHUNKED
STATIC = _core.POLICY_STATIC


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class _Replica:
    empty: int
    waiting: list = field(default_factory=list)
    swapped: list = field(default_factory=list)
    running: list = field(default_factory=list)   # admission order
    refs: dict = field(default_factory=dict)       # prefix id -> references
    evictable: OrderedDict = field(default_factory=OrderedDict)  # oldest first
    swap_used: int = 0
    busy: bool = False
    step_start: float = 0.0
    step_dur: float = 0.0
    step_blocks: int = 0
    step_prefills: list = field(default_factory=list)
    step_decodes: list = field(default_factory=list)
    step_swapins: list = field(default_factory=list)
    stats: dict = field(default_factory=lambda: dict.fromkeys(
        ("steps", "preemptions", "swap_out_blocks", "swap_in_blocks", "prefill_tokens",
         "recompute_tokens", "decode_tokens", "prefix_query_tokens", "prefix_hit_tokens", "max_step_tokens",
         "kv_peak_blocks"), 0))
    busy_s: float = 0.0
    kv_block_s: float = 0.0


def simulate_reference(arrival_s: np.ndarray, prompt_tokens: np.ndarray,
                       output_tokens: np.ndarray, cost: CostCoefficients, *, num_replicas: int,
                       max_batch_tokens: int, max_num_seqs: int, block_size: int,
                       kv_capacity_blocks: int, policy: int = ORCA,
                       priority: Optional[np.ndarray] = None, priority_scheduling: bool = False,
                       preemption: int = _core.PREEMPT_RECOMPUTE, swap_capacity_blocks: int = 0,
                       swap_seconds_per_block: float = 0.0,
                       prefix_offsets: Optional[np.ndarray] = None,
                       prefix_ids: Optional[np.ndarray] = None, prefix_granule_tokens: int = 0,
                       prefix_caching: bool = False, stop_time_s: float = math.inf,
                       concurrency: int = 0, think_time_s: float = 0.0,
                       check_invariants: bool = False) -> dict:
    """Same inputs and outputs as tokenmill._core.run (cost as coefficients, not an array).

    With check_invariants, every step asserts that no request is in two places at once, that
    every KV block is accounted for exactly once, and that the step respects the token budget
    and the sequence limit."""
    n = len(arrival_s)
    B = block_size
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
    prio = [int(x) for x in priority] if priority is not None else [0] * n
    G = prefix_granule_tokens if prefix_caching else 1
    gb = G // B if prefix_caching else 1
    ids_of = ([[int(x) for x in prefix_ids[prefix_offsets[i]:prefix_offsets[i + 1]]] for i in range(n)]
              if prefix_caching else [[] for _ in range(n)])

    first_token = [math.nan] * n
    completion = [math.nan] * n
    admitted = [math.nan] * n
    preemptions = [0] * n
    generated = [0] * n
    status = [PENDING] * n
    replica_of = [-1] * n
    prefix_hit = [0] * n
    computed = [0] * n
    target = [0] * n
    chunk = [0] * n
    private = [0] * n      # KV blocks only this request holds
    host = [0] * n         # blocks it has swapped out to host memory
    shared = [0] * n       # leading prefix granules it references
    closed = [False] * n
    last_token = [0.0] * n
    hist = np.zeros(_core.ITL_BINS, dtype=np.int64)
    itl = {"sum": 0.0, "count": 0, "max": 0.0}
    reps = [_Replica(empty=kv_capacity_blocks) for _ in range(num_replicas)]
    events: list[tuple[float, int, int]] = []
    seq = 0
    events_processed = 0

    def gap(g: float, count: int) -> None:
        hist[itl_bin_of(g)] += count
        itl["sum"] += g * count
        itl["count"] += count
        itl["max"] = max(itl["max"], g)

    def issue_next(now: float) -> None:
        nonlocal n_issued
        if n_issued < n:
            arrival[n_issued] = max(send_at[n_issued], now + think_time_s)
            n_issued += 1

    def free(rep: _Replica) -> int:
        return rep.empty + len(rep.evictable) * gb

    def take(rep: _Replica, m: int) -> None:
        while rep.empty < m:
            pid, _ = rep.evictable.popitem(last=False)
            del rep.refs[pid]
            rep.empty += gb
        rep.empty -= m

    def decoding(i: int) -> bool:
        return computed[i] >= target[i]

    def release(rep: _Replica, i: int) -> None:
        rep.empty += private[i]
        private[i] = 0
        for j in reversed(range(shared[i])):
            pid = ids_of[i][j]
            rep.refs[pid] -= 1
            if rep.refs[pid] == 0:
                rep.evictable[pid] = True
        shared[i] = 0
        closed[i] = False
        computed[i] = 0
        target[i] = 0

    def requeue(rep: _Replica, i: int) -> None:
        if priority_scheduling:
            rep.waiting.append(i)
        else:
            rep.waiting.insert(0, i)

    def preempt(rep: _Replica, v: int, now: float) -> None:
        was_decoding = decoding(v)
        rep.running.remove(v)
        preemptions[v] += 1
        rep.stats["preemptions"] += 1
        if was_decoding:
            last_token[v] = now
        if (was_decoding and preemption == _core.PREEMPT_SWAP
                and rep.swap_used + private[v] <= swap_capacity_blocks):
            rep.empty += private[v]
            rep.swap_used += private[v]
            rep.stats["swap_out_blocks"] += private[v]
            host[v] = private[v]
            private[v] = 0
            status[v] = SWAPPED
            rep.swapped.append(v)
            return
        release(rep, v)
        status[v] = WAITING
        requeue(rep, v)

    def next_waiting(rep: _Replica) -> int:
        if priority_scheduling:
            return min(rep.waiting, key=lambda i: (prio[i], i))
        return rep.waiting[0]

    def start_step(r: int, now: float) -> None:
        nonlocal seq
        rep = reps[r]
        swaps_before = rep.stats["swap_out_blocks"] + rep.stats["swap_in_blocks"]
        preempted = False

        def plan() -> tuple[list, list, int]:
            decs = [i for i in rep.running if decoding(i)]
            needing = [i for i in decs if (prompt[i] + generated[i] - 1) % B == 0]
            left = max_batch_tokens - len(decs)
            used = 0
            growth = []
            for i in rep.running:
                if not decoding(i):
                    c = min(target[i] - computed[i], left - used)
                    chunk[i] = c
                    used += c
                    growth.append((i, _ceil_div(computed[i] + c, B) - _ceil_div(computed[i], B)))
            return needing, growth, used

        needing, growth, pre_tokens = plan()
        while len(needing) + sum(g for _, g in growth) > free(rep):
            if len(rep.running) == 1:
                v = rep.running[0]
                rep.running.remove(v)
                release(rep, v)
                status[v] = REJECTED_KV
                issue_next(now)
            else:
                if priority_scheduling:
                    v = max(rep.running, key=lambda i: (prio[i], i))
                else:
                    v = rep.running[-1]
                preempt(rep, v, now)
                preempted = True
            needing, growth, pre_tokens = plan()
        take(rep, len(needing) + sum(g for _, g in growth))
        for i in needing:
            private[i] += 1
        for i, g in growth:
            private[i] += g
        decodes = [i for i in rep.running if decoding(i)]
        prefills = [i for i in rep.running if not decoding(i)]
        tokens = sum(chunk[i] for i in prefills)
        rep.stats["recompute_tokens"] += sum(chunk[i] for i in prefills if preemptions[i] > 0)
        pairs = sum(chunk[i] * computed[i] + chunk[i] * (chunk[i] + 1) // 2 for i in prefills if chunk[i])
        context = sum(computed[i] for i in prefills if chunk[i])
        longest = 0
        swapins: list[int] = []

        budget = max_batch_tokens - len(decodes) - pre_tokens
        admitting = (not preempted or not rep.running) and (policy != STATIC or not rep.running)
        while admitting:
            while rep.swapped and len(rep.running) < max_num_seqs and budget > 0:
                i = rep.swapped[0]
                need = _ceil_div(prompt[i] + generated[i], B) - shared[i] * gb
                if need > free(rep):
                    break
                rep.swapped.pop(0)
                rep.swap_used -= host[i]
                rep.stats["swap_in_blocks"] += host[i]
                host[i] = 0
                take(rep, need)
                private[i] = need
                status[i] = RUNNING
                rep.running.append(i)
                swapins.append(i)
                budget -= 1
            while not rep.swapped and rep.waiting and len(rep.running) < max_num_seqs and budget > 0:
                i = next_waiting(rep)
                tgt = prompt[i] + generated[i]
                k = 0
                if prefix_caching:
                    limit = min(len(ids_of[i]), prompt[i] // G, (tgt - 1) // G)
                    while k < limit and ids_of[i][k] in rep.refs:
                        k += 1
                hit = k * G
                if policy != CHUNKED and tgt - hit > max_batch_tokens:
                    rep.waiting.remove(i)
                    status[i] = REJECTED_BUDGET
                    issue_next(now)
                    continue
                if _ceil_div(tgt, B) > kv_capacity_blocks:
                    rep.waiting.remove(i)
                    status[i] = REJECTED_KV
                    issue_next(now)
                    continue
                c = tgt - hit
                if policy == CHUNKED:
                    c = min(c, budget)
                elif c > budget:
                    break
                need = _ceil_div(hit + c, B) - k * gb
                touched = sum(gb for pid in ids_of[i][:k] if rep.refs[pid] == 0)
                if need + touched > free(rep):
                    break
                rep.waiting.remove(i)
                for pid in ids_of[i][:k]:
                    if rep.refs[pid] == 0:
                        del rep.evictable[pid]
                    rep.refs[pid] += 1
                if prefix_caching:
                    rep.stats["prefix_query_tokens"] += tgt
                    rep.stats["prefix_hit_tokens"] += hit
                if math.isnan(admitted[i]):
                    admitted[i] = now
                    prefix_hit[i] = hit
                shared[i] = k
                closed[i] = False
                computed[i] = hit
                target[i] = tgt
                chunk[i] = c
                take(rep, need)
                private[i] = need
                status[i] = RUNNING
                rep.running.append(i)
                prefills.append(i)
                tokens += c
                if preemptions[i] > 0:
                    rep.stats["recompute_tokens"] += c
                pairs += c * hit + c * (c + 1) // 2
                context += hit
                longest = max(longest, c)
                budget -= c
            if rep.running or not rep.swapped:
                break
            # nothing runs and the oldest swapped request cannot come back: recompute it
            v = rep.swapped.pop(0)
            rep.swap_used -= host[v]
            host[v] = 0
            for j in reversed(range(shared[v])):
                pid = ids_of[v][j]
                rep.refs[pid] -= 1
                if rep.refs[pid] == 0:
                    rep.evictable[pid] = True
            shared[v] = 0
            closed[v] = False
            computed[v] = 0
            target[v] = 0
            status[v] = WAITING
            requeue(rep, v)

        all_decodes = decodes + swapins
        if not prefills and not all_decodes:
            return
        logits = sum(1 for i in prefills if computed[i] + chunk[i] == target[i])
        shape_tokens, shape_pairs = float(tokens), float(pairs)
        if policy == STATIC and prefills:
            shape_tokens = float(len(prefills) * longest)
            shape_pairs = float(len(prefills) * (longest * (longest + 1) // 2))
        dur = step_seconds(cost, StepShape(
            prefill_tokens=shape_tokens, prefill_pairs=shape_pairs,
            prefill_context=float(context), logit_tokens=float(logits + len(all_decodes)),
            decode_tokens=float(len(all_decodes)),
            decode_context=float(sum(prompt[i] + generated[i] for i in all_decodes))))
        swapped_blocks = rep.stats["swap_out_blocks"] + rep.stats["swap_in_blocks"] - swaps_before
        dur += swap_seconds_per_block * swapped_blocks
        rep.busy = True
        rep.step_start = now
        rep.step_dur = dur
        rep.step_prefills = prefills
        rep.step_decodes = decodes
        rep.step_swapins = swapins
        rep.step_blocks = kv_capacity_blocks - free(rep)
        st = rep.stats
        st["steps"] += 1
        st["prefill_tokens"] += tokens
        st["decode_tokens"] += len(all_decodes)
        st["max_step_tokens"] = max(st["max_step_tokens"], tokens + len(all_decodes))
        st["kv_peak_blocks"] = max(st["kv_peak_blocks"], rep.step_blocks)
        rep.busy_s += dur
        rep.kv_block_s += rep.step_blocks * dur
        if check_invariants:
            check(rep, tokens + len(all_decodes))
        heapq.heappush(events, (now + dur, seq, r))
        seq += 1

    def check(rep: _Replica, step_tokens: int) -> None:
        run, wait, swap = set(rep.running), set(rep.waiting), set(rep.swapped)
        assert len(run) == len(rep.running) and len(wait) == len(rep.waiting)
        assert not (run & wait) and not (run & swap) and not (wait & swap), "request in two queues"
        assert all(status[i] == RUNNING for i in run) and all(status[i] == WAITING for i in wait)
        assert all(status[i] == SWAPPED for i in swap)
        referenced = sum(1 for pid, refs in rep.refs.items() if refs > 0)
        assert len(rep.evictable) == len(rep.refs) - referenced
        used = sum(private[i] for i in run) + referenced * gb
        assert used + free(rep) == kv_capacity_blocks, "KV blocks leaked or double counted"
        assert 0 <= rep.empty and used <= kv_capacity_blocks
        assert rep.swap_used == sum(host[i] for i in swap) <= max(swap_capacity_blocks, 0)
        for i in run:  # each running request holds exactly the blocks its KV needs
            tokens = computed[i] + chunk[i] if not decoding(i) else prompt[i] + generated[i]
            assert private[i] + shared[i] * gb == _ceil_div(tokens, B), "wrong block count"
        assert step_tokens <= max_batch_tokens and len(run) <= max_num_seqs

    def finish(rep: _Replica, i: int, now: float) -> None:
        rep.running.remove(i)
        release(rep, i)
        status[i] = FINISHED
        completion[i] = now
        issue_next(now)

    def end_step(r: int, now: float) -> None:
        rep = reps[r]
        if rep.step_decodes:
            gap(rep.step_dur, len(rep.step_decodes))
        for i in rep.step_swapins:
            gap(now - last_token[i], 1)
        for i in rep.step_prefills:
            computed[i] += chunk[i]
            chunk[i] = 0
            if prefix_caching:
                limit = min(len(ids_of[i]), prompt[i] // G)
                while not closed[i] and shared[i] < limit and (shared[i] + 1) * G <= computed[i]:
                    pid = ids_of[i][shared[i]]
                    if pid in rep.refs:
                        closed[i] = True
                        break
                    rep.refs[pid] = 1
                    private[i] -= gb
                    shared[i] += 1
            if computed[i] < target[i]:
                continue
            generated[i] += 1
            if generated[i] == 1:
                first_token[i] = now
            else:
                gap(now - last_token[i], 1)
            if generated[i] >= output[i]:
                finish(rep, i, now)
        for i in sorted(rep.step_decodes + rep.step_swapins):
            generated[i] += 1
            if generated[i] >= output[i]:
                finish(rep, i, now)
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

    replicas = {name: col([rep.stats[name] for rep in reps], np.int64) for name in reps[0].stats}
    replicas["kv_blocks_in_use_at_end"] = col([kv_capacity_blocks - free(rep) for rep in reps], np.int64)
    replicas["swapped_at_end"] = col([len(rep.swapped) for rep in reps], np.int64)
    replicas["busy_s"] = col([rep.busy_s for rep in reps], np.float64)
    replicas["kv_block_seconds"] = col([rep.kv_block_s for rep in reps], np.float64)
    return {
        "arrival_s": col(arrival, np.float64),
        "first_token_s": col(first_token, np.float64),
        "completion_s": col(completion, np.float64),
        "admitted_s": col(admitted, np.float64),
        "preemptions": col(preemptions, np.int32),
        "generated_tokens": col(generated, np.int32),
        "status": col(status, np.int8),
        "replica": col(replica_of, np.int32),
        "prefix_hit_tokens": col(prefix_hit, np.int32),
        "replicas": replicas,
        "itl_histogram": hist,
        "itl_sum_s": itl["sum"],
        "itl_count": itl["count"],
        "itl_max_s": itl["max"],
        "events": events_processed,
        "end_time_s": end_time,
    }
