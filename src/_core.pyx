# The compiled core of tokenmill: event loop and batch-step kernel in one translation unit.
#
# Everything here runs per event. Nothing on these paths calls back into Python, allocates
# per step, or walks a whole queue: state is struct-of-arrays indexed by request and by
# replica, waiting queues are linked lists threaded through per-request arrays, and a decode
# step is priced from running sums rather than by visiting every running request.
#
# How a running request is tracked without touching it every step
# ----------------------------------------------------------------
# In iteration-level batching every running request takes part in every step of its replica,
# and each decode step gives it exactly one token. So a decoding request i on a replica whose
# step counter is t holds `generated = t - base[i]` tokens once step t has finished, where base
# is fixed when it joins the decoding set. From that one number follow:
#   * its completion step, base + output_tokens (kept in a per-replica min-heap);
#   * the KV tokens a decode at step t needs: prompt + t - 1 - base, so it needs a new block
#     exactly when (prompt - 2 - base + t) is a multiple of the block size; requests are
#     bucketed by that phase, and the blocks a step needs are one bucket count;
#   * the total context the decodes attend to: sum(prompt - 1 - base) + n_decode * t.
# Per-request work is therefore only done at admission, preemption and completion.

cimport cython
from libc.stdint cimport int8_t, int32_t, int64_t
from libc.stdlib cimport malloc, calloc, free
from libc.math cimport INFINITY, NAN, isnan, isfinite

from event_heap cimport Event, EventHeap, heap_init, heap_release, heap_push, heap_pop
from itl_hist cimport ITL_NBINS, ITL_MANTISSA_BITS, ITL_MIN_EXPONENT, itl_bin
from step_cost cimport CostCoeffs, COST_NFIELDS, StepShape, step_seconds

import numpy as np


# Request status codes (exported to Python as STATUS_* below).
cdef enum:
    ST_PENDING = 0        # has not arrived before the simulation stopped
    ST_WAITING = 1        # arrived, queued (never admitted, or preempted and requeued)
    ST_RUNNING = 2        # admitted: prefilling or decoding
    ST_FINISHED = 3
    ST_REJECTED_BUDGET = 4  # its (re)prefill needs more tokens than one step may hold
    ST_REJECTED_KV = 5      # it needs more KV blocks than the replica has in all

cdef enum:
    EV_STEP_END = 0

STATUS_PENDING = ST_PENDING
STATUS_WAITING = ST_WAITING
STATUS_RUNNING = ST_RUNNING
STATUS_FINISHED = ST_FINISHED
STATUS_REJECTED_BUDGET = ST_REJECTED_BUDGET
STATUS_REJECTED_KV = ST_REJECTED_KV

COST_FIELDS = (
    "overhead_s", "flops_per_token", "flops_per_logit", "flops_per_attn_pair", "flops_per_s",
    "weight_bytes", "kv_bytes_per_token", "act_bytes_per_token", "bytes_per_s",
    "comm_fixed_s", "comm_per_token_s",
)
assert len(COST_FIELDS) == COST_NFIELDS

ITL_BINS = ITL_NBINS
ITL_BIN_MANTISSA_BITS = ITL_MANTISSA_BITS
ITL_BIN_MIN_EXPONENT = ITL_MIN_EXPONENT


ctypedef struct Replica:
    int64_t step            # index of the step in flight, or of the next step when idle
    bint busy
    bint dirty              # has something new to schedule at the current instant
    double step_start
    double step_dur
    int64_t step_blocks     # KV blocks held while the step in flight runs
    int32_t wait_head
    int32_t wait_tail
    int64_t n_waiting
    int32_t run_head        # running requests in admission order; the tail is the
    int32_t run_tail        # preemption victim, as in vLLM
    int64_t n_running       # prefilling + decoding
    int64_t n_decode
    int64_t ctx_base        # sum over decoders of (prompt - 1 - base)
    int64_t* phase          # decoders per block phase (block_size counters)
    int64_t free_blocks
    int32_t* heap           # decoders keyed by completion step (indexed min-heap)
    int64_t heap_size
    int32_t* prefill_ids    # requests prefilling in the step in flight
    int64_t n_prefill
    int64_t step_decodes    # decoders in the step in flight
    # statistics
    int64_t steps
    int64_t preemptions
    int64_t prefill_tokens
    int64_t decode_tokens
    double busy_s
    double kv_block_s       # integral of blocks in use over time
    int64_t kv_peak


