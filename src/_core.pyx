# The compiled core of tokenmill: event loop and batch-step kernel in one translation unit.
#
# Everything here runs per event. Nothing on these paths calls back into Python, allocates
# per step, or walks a whole queue: state is struct-of-arrays indexed by request and by
# replica, queues are linked lists or heaps threaded through per-request arrays, and a decode
# step is priced from running sums rather than by visiting every running request.
#
# Serving policies (docs/schedulers.md has the rules and worked examples):
#   POLICY_ORCA     iteration-level batching, whole prompts; budget = decodes + prompt tokens
#   POLICY_CHUNKED  vLLM V1 / Sarathi-Serve: running requests first (decodes, then the prefill
#                   in progress), then waiting requests with their prompts chunked to fill the
#                   token budget; prefill and decode tokens share each step
#   POLICY_STATIC   request-level batching: a batch forms only on an empty replica and runs
#                   until its last member finishes; prompts are padded to the longest
#
# How a decoding request is tracked without touching it every step
# ----------------------------------------------------------------
# Every decoding request takes part in every step of its replica and gets one token per step.
# So a decoding request i on a replica whose step counter is t holds `generated = t - base[i]`
# tokens once step t has finished, where base is fixed when it starts decoding. From that:
#   * its completion step, base + output_tokens (kept in a per-replica min-heap);
#   * the KV tokens a decode at step t needs, prompt + t - 1 - base: it needs a new block
#     exactly when (prompt - 2 - base + t) is a multiple of the block size; decoders are
#     bucketed by that phase, and the blocks a step needs are one bucket count;
#   * the total context the decodes attend to: sum(prompt - 1 - base) + n_decode * t.
# Per-request work is therefore only done at admission, prefill chunks, preemption and
# completion.

cimport cython
from libc.stdint cimport int8_t, int32_t, int64_t, uint64_t
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memcpy
from libc.math cimport INFINITY, NAN, isnan, isfinite

from event_heap cimport Event, EventHeap, heap_init, heap_release, heap_push, heap_pop
from index_heap cimport (IHeap, iheap_init, iheap_release, iheap_push, iheap_remove,
                         iheap_pop)
from itl_hist cimport ITL_NBINS, ITL_MANTISSA_BITS, ITL_MIN_EXPONENT, itl_bin
from prefix_cache cimport (PrefixCache, prefix_init, prefix_release, prefix_find, prefix_ref,
                           prefix_unref, prefix_insert, prefix_evict_oldest)
from step_cost cimport (CostCoeffs, COST_NFIELDS, COST_NSCALARS, KT_GRID, KT_OPS, KT_ROWS,
                       StepShape, step_seconds, step_activity)

import numpy as np


# Request status codes (exported to Python as STATUS_* below).
cdef enum:
    ST_PENDING = 0          # has not arrived before the simulation stopped
    ST_WAITING = 1          # arrived, queued (never admitted, or preempted and requeued)
    ST_RUNNING = 2          # admitted: prefilling or decoding
    ST_FINISHED = 3
    ST_REJECTED_BUDGET = 4  # its (re)prefill needs more tokens than one step may hold
    ST_REJECTED_KV = 5      # it needs more KV blocks than the replica has in all
    ST_SWAPPED = 6          # preempted by swapping its KV out to host memory
    ST_TRANSFER = 7         # prefilled on a prefill replica, its KV not yet on a decode replica

cdef enum:
    EV_STEP_END = 0         # target: engine
    EV_KV_ARRIVED = 1       # target: request

cdef enum:
    TS_FIELDS = 6           # queue, running, kv blocks, busy, compute, memory

cdef enum:
    RT_ROUND_ROBIN = 0
    RT_RANDOM = 1
    RT_LEAST_REQUESTS = 2
    RT_LEAST_TOKENS = 3
    RT_POWER_OF_TWO = 4
    RT_PREFIX_AFFINITY = 5

cdef enum:
    POL_ORCA = 0
    POL_CHUNKED = 1
    POL_STATIC = 2

cdef enum:
    PRE_RECOMPUTE = 0
    PRE_SWAP = 1

STATUS_PENDING = ST_PENDING
STATUS_WAITING = ST_WAITING
STATUS_RUNNING = ST_RUNNING
STATUS_FINISHED = ST_FINISHED
STATUS_REJECTED_BUDGET = ST_REJECTED_BUDGET
STATUS_REJECTED_KV = ST_REJECTED_KV
STATUS_SWAPPED = ST_SWAPPED
STATUS_TRANSFER = ST_TRANSFER

TIMESERIES_FIELDS = ("queue", "running", "kv_blocks", "busy", "compute", "memory")

ROUTER_ROUND_ROBIN = RT_ROUND_ROBIN
ROUTER_RANDOM = RT_RANDOM
ROUTER_LEAST_REQUESTS = RT_LEAST_REQUESTS
ROUTER_LEAST_TOKENS = RT_LEAST_TOKENS
ROUTER_POWER_OF_TWO = RT_POWER_OF_TWO
ROUTER_PREFIX_AFFINITY = RT_PREFIX_AFFINITY

POLICY_ORCA = POL_ORCA
POLICY_CHUNKED = POL_CHUNKED
POLICY_STATIC = POL_STATIC
PREEMPT_RECOMPUTE = PRE_RECOMPUTE
PREEMPT_SWAP = PRE_SWAP

COST_SCALARS = (
    "overhead_prefill_s", "overhead_decode_s", "overhead_per_token_s", "gemm_half_rows",
    "flops_per_s", "attn_s_per_flop", "attn_half_pairs", "kv_s_per_byte", "bytes_per_s",
    "elementwise_s_per_byte", "kernel_fixed_s", "prefill_launch_floor_s",
    "decode_launch_floor_s", "graph_max_decodes",
    "qkv_flops_per_row", "qkv_weight_bytes", "qkv_act_bytes_per_row",
    "o_flops_per_row", "o_weight_bytes", "o_act_bytes_per_row",
    "mlp_in_flops_per_row", "mlp_in_weight_bytes", "mlp_in_act_bytes_per_row",
    "mlp_out_flops_per_row", "mlp_out_weight_bytes", "mlp_out_act_bytes_per_row",
    "lm_head_flops_per_row", "lm_head_weight_bytes", "lm_head_act_bytes_per_row",
    "expert_flops_per_row", "expert_bytes", "expert_act_bytes_per_row",
    "num_experts", "expert_miss", "experts_per_token",
    "flops_per_attn_pair", "flops_per_decode_pair_extra", "flops_per_window_pair",
    "kv_bytes_per_token", "kv_window_bytes_per_token", "window_tokens",
    "elementwise_bytes_per_token",
    "ar_ring_fixed_s", "ar_ring_per_token_s", "ar_tree_fixed_s", "ar_tree_per_token_s",
    "a2a_fixed_s", "a2a_per_token_s", "send_fixed_s", "send_per_token_s",
)
# Kernel-table slots after the scalars: (name, length) in struct order.
COST_ARRAYS = (
    ("kt_decode_nb", 1), ("kt_decode_ns", 1), ("kt_decode_batch", KT_GRID),
    ("kt_decode_seq", KT_GRID), ("kt_decode_s", KT_GRID * KT_GRID),
    ("kt_prefill_nb", 1), ("kt_prefill_ns", 1), ("kt_prefill_batch", KT_GRID),
    ("kt_prefill_seq", KT_GRID), ("kt_prefill_s", KT_GRID * KT_GRID),
    ("kt_op_n", KT_OPS), ("kt_op_rows", KT_OPS * KT_ROWS), ("kt_op_s", KT_OPS * KT_ROWS),
)
KERNEL_TABLE_GRID = KT_GRID
KERNEL_TABLE_OPS = KT_OPS
KERNEL_TABLE_ROWS = KT_ROWS
COST_FIELDS = COST_SCALARS + tuple(
    name if size == 1 else f"{name}[{k}]" for name, size in COST_ARRAYS for k in range(size))
assert len(COST_SCALARS) == COST_NSCALARS
assert sizeof(CostCoeffs) == COST_NFIELDS * sizeof(double)
assert len(COST_FIELDS) == COST_NFIELDS

ITL_BINS = ITL_NBINS
ITL_BIN_MANTISSA_BITS = ITL_MANTISSA_BITS
ITL_BIN_MIN_EXPONENT = ITL_MIN_EXPONENT


ctypedef struct Pipe:
    # One replica: `n_stages` pipeline stages, each a group of tensor-parallel chips, run by
    # `n_stages` virtual engines (vLLM V0's pipeline-parallel design: each engine schedules
    # its own requests on its share of the KV cache, and up to n_stages micro-batches flow
    # through the stages at once, one per stage).
    int64_t pool
    int64_t first_engine
    int64_t n_stages
    int64_t cost_row        # coefficients of stage k: costs[cost_row + k]
    double* stage_free      # when each stage finishes its current micro-batch
    double* stage_busy      # seconds each stage has computed
    double link_free        # disaggregated prefill: when its KV link is free again
    double link_busy
    int64_t transfers


ctypedef struct Replica:
    # A scheduling engine: one per replica, or one per pipeline stage of a replica.
    int64_t pool            # 0: the only pool, or the prefill pool; 1: the decode pool
    int64_t pipe
    int64_t max_tokens
    int64_t max_seqs
    int64_t capacity        # KV blocks of this engine
    int64_t swap_capacity
    double swap_s_per_block
    int64_t n_outstanding   # requests routed here and not yet finished or handed on
    int64_t out_tokens      # their prompt tokens (for the least-tokens router)
    int32_t in_head         # decode side of a disaggregated pool: requests handed over whose
    int32_t in_tail         # KV still has to be received, waiting for blocks (FIFO)
    int64_t n_incoming
    int32_t ready_head      # ... whose KV has arrived: they decode from the next step
    int32_t ready_tail
    int64_t n_inflight      # blocks allocated here for transfers in flight or arrived
    int64_t n_handoff       # prefill side: finished prefills holding KV until it is sent
    int64_t step            # index of the step in flight, or of the next step when idle
    bint busy
    bint dirty              # has something new to schedule at the current instant
    double step_start
    double step_dur
    int64_t step_blocks     # KV blocks in use while the step in flight runs
    # waiting requests: a FIFO list (wait_head..wait_tail through wait_next) or, under
    # priority scheduling, a heap ordered by (priority, arrival)
    int32_t wait_head
    int32_t wait_tail
    IHeap waitq
    int64_t n_waiting
    int32_t swap_head       # requests swapped out to host memory, FIFO through wait_next
    int32_t swap_tail
    int64_t n_swapped
    int64_t swap_used       # host blocks holding swapped-out KV
    int32_t run_head        # running requests in admission order; without priorities the
    int32_t run_tail        # tail is the preemption victim, as in vLLM
    int64_t n_running       # prefilling + decoding
    IHeap victims           # running requests by (priority, arrival), priority mode only
    int64_t n_decode
    int64_t ctx_base        # sum over decoders of (prompt - 1 - base)
    int64_t* phase          # decoders per block phase (block_size counters)
    IHeap done              # decoders keyed by completion step
    int32_t* pre_ids        # requests still prefilling, in admission order
    int64_t n_pre
    int32_t* swapin_ids     # requests that join the decodes in the step in flight (swapped
    int64_t n_swapin        # back in, or with their KV just received)
    int64_t step_decodes    # decoders of the step in flight that decoded the step before
    int64_t empty_blocks    # KV blocks holding nothing (cached evictable blocks not included)
    PrefixCache cache
    # statistics
    int64_t steps
    int64_t preemptions
    int64_t swap_out_blocks
    int64_t swap_in_blocks
    int64_t prefill_tokens
    int64_t recompute_tokens  # prompt tokens computed again after a preemption
    int64_t decode_tokens
    int64_t prefix_query_tokens
    int64_t prefix_hit_tokens
    int64_t max_step_tokens
    int64_t spec_tokens     # tokens produced by speculative decodes (accepted + 1 each)
    int64_t kv_sent         # requests whose KV this engine sent / received
    int64_t kv_received
    double busy_s
    double kv_block_s       # integral of blocks in use over time
    int64_t kv_peak
    # activity for the power model: the compute-time and memory-time terms of the step cost
    # (step_activity), summed over the steps and, for a pipelined engine, over its stages'
    # rows (stage-seconds); the step in flight's share of them per second of its duration
    double compute_s
    double memory_s
    double step_compute_frac
    double step_memory_frac


