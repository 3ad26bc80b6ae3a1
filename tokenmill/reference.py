"""A slow, plain-Python twin of the compiled core, for differential tests on small cases.

It implements the same serving semantics the obvious way: every request carries its own token
count, prefill progress and block count, every step visits every running request, queues are
Python lists searched linearly, and the prefix cache is a dict with an OrderedDict for its
eviction order. None of the kernel's shortcuts (step-indexed bases, block-phase buckets, running
context sums, heaps, hash tables, chaining steps past the event queue) appear here, so agreement
between the two is evidence that the shortcuts are exact. The rules themselves are written down
in docs/schedulers.md and docs/cluster.md.

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
from typing import Optional, Sequence, Union

import numpy as np

from . import _core
from .costmodel import CostCoefficients, StepShape, step_activity, step_seconds
from .metrics import itl_bin_of

PENDING = _core.STATUS_PENDING
WAITING = _core.STATUS_WAITING
RUNNING = _core.STATUS_RUNNING
FINISHED = _core.STATUS_FINISHED
REJECTED_BUDGET = _core.STATUS_REJECTED_BUDGET
REJECTED_KV = _core.STATUS_REJECTED_KV
SWAPPED = _core.STATUS_SWAPPED
TRANSFER = _core.STATUS_TRANSFER

ORCA = _core.POLICY_ORCA
CHUNKED = _core.POLICY_CHUNKED
STATIC = _core.POLICY_STATIC

STEP_END = 0
KV_ARRIVED = 1
MASK64 = (1 << 64) - 1

Costs = Union[CostCoefficients, Sequence[CostCoefficients]]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _rows(cost: Optional[Costs], n: int, name: str) -> list[CostCoefficients]:
    rows = [cost] if isinstance(cost, CostCoefficients) else list(cost or [])
    if len(rows) != n:
        raise ValueError(f"{name}: expected {n} cost row(s), got {len(rows)}")
    return rows


class _SplitMix64:
    """The kernel's random stream, bit for bit."""

    def __init__(self, seed: int) -> None:
        self.state = seed & MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self) -> float:
        return (self.next() >> 11) * (1.0 / 9007199254740992.0)


@dataclass
class _Pipe:
    pool: int
    first_engine: int
    costs: list
    stage_free: list
    stage_busy: list
    link_free: float = 0.0
    link_busy: float = 0.0
    transfers: int = 0

    @property
    def stages(self) -> int:
        return len(self.costs)


@dataclass
class _Engine:
    pool: int
    pipe: int
    max_tokens: int
    max_seqs: int
    capacity: int
    swap_capacity: int
    swap_s: float
    empty: int
    waiting: list = field(default_factory=list)
    swapped: list = field(default_factory=list)
    running: list = field(default_factory=list)   # admission order
    incoming: list = field(default_factory=list)  # handed over, waiting for blocks
    ready: list = field(default_factory=list)     # KV arrived
    inflight: int = 0
    handoff: int = 0
    outstanding: int = 0
    out_tokens: int = 0
    refs: dict = field(default_factory=dict)       # prefix id -> references
    evictable: OrderedDict = field(default_factory=OrderedDict)  # oldest first
    swap_used: int = 0
    busy: bool = False
    step_start: float = 0.0
    step_dur: float = 0.0
    step_blocks: int = 0
    step_prefills: list = field(default_factory=list)
    step_decodes: list = field(default_factory=list)
    step_joins: list = field(default_factory=list)
    stats: dict = field(default_factory=lambda: dict.fromkeys(
        ("steps", "preemptions", "swap_out_blocks", "swap_in_blocks", "prefill_tokens",
         "recompute_tokens", "decode_tokens", "prefix_query_tokens", "prefix_hit_tokens",
         "max_step_tokens", "kv_peak_blocks", "spec_tokens", "kv_sent", "kv_received"), 0))
    busy_s: float = 0.0
    kv_block_s: float = 0.0
    compute_s: float = 0.0        # compute-time terms of its steps (all stages), for power
    memory_s: float = 0.0
    step_compute_frac: float = 0.0
    step_memory_frac: float = 0.0