ctypedef struct Sim:
    int64_t n
    const double* arrival   # times requests join a queue, read through the event loop's cursor
    const int32_t* prompt
    const int32_t* output
    # per-request results
    double* first_token
    double* completion
    double* admitted
    int32_t* preemptions
    int32_t* generated
    int8_t* status
    int32_t* replica_of
    # per-request working state
    int64_t* base
    int32_t* heap_pos
    int32_t* wait_next
    int32_t* run_prev
    int32_t* run_next
    double* last_token
    # replicas and policy
    Replica* reps
    int64_t n_reps
    int64_t block_size
    int64_t max_tokens
    int64_t max_seqs
    int64_t capacity
    CostCoeffs cost
    int64_t rr_next
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
# Small helpers: ceil division, phase, ITL recording
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


# ---------------------------------------------------------------------------------------------
# Waiting queue: FIFO threaded through wait_next, with push-front for preempted requests
# ---------------------------------------------------------------------------------------------

cdef inline void wait_push_back(Sim* s, Replica* rep, int32_t i) noexcept nogil:
    s.wait_next[i] = -1
    if rep.wait_tail < 0:
        rep.wait_head = i
    else:
        s.wait_next[rep.wait_tail] = i
    rep.wait_tail = i
    rep.n_waiting += 1


cdef inline void wait_push_front(Sim* s, Replica* rep, int32_t i) noexcept nogil:
    s.wait_next[i] = rep.wait_head
    rep.wait_head = i
    if rep.wait_tail < 0:
        rep.wait_tail = i
    rep.n_waiting += 1


cdef inline int32_t wait_pop_front(Sim* s, Replica* rep) noexcept nogil:
    cdef int32_t i = rep.wait_head
    rep.wait_head = s.wait_next[i]
    if rep.wait_head < 0:
        rep.wait_tail = -1
    rep.n_waiting -= 1
    return i


# ---------------------------------------------------------------------------------------------
# Running list: doubly linked, in admission order
# ---------------------------------------------------------------------------------------------

cdef inline void run_append(Sim* s, Replica* rep, int32_t i) noexcept nogil:
    s.run_prev[i] = rep.run_tail
    s.run_next[i] = -1
    if rep.run_tail < 0:
        rep.run_head = i
    else:
        s.run_next[rep.run_tail] = i
    rep.run_tail = i
    rep.n_running += 1


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


# ---------------------------------------------------------------------------------------------
# Completion heap: decoders keyed by (completion step, request id), with removal by position
# ---------------------------------------------------------------------------------------------

cdef inline bint done_before(Sim* s, int32_t a, int32_t b) noexcept nogil:
    cdef int64_t ka = s.base[a] + s.output[a], kb = s.base[b] + s.output[b]
    return ka < kb or (ka == kb and a < b)


cdef inline void done_sift_up(Sim* s, Replica* rep, int64_t k) noexcept nogil:
    cdef int32_t i = rep.heap[k]
    cdef int64_t parent
    while k > 0:
        parent = (k - 1) >> 1
        if not done_before(s, i, rep.heap[parent]):
            break
        rep.heap[k] = rep.heap[parent]
        s.heap_pos[rep.heap[k]] = <int32_t> k
        k = parent
    rep.heap[k] = i
    s.heap_pos[i] = <int32_t> k