ctypedef struct Sim:
    int64_t n
    const double* arrival
    const int32_t* prompt
    const int32_t* output
    const int64_t* pfx_off
    const int64_t* pfx_ids
    # per-request results
    double* first_token
    double* completion
    double* admitted
    int32_t* preemptions
    int32_t* generated
    int8_t* status
    int32_t* replica_of     # the engine that took the request (its prefill engine if split)
    int32_t* decode_of      # disaggregated: the decode engine, else -1
    double* kv_ready        # disaggregated: when its KV reached the decode engine
    double* handoff         # disaggregated: when its prefill finished and it was handed over
    int32_t* prefix_hit
    # per-request working state
    int64_t* base
    int64_t* done_key       # base + output while decoding
    int64_t* prio_key       # priority (waiting order)
    int64_t* victim_key     # -priority (victim order)
    int32_t* done_pos
    int32_t* wait_pos
    int32_t* victim_pos
    int32_t* computed       # KV tokens of a prefilling request (its progress)
    int32_t* target         # tokens its prefill must reach: prompt + generated at admission
    int32_t* chunk          # prompt tokens scheduled for it in the step in flight
    int32_t* n_shared       # leading prefix granules it references in the cache
    int8_t* share_closed    # it met a granule cached by someone else: no further sharing
    int32_t* wait_next
    int32_t* run_prev
    int32_t* run_next
    double* last_token
    # engines, replicas, pools and policy
    Replica* reps
    int64_t n_reps
    Pipe* pipes
    int64_t n_pipes
    int64_t n_pools
    int64_t pool_first_pipe[2]
    int64_t pool_n_pipes[2]
    CostCoeffs* costs
    int64_t draft_row[2]    # speculative decoding: coefficients of the draft passes, per pool
    bint disagg
    double link_bytes_per_s
    double link_latency_s
    double xfer_bytes_per_token
    int64_t policy
    int64_t block_size
    bint priority
    int64_t preempt_mode
    bint caching
    int64_t granule         # tokens per prefix id
    int64_t granule_blocks
    int64_t router
    uint64_t rng
    int64_t balance_abs     # prefix-affinity routing falls back to load balancing when the
    double balance_rel      # replicas are this imbalanced (SGLang router defaults)
    double cache_threshold
    int64_t spec_k          # speculative tokens proposed per step (0: none)
    const double* spec_acc  # probability the j-th proposal is accepted, given the ones before
    int32_t* held           # speculative decoding: KV blocks a decoding request holds
    int64_t rr_next
    # time series: per bucket of ts_dt seconds and per engine, the integrals over time of the
    # queue (waiting, swapped and incoming requests), the running batch, the KV blocks in
    # use and the busy time, laid out [bucket][engine][TS_FIELDS]
    double ts_dt
    int64_t ts_cap
    int64_t ts_max          # most buckets kept: past it, pairs of buckets merge and ts_dt
                            # doubles (0: no limit)
    double* ts
    double* ts_last
    bint oom
    double* prefill_busy    # per request: time in steps that computed its prompt, before its
                            # first token, in the pass that completed it
    double* prefill_lost    # per request: the same in passes a recompute preemption discarded
    int32_t* dirty_stack
    int64_t n_dirty
    # inter-token gaps
    int64_t* itl_hist
    double itl_sum
    int64_t itl_count
    double itl_max
    EventHeap events
    int64_t events_processed
    # closed loop (issue_next): requests [0, n_issued) have an arrival time; in open loop
    # n_issued == n from the start. In closed loop `arrival` points at `issued_at`.
    int64_t n_issued
    const double* send_at   # earliest time each request may be sent (the caller's arrival_s)
    double* issued_at       # closed loop only: arrival times written as requests are issued
    double think_time


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