def simulate_reference(arrival_s: np.ndarray, prompt_tokens: np.ndarray,
                       output_tokens: np.ndarray, cost: Costs, *, num_replicas: int,
                       max_batch_tokens: int, max_num_seqs: int, block_size: int,
                       kv_capacity_blocks: int, policy: int = ORCA,
                       priority: Optional[np.ndarray] = None, priority_scheduling: bool = False,
                       preemption: int = _core.PREEMPT_RECOMPUTE, swap_capacity_blocks: int = 0,
                       swap_seconds_per_block: float = 0.0,
                       prefix_offsets: Optional[np.ndarray] = None,
                       prefix_ids: Optional[np.ndarray] = None, prefix_granule_tokens: int = 0,
                       prefix_caching: bool = False, stop_time_s: float = math.inf,
                       concurrency: int = 0, think_time_s: float = 0.0,
                       pipeline_stages: int = 1, router: int = _core.ROUTER_ROUND_ROBIN,
                       seed: int = 0, balance_abs: int = 32, balance_rel: float = 1.1,
                       cache_threshold: float = 0.5, decode_replicas: int = 0,
                       decode_pipeline_stages: int = 1, decode_max_batch_tokens: int = 0,
                       decode_max_num_seqs: int = 0, decode_kv_capacity_blocks: int = 0,
                       decode_cost: Optional[Costs] = None,
                       decode_swap_capacity_blocks: int = 0,
                       decode_swap_seconds_per_block: float = 0.0,
                       kv_link_bytes_per_s: float = 0.0, kv_link_latency_s: float = 0.0,
                       kv_bytes_per_token: float = 0.0, spec_tokens: int = 0,
                       spec_acceptance: Optional[Sequence[float]] = None,
                       draft_cost: Optional[Costs] = None, timeseries_dt: float = 0.0,
                       timeseries_max_buckets: int = 0,
                       check_invariants: bool = False) -> dict:
    """Same inputs and outputs as tokenmill._core.run, with costs given as CostCoefficients
    (one per pipeline stage, or per pool for draft_cost) instead of arrays.

    With check_invariants, every step asserts that no request is in two places at once, that
    every KV block is accounted for exactly once, and that the step respects the token budget
    and the sequence limit."""
    n = len(arrival_s)
    B = block_size
    K = spec_tokens
    acc = [float(x) for x in (spec_acceptance if K > 0 and spec_acceptance is not None else [])]
    disagg = decode_replicas > 0
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
    ids_of: list[list[int]] = [[] for _ in range(n)]
    if prefix_caching:
        assert prefix_ids is not None and prefix_offsets is not None
        ids_of = [[int(x) for x in prefix_ids[prefix_offsets[i]:prefix_offsets[i + 1]]]
                  for i in range(n)]
    rng = _SplitMix64(seed)

    first_token = [math.nan] * n
    completion = [math.nan] * n
    admitted = [math.nan] * n
    kv_ready = [math.nan] * n
    handoff = [math.nan] * n
    prefill_busy = [0.0] * n
    prefill_lost = [0.0] * n
    preemptions = [0] * n
    generated = [0] * n
    status = [PENDING] * n
    replica_of = [-1] * n
    decode_of = [-1] * n
    prefix_hit = [0] * n
    computed = [0] * n
    target = [0] * n
    chunk = [0] * n
    private = [0] * n      # KV blocks only this request holds, on its current engine
    host = [0] * n         # blocks it has swapped out to host memory
    shared = [0] * n       # leading prefix granules it references
    closed = [False] * n
    last_token = [0.0] * n
    hist = np.zeros(_core.ITL_BINS, dtype=np.int64)
    itl = {"sum": 0.0, "count": 0, "max": 0.0}

    pool_specs = [(num_replicas, _rows(cost, pipeline_stages, "cost"), max_batch_tokens,
                   max_num_seqs, kv_capacity_blocks, swap_capacity_blocks, swap_seconds_per_block)]
    if disagg:
        pool_specs.append((decode_replicas, _rows(decode_cost, decode_pipeline_stages, "decode_cost"),
                           decode_max_batch_tokens, decode_max_num_seqs, decode_kv_capacity_blocks,
                           decode_swap_capacity_blocks, decode_swap_seconds_per_block))
    drafts = _rows(draft_cost, len(pool_specs), "draft_cost") if (K > 0 and draft_cost is not None) else None
    pipes: list[_Pipe] = []
    engines: list[_Engine] = []
    pool_pipes: list[list[int]] = []
    for pool, (n_replicas, rows, tokens_, seqs, capacity, swap_cap, swap_s) in enumerate(pool_specs):
        pool_pipes.append([])
        for _ in range(n_replicas):
            pipes.append(_Pipe(pool=pool, first_engine=len(engines), costs=rows,
                               stage_free=[0.0] * len(rows), stage_busy=[0.0] * len(rows)))
            pool_pipes[pool].append(len(pipes) - 1)
            for _ in rows:
                engines.append(_Engine(pool=pool, pipe=len(pipes) - 1, max_tokens=tokens_,
                                       max_seqs=seqs, capacity=capacity // len(rows),
                                       swap_capacity=swap_cap // len(rows), swap_s=swap_s,
                                       empty=capacity // len(rows)))
    ts_last = [0.0] * len(engines)
    ts: dict[tuple[int, int], list] = {}  # (bucket, engine) -> integrals of TIMESERIES_FIELDS
    events: list[tuple[float, int, int, int]] = []
    seq = 0
    events_processed = 0
    rr = [0]

    def gap(g: float, count: int) -> None:
        hist[itl_bin_of(g)] += count
        itl["sum"] += g * count
        itl["count"] += count
        itl["max"] = max(itl["max"], g)

    def coarsen() -> None:
        """Merge bucket pairs (2j, 2j + 1) into j and double the bucket length (the kernel's
        ts_coarsen, sums in the same order)."""
        nonlocal timeseries_dt
        width = len(_core.TIMESERIES_FIELDS)
        old = dict(ts)
        ts.clear()
        for j in range(timeseries_max_buckets // 2):
            for r2 in range(len(engines)):
                a = old.get((2 * j, r2), [0.0] * width)
                b2 = old.get((2 * j + 1, r2), [0.0] * width)
                if (2 * j, r2) in old or (2 * j + 1, r2) in old:
                    ts[(j, r2)] = [x + y for x, y in zip(a, b2)]
        timeseries_dt *= 2.0

    def touch(r: int, now: float) -> None:
        """Integrate engine r's state since its last change (it is constant in between)."""
        if timeseries_dt <= 0.0 or now <= ts_last[r]:
            return
        e = engines[r]
        values = (float(len(e.waiting) + len(e.swapped) + len(e.incoming)), float(len(e.running)),
                  float(e.capacity - free(e)), 1.0 if e.busy else 0.0,
                  e.step_compute_frac if e.busy else 0.0, e.step_memory_frac if e.busy else 0.0)
        t0 = ts_last[r]
        b = int(t0 / timeseries_dt)
        while t0 < now:
            if timeseries_max_buckets > 0 and b >= timeseries_max_buckets:
                coarsen()
                b //= 2
                continue
            end = (b + 1) * timeseries_dt
            seg = (end if end < now else now) - t0
            acc = ts.setdefault((b, r), [0.0] * len(values))
            for k in range(len(values)):
                acc[k] += values[k] * seg
            t0 = end if end < now else now
            b += 1
        ts_last[r] = now

    def issue_next(now: float) -> None:
        nonlocal n_issued
        if n_issued < n:
            arrival[n_issued] = max(send_at[n_issued], now + think_time_s)
            n_issued += 1

    def free(e: _Engine) -> int:
        return e.empty + len(e.evictable) * gb

    def take(e: _Engine, m: int) -> None:
        while e.empty < m:
            pid, _ = e.evictable.popitem(last=False)
            del e.refs[pid]
            e.empty += gb
        e.empty -= m

    def decoding(i: int) -> bool:
        return computed[i] >= target[i]

    def drop_refs(e: _Engine, i: int) -> None:
        for j in reversed(range(shared[i])):
            pid = ids_of[i][j]
            e.refs[pid] -= 1
            if e.refs[pid] == 0:
                e.evictable[pid] = True
        shared[i] = 0
        closed[i] = False

    def release(e: _Engine, i: int) -> None:
        e.empty += private[i]
        private[i] = 0
        drop_refs(e, i)
        computed[i] = 0
        target[i] = 0

    def done(e: _Engine, i: int, now: float) -> None:
        e.outstanding -= 1
        e.out_tokens -= prompt[i]
        issue_next(now)

    def requeue(e: _Engine, i: int) -> None:
        if priority_scheduling:
            e.waiting.append(i)
        else:
            e.waiting.insert(0, i)

    def preempt(e: _Engine, v: int, now: float) -> None:
        was_decoding = decoding(v)
        e.running.remove(v)
        preemptions[v] += 1
        e.stats["preemptions"] += 1
        if was_decoding:
            last_token[v] = now
        if (was_decoding and preemption == _core.PREEMPT_SWAP
                and e.swap_used + private[v] <= e.swap_capacity):
            e.empty += private[v]
            e.swap_used += private[v]
            e.stats["swap_out_blocks"] += private[v]
            host[v] = private[v]
            private[v] = 0
            status[v] = SWAPPED
            e.swapped.append(v)
            return
        release(e, v)
        if generated[v] == 0:
            prefill_lost[v] += prefill_busy[v]
            prefill_busy[v] = 0.0
        status[v] = WAITING
        requeue(e, v)

    def next_waiting(e: _Engine) -> int:
        if priority_scheduling:
            return min(e.waiting, key=lambda i: (prio[i], i))
        return e.waiting[0]

    def check(e: _Engine, step_tokens: int) -> None:
        run, wait, swap = set(e.running), set(e.waiting), set(e.swapped)
        assert len(run) == len(e.running) and len(wait) == len(e.waiting)
        assert not (run & wait) and not (run & swap) and not (wait & swap), "request in two queues"
        assert all(status[i] == RUNNING for i in run) and all(status[i] == WAITING for i in wait)
        assert all(status[i] == SWAPPED for i in swap)
        referenced = sum(1 for refs in e.refs.values() if refs > 0)
        assert len(e.evictable) == len(e.refs) - referenced
        holding = run | set(e.ready) | {i for i in range(n) if status[i] == TRANSFER
                                        and engines[decode_of[i]] is e and i not in e.incoming}
        held_here = sum(private[i] for i in run) + sum(
            _ceil_div(prompt[i] + generated[i] + K, B) for i in holding - run)
        prefill_side = sum(_ceil_div(computed[i], B) - shared[i] * gb for i in range(n)
                           if status[i] == TRANSFER and engines[replica_of[i]] is e
                           and math.isnan(kv_ready[i]))
        used = held_here + prefill_side + referenced * gb
        assert used + free(e) == e.capacity, "KV blocks leaked or double counted"
        assert 0 <= e.empty and used <= e.capacity
        assert e.swap_used == sum(host[i] for i in swap) <= max(e.swap_capacity, 0)
        for i in run:  # each running request holds exactly the blocks its KV needs
            if not decoding(i):
                want = computed[i] + chunk[i]
            else:
                want = prompt[i] + generated[i] + K
            assert private[i] + shared[i] * gb == _ceil_div(want, B), "wrong block count"
        assert step_tokens <= e.max_tokens and len(run) + e.inflight <= e.max_seqs

    def price(e: _Engine, shape: StepShape, now: float, extra: float, act: list) -> float:
        pipe = pipes[e.pipe]
        if pipe.stages == 1:
            d = step_seconds(pipe.costs[0], shape)
            _add_activity(act, pipe.costs[0], shape)
            pipe.stage_busy[0] += extra + d
            return extra + d
        t = now + extra
        for k, row in enumerate(pipe.costs):
            t = max(t, pipe.stage_free[k])
            d = step_seconds(row, shape)
            _add_activity(act, row, shape)
            t += d
            pipe.stage_free[k] = t
            pipe.stage_busy[k] += d
        return t - now

    def start_step(r: int, now: float) -> None:
        nonlocal seq
        touch(r, now)
        e = engines[r]
        swaps_before = e.stats["swap_out_blocks"] + e.stats["swap_in_blocks"]
        preempted = False

        def plan() -> tuple[int, list, int]:
            decs = [i for i in e.running if decoding(i)]
            if K > 0:
                need = sum(max(0, _ceil_div(prompt[i] + generated[i] + K, B) - shared[i] * gb
                               - private[i]) for i in decs)
            else:
                need = sum(1 for i in decs if (prompt[i] + generated[i] - 1) % B == 0)
            left = e.max_tokens - len(decs) * (1 + K)
            used = 0
            growth = []
            for i in e.running:
                if not decoding(i):
                    c = max(0, min(target[i] - computed[i], left - used))
                    chunk[i] = c
                    used += c
                    growth.append((i, _ceil_div(computed[i] + c, B) - _ceil_div(computed[i], B)))
            return need, growth, used

        need, growth, pre_tokens = plan()
        while need + sum(g for _, g in growth) > free(e):
            if len(e.running) == 1:
                v = e.running[0]
                e.running.remove(v)
                release(e, v)
                status[v] = REJECTED_KV
                done(e, v, now)
            else:
                if priority_scheduling:
                    v = max(e.running, key=lambda i: (prio[i], i))
                else:
                    v = e.running[-1]
                preempt(e, v, now)
                preempted = True
            need, growth, pre_tokens = plan()
        take(e, need + sum(g for _, g in growth))
        for i in e.running:
            if decoding(i):
                if K > 0:
                    private[i] = max(private[i],
                                     _ceil_div(prompt[i] + generated[i] + K, B) - shared[i] * gb)
                elif (prompt[i] + generated[i] - 1) % B == 0:
                    private[i] += 1
        for i, g in growth:
            private[i] += g
        decodes = [i for i in e.running if decoding(i)]
        prefills = [i for i in e.running if not decoding(i)]
        tokens = sum(chunk[i] for i in prefills)
        e.stats["recompute_tokens"] += sum(chunk[i] for i in prefills if preemptions[i] > 0)
        pairs = sum(chunk[i] * computed[i] + chunk[i] * (chunk[i] + 1) // 2 for i in prefills if chunk[i])
        context = sum(computed[i] for i in prefills if chunk[i])
        longest = 0
        joins: list[int] = []

        budget = e.max_tokens - len(decodes) * (1 + K) - pre_tokens
        admitting = (not preempted or not e.running) and (policy != STATIC or not e.running)
        while admitting:
            while e.ready and budget >= 1 + K:
                i = e.ready.pop(0)
                e.inflight -= 1
                status[i] = RUNNING
                e.running.append(i)
                joins.append(i)
                budget -= 1 + K
            while e.swapped and len(e.running) + e.inflight < e.max_seqs and budget > 0:
                i = e.swapped[0]
                need = _ceil_div(prompt[i] + generated[i], B) - shared[i] * gb
                if need > free(e):
                    break
                e.swapped.pop(0)
                e.swap_used -= host[i]
                e.stats["swap_in_blocks"] += host[i]
                host[i] = 0
                take(e, need)
                private[i] = need
                status[i] = RUNNING
                e.running.append(i)
                joins.append(i)
                budget -= 1
            while e.incoming and len(e.running) + e.inflight < e.max_seqs:
                i = e.incoming[0]
                need = _ceil_div(prompt[i] + generated[i] + K, B)
                if need > free(e):
                    break
                e.incoming.pop(0)
                take(e, need)
                e.inflight += 1
                link = pipes[engines[replica_of[i]].pipe]
                start = max(now, link.link_free)
                done_at = start + kv_link_latency_s + kv_bytes_per_token * prompt[i] / kv_link_bytes_per_s
                link.link_busy += done_at - start
                link.link_free = done_at
                link.transfers += 1
                heapq.heappush(events, (done_at, seq, KV_ARRIVED, i))
                seq += 1
            while not e.swapped and e.waiting and len(e.running) + e.inflight < e.max_seqs and budget > 0:
                i = next_waiting(e)
                tgt = prompt[i] + generated[i]
                k = 0
                if prefix_caching:
                    limit = min(len(ids_of[i]), prompt[i] // G, (tgt - 1) // G)
                    while k < limit and ids_of[i][k] in e.refs:
                        k += 1
                hit = k * G
                if policy != CHUNKED and tgt - hit > e.max_tokens:
                    e.waiting.remove(i)
                    status[i] = REJECTED_BUDGET
                    done(e, i, now)
                    continue
                if _ceil_div(tgt, B) > e.capacity:
                    e.waiting.remove(i)
                    status[i] = REJECTED_KV
                    done(e, i, now)
                    continue
                c = tgt - hit
                if policy == CHUNKED:
                    c = min(c, budget)
                elif c > budget:
                    break
                need = _ceil_div(hit + c, B) - k * gb
                touched = sum(gb for pid in ids_of[i][:k] if e.refs[pid] == 0)
                if need + touched > free(e):
                    break
                e.waiting.remove(i)
                for pid in ids_of[i][:k]:
                    if e.refs[pid] == 0:
                        del e.evictable[pid]
                    e.refs[pid] += 1
                if prefix_caching:
                    e.stats["prefix_query_tokens"] += tgt
                    e.stats["prefix_hit_tokens"] += hit
                if math.isnan(admitted[i]):
                    admitted[i] = now
                    prefix_hit[i] = hit
                shared[i] = k
                closed[i] = False
                computed[i] = hit
                target[i] = tgt
                chunk[i] = c
                take(e, need)
                private[i] = need
                status[i] = RUNNING
                e.running.append(i)
                prefills.append(i)
                tokens += c
                if preemptions[i] > 0:
                    e.stats["recompute_tokens"] += c
                pairs += c * hit + c * (c + 1) // 2
                context += hit
                longest = max(longest, c)
                budget -= c
            if e.running or not e.swapped:
                break
            # nothing runs and the oldest swapped request cannot come back: recompute it
            v = e.swapped.pop(0)
            e.swap_used -= host[v]
            host[v] = 0
            drop_refs(e, v)
            computed[v] = 0
            target[v] = 0
            status[v] = WAITING
            requeue(e, v)

        all_decodes = decodes + joins
        if not prefills and not all_decodes:
            return
        logits = sum(1 for i in prefills if computed[i] + chunk[i] == target[i])
        shape_tokens, shape_pairs = float(tokens), float(pairs)
        if policy == STATIC and prefills:
            shape_tokens = float(len(prefills) * longest)
            shape_pairs = float(len(prefills) * (longest * (longest + 1) // 2))
        extra = 0.0
        act = [0.0, 0.0]  # compute and memory time, draft passes first, as the kernel adds them
        if K == 0:
            shape = StepShape(
                prefill_tokens=shape_tokens, prefill_pairs=shape_pairs,
                prefill_context=float(context), logit_tokens=float(logits + len(all_decodes)),
                decode_tokens=float(len(all_decodes)),
                decode_context=float(sum(prompt[i] + generated[i] for i in all_decodes)))
        else:
            nd = len(all_decodes)
            ctx = 0.0
            for i in e.running:
                if decoding(i):
                    ctx += float(prompt[i] + generated[i] - 1)
            prefill_only = StepShape(prefill_tokens=shape_tokens, prefill_pairs=shape_pairs,
                                     prefill_context=float(context), logit_tokens=float(logits))
            shape = StepShape(
                prefill_tokens=shape_tokens + float(nd * (K + 1)),
                prefill_pairs=shape_pairs + ((K + 1) * ctx + float(nd * ((K + 1) * (K + 2) // 2))),
                prefill_context=float(context) + ctx,
                logit_tokens=float(logits + nd * (K + 1)))
            if drafts is not None:
                draft = drafts[e.pool]
                d = 0.0
                if prefill_only.prefill_tokens > 0:
                    d += step_seconds(draft, prefill_only)
                    _add_activity(act, draft, prefill_only)
                if nd:
                    dctx = 0.0
                    for i in e.running:
                        if decoding(i):
                            dctx += float(prompt[i] + generated[i])
                    for j in range(K):
                        pass_ = StepShape(logit_tokens=float(nd), decode_tokens=float(nd),
                                          decode_context=dctx + float(j * nd))
                        d += step_seconds(draft, pass_)
                        _add_activity(act, draft, pass_)
                extra += d
        if preemption == _core.PREEMPT_SWAP:
            extra += e.swap_s * (e.stats["swap_out_blocks"] + e.stats["swap_in_blocks"] - swaps_before)
        dur = price(e, shape, now, extra, act)
        e.compute_s += act[0]
        e.memory_s += act[1]
        e.step_compute_frac = act[0] / dur if dur > 0.0 else 0.0
        e.step_memory_frac = act[1] / dur if dur > 0.0 else 0.0
        e.busy = True
        e.step_start = now
        e.step_dur = dur
        e.step_prefills = prefills
        e.step_decodes = decodes
        e.step_joins = joins
        e.step_blocks = e.capacity - free(e)
        st = e.stats
        st["steps"] += 1
        st["prefill_tokens"] += tokens
        st["decode_tokens"] += len(all_decodes)
        st["max_step_tokens"] = max(st["max_step_tokens"], tokens + len(all_decodes) * (1 + K))
        st["kv_peak_blocks"] = max(st["kv_peak_blocks"], e.step_blocks)
        e.busy_s += dur
        e.kv_block_s += e.step_blocks * dur
        if check_invariants:
            check(e, tokens + len(all_decodes) * (1 + K))
        heapq.heappush(events, (now + dur, seq, STEP_END, r))
        seq += 1

    def finish(e: _Engine, i: int, now: float) -> None:
        e.running.remove(i)
        release(e, i)
        status[i] = FINISHED
        completion[i] = now
        done(e, i, now)

    def least_loaded(pipe: _Pipe) -> int:
        idx = range(pipe.first_engine, pipe.first_engine + pipe.stages)
        return min(idx, key=lambda k: (engines[k].outstanding, k))

    def pipe_load(p: int) -> int:
        pipe = pipes[p]
        return sum(engines[k].outstanding for k in range(pipe.first_engine, pipe.first_engine + pipe.stages))

    def hand_over(e: _Engine, i: int, now: float) -> None:
        handoff[i] = now
        d_pipe = min(pool_pipes[1], key=lambda p: (pipe_load(p), p))
        d = least_loaded(pipes[d_pipe])
        touch(d, now)
        dec = engines[d]
        e.running.remove(i)
        e.handoff += 1
        e.outstanding -= 1
        e.out_tokens -= prompt[i]
        e.stats["kv_sent"] += 1
        status[i] = TRANSFER
        decode_of[i] = d
        dec.outstanding += 1
        dec.out_tokens += prompt[i]
        dec.incoming.append(i)
        dirty_add(d)

    def kv_arrived(i: int, now: float) -> None:
        touch(replica_of[i], now)
        touch(decode_of[i], now)
        pre = engines[replica_of[i]]
        dec = engines[decode_of[i]]
        pre.empty += _ceil_div(computed[i], B) - shared[i] * gb
        drop_refs(pre, i)
        pre.handoff -= 1
        dirty_add(replica_of[i])
        kv_ready[i] = now
        dec.stats["kv_received"] += 1
        private[i] = _ceil_div(prompt[i] + generated[i] + K, B)
        dec.ready.append(i)
        dirty_add(decode_of[i])

    def end_step(r: int, now: float) -> None:
        touch(r, now)
        e = engines[r]
        if e.step_decodes:
            gap(e.step_dur, len(e.step_decodes))
        for i in e.step_joins:
            if generated[i] == 0:
                first_token[i] = now
            else:
                gap(now - last_token[i], 1)
        if K > 0:
            for i in list(e.running):
                if not decoding(i):
                    continue
                got = 1
                for j in range(K):
                    if rng.uniform() >= acc[j]:
                        break
                    got += 1
                got = min(got, output[i] - generated[i])
                generated[i] += got
                e.stats["spec_tokens"] += got
                if generated[i] >= output[i]:
                    finish(e, i, now)
        for i in e.step_prefills:
            if chunk[i] > 0 and generated[i] == 0:
                prefill_busy[i] += e.step_dur
            computed[i] += chunk[i]
            chunk[i] = 0
            if prefix_caching:
                limit = min(len(ids_of[i]), prompt[i] // G)
                while not closed[i] and shared[i] < limit and (shared[i] + 1) * G <= computed[i]:
                    pid = ids_of[i][shared[i]]
                    if pid in e.refs:
                        closed[i] = True
                        break
                    e.refs[pid] = 1
                    private[i] -= gb
                    shared[i] += 1
            if computed[i] < target[i]:
                continue
            if disagg and e.pool == 0:
                hand_over(e, i, now)
                continue
            generated[i] += 1
            if generated[i] == 1:
                first_token[i] = now
            else:
                gap(now - last_token[i], 1)
            last_token[i] = now
            if generated[i] >= output[i]:
                finish(e, i, now)
        if K == 0:
            for i in sorted(e.step_decodes + e.step_joins):
                generated[i] += 1
                if generated[i] >= output[i]:
                    finish(e, i, now)
        e.busy = False

    def route(i: int) -> int:
        entry = pool_pipes[0]
        npipes = len(entry)
        if npipes == 1:
            best = entry[0]
        elif router == _core.ROUTER_ROUND_ROBIN:
            best = entry[rr[0]]
            rr[0] = (rr[0] + 1) % npipes
        elif router == _core.ROUTER_RANDOM:
            best = entry[rng.next() % npipes]
        elif router == _core.ROUTER_POWER_OF_TWO:
            a = rng.next() % npipes
            b = rng.next() % (npipes - 1)
            if b >= a:
                b += 1
            best = entry[b] if pipe_load(entry[b]) < pipe_load(entry[a]) else entry[a]
        elif router == _core.ROUTER_LEAST_TOKENS:
            def tokens_of(p: int) -> int:
                pipe = pipes[p]
                return sum(engines[k].out_tokens for k in range(pipe.first_engine, pipe.first_engine + pipe.stages))
            best = min(entry, key=lambda p: (tokens_of(p), p))
        else:
            loads = [pipe_load(p) for p in entry]
            best = entry[loads.index(min(loads))]
            lo, hi = min(loads), max(loads)
            if (router == _core.ROUTER_PREFIX_AFFINITY and prefix_caching
                    and not (hi - lo > balance_abs and hi > balance_rel * lo)):
                best_k, cand = 0, best
                for p in entry:
                    pipe = pipes[p]
                    for k in range(pipe.first_engine, pipe.first_engine + pipe.stages):
                        got = cached(engines[k], i)
                        if got > best_k:
                            best_k, cand = got, p
                if best_k * G > cache_threshold * prompt[i]:
                    best = cand
        pipe = pipes[best]
        if pipe.stages == 1:
            return pipe.first_engine
        if router == _core.ROUTER_PREFIX_AFFINITY and prefix_caching:
            idx = range(pipe.first_engine, pipe.first_engine + pipe.stages)
            return min(idx, key=lambda k: (-cached(engines[k], i), engines[k].outstanding, k))
        return least_loaded(pipe)

    def cached(e: _Engine, i: int) -> int:
        k = 0
        limit = min(len(ids_of[i]), prompt[i] // G)
        while k < limit and ids_of[i][k] in e.refs:
            k += 1
        return k

    dirty: list[int] = []

    def dirty_add(r: int) -> None:
        if r not in dirty:
            dirty.append(r)

    cursor = 0
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
        end_time = now
        dirty.clear()
        while events and events[0][0] <= now:
            _, _, kind, target_ = heapq.heappop(events)
            events_processed += 1
            if kind == KV_ARRIVED:
                kv_arrived(target_, now)
                continue
            end_step(target_, now)
            dirty_add(target_)
        while cursor < n_issued and arrival[cursor] <= now:
            r = route(cursor)
            touch(r, now)
            replica_of[cursor] = r
            status[cursor] = WAITING
            engines[r].outstanding += 1
            engines[r].out_tokens += prompt[cursor]
            engines[r].waiting.append(cursor)
            events_processed += 1
            dirty_add(r)
            cursor += 1
        while dirty:  # the kernel's dirty stack: the last marked is scheduled first
            r = dirty.pop()
            if not engines[r].busy:
                start_step(r, now)

    for r in range(len(engines)):
        touch(r, end_time)
    for e in engines:
        if e.busy and e.step_start + e.step_dur > stop_time_s:
            over = e.step_start + e.step_dur - stop_time_s
            e.busy_s -= over
            e.kv_block_s -= e.step_blocks * over
            e.compute_s -= e.step_compute_frac * over
            e.memory_s -= e.step_memory_frac * over
    for pipe in pipes:
        for k in range(pipe.stages):
            if pipe.stages > 1 and pipe.stage_free[k] > stop_time_s:
                over = pipe.stage_free[k] - stop_time_s
                pipe.stage_busy[k] -= min(over, pipe.stage_busy[k])
        if pipe.link_free > stop_time_s:
            pipe.link_busy -= pipe.link_free - stop_time_s

    def col(values: list, dtype: type) -> np.ndarray:
        return np.array(values, dtype=dtype)

    counts = {name: col([e.stats[name] for e in engines], np.int64) for name in engines[0].stats}
    replicas: dict[str, np.ndarray] = {name: counts[name] for name in (
        "steps", "preemptions", "swap_out_blocks", "swap_in_blocks", "prefill_tokens",
        "recompute_tokens", "decode_tokens", "prefix_query_tokens", "prefix_hit_tokens",
        "max_step_tokens", "kv_peak_blocks")}
    replicas["kv_blocks_in_use_at_end"] = col([e.capacity - free(e) for e in engines], np.int64)
    replicas["swapped_at_end"] = col([len(e.swapped) for e in engines], np.int64)
    replicas["capacity_blocks"] = col([e.capacity for e in engines], np.int64)
    replicas["pool"] = col([e.pool for e in engines], np.int64)
    replicas["pipe"] = col([e.pipe for e in engines], np.int64)
    for name in ("spec_tokens", "kv_sent", "kv_received"):
        replicas[name] = counts[name]
    replicas["busy_s"] = col([e.busy_s for e in engines], np.float64)
    replicas["kv_block_seconds"] = col([e.kv_block_s for e in engines], np.float64)
    replicas["compute_s"] = col([e.compute_s for e in engines], np.float64)
    replicas["memory_s"] = col([e.memory_s for e in engines], np.float64)
    pipe_stats = {
        "pool": col([p.pool for p in pipes], np.int64),
        "stages": col([p.stages for p in pipes], np.int64),
        "kv_transfers": col([p.transfers for p in pipes], np.int64),
        "busiest_stage_busy_s": col([max(max(p.stage_busy), 0.0) for p in pipes], np.float64),
        "mean_stage_busy_s": col([_sum_in_order(p.stage_busy) / p.stages for p in pipes], np.float64),
        "kv_link_busy_s": col([p.link_busy for p in pipes], np.float64),
    }
    return {
        "arrival_s": col(arrival, np.float64),
        "first_token_s": col(first_token, np.float64),
        "completion_s": col(completion, np.float64),
        "admitted_s": col(admitted, np.float64),
        "kv_ready_s": col(kv_ready, np.float64),
        "handoff_s": col(handoff, np.float64),
        "prefill_busy_s": col(prefill_busy, np.float64),
        "prefill_lost_s": col(prefill_lost, np.float64),
        "timeseries": _timeseries(ts, len(engines), timeseries_dt, end_time),
        "timeseries_dt": timeseries_dt,
        "preemptions": col(preemptions, np.int32),
        "generated_tokens": col(generated, np.int32),
        "status": col(status, np.int8),
        "replica": col(replica_of, np.int32),
        "decode_replica": col(decode_of, np.int32),
        "prefix_hit_tokens": col(prefix_hit, np.int32),
        "replicas": replicas,
        "pipes": pipe_stats,
        "itl_histogram": hist,
        "itl_sum_s": itl["sum"],
        "itl_count": itl["count"],
        "itl_max_s": itl["max"],
        "events": events_processed,
        "end_time_s": end_time,
    }


def _add_activity(act: list, row: CostCoefficients, shape: StepShape) -> None:
    c, m = step_activity(row, shape)
    act[0] += c
    act[1] += m


def _sum_in_order(values: list) -> float:
    total = 0.0
    for v in values:
        total += v
    return total


def _timeseries(ts: dict, engines: int, dt: float, end_time: float) -> Optional[np.ndarray]:
    if dt <= 0.0:
        return None
    buckets = int(end_time / dt)
    if buckets * dt < end_time or buckets == 0:
        buckets += 1
    out = np.zeros((buckets, engines, len(_core.TIMESERIES_FIELDS)))
    for (b, r), values in ts.items():
        if b < buckets:
            out[b, r] = values
    return out