cdef inline void done_sift_down(Sim* s, Replica* rep, int64_t k) noexcept nogil:
    cdef int32_t i = rep.heap[k]
    cdef int64_t child, n = rep.heap_size
    while True:
        child = 2 * k + 1
        if child >= n:
            break
        if child + 1 < n and done_before(s, rep.heap[child + 1], rep.heap[child]):
            child += 1
        if not done_before(s, rep.heap[child], i):
            break
        rep.heap[k] = rep.heap[child]
        s.heap_pos[rep.heap[k]] = <int32_t> k
        k = child
    rep.heap[k] = i
    s.heap_pos[i] = <int32_t> k


cdef inline void done_push(Sim* s, Replica* rep, int32_t i) noexcept nogil:
    rep.heap[rep.heap_size] = i
    rep.heap_size += 1
    done_sift_up(s, rep, rep.heap_size - 1)


cdef inline void done_remove(Sim* s, Replica* rep, int32_t i) noexcept nogil:
    cdef int64_t k = s.heap_pos[i]
    rep.heap_size -= 1
    if k == rep.heap_size:
        return
    rep.heap[k] = rep.heap[rep.heap_size]
    s.heap_pos[rep.heap[k]] = <int32_t> k
    if k > 0 and done_before(s, rep.heap[k], rep.heap[(k - 1) >> 1]):
        done_sift_up(s, rep, k)
    else:
        done_sift_down(s, rep, k)


# ---------------------------------------------------------------------------------------------
# Decoding set membership
# ---------------------------------------------------------------------------------------------

cdef inline void decode_join(Sim* s, Replica* rep, int32_t i, int64_t step) noexcept nogil:
    """Request i finished its prefill in `step` holding generated[i] tokens."""
    cdef int64_t b = step - s.generated[i]
    s.base[i] = b
    rep.phase[pos_mod(s.prompt[i] - 2 - b, s.block_size)] += 1
    rep.ctx_base += s.prompt[i] - 1 - b
    rep.n_decode += 1
    done_push(s, rep, i)


cdef inline void decode_leave(Sim* s, Replica* rep, int32_t i, int64_t last_step) noexcept nogil:
    """Request i leaves the decoding set after `last_step` finished; fixes generated[i]."""
    cdef int64_t b = s.base[i]
    s.generated[i] = <int32_t> (last_step - b)
    rep.phase[pos_mod(s.prompt[i] - 2 - b, s.block_size)] -= 1
    rep.ctx_base -= s.prompt[i] - 1 - b
    rep.n_decode -= 1
    done_remove(s, rep, i)


cdef inline int64_t blocks_held(Sim* s, int32_t i) noexcept nogil:
    """KV blocks of a request not in a step: its prompt and all generated tokens but the last."""
    return ceil_div(s.prompt[i] + s.generated[i] - 1, s.block_size)


# ---------------------------------------------------------------------------------------------
# The batch-step kernel
# ---------------------------------------------------------------------------------------------

cdef inline void preempt(Sim* s, Replica* rep, int32_t v, double now) noexcept nogil:
    """Preempt by recompute: free v's blocks and requeue it at the front (vLLM's default)."""
    decode_leave(s, rep, v, rep.step - 1)
    run_remove(s, rep, v)
    rep.free_blocks += blocks_held(s, v)
    s.status[v] = ST_WAITING
    s.preemptions[v] += 1
    s.last_token[v] = now
    rep.preemptions += 1
    wait_push_front(s, rep, v)


cdef inline void reject_running(Sim* s, Replica* rep, int32_t v, double now) noexcept nogil:
    """v alone fills the replica's whole KV cache and still needs a block: it can never finish."""
    decode_leave(s, rep, v, rep.step - 1)
    run_remove(s, rep, v)
    rep.free_blocks += blocks_held(s, v)
    s.status[v] = ST_REJECTED_KV
    issue_next(s, now)