cdef inline int64_t ceil_div(int64_t a, int64_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline int64_t pos_mod(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t m = a % b
    return m + b if m < 0 else m


cdef inline void record_gap(Sim* s, double gap, int64_t count) noexcept nogil:
    s.itl_hist[itl_bin(gap)] += count
    s.itl_sum += gap * count
    s.itl_count += count
    if gap > s.itl_max:
        s.itl_max = gap


cdef inline void mark_dirty(Sim* s, int64_t r) noexcept nogil:
    if not s.reps[r].dirty:
        s.reps[r].dirty = True
        s.dirty_stack[s.n_dirty] = <int32_t> r
        s.n_dirty += 1


cdef inline int64_t free_blocks(Sim* s, Replica* rep) noexcept nogil:
    """Blocks a request may take: empty ones plus cached blocks nobody references."""
    return rep.empty_blocks + rep.cache.n_evictable * s.granule_blocks


cdef void ts_grow(Sim* s, int64_t bucket) noexcept nogil:
    """Make room for time-series buckets up to `bucket` (amortised doubling)."""
    cdef int64_t cap = s.ts_cap, k, width = s.n_reps * TS_FIELDS
    cdef double* grown
    while cap <= bucket:
        cap *= 2
    grown = <double*> realloc(s.ts, cap * width * sizeof(double))
    if grown == NULL:
        s.oom = True
        return
    for k in range(s.ts_cap * width, cap * width):
        grown[k] = 0.0
    s.ts = grown
    s.ts_cap = cap


cdef void ts_coarsen(Sim* s) noexcept nogil:
    """Merge bucket pairs (2j, 2j + 1) into bucket j and double the bucket length, so a run
    never keeps more than ts_max buckets (exact: bucket edges stay multiples of the new
    length, and each sum is formed in the same order by the reference)."""
    cdef int64_t j, w, width = s.n_reps * TS_FIELDS
    cdef int64_t used = s.ts_cap if s.ts_cap < s.ts_max else s.ts_max  # buckets held so far
    cdef int64_t half = (used + 1) // 2
    for j in range(half):
        for w in range(width):
            if 2 * j + 1 < used:
                s.ts[j * width + w] = s.ts[2 * j * width + w] + s.ts[(2 * j + 1) * width + w]
            else:
                s.ts[j * width + w] = s.ts[2 * j * width + w]
    for j in range(half * width, used * width):
        s.ts[j] = 0.0
    s.ts_dt *= 2.0


cdef inline void ts_touch(Sim* s, int64_t r, double now) noexcept nogil:
    """Add engine r's state since its last change to the time series. Called before anything
    that changes its queue, batch, KV use or busy state, so the state is constant in between.
    Inline for the common no-op (series off, or already touched at this instant: a step that
    ends and the next that starts at once)."""
    if s.ts_dt > 0.0 and now > s.ts_last[r]:
        ts_add(s, r, now)


cdef void ts_add(Sim* s, int64_t r, double now) noexcept nogil:
    """ts_touch's work: spread the state over the buckets from ts_last[r] to now."""
    cdef Replica* rep
    cdef double t0, end, seg, q, run, kv, busy, comp, mem
    cdef int64_t b, base
    t0 = s.ts_last[r]
    rep = &s.reps[r]
    q = <double> (rep.n_waiting + rep.n_swapped + rep.n_incoming)
    run = <double> rep.n_running
    kv = <double> (rep.capacity - free_blocks(s, rep))
    busy = 1.0 if rep.busy else 0.0
    comp = rep.step_compute_frac if rep.busy else 0.0
    mem = rep.step_memory_frac if rep.busy else 0.0
    b = <int64_t> (t0 / s.ts_dt)
    while t0 < now:
        if s.ts_max > 0 and b >= s.ts_max:
            ts_coarsen(s)
            b = b // 2
            continue
        if b >= s.ts_cap:
            ts_grow(s, b)
            if s.oom:
                return
        end = (b + 1) * s.ts_dt
        seg = (end if end < now else now) - t0
        base = (b * s.n_reps + r) * TS_FIELDS
        s.ts[base] += q * seg
        s.ts[base + 1] += run * seg
        s.ts[base + 2] += kv * seg
        s.ts[base + 3] += busy * seg
        s.ts[base + 4] += comp * seg
        s.ts[base + 5] += mem * seg
        t0 = end if end < now else now
        b += 1
    s.ts_last[r] = now


cdef inline void issue_next(Sim* s, double now) noexcept nogil:
    """A request ended (finished or rejected) at `now`: in closed loop its client sends the next
    unissued request after the think time, but not before that request's own send time (vLLM
    `bench serve --max-concurrency`). Issue times only grow, so `arrival` stays sorted for the
    cursor. In open loop every request is issued from the start and this does nothing."""
    cdef double t
    if s.n_issued < s.n:
        t = now + s.think_time
        if s.send_at[s.n_issued] > t:
            t = s.send_at[s.n_issued]
        s.issued_at[s.n_issued] = t
        s.n_issued += 1




cdef inline void take_blocks(Sim* s, Replica* rep, int64_t m) noexcept nogil:
    """Claim m empty blocks, evicting the oldest unreferenced cached granules if needed."""
    while rep.empty_blocks < m:
        prefix_evict_oldest(&rep.cache)
        rep.empty_blocks += s.granule_blocks
    rep.empty_blocks -= m


cdef inline int64_t usable_granules(Sim* s, int32_t i) noexcept nogil:
    """Prefix ids of request i that cover whole granules of its prompt."""
    cdef int64_t n_ids = s.pfx_off[i + 1] - s.pfx_off[i]
    cdef int64_t full = s.prompt[i] // s.granule
    return n_ids if n_ids < full else full


cdef inline int64_t kv_tokens(Sim* s, int32_t i) noexcept nogil:
    """Tokens whose KV request i holds while no step of it is in flight."""
    if s.computed[i] < s.target[i]:
        return s.computed[i]
    return s.prompt[i] + s.generated[i] - 1


cdef inline int64_t private_blocks(Sim* s, int32_t i, int64_t tokens) noexcept nogil:
    return ceil_div(tokens, s.block_size) - s.n_shared[i] * s.granule_blocks


# ---------------------------------------------------------------------------------------------
# Queues
# ---------------------------------------------------------------------------------------------

cdef inline void fifo_push_back(Sim* s, int32_t* head, int32_t* tail, int32_t i) noexcept nogil:
    s.wait_next[i] = -1
    if tail[0] < 0:
        head[0] = i
    else:
        s.wait_next[tail[0]] = i
    tail[0] = i


cdef inline void fifo_push_front(Sim* s, int32_t* head, int32_t* tail, int32_t i) noexcept nogil:
    s.wait_next[i] = head[0]
    head[0] = i
    if tail[0] < 0:
        tail[0] = i


cdef inline int32_t fifo_pop(Sim* s, int32_t* head, int32_t* tail) noexcept nogil:
    cdef int32_t i = head[0]
    head[0] = s.wait_next[i]
    if head[0] < 0:
        tail[0] = -1
    return i


cdef inline int wait_add(Sim* s, Replica* rep, int32_t i, bint front) noexcept nogil:
    """Queue request i to wait; preempted requests go to the front (FIFO) or by priority."""
    rep.n_waiting += 1
    if s.priority:
        return iheap_push(&rep.waitq, i)
    if front:
        fifo_push_front(s, &rep.wait_head, &rep.wait_tail, i)
    else:
        fifo_push_back(s, &rep.wait_head, &rep.wait_tail, i)
    return 0


cdef inline int32_t wait_peek(Sim* s, Replica* rep) noexcept nogil:
    if rep.n_waiting == 0:
        return -1
    return rep.waitq.items[0] if s.priority else rep.wait_head


cdef inline void wait_pop(Sim* s, Replica* rep) noexcept nogil:
    rep.n_waiting -= 1
    if s.priority:
        iheap_pop(&rep.waitq)
    else:
        fifo_pop(s, &rep.wait_head, &rep.wait_tail)


cdef inline int run_append(Sim* s, Replica* rep, int32_t i) noexcept nogil:
    s.run_prev[i] = rep.run_tail
    s.run_next[i] = -1
    if rep.run_tail < 0:
        rep.run_head = i
    else:
        s.run_next[rep.run_tail] = i
    rep.run_tail = i
    rep.n_running += 1
    if s.priority:
        return iheap_push(&rep.victims, i)
    return 0


cdef inline void run_remove(Sim* s, Replica* rep, int32_t i) noexcept nogil:
    cdef int32_t p = s.run_prev[i], q = s.run_next[i]
    if p < 0:
        rep.run_head = q
    else:
        s.run_next[p] = q
    if q < 0:
        rep.run_tail = p
    else:
        s.run_prev[q] = p
    rep.n_running -= 1
    if s.priority:
        iheap_remove(&rep.victims, i)


cdef inline void pre_remove(Replica* rep, int32_t i) noexcept nogil:
    cdef int64_t k = 0
    while rep.pre_ids[k] != i:
        k += 1
    while k + 1 < rep.n_pre:
        rep.pre_ids[k] = rep.pre_ids[k + 1]
        k += 1
    rep.n_pre -= 1


cdef inline uint64_t rng_next(Sim* s) noexcept nogil:
    """splitmix64: a small, fast, seeded generator the Python reference reproduces exactly."""
    cdef uint64_t z
    s.rng += 0x9E3779B97F4A7C15ULL
    z = s.rng
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline double rng_uniform(Sim* s) noexcept nogil:
    return <double> (rng_next(s) >> 11) * (1.0 / 9007199254740992.0)


# ---------------------------------------------------------------------------------------------
# Decoding set membership
# ---------------------------------------------------------------------------------------------

cdef inline int decode_join(Sim* s, Replica* rep, int32_t i, int64_t b) noexcept nogil:
    """Request i decodes from now on; after step t it holds t - b tokens (without speculation:
    with it, tokens per step vary and decoders are tracked one by one)."""
    rep.n_decode += 1
    if s.spec_k > 0:
        return 0
    s.base[i] = b
    s.done_key[i] = b + s.output[i]
    rep.phase[pos_mod(s.prompt[i] - 2 - b, s.block_size)] += 1
    rep.ctx_base += s.prompt[i] - 1 - b
    return iheap_push(&rep.done, i)


cdef inline void decode_leave(Sim* s, Replica* rep, int32_t i) noexcept nogil:
    """Request i stops decoding after step rep.step - 1 finished; fixes generated[i]."""
    cdef int64_t b = s.base[i]
    rep.n_decode -= 1
    if s.spec_k > 0:
        return
    s.generated[i] = <int32_t> (rep.step - 1 - b)
    rep.phase[pos_mod(s.prompt[i] - 2 - b, s.block_size)] -= 1
    rep.ctx_base -= s.prompt[i] - 1 - b
    iheap_remove(&rep.done, i)


cdef inline bint is_decoding(Sim* s, Replica* rep, int32_t i) noexcept nogil:
    return s.computed[i] >= s.target[i]


# ---------------------------------------------------------------------------------------------
# Releasing a request's KV
# ---------------------------------------------------------------------------------------------

cdef inline int64_t private_now(Sim* s, Replica* rep, int32_t i) noexcept nogil:
    """KV blocks request i holds alone (not shared through the prefix cache) between steps."""
    if s.spec_k > 0 and is_decoding(s, rep, i):
        return s.held[i]
    return private_blocks(s, i, kv_tokens(s, i))


cdef inline void drop_refs(Sim* s, Replica* rep, int32_t i) noexcept nogil:
    """Drop i's references to cached granules (deepest first, so they are evicted first, as
    vLLM frees a request's blocks in reverse order)."""
    cdef int64_t j
    cdef int64_t off = s.pfx_off[i] if s.caching else 0
    for j in range(s.n_shared[i] - 1, -1, -1):
        prefix_unref(&rep.cache, prefix_find(&rep.cache, s.pfx_ids[off + j]))
    s.n_shared[i] = 0
    s.share_closed[i] = 0


cdef inline void release_kv(Sim* s, Replica* rep, int32_t i) noexcept nogil:
    """Free all of i's KV on this engine."""
    rep.empty_blocks += private_now(s, rep, i)
    drop_refs(s, rep, i)
    s.computed[i] = 0
    s.target[i] = 0


cdef inline void leave_running(Sim* s, Replica* rep, int32_t i) noexcept nogil:
    """Take i out of the running set (decoding set or prefill list included)."""
    if is_decoding(s, rep, i):
        decode_leave(s, rep, i)
    else:
        pre_remove(rep, i)
    run_remove(s, rep, i)


cdef inline void request_done(Sim* s, Replica* rep, int32_t i, double now) noexcept nogil:
    """i leaves the system (finished or rejected): its client may send the next request."""
    rep.n_outstanding -= 1
    rep.out_tokens -= s.prompt[i]
    issue_next(s, now)


cdef int preempt(Sim* s, Replica* rep, int32_t v, double now) noexcept nogil:
    """Preempt v: swap its KV to host memory if allowed and it is decoding, else recompute."""
    cdef bint decoding = is_decoding(s, rep, v)
    cdef int64_t private
    leave_running(s, rep, v)  # fixes generated[v], on which its KV size depends
    private = private_now(s, rep, v)
    s.preemptions[v] += 1
    rep.preemptions += 1
    if decoding:
        s.last_token[v] = now
    if (decoding and s.preempt_mode == PRE_SWAP
            and rep.swap_used + private <= rep.swap_capacity):
        rep.empty_blocks += private
        rep.swap_used += private
        rep.swap_out_blocks += private
        s.status[v] = ST_SWAPPED
        fifo_push_back(s, &rep.swap_head, &rep.swap_tail, v)
        rep.n_swapped += 1
        return 0
    release_kv(s, rep, v)
    if s.generated[v] == 0:  # its prompt work so far is discarded and will be recomputed
        s.prefill_lost[v] += s.prefill_busy[v]
        s.prefill_busy[v] = 0.0
    s.status[v] = ST_WAITING
    return wait_add(s, rep, v, True)


cdef void reject_running(Sim* s, Replica* rep, int32_t v, double now) noexcept nogil:
    """v is the only running request and still cannot grow: it can never finish."""
    leave_running(s, rep, v)
    release_kv(s, rep, v)
    s.status[v] = ST_REJECTED_KV
    request_done(s, rep, v, now)


# ---------------------------------------------------------------------------------------------
# The batch-step kernel
# ---------------------------------------------------------------------------------------------

cdef inline int64_t partial_chunks(Sim* s, Replica* rep, int64_t* blocks) noexcept nogil:
    """Give each prefill in progress its chunk (in admission order, from the budget left after
    the decodes); returns the tokens and sets *blocks to the new blocks they need."""
    cdef int64_t k, left = rep.max_tokens - rep.n_decode * (1 + s.spec_k), c, used = 0
    cdef int32_t i
    blocks[0] = 0
    for k in range(rep.n_pre):
        i = rep.pre_ids[k]
        c = s.target[i] - s.computed[i]
        if c > left - used:
            c = left - used
        if c < 0:
            c = 0
        s.chunk[i] = <int32_t> c
        used += c
        blocks[0] += ceil_div(s.computed[i] + c, s.block_size) - ceil_div(s.computed[i], s.block_size)
    return used


cdef inline int64_t spec_need(Sim* s, Replica* rep) noexcept nogil:
    """Speculative decoding: new blocks the decodes need to verify k proposals each."""
    cdef int64_t need = 0, want
    cdef int32_t i = rep.run_head
    while i >= 0:
        if is_decoding(s, rep, i):
            want = private_blocks(s, i, s.prompt[i] + s.generated[i] + s.spec_k) - s.held[i]
            if want > 0:
                need += want
        i = s.run_next[i]
    return need


cdef inline void spec_allocate(Sim* s, Replica* rep) noexcept nogil:
    cdef int64_t want
    cdef int32_t i = rep.run_head
    while i >= 0:
        if is_decoding(s, rep, i):
            want = private_blocks(s, i, s.prompt[i] + s.generated[i] + s.spec_k) - s.held[i]
            if want > 0:
                s.held[i] += <int32_t> want
        i = s.run_next[i]


cdef inline int32_t pick_victim(Sim* s, Replica* rep) noexcept nogil:
    return rep.victims.items[0] if s.priority else rep.run_tail


cdef int admit_waiting(Sim* s, Replica* rep, double now, int64_t budget, int64_t* tokens,
                       int64_t* pairs, int64_t* context, int64_t* longest) noexcept nogil:
    """Admit waiting requests, first come first served (or by priority), while the budget, the
    sequence limit and the free blocks allow. Returns -1 only when memory runs out."""
    cdef int32_t i
    cdef int64_t tgt, hit, k, limit, c, nblocks, off, e
    while rep.n_running + rep.n_inflight < rep.max_seqs and budget > 0:
        i = wait_peek(s, rep)
        if i < 0:
            break
        tgt = s.prompt[i] + s.generated[i]
        # Longest run of leading granules already cached; at least one token is computed.
        k = 0
        if s.caching:
            off = s.pfx_off[i]
            limit = usable_granules(s, i)
            if (tgt - 1) // s.granule < limit:
                limit = (tgt - 1) // s.granule
            while k < limit and prefix_find(&rep.cache, s.pfx_ids[off + k]) >= 0:
                k += 1
        hit = k * s.granule
        if s.policy != POL_CHUNKED and tgt - hit > rep.max_tokens:
            wait_pop(s, rep)
            s.status[i] = ST_REJECTED_BUDGET
            request_done(s, rep, i, now)
            continue
        if ceil_div(tgt, s.block_size) > rep.capacity:
            wait_pop(s, rep)
            s.status[i] = ST_REJECTED_KV
            request_done(s, rep, i, now)
            continue
        c = tgt - hit
        if s.policy == POL_CHUNKED:
            if c > budget:
                c = budget
        elif c > budget:
            break
        nblocks = ceil_div(hit + c, s.block_size) - k * s.granule_blocks
        if s.caching:
            for e in range(k):  # touching an unreferenced cached granule takes it off the free list
                if rep.cache.entries[prefix_find(&rep.cache, s.pfx_ids[off + e])].refs == 0:
                    nblocks += s.granule_blocks
        if nblocks > free_blocks(s, rep):
            break
        wait_pop(s, rep)
        if s.caching:
            for e in range(k):
                prefix_ref(&rep.cache, prefix_find(&rep.cache, s.pfx_ids[off + e]))
            rep.prefix_query_tokens += tgt
            rep.prefix_hit_tokens += hit
        if isnan(s.admitted[i]):
            s.admitted[i] = now
            s.prefix_hit[i] = <int32_t> hit
        s.n_shared[i] = <int32_t> k
        s.share_closed[i] = 0
        s.computed[i] = <int32_t> hit
        s.target[i] = <int32_t> tgt
        s.chunk[i] = <int32_t> c
        take_blocks(s, rep, ceil_div(hit + c, s.block_size) - k * s.granule_blocks)
        s.status[i] = ST_RUNNING
        if run_append(s, rep, i) < 0:
            return -1
        rep.pre_ids[rep.n_pre] = i
        rep.n_pre += 1
        tokens[0] += c
        if s.preemptions[i] > 0:
            rep.recompute_tokens += c
        pairs[0] += c * hit + c * (c + 1) // 2
        context[0] += hit
        if c > longest[0]:
            longest[0] = c
        budget -= c
    return 0


cdef int unswap(Sim* s, Replica* rep) noexcept nogil:
    """Turn the oldest swapped-out request into one waiting to be recomputed."""
    cdef int32_t i = fifo_pop(s, &rep.swap_head, &rep.swap_tail)
    rep.n_swapped -= 1
    rep.swap_used -= private_blocks(s, i, s.prompt[i] + s.generated[i] - 1)
    drop_refs(s, rep, i)
    s.computed[i] = 0
    s.target[i] = 0
    s.status[i] = ST_WAITING
    return wait_add(s, rep, i, True)


cdef inline int join_decodes(Sim* s, Replica* rep, int32_t i, int64_t step) noexcept nogil:
    """i (swapped back in, or with its KV just received) decodes in the step being chosen."""
    s.status[i] = ST_RUNNING
    if run_append(s, rep, i) < 0 or decode_join(s, rep, i, step - s.generated[i] - 1) < 0:
        return -1
    rep.swapin_ids[rep.n_swapin] = i
    rep.n_swapin += 1
    return 0


cdef int swap_in(Sim* s, Replica* rep, int64_t step, int64_t* budget) noexcept nogil:
    """Bring swapped-out requests back (oldest first) to decode in this step."""
    cdef int32_t i
    cdef int64_t g, need, held
    while (rep.swap_head >= 0 and rep.n_running + rep.n_inflight < rep.max_seqs
           and budget[0] > 0):
        i = rep.swap_head
        g = s.generated[i]
        need = private_blocks(s, i, s.prompt[i] + g)  # its KV plus the token it feeds now
        if need > free_blocks(s, rep):
            break
        fifo_pop(s, &rep.swap_head, &rep.swap_tail)
        rep.n_swapped -= 1
        held = private_blocks(s, i, s.prompt[i] + g - 1)
        rep.swap_used -= held
        rep.swap_in_blocks += held
        take_blocks(s, rep, need)
        if join_decodes(s, rep, i, step) < 0:
            return -1
        budget[0] -= 1
    return 0


cdef int join_received(Sim* s, Replica* rep, int64_t step, int64_t* budget) noexcept nogil:
    """Disaggregated decode side: requests whose KV has arrived start decoding (their blocks
    were allocated when the transfer was admitted)."""
    cdef int32_t i
    while rep.ready_head >= 0 and budget[0] >= 1 + s.spec_k:  # a decode verifies k + 1 tokens
        i = fifo_pop(s, &rep.ready_head, &rep.ready_tail)
        rep.n_inflight -= 1
        if join_decodes(s, rep, i, step) < 0:
            return -1
        budget[0] -= 1 + s.spec_k
    return 0


cdef int start_transfers(Sim* s, Replica* rep, double now) noexcept nogil:
    """Disaggregated decode side: give handed-over requests blocks, oldest first, and start
    pulling their KV over the prefill replica's link (transfers on one link queue FIFO)."""
    cdef int32_t i
    cdef int64_t need, tokens
    cdef Pipe* link
    cdef double start, done
    while rep.in_head >= 0 and rep.n_running + rep.n_inflight < rep.max_seqs:
        i = rep.in_head
        tokens = s.prompt[i] + s.generated[i] + s.spec_k  # prompt KV and the first decode
        need = ceil_div(tokens, s.block_size)
        if need > free_blocks(s, rep):
            break
        fifo_pop(s, &rep.in_head, &rep.in_tail)
        rep.n_incoming -= 1
        take_blocks(s, rep, need)
        if s.spec_k > 0:
            s.held[i] = <int32_t> need
        rep.n_inflight += 1
        link = &s.pipes[s.reps[s.replica_of[i]].pipe]
        start = now if now > link.link_free else link.link_free
        done = start + s.link_latency_s + s.xfer_bytes_per_token * s.prompt[i] / s.link_bytes_per_s
        link.link_busy += done - start
        link.link_free = done
        link.transfers += 1
        if heap_push(&s.events, done, EV_KV_ARRIVED, i) < 0:
            return -1
    return 0


cdef double price_step(Sim* s, Replica* rep, StepShape* shape, double now,
                       double extra, double* act) noexcept nogil:
    """Time from now until the step completes: its stages in order, each waiting for the
    previous micro-batch to leave it (pipeline parallelism); `extra` is spent before stage 0.
    Adds every stage's compute and memory time to act[0] and act[1]."""
    cdef Pipe* pipe = &s.pipes[rep.pipe]
    cdef int64_t k
    cdef double t = now + extra, d, c, m
    if pipe.n_stages == 1:
        d = step_seconds(&s.costs[pipe.cost_row], shape)
        step_activity(&s.costs[pipe.cost_row], shape, &c, &m)
        act[0] += c
        act[1] += m
        pipe.stage_busy[0] += extra + d
        return extra + d
    for k in range(pipe.n_stages):
        if pipe.stage_free[k] > t:
            t = pipe.stage_free[k]
        d = step_seconds(&s.costs[pipe.cost_row + k], shape)
        step_activity(&s.costs[pipe.cost_row + k], shape, &c, &m)
        act[0] += c
        act[1] += m
        t += d
        pipe.stage_free[k] = t
        pipe.stage_busy[k] += d
    return t - now


cdef double draft_seconds(Sim* s, Replica* rep, StepShape* prefill, double* act) noexcept nogil:
    """Speculative decoding: the draft model (or MTP heads) runs over the step's prompt tokens
    once and then proposes k tokens for every decode, one pass per token. Adds the passes'
    compute and memory time to act[0] and act[1]."""
    cdef int64_t row = s.draft_row[rep.pool], j
    cdef double total = 0.0, ctx = 0.0, c, m
    cdef StepShape pass_
    cdef int32_t i
    if row < 0:
        return 0.0
    if prefill.prefill_tokens > 0:
        total += step_seconds(&s.costs[row], prefill)
        step_activity(&s.costs[row], prefill, &c, &m)
        act[0] += c
        act[1] += m
    if rep.n_decode == 0:
        return total
    i = rep.run_head
    while i >= 0:
        if is_decoding(s, rep, i):
            ctx += <double> (s.prompt[i] + s.generated[i])
        i = s.run_next[i]
    pass_.prefill_tokens = 0.0
    pass_.prefill_pairs = 0.0
    pass_.prefill_context = 0.0
    pass_.logit_tokens = <double> rep.n_decode
    pass_.decode_tokens = <double> rep.n_decode
    for j in range(s.spec_k):
        pass_.decode_context = ctx + <double> (j * rep.n_decode)
        total += step_seconds(&s.costs[row], &pass_)
        step_activity(&s.costs[row], &pass_, &c, &m)
        act[0] += c
        act[1] += m
    return total


cdef int start_step(Sim* s, int64_t r, double now) noexcept nogil:
    """Select and price the next step of engine r (it ends at now + rep.step_dur; the engine
    stays idle if there is nothing to run). Returns -1 only when memory runs out."""
    cdef Replica* rep = &s.reps[r]
    cdef int64_t step = rep.step
    cdef int64_t bucket = pos_mod(-step, s.block_size)
    cdef bint preempted = False
    cdef int64_t need, pre_blocks = 0, pre_tokens, budget, k, c, x, K = s.spec_k
    cdef int64_t tokens = 0, pairs = 0, context = 0, longest = 0, logits = 0, real_tokens
    cdef int64_t swapped_before = rep.swap_out_blocks + rep.swap_in_blocks
    cdef int32_t i
    cdef double dur, extra = 0.0, ctx
    cdef double act[2]
    cdef StepShape shape, prefill_only

    ts_touch(s, r, now)
    rep.n_swapin = 0
    # 1. Running requests first: more blocks for every decode that crosses a block boundary
    #    and the blocks of each prefill chunk in progress; preempt while they do not fit.
    pre_tokens = partial_chunks(s, rep, &pre_blocks) if rep.n_pre > 0 else 0
    need = (spec_need(s, rep) if K > 0 else rep.phase[bucket]) + pre_blocks
    while need > free_blocks(s, rep):
        if rep.n_running == 1:
            reject_running(s, rep, rep.run_head, now)
        else:
            if preempt(s, rep, pick_victim(s, rep), now) < 0:
                return -1
            preempted = True
        pre_tokens = partial_chunks(s, rep, &pre_blocks)
        need = (spec_need(s, rep) if K > 0 else rep.phase[bucket]) + pre_blocks
    take_blocks(s, rep, need)
    if K > 0:
        spec_allocate(s, rep)
    for k in range(rep.n_pre):
        i = rep.pre_ids[k]
        c = s.chunk[i]
        if c > 0:  # a second prefill in progress may find the budget spent
            x = s.computed[i]
            tokens += c
            if s.preemptions[i] > 0:
                rep.recompute_tokens += c
            pairs += c * x + c * (c + 1) // 2
            context += x
    rep.step_decodes = rep.n_decode

    # 2. Then requests whose KV has arrived (disaggregated decode side), swapped-out requests,
    #    handed-over requests waiting for blocks, then waiting ones -- unless this step had to
    #    preempt (as in vLLM) or, for request-level batching, a batch is still running.
    budget = rep.max_tokens - rep.n_decode * (1 + K) - pre_tokens
    if (not preempted or rep.n_running == 0) and (s.policy != POL_STATIC or rep.n_running == 0):
        while True:
            if rep.ready_head >= 0 and join_received(s, rep, step, &budget) < 0:
                return -1
            if rep.swap_head >= 0 and swap_in(s, rep, step, &budget) < 0:
                return -1
            if rep.in_head >= 0 and start_transfers(s, rep, now) < 0:
                return -1
            if rep.swap_head < 0 and rep.n_waiting > 0:
                if admit_waiting(s, rep, now, budget, &tokens, &pairs, &context, &longest) < 0:
                    return -1
            if rep.n_running > 0 or rep.swap_head < 0:
                break
            # Nothing runs, yet the oldest swapped request cannot come back (shared prefix
            # blocks pinned by other swapped requests fill the cache): recompute it instead.
            if unswap(s, rep) < 0:
                return -1

    if rep.n_pre == 0 and rep.n_decode == 0:
        return 0  # nothing to run: the engine idles until something arrives

    # 3. Price the step from its shape.
    act[0] = 0.0
    act[1] = 0.0
    for k in range(rep.n_pre):
        i = rep.pre_ids[k]
        if s.computed[i] + s.chunk[i] == s.target[i]:
            logits += 1
    shape.prefill_tokens = <double> tokens
    shape.prefill_pairs = <double> pairs
    shape.prefill_context = <double> context
    if s.policy == POL_STATIC and rep.n_pre > 0:  # prompts padded to the batch's longest
        shape.prefill_tokens = <double> (rep.n_pre * longest)
        shape.prefill_pairs = <double> (rep.n_pre * (longest * (longest + 1) // 2))
    real_tokens = tokens + rep.n_decode * (1 + K)
    if K == 0:
        shape.logit_tokens = <double> (logits + rep.n_decode)
        shape.decode_tokens = <double> rep.n_decode
        shape.decode_context = <double> (rep.ctx_base + rep.n_decode * step)
    else:
        # Verifying k proposals is a short prefill of k + 1 tokens per decoding request over
        # its cached context: every position needs logits, the context is read once.
        prefill_only = shape
        prefill_only.logit_tokens = <double> logits
        prefill_only.decode_tokens = 0.0
        prefill_only.decode_context = 0.0
        ctx = 0.0
        i = rep.run_head
        while i >= 0:
            if is_decoding(s, rep, i):
                ctx += <double> (s.prompt[i] + s.generated[i] - 1)
            i = s.run_next[i]
        shape.prefill_tokens += <double> (rep.n_decode * (K + 1))
        shape.prefill_pairs += (K + 1) * ctx + <double> (rep.n_decode * ((K + 1) * (K + 2) // 2))
        shape.prefill_context += ctx
        shape.logit_tokens = <double> (logits + rep.n_decode * (K + 1))
        shape.decode_tokens = 0.0
        shape.decode_context = 0.0
        extra += draft_seconds(s, rep, &prefill_only, act)
    if s.preempt_mode == PRE_SWAP:  # swaps are copied before the forward pass, as in vLLM V0
        extra += rep.swap_s_per_block * (rep.swap_out_blocks + rep.swap_in_blocks - swapped_before)
    dur = price_step(s, rep, &shape, now, extra, act)
    rep.compute_s += act[0]
    rep.memory_s += act[1]
    rep.step_compute_frac = act[0] / dur if dur > 0.0 else 0.0
    rep.step_memory_frac = act[1] / dur if dur > 0.0 else 0.0
    rep.busy = True
    rep.step_start = now
    rep.step_dur = dur
    rep.step_blocks = rep.capacity - free_blocks(s, rep)
    rep.steps += 1
    rep.prefill_tokens += tokens
    rep.decode_tokens += rep.n_decode
    if real_tokens > rep.max_step_tokens:
        rep.max_step_tokens = real_tokens
    rep.busy_s += dur
    rep.kv_block_s += rep.step_blocks * dur
    if rep.step_blocks > rep.kv_peak:
        rep.kv_peak = rep.step_blocks
    return 0


cdef inline void finish(Sim* s, Replica* rep, int32_t i, double now) noexcept nogil:
    run_remove(s, rep, i)
    release_kv(s, rep, i)
    s.status[i] = ST_FINISHED
    s.completion[i] = now
    request_done(s, rep, i, now)


cdef inline void cache_new_granules(Sim* s, Replica* rep, int32_t i) noexcept nogil:
    """Granules of i's prompt that are now fully computed become shared cached blocks."""
    cdef int64_t off = s.pfx_off[i], limit = usable_granules(s, i), j
    while not s.share_closed[i] and s.n_shared[i] < limit:
        j = s.n_shared[i]
        if (j + 1) * s.granule > s.computed[i]:
            break
        if prefix_find(&rep.cache, s.pfx_ids[off + j]) >= 0:
            s.share_closed[i] = 1  # computed twice concurrently: keep our copy private
            break
        prefix_insert(&rep.cache, s.pfx_ids[off + j])
        s.n_shared[i] += 1


cdef inline int64_t pick_decode_engine(Sim* s) noexcept nogil:
    """Decode pool of a disaggregated cluster: the engine with the fewest outstanding requests
    (of the replica with the fewest), lowest index first."""
    cdef int64_t p, e, best = -1, best_load = 0, load, first = s.pool_first_pipe[1]
    cdef Pipe* pipe
    for p in range(first, first + s.pool_n_pipes[1]):
        pipe = &s.pipes[p]
        load = 0
        for e in range(pipe.first_engine, pipe.first_engine + pipe.n_stages):
            load += s.reps[e].n_outstanding
        if best < 0 or load < best_load:
            best = p
            best_load = load
    return least_loaded_engine(s, &s.pipes[best])


cdef inline int64_t least_loaded_engine(Sim* s, Pipe* pipe) noexcept nogil:
    cdef int64_t e, best = pipe.first_engine
    for e in range(pipe.first_engine + 1, pipe.first_engine + pipe.n_stages):
        if s.reps[e].n_outstanding < s.reps[best].n_outstanding:
            best = e
    return best


cdef inline void hand_over(Sim* s, Replica* rep, int32_t i, double now) noexcept nogil:
    """Disaggregated prefill side: i's prompt is done; its KV stays here until a decode engine
    has pulled it. As in vLLM's disaggregated serving, the prefill's own token is not sent:
    the decode engine produces every output token, the first included."""
    cdef int64_t d = pick_decode_engine(s)
    cdef Replica* dec = &s.reps[d]
    ts_touch(s, d, now)
    s.handoff[i] = now
    run_remove(s, rep, i)
    rep.n_handoff += 1
    rep.n_outstanding -= 1
    rep.out_tokens -= s.prompt[i]
    rep.kv_sent += 1
    s.status[i] = ST_TRANSFER
    s.decode_of[i] = <int32_t> d
    dec.n_outstanding += 1
    dec.out_tokens += s.prompt[i]
    fifo_push_back(s, &dec.in_head, &dec.in_tail, i)
    dec.n_incoming += 1
    mark_dirty(s, d)


cdef void kv_arrived(Sim* s, int32_t i, double now) noexcept nogil:
    """The decode engine has i's KV: the prefill engine frees its copy."""
    cdef int64_t p = s.replica_of[i], d = s.decode_of[i]
    cdef Replica* pre = &s.reps[p]
    cdef Replica* dec = &s.reps[d]
    ts_touch(s, p, now)
    ts_touch(s, d, now)
    pre.empty_blocks += private_blocks(s, i, s.computed[i])
    drop_refs(s, pre, i)
    pre.n_handoff -= 1
    mark_dirty(s, p)
    s.kv_ready[i] = now
    dec.kv_received += 1
    fifo_push_back(s, &dec.ready_head, &dec.ready_tail, i)
    mark_dirty(s, d)


cdef int end_step(Sim* s, int64_t r, double now) noexcept nogil:
    """Hand out the step's tokens, finish prefills, retire finished requests."""
    cdef Replica* rep = &s.reps[r]
    cdef int64_t step = rep.step
    cdef int64_t k, kept = 0, j, got
    cdef int32_t i, nxt
    ts_touch(s, r, now)
    if rep.step_decodes > 0:
        record_gap(s, rep.step_dur, rep.step_decodes)
    for k in range(rep.n_swapin):
        i = rep.swapin_ids[k]
        if s.generated[i] == 0:  # disaggregated: the decode engine emits the first token
            s.first_token[i] = now
        else:  # swapped back in: the gap spans the time spent swapped out
            record_gap(s, now - s.last_token[i], 1)
    if s.spec_k > 0:
        # Each decode produced one token plus the proposals accepted before the first
        # rejection, drawn per request and step (in admission order) from the seeded stream.
        i = rep.run_head
        while i >= 0:
            nxt = s.run_next[i]
            if is_decoding(s, rep, i):
                got = 1
                for j in range(s.spec_k):
                    if rng_uniform(s) >= s.spec_acc[j]:
                        break
                    got += 1
                if got > s.output[i] - s.generated[i]:
                    got = s.output[i] - s.generated[i]
                s.generated[i] += <int32_t> got
                rep.spec_tokens += got
                if s.generated[i] >= s.output[i]:
                    decode_leave(s, rep, i)
                    finish(s, rep, i, now)
                else:
                    s.last_token[i] = now
            i = nxt
    rep.n_swapin = 0
    for k in range(rep.n_pre):
        i = rep.pre_ids[k]
        if s.chunk[i] > 0 and s.generated[i] == 0:
            s.prefill_busy[i] += rep.step_dur
        s.computed[i] += s.chunk[i]
        s.chunk[i] = 0
        if s.caching:
            cache_new_granules(s, rep, i)
        if s.computed[i] < s.target[i]:
            rep.pre_ids[kept] = i
            kept += 1
            continue
        if s.disagg and rep.pool == 0:
            hand_over(s, rep, i, now)  # its KV moves on; the decode engine emits every token
            continue
        s.generated[i] += 1
        if s.generated[i] == 1:
            s.first_token[i] = now
        else:  # first token after a recompute: the gap spans the time spent preempted
            record_gap(s, now - s.last_token[i], 1)
        s.last_token[i] = now
        if s.spec_k > 0:  # from now on its blocks are counted one by one
            s.held[i] = <int32_t> private_blocks(s, i, s.computed[i])
        if s.generated[i] >= s.output[i]:
            finish(s, rep, i, now)
        elif decode_join(s, rep, i, step - s.generated[i]) < 0:
            return -1
    rep.n_pre = kept
    while rep.done.size > 0 and s.done_key[rep.done.items[0]] <= step:
        i = rep.done.items[0]
        decode_leave(s, rep, i)
        s.generated[i] += 1  # decode_leave counts up to the step before this one
        finish(s, rep, i, now)
    rep.step = step + 1
    rep.busy = False
    return 0


# ---------------------------------------------------------------------------------------------
# Routing and the event loop
# ---------------------------------------------------------------------------------------------

cdef inline int64_t pipe_load(Sim* s, int64_t p) noexcept nogil:
    cdef Pipe* pipe = &s.pipes[p]
    cdef int64_t e, load = 0
    for e in range(pipe.first_engine, pipe.first_engine + pipe.n_stages):
        load += s.reps[e].n_outstanding
    return load


cdef inline int64_t pipe_tokens(Sim* s, int64_t p) noexcept nogil:
    cdef Pipe* pipe = &s.pipes[p]
    cdef int64_t e, load = 0
    for e in range(pipe.first_engine, pipe.first_engine + pipe.n_stages):
        load += s.reps[e].out_tokens
    return load


cdef inline int64_t cached_granules(Sim* s, Replica* rep, int32_t i) noexcept nogil:
    """Leading granules of i's prompt this engine has cached."""
    cdef int64_t k = 0, limit = usable_granules(s, i), off = s.pfx_off[i]
    while k < limit and prefix_find(&rep.cache, s.pfx_ids[off + k]) >= 0:
        k += 1
    return k


cdef int64_t route(Sim* s, int32_t i) noexcept nogil:
    """The engine an arriving request joins: a replica of the entry pool chosen by the router,
    then, in a pipelined replica, its engine with the fewest outstanding requests."""
    cdef int64_t first = s.pool_first_pipe[0], n = s.pool_n_pipes[0]
    cdef int64_t p, q, best, e, lo, hi, k, best_k
    cdef Pipe* pipe
    if n == 1:
        best = first
    elif s.router == RT_ROUND_ROBIN:
        best = first + s.rr_next
        s.rr_next = s.rr_next + 1 if s.rr_next + 1 < n else 0
    elif s.router == RT_RANDOM:
        best = first + <int64_t> (rng_next(s) % <uint64_t> n)
    elif s.router == RT_POWER_OF_TWO:
        p = <int64_t> (rng_next(s) % <uint64_t> n)
        q = <int64_t> (rng_next(s) % <uint64_t> (n - 1))
        if q >= p:
            q += 1
        best = first + (q if pipe_load(s, first + q) < pipe_load(s, first + p) else p)
    elif s.router == RT_LEAST_TOKENS:
        best = first
        for p in range(first + 1, first + n):
            if pipe_tokens(s, p) < pipe_tokens(s, best):
                best = p
    else:
        best = first
        lo = hi = pipe_load(s, first)
        for p in range(first + 1, first + n):
            k = pipe_load(s, p)
            if k < lo:
                lo = k
                best = p
            if k > hi:
                hi = k
        # Prefix affinity (SGLang's cache-aware router): unless the replicas are imbalanced,
        # send the request where most of its prompt is cached, if that is over the threshold.
        if (s.router == RT_PREFIX_AFFINITY and s.caching
                and not (hi - lo > s.balance_abs and hi > s.balance_rel * lo)):
            best_k = 0
            q = best
            for p in range(first, first + n):
                pipe = &s.pipes[p]
                for e in range(pipe.first_engine, pipe.first_engine + pipe.n_stages):
                    k = cached_granules(s, &s.reps[e], i)
                    if k > best_k:
                        best_k = k
                        q = p
            if best_k * s.granule > s.cache_threshold * s.prompt[i]:
                best = q
    pipe = &s.pipes[best]
    if pipe.n_stages == 1:
        return pipe.first_engine
    if s.router == RT_PREFIX_AFFINITY and s.caching:
        best_k = -1
        q = pipe.first_engine
        for e in range(pipe.first_engine, pipe.first_engine + pipe.n_stages):
            k = cached_granules(s, &s.reps[e], i)
            if k > best_k or (k == best_k and s.reps[e].n_outstanding < s.reps[q].n_outstanding):
                best_k = k
                q = e
        return q
    return least_loaded_engine(s, pipe)


cdef inline int queue_arrivals(Sim* s, int64_t* cursor, double now) noexcept nogil:
    """Every request arriving by `now` joins an engine's queue, chosen by the router."""
    cdef int64_t r
    cdef int32_t i
    cdef Replica* rep
    while cursor[0] < s.n_issued and s.arrival[cursor[0]] <= now:
        i = <int32_t> cursor[0]
        r = route(s, i)
        rep = &s.reps[r]
        ts_touch(s, r, now)
        s.replica_of[i] = <int32_t> r
        s.status[i] = ST_WAITING
        rep.n_outstanding += 1
        rep.out_tokens += s.prompt[i]
        if wait_add(s, rep, i, False) < 0:
            return -1
        s.events_processed += 1
        mark_dirty(s, r)
        cursor[0] += 1
    return 0


cdef int event_loop(Sim* s, double stop_time, double* end_time) noexcept nogil:
    cdef int64_t cursor = 0, r
    cdef double now = 0.0, t_arrival, t_event, t_end
    cdef Event ev
    cdef Replica* rep
    while True:
        t_arrival = s.arrival[cursor] if cursor < s.n_issued else INFINITY
        t_event = s.events.data[0].time if s.events.size > 0 else INFINITY
        now = t_arrival if t_arrival < t_event else t_event
        if now == INFINITY:
            break
        if now > stop_time:
            end_time[0] = stop_time
            break
        end_time[0] = now
        # Steps that end now, and KV transfers that complete now, free their blocks before
        # anything is scheduled at this instant...
        while s.events.size > 0 and s.events.data[0].time <= now:
            ev = heap_pop(&s.events)
            s.events_processed += 1
            if ev.kind == EV_KV_ARRIVED:
                kv_arrived(s, ev.target, now)
                continue
            if end_step(s, ev.target, now) < 0:
                return -1
            mark_dirty(s, ev.target)
        # ...then every request arriving now joins a queue...
        if queue_arrivals(s, &cursor, now) < 0 or s.oom:
            return -1
        # ...and then each idle engine with news picks its next step.
        while s.n_dirty > 0:
            s.n_dirty -= 1
            r = s.dirty_stack[s.n_dirty]
            rep = &s.reps[r]
            rep.dirty = False
            if rep.busy:
                continue
            if start_step(s, r, now) < 0:
                return -1
            if not rep.busy:
                continue
            t_end = now + rep.step_dur
            if (s.n_dirty > 0 or t_end > stop_time
                    or (cursor < s.n_issued and s.arrival[cursor] <= t_end)
                    or (s.events.size > 0 and s.events.data[0].time <= t_end)):
                if heap_push(&s.events, t_end, EV_STEP_END, <int32_t> r) < 0:
                    return -1
                continue
            # Nothing else can happen before this step ends (no other engine to schedule now,
            # no arrival, no other event, not past the stop): move the clock straight to its
            # end instead of through the event queue. The order of events is the same, and
            # long runs of steps cost no queue operations.
            now = t_end
            end_time[0] = now
            s.events_processed += 1
            if end_step(s, r, now) < 0:
                return -1
            mark_dirty(s, r)
            if queue_arrivals(s, &cursor, now) < 0:  # a closed-loop client sent its next
                return -1
    return 0


cdef void finalise_unfinished(Sim* s, double stop_time) noexcept nogil:
    """Fix token counts of requests still decoding when the simulation stopped early."""
    cdef int64_t r, k
    cdef int32_t i
    cdef Replica* rep
    cdef Pipe* pipe
    cdef double over
    for r in range(s.n_reps):
        rep = &s.reps[r]
        i = rep.run_head
        while i >= 0:
            if is_decoding(s, rep, i) and s.spec_k == 0:
                s.generated[i] = <int32_t> (rep.step - 1 - s.base[i])
            i = s.run_next[i]
        if rep.busy and rep.step_start + rep.step_dur > stop_time:
            over = rep.step_start + rep.step_dur - stop_time
            rep.busy_s -= over
            rep.kv_block_s -= rep.step_blocks * over
            rep.compute_s -= rep.step_compute_frac * over
            rep.memory_s -= rep.step_memory_frac * over
    for r in range(s.n_pipes):  # stage time booked past the stop is not spent
        pipe = &s.pipes[r]
        for k in range(pipe.n_stages):
            if pipe.n_stages > 1 and pipe.stage_free[k] > stop_time:
                over = pipe.stage_free[k] - stop_time
                pipe.stage_busy[k] -= over if over < pipe.stage_busy[k] else pipe.stage_busy[k]
        if pipe.link_free > stop_time:
            pipe.link_busy -= pipe.link_free - stop_time


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

def run(const double[::1] arrival_s not None,
        const int32_t[::1] prompt_tokens not None,
        const int32_t[::1] output_tokens not None,
        cost not None,
        *,
        int64_t num_replicas,
        int64_t max_batch_tokens,
        int64_t max_num_seqs,
        int64_t block_size,
        int64_t kv_capacity_blocks,
        int64_t policy=POL_ORCA,
        const int32_t[::1] priority=None,
        bint priority_scheduling=False,
        int64_t preemption=PRE_RECOMPUTE,
        int64_t swap_capacity_blocks=0,
        double swap_seconds_per_block=0.0,
        const int64_t[::1] prefix_offsets=None,
        const int64_t[::1] prefix_ids=None,
        int64_t prefix_granule_tokens=0,
        bint prefix_caching=False,
        double stop_time_s=INFINITY,
        int64_t concurrency=0,
        double think_time_s=0.0,
        int64_t pipeline_stages=1,
        int64_t router=RT_ROUND_ROBIN,
        uint64_t seed=0,
        int64_t balance_abs=32,
        double balance_rel=1.1,
        double cache_threshold=0.5,
        int64_t decode_replicas=0,
        int64_t decode_pipeline_stages=1,
        int64_t decode_max_batch_tokens=0,
        int64_t decode_max_num_seqs=0,
        int64_t decode_kv_capacity_blocks=0,
        decode_cost=None,
        int64_t decode_swap_capacity_blocks=0,
        double decode_swap_seconds_per_block=0.0,
        double kv_link_bytes_per_s=0.0,
        double kv_link_latency_s=0.0,
        double kv_bytes_per_token=0.0,
        int64_t spec_tokens=0,
        spec_acceptance=None,
        draft_cost=None,
        double timeseries_dt=0.0,
        int64_t timeseries_max_buckets=0):
    """Simulate a cluster serving the requests under a batching policy.

    The entry pool has `num_replicas` replicas of `pipeline_stages` stages (one engine per
    stage, each with kv_capacity_blocks / stages blocks); `cost` holds one row of step-cost
    coefficients per stage. Arriving requests (at `arrival_s`, sorted) go to a replica chosen by
    `router`. With `decode_replicas` > 0 the cluster is disaggregated: the entry pool only
    prefills, and each prefilled request's KV (kv_bytes_per_token per prompt token) moves over
    its prefill replica's link to a decode replica before it decodes there. With `spec_tokens`
    k > 0 every decode proposes k tokens (draft passes priced with `draft_cost`, one row per
    pool) and accepts the j-th with probability spec_acceptance[j] given the ones before. With
    `concurrency` C > 0 the loop is closed: at most C requests are outstanding, and each that
    finishes or is rejected lets the next arrive think_time_s later (not before its own
    arrival_s). With `timeseries_dt` > 0 it also records, per engine and per bucket of that many
    seconds, the time integrals of its queue, running batch, KV blocks in use, busy time and
    the compute and memory time of its steps; with `timeseries_max_buckets` M > 0 bucket pairs
    merge (the bucket length doubles) whenever the run would need more than M buckets, and
    "timeseries_dt" reports the final length. Returns a dict of per-request arrays, per-engine and per-replica statistics, the time
    series and the inter-token-gap histogram. See tokenmill/_core.pyi and docs/.
    """
    cdef int64_t n = arrival_s.shape[0], k, r, p, e, row, pool
    cdef Sim s
    cdef double end_time = 0.0
    cdef int rc = 0
    cdef int64_t granule_blocks = 1, max_entries, n_engines, n_pipes
    cdef Replica* rep
    cdef Pipe* pipe

    if concurrency < 0:
        raise ValueError(f"concurrency must be >= 0 (0: open loop); got {concurrency}")
    if not (isfinite(think_time_s) and think_time_s >= 0.0):
        raise ValueError(f"think_time_s must be finite and >= 0; got {think_time_s}")
    _check_inputs(arrival_s, prompt_tokens, output_tokens, num_replicas, max_batch_tokens,
                  max_num_seqs, block_size, kv_capacity_blocks, policy, priority, preemption,
                  swap_capacity_blocks, swap_seconds_per_block, prefix_offsets, prefix_ids,
                  prefix_granule_tokens, prefix_caching, stop_time_s)
    if pipeline_stages < 1 or pipeline_stages > 256:
        raise ValueError(f"pipeline_stages must be between 1 and 256; got {pipeline_stages}")
    pools = [dict(replicas=num_replicas, stages=pipeline_stages, max_tokens=max_batch_tokens,
                  max_seqs=max_num_seqs, capacity=kv_capacity_blocks,
                  swap_capacity=swap_capacity_blocks, swap_s=swap_seconds_per_block,
                  cost=_cost_rows(cost, pipeline_stages, "cost"))]
    if decode_replicas > 0:
        _check_pool("decode", decode_replicas, decode_pipeline_stages, decode_max_batch_tokens,
                    decode_max_num_seqs, decode_kv_capacity_blocks, decode_swap_capacity_blocks,
                    decode_swap_seconds_per_block)
        if decode_cost is None:
            raise ValueError("a disaggregated cluster needs decode_cost")
        if not (kv_link_bytes_per_s > 0 and isfinite(kv_link_bytes_per_s)
                and kv_link_latency_s >= 0 and isfinite(kv_link_latency_s)
                and kv_bytes_per_token > 0 and isfinite(kv_bytes_per_token)):
            raise ValueError("a disaggregated cluster needs kv_link_bytes_per_s > 0, "
                             "kv_link_latency_s >= 0 and kv_bytes_per_token > 0")
        if policy == POL_STATIC:
            raise ValueError("request-level (static) batching is not modelled in a "
                             "disaggregated cluster")
        pools.append(dict(replicas=decode_replicas, stages=decode_pipeline_stages,
                          max_tokens=decode_max_batch_tokens, max_seqs=decode_max_num_seqs,
                          capacity=decode_kv_capacity_blocks,
                          swap_capacity=decode_swap_capacity_blocks,
                          swap_s=decode_swap_seconds_per_block,
                          cost=_cost_rows(decode_cost, decode_pipeline_stages, "decode_cost")))
    if router not in (RT_ROUND_ROBIN, RT_RANDOM, RT_LEAST_REQUESTS, RT_LEAST_TOKENS,
                      RT_POWER_OF_TWO, RT_PREFIX_AFFINITY):
        raise ValueError(f"router must be one of the ROUTER_* codes; got {router}")
    if not (balance_abs >= 0 and balance_rel >= 1.0 and 0.0 <= cache_threshold <= 1.0):
        raise ValueError("balance_abs must be >= 0, balance_rel >= 1 and cache_threshold in [0, 1]")
    acc = np.zeros(1)
    draft_rows = None
    if spec_tokens < 0 or spec_tokens > 64:
        raise ValueError(f"spec_tokens must be between 0 and 64; got {spec_tokens}")
    if spec_tokens > 0:
        acc = np.ascontiguousarray(spec_acceptance, dtype=np.float64) if spec_acceptance is not None else None
        if acc is None or acc.shape != (spec_tokens,) or not ((acc >= 0) & (acc <= 1)).all():
            raise ValueError(f"spec_acceptance must hold {spec_tokens} probabilities in [0, 1]")
        if preemption == PRE_SWAP:
            raise ValueError("swap preemption is not modelled with speculative decoding")
        if any(pl["stages"] > 1 for pl in pools):
            raise ValueError("speculative decoding is not modelled with pipeline parallelism")
        if draft_cost is not None:
            draft_rows = _cost_rows(draft_cost, len(pools), "draft_cost")
    if prefix_caching:
        granule_blocks = prefix_granule_tokens // block_size
    if not (isfinite(timeseries_dt) and timeseries_dt >= 0.0):
        raise ValueError(f"timeseries_dt must be finite and >= 0; got {timeseries_dt}")
    if timeseries_max_buckets < 0 or timeseries_max_buckets % 2 or timeseries_max_buckets == 2:
        raise ValueError("timeseries_max_buckets must be 0 (no limit) or an even number >= 4; "
                         f"got {timeseries_max_buckets}")

    cost_rows = [pl["cost"] for pl in pools] + ([draft_rows] if draft_rows is not None else [])
    costs = np.ascontiguousarray(np.concatenate(cost_rows, axis=0))
    n_pipes = sum(pl["replicas"] for pl in pools)
    n_engines = sum(pl["replicas"] * pl["stages"] for pl in pools)

    first_token = np.full(n, np.nan)
    completion = np.full(n, np.nan)
    admitted = np.full(n, np.nan)
    kv_ready = np.full(n, np.nan)
    handoff = np.full(n, np.nan)
    prefill_busy = np.zeros(n)
    prefill_lost = np.zeros(n)
    ts_last = np.zeros(n_engines)
    preemptions = np.zeros(n, dtype=np.int32)
    generated = np.zeros(n, dtype=np.int32)
    status = np.zeros(n, dtype=np.int8)
    replica_of = np.full(n, -1, dtype=np.int32)
    decode_of = np.full(n, -1, dtype=np.int32)
    prefix_hit = np.zeros(n, dtype=np.int32)
    itl_hist = np.zeros(ITL_NBINS, dtype=np.int64)
    closed = 0 < concurrency < n
    if closed:  # arrival times are written as requests are issued; NaN: never issued
        arrived = np.full(n, np.nan)
        arrived[:concurrency] = np.asarray(arrival_s[:concurrency])
    else:
        arrived = np.asarray(arrival_s)
    cdef double[::1] issued_v = arrived if closed else None
    # working state owned by numpy: freed with the arrays, whatever happens
    base = np.zeros(n, dtype=np.int64)
    done_key = np.zeros(n, dtype=np.int64)
    prio_key = np.zeros(n, dtype=np.int64)
    victim_key = np.zeros(n, dtype=np.int64)
    positions = np.full((3, n), -1, dtype=np.int32)
    ints = np.zeros((8, n), dtype=np.int32)  # computed, target, chunk, n_shared, wait_next, prev, next, held
    share_closed = np.zeros(n, dtype=np.int8)
    last_token = np.zeros(n)
    if priority is not None:
        prio_key[:] = priority
        victim_key[:] = -prio_key
    empty_offsets = np.zeros(n + 1, dtype=np.int64)
    empty_ids = np.zeros(1, dtype=np.int64)

    cdef double[::1] first_token_v = first_token
    cdef double[::1] completion_v = completion
    cdef double[::1] admitted_v = admitted
    cdef double[::1] kv_ready_v = kv_ready
    cdef double[::1] handoff_v = handoff
    cdef double[::1] prefill_busy_v = prefill_busy
    cdef double[::1] prefill_lost_v = prefill_lost
    cdef double[::1] ts_last_v = ts_last
    cdef int32_t[::1] preemptions_v = preemptions
    cdef int32_t[::1] generated_v = generated
    cdef int8_t[::1] status_v = status
    cdef int32_t[::1] replica_v = replica_of
    cdef int32_t[::1] decode_v = decode_of
    cdef int32_t[::1] prefix_hit_v = prefix_hit
    cdef int64_t[::1] itl_v = itl_hist
    cdef int64_t[::1] base_v = base
    cdef int64_t[::1] done_key_v = done_key
    cdef int64_t[::1] prio_key_v = prio_key
    cdef int64_t[::1] victim_key_v = victim_key
    cdef int32_t[:, ::1] pos_v = positions
    cdef int32_t[:, ::1] ints_v = ints
    cdef int8_t[::1] closed_v = share_closed
    cdef double[::1] last_token_v = last_token
    cdef double[::1] acc_v = acc
    cdef double[:, ::1] costs_v = costs
    cdef const int64_t[::1] off_v = empty_offsets
    cdef const int64_t[::1] ids_v = empty_ids
    if prefix_caching:
        off_v = prefix_offsets
        if prefix_ids.shape[0] > 0:
            ids_v = prefix_ids

    s.n = n
    s.arrival = &arrival_s[0] if n > 0 else NULL
    s.send_at = s.arrival
    s.issued_at = NULL
    s.n_issued = n
    s.think_time = think_time_s
    if closed:
        s.issued_at = &issued_v[0]
        s.arrival = s.issued_at
        s.n_issued = concurrency
    s.prompt = &prompt_tokens[0] if n > 0 else NULL
    s.output = &output_tokens[0] if n > 0 else NULL
    s.pfx_off = &off_v[0]
    s.pfx_ids = &ids_v[0]
    s.first_token = &first_token_v[0] if n > 0 else NULL
    s.completion = &completion_v[0] if n > 0 else NULL
    s.admitted = &admitted_v[0] if n > 0 else NULL
    s.kv_ready = &kv_ready_v[0] if n > 0 else NULL
    s.handoff = &handoff_v[0] if n > 0 else NULL
    s.prefill_busy = &prefill_busy_v[0] if n > 0 else NULL
    s.prefill_lost = &prefill_lost_v[0] if n > 0 else NULL
    s.ts_dt = timeseries_dt
    s.ts_max = timeseries_max_buckets
    s.ts_last = &ts_last_v[0]
    s.oom = False
    s.preemptions = &preemptions_v[0] if n > 0 else NULL
    s.generated = &generated_v[0] if n > 0 else NULL
    s.status = &status_v[0] if n > 0 else NULL
    s.replica_of = &replica_v[0] if n > 0 else NULL
    s.decode_of = &decode_v[0] if n > 0 else NULL
    s.prefix_hit = &prefix_hit_v[0] if n > 0 else NULL
    s.base = &base_v[0] if n > 0 else NULL
    s.done_key = &done_key_v[0] if n > 0 else NULL
    s.prio_key = &prio_key_v[0] if n > 0 else NULL
    s.victim_key = &victim_key_v[0] if n > 0 else NULL
    s.done_pos = &pos_v[0, 0] if n > 0 else NULL
    s.wait_pos = &pos_v[1, 0] if n > 0 else NULL
    s.victim_pos = &pos_v[2, 0] if n > 0 else NULL
    s.computed = &ints_v[0, 0] if n > 0 else NULL
    s.target = &ints_v[1, 0] if n > 0 else NULL
    s.chunk = &ints_v[2, 0] if n > 0 else NULL
    s.n_shared = &ints_v[3, 0] if n > 0 else NULL
    s.wait_next = &ints_v[4, 0] if n > 0 else NULL
    s.run_prev = &ints_v[5, 0] if n > 0 else NULL
    s.run_next = &ints_v[6, 0] if n > 0 else NULL
    s.held = &ints_v[7, 0] if n > 0 else NULL
    s.share_closed = &closed_v[0] if n > 0 else NULL
    s.last_token = &last_token_v[0] if n > 0 else NULL
    s.itl_hist = &itl_v[0]
    s.itl_sum = 0.0
    s.itl_count = 0
    s.itl_max = 0.0
    s.policy = policy
    s.block_size = block_size
    s.priority = priority_scheduling
    s.preempt_mode = preemption
    s.caching = prefix_caching
    s.granule = prefix_granule_tokens if prefix_caching else 1
    s.granule_blocks = granule_blocks
    s.router = router
    s.rng = seed
    s.balance_abs = balance_abs
    s.balance_rel = balance_rel
    s.cache_threshold = cache_threshold
    s.disagg = decode_replicas > 0
    s.link_bytes_per_s = kv_link_bytes_per_s
    s.link_latency_s = kv_link_latency_s
    s.xfer_bytes_per_token = kv_bytes_per_token
    s.spec_k = spec_tokens
    s.spec_acc = &acc_v[0]
    s.n_pools = len(pools)
    s.draft_row[0] = -1
    s.draft_row[1] = -1
    s.rr_next = 0
    s.n_dirty = 0
    s.events_processed = 0
    s.n_reps = n_engines
    s.n_pipes = n_pipes
    s.reps = <Replica*> calloc(n_engines, sizeof(Replica))
    s.pipes = <Pipe*> calloc(n_pipes, sizeof(Pipe))
    s.costs = <CostCoeffs*> malloc(costs.shape[0] * sizeof(CostCoeffs))
    s.dirty_stack = <int32_t*> malloc(n_engines * sizeof(int32_t))
    s.ts_cap = 64
    s.ts = <double*> calloc(s.ts_cap * n_engines * TS_FIELDS, sizeof(double)) if timeseries_dt > 0 else NULL
    s.events.data = NULL
    try:
        if timeseries_dt > 0 and s.ts == NULL:
            raise MemoryError("tokenmill core: out of memory allocating the time series")
        if (s.reps == NULL or s.pipes == NULL or s.costs == NULL or s.dirty_stack == NULL
                or heap_init(&s.events, 2 * n_engines + 16) < 0):
            raise MemoryError("tokenmill core: out of memory allocating simulation state")
        for k in range(costs.shape[0]):
            _load_cost(&s.costs[k], costs_v[k])
        row = 0
        p = 0
        e = 0
        for pool in range(len(pools)):
            pl = pools[pool]
            s.pool_first_pipe[pool] = p
            s.pool_n_pipes[pool] = pl["replicas"]
            for r in range(pl["replicas"]):
                pipe = &s.pipes[p]
                pipe.pool = pool
                pipe.first_engine = e
                pipe.n_stages = pl["stages"]
                pipe.cost_row = row
                pipe.stage_free = <double*> calloc(pipe.n_stages, sizeof(double))
                pipe.stage_busy = <double*> calloc(pipe.n_stages, sizeof(double))
                if pipe.stage_free == NULL or pipe.stage_busy == NULL:
                    raise MemoryError("tokenmill core: out of memory allocating replica state")
                for k in range(pipe.n_stages):
                    _init_engine(&s, e, pool, p, pl, granule_blocks)
                    e += 1
                p += 1
            row += pl["stages"]
        if draft_rows is not None:
            for pool in range(len(pools)):
                s.draft_row[pool] = row + pool

        with nogil:
            rc = event_loop(&s, stop_time_s, &end_time)
            if rc == 0:
                finalise_unfinished(&s, stop_time_s)
                for r in range(n_engines):  # close every engine's time series at the end
                    ts_touch(&s, r, end_time)
        if rc < 0 or s.oom:
            raise MemoryError("tokenmill core: out of memory during the simulation")
        return {
            "arrival_s": arrived,
            "first_token_s": first_token,
            "completion_s": completion,
            "admitted_s": admitted,
            "kv_ready_s": kv_ready,
            "handoff_s": handoff,
            "prefill_busy_s": prefill_busy,
            "prefill_lost_s": prefill_lost,
            "timeseries": _timeseries(&s, end_time),
            "timeseries_dt": s.ts_dt,
            "preemptions": preemptions,
            "generated_tokens": generated,
            "status": status,
            "replica": replica_of,
            "decode_replica": decode_of,
            "prefix_hit_tokens": prefix_hit,
            "replicas": _replica_stats(&s),
            "pipes": _pipe_stats(&s),
            "itl_histogram": itl_hist,
            "itl_sum_s": s.itl_sum,
            "itl_count": s.itl_count,
            "itl_max_s": s.itl_max,
            "events": s.events_processed,
            "end_time_s": end_time,
        }
    finally:
        if s.reps != NULL:
            for r in range(n_engines):
                rep = &s.reps[r]
                free(rep.phase)
                free(rep.pre_ids)
                free(rep.swapin_ids)
                iheap_release(&rep.done)
                iheap_release(&rep.victims)
                iheap_release(&rep.waitq)
                prefix_release(&rep.cache)
        if s.pipes != NULL:
            for r in range(n_pipes):
                free(s.pipes[r].stage_free)
                free(s.pipes[r].stage_busy)
        free(s.reps)
        free(s.pipes)
        free(s.costs)
        free(s.ts)
        free(s.dirty_stack)
        heap_release(&s.events)


cdef void _init_engine(Sim* s, int64_t e, int64_t pool, int64_t pipe, dict pl,
                       int64_t granule_blocks) except *:
    """One engine of a pool: its limits, its share of its replica's KV cache, its queues."""
    cdef Replica* rep = &s.reps[e]
    cdef int64_t stages = pl["stages"], seqs = pl["max_seqs"]
    cdef int64_t capacity = pl["capacity"] // stages
    cdef int64_t max_entries
    if capacity < 1:
        raise ValueError(f"kv_capacity_blocks ({pl['capacity']}) must give each of the "
                         f"{stages} pipeline stages at least one block")
    rep.pool = pool
    rep.pipe = pipe
    rep.max_tokens = pl["max_tokens"]
    rep.max_seqs = seqs
    rep.capacity = capacity
    rep.swap_capacity = pl["swap_capacity"] // stages
    rep.swap_s_per_block = pl["swap_s"]
    rep.wait_head = -1
    rep.wait_tail = -1
    rep.swap_head = -1
    rep.swap_tail = -1
    rep.run_head = -1
    rep.run_tail = -1
    rep.in_head = -1
    rep.in_tail = -1
    rep.ready_head = -1
    rep.ready_tail = -1
    rep.empty_blocks = capacity
    max_entries = capacity // granule_blocks + 1 if s.caching else 1
    rep.phase = <int64_t*> calloc(s.block_size, sizeof(int64_t))
    rep.pre_ids = <int32_t*> malloc(seqs * sizeof(int32_t))
    rep.swapin_ids = <int32_t*> malloc(seqs * sizeof(int32_t))
    if (rep.phase == NULL or rep.pre_ids == NULL or rep.swapin_ids == NULL
            or iheap_init(&rep.done, seqs, s.done_pos, s.done_key, 1) < 0
            or iheap_init(&rep.victims, seqs if s.priority else 1, s.victim_pos,
                          s.victim_key, -1) < 0
            or iheap_init(&rep.waitq, 64, s.wait_pos, s.prio_key, 1) < 0
            or prefix_init(&rep.cache, max_entries, granule_blocks) < 0):
        raise MemoryError("tokenmill core: out of memory allocating engine state")


def _cost_rows(cost, int64_t rows, str name):
    """Step-cost coefficients as a (rows, fields) array: one row per pipeline stage (or per
    pool for draft costs); a single row is accepted when one is needed."""
    arr = np.ascontiguousarray(cost, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != COST_NFIELDS or arr.shape[0] != rows:
        raise ValueError(f"{name} must hold {rows} row(s) of {COST_NFIELDS} coefficients "
                         f"{COST_FIELDS}; got shape {np.shape(cost)}")
    for r in range(rows):
        for k in range(COST_NFIELDS):
            if not (isfinite(arr[r, k]) and arr[r, k] >= 0.0):
                raise ValueError(f"{name} coefficient {COST_FIELDS[k]} (row {r}) must be finite "
                                 f"and >= 0; got {arr[r, k]}")
        if not (arr[r, 4] > 0.0 and arr[r, 8] > 0.0):
            raise ValueError(f"{name} coefficients flops_per_s and bytes_per_s must be > 0")
    return arr


def _check_pool(str name, int64_t replicas, int64_t stages, int64_t max_batch_tokens,
                int64_t max_num_seqs, int64_t capacity, int64_t swap_capacity, double swap_s):
    if replicas < 1 or replicas > 100_000:
        raise ValueError(f"{name}_replicas must be between 1 and 100000; got {replicas}")
    if stages < 1 or stages > 256:
        raise ValueError(f"{name}_pipeline_stages must be between 1 and 256; got {stages}")
    if max_num_seqs < 1 or max_num_seqs > 1_000_000:
        raise ValueError(f"{name}_max_num_seqs must be between 1 and 1000000; got {max_num_seqs}")
    if max_batch_tokens < max_num_seqs:
        raise ValueError(f"{name}_max_batch_tokens ({max_batch_tokens}) must be >= "
                         f"{name}_max_num_seqs ({max_num_seqs})")
    if capacity < 1:
        raise ValueError(f"{name}_kv_capacity_blocks must be >= 1; got {capacity}")
    if swap_capacity < 0 or not (isfinite(swap_s) and swap_s >= 0):
        raise ValueError(f"{name} swap capacity and seconds per block must be finite and >= 0")


cdef dict _replica_stats(Sim* s):
    """Per-engine counters as numpy arrays (one entry per engine)."""
    cdef int64_t r, R = s.n_reps
    names_int = ("steps", "preemptions", "swap_out_blocks", "swap_in_blocks", "prefill_tokens",
                 "recompute_tokens", "decode_tokens", "prefix_query_tokens", "prefix_hit_tokens",
                 "max_step_tokens", "kv_peak_blocks", "kv_blocks_in_use_at_end", "swapped_at_end",
                 "capacity_blocks", "pool", "pipe", "spec_tokens", "kv_sent", "kv_received")
    ints = np.empty((len(names_int), R), dtype=np.int64)
    floats = np.empty((4, R))
    cdef int64_t[:, ::1] iv = ints
    cdef double[:, ::1] fv = floats
    cdef Replica* rep
    for r in range(R):
        rep = &s.reps[r]
        iv[0, r] = rep.steps
        iv[1, r] = rep.preemptions
        iv[2, r] = rep.swap_out_blocks
        iv[3, r] = rep.swap_in_blocks
        iv[4, r] = rep.prefill_tokens
        iv[5, r] = rep.recompute_tokens
        iv[6, r] = rep.decode_tokens
        iv[7, r] = rep.prefix_query_tokens
        iv[8, r] = rep.prefix_hit_tokens
        iv[9, r] = rep.max_step_tokens
        iv[10, r] = rep.kv_peak
        iv[11, r] = rep.capacity - free_blocks(s, rep)
        iv[12, r] = rep.n_swapped
        iv[13, r] = rep.capacity
        iv[14, r] = rep.pool
        iv[15, r] = rep.pipe
        iv[16, r] = rep.spec_tokens
        iv[17, r] = rep.kv_sent
        iv[18, r] = rep.kv_received
        fv[0, r] = rep.busy_s
        fv[1, r] = rep.kv_block_s
        fv[2, r] = rep.compute_s
        fv[3, r] = rep.memory_s
    out = {name: ints[k].copy() for k, name in enumerate(names_int)}
    out["busy_s"] = floats[0].copy()
    out["kv_block_seconds"] = floats[1].copy()
    out["compute_s"] = floats[2].copy()
    out["memory_s"] = floats[3].copy()
    return out


cdef object _timeseries(Sim* s, double end_time):
    """The time series as an array [bucket, engine, field] of integrals (field-seconds), or
    None when it was not asked for."""
    cdef int64_t buckets, k
    if s.ts_dt <= 0.0:
        return None
    buckets = <int64_t> (end_time / s.ts_dt)
    if buckets * s.ts_dt < end_time or buckets == 0:
        buckets += 1
    if buckets > s.ts_cap:
        buckets = s.ts_cap
    out = np.empty((buckets, s.n_reps, TS_FIELDS))
    cdef double[:, :, ::1] ov = out
    cdef int64_t b, e, f
    for b in range(buckets):
        for e in range(s.n_reps):
            for f in range(TS_FIELDS):
                ov[b, e, f] = s.ts[(b * s.n_reps + e) * TS_FIELDS + f]
    return out


cdef dict _pipe_stats(Sim* s):
    """Per-replica (pipeline) figures: busy time of its busiest stage, stage count, link use."""
    cdef int64_t p, k
    cdef Pipe* pipe
    pool = np.empty(s.n_pipes, dtype=np.int64)
    stages = np.empty(s.n_pipes, dtype=np.int64)
    transfers = np.empty(s.n_pipes, dtype=np.int64)
    busiest = np.empty(s.n_pipes)
    mean_busy = np.empty(s.n_pipes)
    link_busy = np.empty(s.n_pipes)
    for p in range(s.n_pipes):
        pipe = &s.pipes[p]
        pool[p] = pipe.pool
        stages[p] = pipe.n_stages
        transfers[p] = pipe.transfers
        link_busy[p] = pipe.link_busy
        top = 0.0
        total = 0.0
        for k in range(pipe.n_stages):
            total += pipe.stage_busy[k]
            if pipe.stage_busy[k] > top:
                top = pipe.stage_busy[k]
        busiest[p] = top
        mean_busy[p] = total / pipe.n_stages
    return {"pool": pool, "stages": stages, "kv_transfers": transfers,
            "busiest_stage_busy_s": busiest, "mean_stage_busy_s": mean_busy,
            "kv_link_busy_s": link_busy}


cdef void _load_cost(CostCoeffs* c, const double[::1] v) noexcept:
    # CostCoeffs is COST_NFIELDS doubles in COST_FIELDS order (checked at import), so the
    # coefficient array is its exact image.
    memcpy(c, &v[0], COST_NFIELDS * sizeof(double))


def _check_inputs(const double[::1] arrival_s, const int32_t[::1] prompt_tokens,
                  const int32_t[::1] output_tokens, int64_t num_replicas, int64_t max_batch_tokens, int64_t max_num_seqs,
                  int64_t block_size, int64_t kv_capacity_blocks, int64_t policy,
                  const int32_t[::1] priority, int64_t preemption, int64_t swap_capacity_blocks,
                  double swap_seconds_per_block, const int64_t[::1] prefix_offsets,
                  const int64_t[::1] prefix_ids, int64_t prefix_granule_tokens,
                  bint prefix_caching, double stop_time_s):
    """Refuse anything that could crash or hang the loop, naming the argument at fault."""
    cdef int64_t n = arrival_s.shape[0], k
    cdef double prev = 0.0
    if prompt_tokens.shape[0] != n or output_tokens.shape[0] != n:
        raise ValueError(f"arrival_s, prompt_tokens and output_tokens must have the same length; "
                         f"got {n}, {prompt_tokens.shape[0]} and {output_tokens.shape[0]}")
    if n >= 2**31 - 1:
        raise ValueError(f"at most {2**31 - 2} requests per simulation; got {n}")
    if num_replicas < 1 or num_replicas > 100_000:
        raise ValueError(f"num_replicas must be between 1 and 100000; got {num_replicas}")
    if block_size < 1 or block_size > 65536:
        raise ValueError(f"block_size must be between 1 and 65536; got {block_size}")
    if max_num_seqs < 1 or max_num_seqs > 1_000_000:
        raise ValueError(f"max_num_seqs must be between 1 and 1000000; got {max_num_seqs}")
    if max_batch_tokens < max_num_seqs:
        raise ValueError(f"max_batch_tokens ({max_batch_tokens}) must be >= max_num_seqs "
                         f"({max_num_seqs}) so that every running sequence can decode")
    if kv_capacity_blocks < 1:
        raise ValueError(f"kv_capacity_blocks must be >= 1; got {kv_capacity_blocks}")
    if policy not in (POL_ORCA, POL_CHUNKED, POL_STATIC):
        raise ValueError(f"policy must be POLICY_ORCA, POLICY_CHUNKED or POLICY_STATIC; got {policy}")
    if preemption not in (PRE_RECOMPUTE, PRE_SWAP):
        raise ValueError(f"preemption must be PREEMPT_RECOMPUTE or PREEMPT_SWAP; got {preemption}")
    if swap_capacity_blocks < 0 or not (isfinite(swap_seconds_per_block) and swap_seconds_per_block >= 0):
        raise ValueError("swap_capacity_blocks and swap_seconds_per_block must be finite and >= 0")
    if priority is not None and priority.shape[0] != n:
        raise ValueError(f"priority must have one entry per request ({n}); got {priority.shape[0]}")
    if prefix_caching:
        if policy == POL_STATIC:
            raise ValueError("prefix caching is not modelled with request-level (static) batching")
        if prefix_offsets is None or prefix_ids is None:
            raise ValueError("prefix caching needs prefix_offsets and prefix_ids")
        if prefix_offsets.shape[0] != n + 1:
            raise ValueError(f"prefix_offsets must have n + 1 = {n + 1} entries; got {prefix_offsets.shape[0]}")
        if prefix_granule_tokens < 1 or prefix_granule_tokens % block_size != 0:
            raise ValueError(f"prefix_granule_tokens ({prefix_granule_tokens}) must be a positive "
                             f"multiple of block_size ({block_size})")
        if prefix_offsets[0] != 0 or prefix_offsets[n] != prefix_ids.shape[0]:
            raise ValueError("prefix_offsets must start at 0 and end at len(prefix_ids)")
        for k in range(n):
            if prefix_offsets[k + 1] < prefix_offsets[k]:
                raise ValueError(f"prefix_offsets must not decrease (entry {k + 1})")
    if not stop_time_s >= 0.0:
        raise ValueError(f"stop_time_s must be >= 0; got {stop_time_s}")
    for k in range(n):
        if not (isfinite(arrival_s[k]) and arrival_s[k] >= prev):
            raise ValueError(f"arrival_s must be finite, >= 0 and sorted; element {k} is "
                             f"{arrival_s[k]} after {prev}")
        prev = arrival_s[k]
        if prompt_tokens[k] < 1 or output_tokens[k] < 1:
            raise ValueError(f"request {k}: prompt_tokens and output_tokens must be >= 1; got "
                             f"{prompt_tokens[k]} and {output_tokens[k]}")
        if <int64_t> prompt_tokens[k] + output_tokens[k] > 2**31 - 2:
            raise ValueError(f"request {k}: prompt_tokens + output_tokens must fit in int32")


cdef class EventQueue:
    """The core's event heap, exposed so tests can check its ordering and tie-breaking."""

    cdef EventHeap h

    def __cinit__(self):
        if heap_init(&self.h, 16) < 0:
            raise MemoryError()

    def __dealloc__(self):
        heap_release(&self.h)

    def push(self, double time, int kind=0, int target=0):
        """Insert an event at `time`; equal times pop in insertion order."""
        if heap_push(&self.h, time, kind, target) < 0:
            raise MemoryError()

    def pop(self):
        """Remove the earliest event and return (time, sequence, kind, target)."""
        if self.h.size == 0:
            raise IndexError("pop from an empty EventQueue")
        cdef Event ev = heap_pop(&self.h)
        return (ev.time, ev.seq, ev.kind, ev.target)

    def __len__(self):
        return self.h.size


def itl_bin_index(double gap):
    """Histogram bin of an inter-token gap (seconds); exposed for tests and the reference."""
    return itl_bin(gap)


cdef int _load_probe(CostCoeffs* c, StepShape* shape, const double[::1] cost, double prefill_tokens,
                     double prefill_pairs, double prefill_context, double logit_tokens,
                     double decode_tokens, double decode_context) except -1:
    """One coefficient row and one step shape, for the test probes below."""
    if cost.shape[0] != COST_NFIELDS:
        raise ValueError(f"cost must hold {COST_NFIELDS} coefficients; got {cost.shape[0]}")
    _load_cost(c, cost)
    shape.prefill_tokens = prefill_tokens
    shape.prefill_pairs = prefill_pairs
    shape.prefill_context = prefill_context
    shape.logit_tokens = logit_tokens
    shape.decode_tokens = decode_tokens
    shape.decode_context = decode_context
    return 0


def step_time(const double[::1] cost not None, double prefill_tokens, double prefill_pairs,
              double prefill_context, double logit_tokens, double decode_tokens,
              double decode_context):
    """Price one step with the compiled formula (for tests against the Python twin)."""
    cdef CostCoeffs c
    cdef StepShape shape
    _load_probe(&c, &shape, cost, prefill_tokens, prefill_pairs, prefill_context, logit_tokens,
                decode_tokens, decode_context)
    return step_seconds(&c, &shape)


def step_activity_time(const double[::1] cost not None, double prefill_tokens,
                       double prefill_pairs, double prefill_context, double logit_tokens,
                       double decode_tokens, double decode_context):
    """A step's (compute time, memory time) with the compiled formula (for tests against the
    Python twin, tokenmill.costmodel.step_activity)."""
    cdef CostCoeffs c
    cdef StepShape shape
    cdef double comp, mem
    _load_probe(&c, &shape, cost, prefill_tokens, prefill_pairs, prefill_context, logit_tokens,
                decode_tokens, decode_context)
    step_activity(&c, &shape, &comp, &mem)
    return (comp, mem)