cdef int start_step(Sim* s, int64_t r, double now) noexcept nogil:
    """Select and price the next step of replica r; returns -1 only when memory runs out."""
    cdef Replica* rep = &s.reps[r]
    cdef int64_t step = rep.step
    cdef int64_t bucket = pos_mod(-step, s.block_size)
    cdef bint preempted = False
    cdef int64_t need, budget, eff, nblocks
    cdef int64_t prefill_tokens = 0, prefill_pairs = 0
    cdef int32_t i
    cdef double dur
    cdef StepShape shape

    # 1. Running requests first: one more KV block for every decode that crosses a boundary.
    need = rep.phase[bucket]
    while need > rep.free_blocks:
        if rep.n_running == 1:
            reject_running(s, rep, rep.run_tail, now)
        else:
            preempt(s, rep, rep.run_tail, now)
            preempted = True
        need = rep.phase[bucket]
    rep.free_blocks -= need

    # 2. Then waiting requests, first come first served, whole prompts, while the token budget,
    #    the sequence limit and the free blocks allow. As in vLLM, nothing is admitted in a step
    #    that had to preempt (unless nothing at all is left running).
    rep.n_prefill = 0
    if not preempted or rep.n_running == 0:
        budget = s.max_tokens - rep.n_decode
        while rep.wait_head >= 0 and rep.n_running < s.max_seqs:
            i = rep.wait_head
            eff = s.prompt[i] + s.generated[i]
            if eff > s.max_tokens:
                wait_pop_front(s, rep)
                s.status[i] = ST_REJECTED_BUDGET
                issue_next(s, now)
                continue
            nblocks = ceil_div(eff, s.block_size)
            if nblocks > s.capacity:
                wait_pop_front(s, rep)
                s.status[i] = ST_REJECTED_KV
                issue_next(s, now)
                continue
            if eff > budget or nblocks > rep.free_blocks:
                break
            wait_pop_front(s, rep)
            run_append(s, rep, i)
            s.status[i] = ST_RUNNING
            if isnan(s.admitted[i]):
                s.admitted[i] = now
            rep.free_blocks -= nblocks
            rep.prefill_ids[rep.n_prefill] = i
            rep.n_prefill += 1
            prefill_tokens += eff
            prefill_pairs += eff * (eff + 1) // 2
            budget -= eff

    if rep.n_prefill == 0 and rep.n_decode == 0:
        return 0  # nothing to run: the replica idles until something arrives

    # 3. Price the step from running sums and put its end on the event queue.
    rep.step_decodes = rep.n_decode
    shape.prefill_tokens = <double> prefill_tokens
    shape.prefill_pairs = <double> prefill_pairs
    shape.prefill_context = 0.0
    shape.logit_tokens = <double> (rep.n_prefill + rep.n_decode)
    shape.decode_tokens = <double> rep.n_decode
    shape.decode_context = <double> (rep.ctx_base + rep.n_decode * step)
    dur = step_seconds(&s.cost, &shape)
    rep.busy = True
    rep.step_start = now
    rep.step_dur = dur
    rep.step_blocks = s.capacity - rep.free_blocks
    rep.steps += 1
    rep.prefill_tokens += prefill_tokens
    rep.decode_tokens += rep.n_decode
    rep.busy_s += dur
    rep.kv_block_s += rep.step_blocks * dur
    if rep.step_blocks > rep.kv_peak:
        rep.kv_peak = rep.step_blocks
    return heap_push(&s.events, now + dur, EV_STEP_END, <int32_t> r)


cdef inline void finish(Sim* s, Replica* rep, int32_t i, double now) noexcept nogil:
    run_remove(s, rep, i)
    rep.free_blocks += blocks_held(s, i)
    s.status[i] = ST_FINISHED
    s.completion[i] = now
    issue_next(s, now)


cdef void end_step(Sim* s, int64_t r, double now) noexcept nogil:
    """Hand out the step's tokens, move prefills into the decoding set, retire finished ones."""
    cdef Replica* rep = &s.reps[r]
    cdef int64_t step = rep.step
    cdef int64_t k
    cdef int32_t i
    if rep.step_decodes > 0:
        record_gap(s, rep.step_dur, rep.step_decodes)
    for k in range(rep.n_prefill):
        i = rep.prefill_ids[k]
        s.generated[i] += 1
        if s.generated[i] == 1:
            s.first_token[i] = now
        else:  # first token after a recompute: the gap spans the time spent preempted
            record_gap(s, now - s.last_token[i], 1)
        if s.generated[i] >= s.output[i]:
            finish(s, rep, i, now)
        else:
            decode_join(s, rep, i, step)
    rep.n_prefill = 0
    while rep.heap_size > 0 and s.base[rep.heap[0]] + s.output[rep.heap[0]] <= step:
        i = rep.heap[0]
        decode_leave(s, rep, i, step)
        finish(s, rep, i, now)
    rep.step = step + 1
    rep.busy = False


# ---------------------------------------------------------------------------------------------
# The event loop
# ---------------------------------------------------------------------------------------------

cdef int event_loop(Sim* s, double stop_time, double* end_time) noexcept nogil:
    cdef int64_t cursor = 0, r
    cdef double now = 0.0, t_arrival, t_event
    cdef Event ev
    cdef int32_t i
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
        # Steps that end now free their blocks before anything is scheduled at this instant...
        while s.events.size > 0 and s.events.data[0].time <= now:
            ev = heap_pop(&s.events)
            s.events_processed += 1
            end_step(s, ev.target, now)
            mark_dirty(s, ev.target)
        # ...then every request arriving now joins a queue (round robin over replicas)...
        while cursor < s.n_issued and s.arrival[cursor] <= now:
            i = <int32_t> cursor
            r = s.rr_next
            s.rr_next = r + 1 if r + 1 < s.n_reps else 0
            s.replica_of[i] = <int32_t> r
            s.status[i] = ST_WAITING
            wait_push_back(s, &s.reps[r], i)
            s.events_processed += 1
            mark_dirty(s, r)
            cursor += 1
        # ...and then each idle replica with news picks its next step.
        while s.n_dirty > 0:
            s.n_dirty -= 1
            r = s.dirty_stack[s.n_dirty]
            rep = &s.reps[r]
            rep.dirty = False
            if not rep.busy:
                if start_step(s, r, now) < 0:
                    return -1
        end_time[0] = now
    return 0


cdef void finalise_unfinished(Sim* s, double stop_time) noexcept nogil:
    """Fix token counts of requests still running when the simulation stopped early."""
    cdef int64_t r
    cdef int32_t i
    cdef Replica* rep
    cdef double over
    for r in range(s.n_reps):
        rep = &s.reps[r]
        i = rep.run_head
        while i >= 0:
            if s.heap_pos[i] >= 0 and s.heap_pos[i] < rep.heap_size and rep.heap[s.heap_pos[i]] == i:
                s.generated[i] = <int32_t> (rep.step - 1 - s.base[i])
            i = s.run_next[i]
        if rep.busy and rep.step_start + rep.step_dur > stop_time:
            over = rep.step_start + rep.step_dur - stop_time
            rep.busy_s -= over
            rep.kv_block_s -= rep.step_blocks * over


def run(const double[::1] arrival_s not None,
        const int32_t[::1] prompt_tokens not None,
        const int32_t[::1] output_tokens not None,
        const double[::1] cost not None,
        *,
        int64_t num_replicas,
        int64_t max_batch_tokens,
        int64_t max_num_seqs,
        int64_t block_size,
        int64_t kv_capacity_blocks,
        double stop_time_s=INFINITY,
        int64_t concurrency=0,
        double think_time_s=0.0):
    """Simulate iteration-level batching (Orca) with paged KV and preemption by recompute.

    Requests arrive at `arrival_s` (seconds, sorted) and are assigned round robin to
    `num_replicas` identical replicas. With `concurrency` C > 0 the loop is closed: at most C
    requests are outstanding; requests 0..C-1 arrive at their arrival_s, and each time a
    request finishes or is rejected the next one arrives `think_time_s` later (but not before
    its own arrival_s). The arrival times used are returned as "arrival_s". Returns a dict of
    per-request result arrays, per-replica statistics and the inter-token-gap histogram. See
    tokenmill/_core.pyi.
    """
    cdef int64_t n = arrival_s.shape[0], k, r
    cdef Sim s
    cdef double end_time = 0.0
    cdef int rc

    if concurrency < 0:
        raise ValueError(f"concurrency must be >= 0 (0: open loop); got {concurrency}")
    if not (isfinite(think_time_s) and think_time_s >= 0.0):
        raise ValueError(f"think_time_s must be finite and >= 0; got {think_time_s}")
    _check_inputs(arrival_s, prompt_tokens, output_tokens, cost, num_replicas, max_batch_tokens,
                  max_num_seqs, block_size, kv_capacity_blocks, stop_time_s)

    first_token = np.full(n, np.nan)
    completion = np.full(n, np.nan)
    admitted = np.full(n, np.nan)
    preemptions = np.zeros(n, dtype=np.int32)
    generated = np.zeros(n, dtype=np.int32)
    status = np.zeros(n, dtype=np.int8)
    replica_of = np.full(n, -1, dtype=np.int32)
    itl_hist = np.zeros(ITL_NBINS, dtype=np.int64)
    closed = 0 < concurrency < n
    if closed:  # arrival times are written as requests are issued; NaN: never issued
        arrived = np.full(n, np.nan)
        arrived[:concurrency] = np.asarray(arrival_s[:concurrency])
    else:
        arrived = np.asarray(arrival_s)
    cdef double[::1] issued_v = arrived if closed else None

    cdef double[::1] first_token_v = first_token
    cdef double[::1] completion_v = completion
    cdef double[::1] admitted_v = admitted
    cdef int32_t[::1] preemptions_v = preemptions
    cdef int32_t[::1] generated_v = generated
    cdef int8_t[::1] status_v = status
    cdef int32_t[::1] replica_v = replica_of
    cdef int64_t[::1] itl_v = itl_hist

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
    s.first_token = &first_token_v[0] if n > 0 else NULL
    s.completion = &completion_v[0] if n > 0 else NULL
    s.admitted = &admitted_v[0] if n > 0 else NULL
    s.preemptions = &preemptions_v[0] if n > 0 else NULL
    s.generated = &generated_v[0] if n > 0 else NULL
    s.status = &status_v[0] if n > 0 else NULL
    s.replica_of = &replica_v[0] if n > 0 else NULL
    s.itl_hist = &itl_v[0]
    s.itl_sum = 0.0
    s.itl_count = 0
    s.itl_max = 0.0
    s.n_reps = num_replicas
    s.block_size = block_size
    s.max_tokens = max_batch_tokens
    s.max_seqs = max_num_seqs
    s.capacity = kv_capacity_blocks
    s.rr_next = 0
    s.n_dirty = 0
    s.events_processed = 0
    _load_cost(&s.cost, cost)

    cdef int64_t m = n if n > 0 else 1
    s.base = <int64_t*> malloc(m * sizeof(int64_t))
    s.heap_pos = <int32_t*> malloc(m * sizeof(int32_t))
    s.wait_next = <int32_t*> malloc(m * sizeof(int32_t))
    s.run_prev = <int32_t*> malloc(m * sizeof(int32_t))
    s.run_next = <int32_t*> malloc(m * sizeof(int32_t))
    s.last_token = <double*> malloc(m * sizeof(double))
    s.reps = <Replica*> calloc(num_replicas, sizeof(Replica))
    s.dirty_stack = <int32_t*> malloc(num_replicas * sizeof(int32_t))
    s.events.data = NULL
    try:
        if (s.base == NULL or s.heap_pos == NULL or s.wait_next == NULL or s.run_prev == NULL
                or s.run_next == NULL or s.last_token == NULL or s.reps == NULL
                or s.dirty_stack == NULL or heap_init(&s.events, 2 * num_replicas + 16) < 0):
            raise MemoryError("tokenmill core: out of memory allocating simulation state")
        for k in range(n):
            s.heap_pos[k] = -1
            s.base[k] = 0
        for r in range(num_replicas):
            s.reps[r].wait_head = -1
            s.reps[r].wait_tail = -1
            s.reps[r].run_head = -1
            s.reps[r].run_tail = -1
            s.reps[r].free_blocks = kv_capacity_blocks
            s.reps[r].phase = <int64_t*> calloc(block_size, sizeof(int64_t))
            s.reps[r].heap = <int32_t*> malloc(max_num_seqs * sizeof(int32_t))
            s.reps[r].prefill_ids = <int32_t*> malloc(max_num_seqs * sizeof(int32_t))
            if s.reps[r].phase == NULL or s.reps[r].heap == NULL or s.reps[r].prefill_ids == NULL:
                raise MemoryError("tokenmill core: out of memory allocating replica state")

        with nogil:
            rc = event_loop(&s, stop_time_s, &end_time)
            if rc == 0:
                finalise_unfinished(&s, stop_time_s)
        if rc < 0:
            raise MemoryError("tokenmill core: out of memory growing the event queue")
        replicas = _replica_stats(&s)
        return {
            "arrival_s": arrived,
            "first_token_s": first_token,
            "completion_s": completion,
            "admitted_s": admitted,
            "preemptions": preemptions,
            "generated_tokens": generated,
            "status": status,
            "replica": replica_of,
            "replicas": replicas,
            "itl_histogram": itl_hist,
            "itl_sum_s": s.itl_sum,
            "itl_count": s.itl_count,
            "itl_max_s": s.itl_max,
            "events": s.events_processed,
            "end_time_s": end_time,
        }
    finally:
        if s.reps != NULL:
            for r in range(num_replicas):
                free(s.reps[r].phase)
                free(s.reps[r].heap)
                free(s.reps[r].prefill_ids)
        free(s.reps)
        free(s.dirty_stack)
        free(s.base)
        free(s.heap_pos)
        free(s.wait_next)
        free(s.run_prev)
        free(s.run_next)
        free(s.last_token)
        heap_release(&s.events)


cdef dict _replica_stats(Sim* s):
    """Per-replica counters as numpy arrays (one entry per replica)."""
    cdef int64_t r, R = s.n_reps
    steps = np.empty(R, dtype=np.int64)
    preemptions = np.empty(R, dtype=np.int64)
    prefill_tokens = np.empty(R, dtype=np.int64)
    decode_tokens = np.empty(R, dtype=np.int64)
    busy_s = np.empty(R)
    kv_block_s = np.empty(R)
    kv_peak = np.empty(R, dtype=np.int64)
    kv_end = np.empty(R, dtype=np.int64)
    cdef int64_t[::1] steps_v = steps, pre_v = preemptions, pt_v = prefill_tokens
    cdef int64_t[::1] dt_v = decode_tokens, peak_v = kv_peak, end_v = kv_end
    cdef double[::1] busy_v = busy_s, kvs_v = kv_block_s
    for r in range(R):
        steps_v[r] = s.reps[r].steps
        pre_v[r] = s.reps[r].preemptions
        pt_v[r] = s.reps[r].prefill_tokens
        dt_v[r] = s.reps[r].decode_tokens
        busy_v[r] = s.reps[r].busy_s
        kvs_v[r] = s.reps[r].kv_block_s
        peak_v[r] = s.reps[r].kv_peak
        end_v[r] = s.capacity - s.reps[r].free_blocks
    return {
        "steps": steps, "preemptions": preemptions, "prefill_tokens": prefill_tokens,
        "decode_tokens": decode_tokens, "busy_s": busy_s, "kv_block_seconds": kv_block_s,
        "kv_peak_blocks": kv_peak, "kv_blocks_in_use_at_end": kv_end,
    }


cdef void _load_cost(CostCoeffs* c, const double[::1] v) noexcept:
    c.overhead_s = v[0]
    c.flops_per_token = v[1]
    c.flops_per_logit = v[2]
    c.flops_per_attn_pair = v[3]
    c.flops_per_s = v[4]
    c.weight_bytes = v[5]
    c.kv_bytes_per_token = v[6]
    c.act_bytes_per_token = v[7]
    c.bytes_per_s = v[8]
    c.comm_fixed_s = v[9]
    c.comm_per_token_s = v[10]


def _check_inputs(const double[::1] arrival_s, const int32_t[::1] prompt_tokens,
                  const int32_t[::1] output_tokens, const double[::1] cost,
                  int64_t num_replicas, int64_t max_batch_tokens, int64_t max_num_seqs,
                  int64_t block_size, int64_t kv_capacity_blocks, double stop_time_s):
    """Refuse anything that could crash or hang the loop, naming the argument at fault."""
    cdef int64_t n = arrival_s.shape[0], k
    cdef double prev = 0.0
    if prompt_tokens.shape[0] != n or output_tokens.shape[0] != n:
        raise ValueError(f"arrival_s, prompt_tokens and output_tokens must have the same length; "
                         f"got {n}, {prompt_tokens.shape[0]} and {output_tokens.shape[0]}")
    if n >= 2**31 - 1:
        raise ValueError(f"at most {2**31 - 2} requests per simulation; got {n}")
    if cost.shape[0] != COST_NFIELDS:
        raise ValueError(f"cost must hold {COST_NFIELDS} coefficients {COST_FIELDS}; got {cost.shape[0]}")
    for k in range(COST_NFIELDS):
        if not (isfinite(cost[k]) and cost[k] >= 0.0):
            raise ValueError(f"cost coefficient {COST_FIELDS[k]} must be finite and >= 0; got {cost[k]}")
    if not (cost[4] > 0.0 and cost[8] > 0.0):
        raise ValueError("cost coefficients flops_per_s and bytes_per_s must be > 0")
    if num_replicas < 1 or num_replicas > 1_000_000:
        raise ValueError(f"num_replicas must be between 1 and 1000000; got {num_replicas}")
    if block_size < 1 or block_size > 65536:
        raise ValueError(f"block_size must be between 1 and 65536; got {block_size}")
    if max_num_seqs < 1 or max_num_seqs > 1_000_000:
        raise ValueError(f"max_num_seqs must be between 1 and 1000000; got {max_num_seqs}")
    if max_batch_tokens < max_num_seqs:
        raise ValueError(f"max_batch_tokens ({max_batch_tokens}) must be >= max_num_seqs "
                         f"({max_num_seqs}) so that every running sequence can decode")
    if kv_capacity_blocks < 1:
        raise ValueError(f"kv_capacity_blocks must be >= 1; got {kv_capacity_blocks}")
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


def step_time(const double[::1] cost not None, double prefill_tokens, double prefill_pairs,
              double prefill_context, double logit_tokens, double decode_tokens,
              double decode_context):
    """Price one step with the compiled formula (for tests against the Python twin)."""
    cdef CostCoeffs c
    cdef StepShape shape
    if cost.shape[0] != COST_NFIELDS:
        raise ValueError(f"cost must hold {COST_NFIELDS} coefficients; got {cost.shape[0]}")
    _load_cost(&c, cost)
    shape.prefill_tokens = prefill_tokens
    shape.prefill_pairs = prefill_pairs
    shape.prefill_context = prefill_context
    shape.logit_tokens = logit_tokens
    shape.decode_tokens = decode_tokens
    shape.decode_context = decode_context
    return step_seconds(&c, &shape)
