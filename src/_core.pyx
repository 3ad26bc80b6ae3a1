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
from libc.stdint cimport int8_t, int32_t, int64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy
from libc.math cimport INFINITY, NAN, isnan, isfinite

from event_heap cimport Event, EventHeap, heap_init, heap_release, heap_push, heap_pop
from index_heap cimport (IHeap, iheap_init, iheap_release, iheap_push, iheap_remove,
                         iheap_pop)
from itl_hist cimport ITL_NBINS, ITL_MANTISSA_BITS, ITL_MIN_EXPONENT, itl_bin
from prefix_cache cimport (PrefixCache, prefix_init, prefix_release, prefix_find, prefix_ref,
                           prefix_unref, prefix_insert, prefix_evict_oldest)
from step_cost cimport (CostCoeffs, COST_NFIELDS, COST_NSCALARS, KT_GRID, KT_OPS, KT_ROWS,
                       StepShape, step_seconds)

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

cdef enum:
    EV_STEP_END = 0

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


ctypedef struct Replica:
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
    int32_t* swapin_ids     # requests swapped back in for the step in flight
    int64_t n_swapin
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
    double busy_s
    double kv_block_s       # integral of blocks in use over time
    int64_t kv_peak


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
    int32_t* replica_of
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
    # replicas and policy
    Replica* reps
    int64_t n_reps
    int64_t policy
    int64_t block_size
    int64_t max_tokens
    int64_t max_seqs
    int64_t capacity
    bint priority
    int64_t preempt_mode
    int64_t swap_capacity
    double swap_s_per_block
    bint caching
    int64_t granule         # tokens per prefix id
    int64_t granule_blocks
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


# ---------------------------------------------------------------------------------------------
# Decoding set membership
# ---------------------------------------------------------------------------------------------

cdef inline int decode_join(Sim* s, Replica* rep, int32_t i, int64_t b) noexcept nogil:
    """Request i decodes from now on; after step t it holds t - b tokens."""
    s.base[i] = b
    s.done_key[i] = b + s.output[i]
    rep.phase[pos_mod(s.prompt[i] - 2 - b, s.block_size)] += 1
    rep.ctx_base += s.prompt[i] - 1 - b
    rep.n_decode += 1
    return iheap_push(&rep.done, i)


cdef inline void decode_leave(Sim* s, Replica* rep, int32_t i) noexcept nogil:
    """Request i stops decoding after step rep.step - 1 finished; fixes generated[i]."""
    cdef int64_t b = s.base[i]
    s.generated[i] = <int32_t> (rep.step - 1 - b)
    rep.phase[pos_mod(s.prompt[i] - 2 - b, s.block_size)] -= 1
    rep.ctx_base -= s.prompt[i] - 1 - b
    rep.n_decode -= 1
    iheap_remove(&rep.done, i)


cdef inline bint is_decoding(Sim* s, Replica* rep, int32_t i) noexcept nogil:
    return s.computed[i] >= s.target[i]


# ---------------------------------------------------------------------------------------------
# Releasing a request's KV
# ---------------------------------------------------------------------------------------------

cdef inline void release_kv(Sim* s, Replica* rep, int32_t i, int64_t tokens) noexcept nogil:
    """Free i's private blocks and drop its references to cached granules (deepest first, so
    they are evicted first, as vLLM frees a request's blocks in reverse order)."""
    cdef int64_t j
    cdef int64_t off = s.pfx_off[i] if s.caching else 0
    rep.empty_blocks += private_blocks(s, i, tokens)
    for j in range(s.n_shared[i] - 1, -1, -1):
        prefix_unref(&rep.cache, prefix_find(&rep.cache, s.pfx_ids[off + j]))
    s.n_shared[i] = 0
    s.share_closed[i] = 0
    s.computed[i] = 0
    s.target[i] = 0


cdef inline void leave_running(Sim* s, Replica* rep, int32_t i) noexcept nogil:
    """Take i out of the running set (decoding set or prefill list included)."""
    if is_decoding(s, rep, i):
        decode_leave(s, rep, i)
    else:
        pre_remove(rep, i)
    run_remove(s, rep, i)


cdef int preempt(Sim* s, Replica* rep, int32_t v, double now) noexcept nogil:
    """Preempt v: swap its KV to host memory if allowed and it is decoding, else recompute."""
    cdef bint decoding = is_decoding(s, rep, v)
    cdef int64_t tokens, private
    leave_running(s, rep, v)
    s.preemptions[v] += 1
    rep.preemptions += 1
    if decoding:
        s.last_token[v] = now
    tokens = kv_tokens(s, v)
    private = private_blocks(s, v, tokens)
    if (decoding and s.preempt_mode == PRE_SWAP
            and rep.swap_used + private <= s.swap_capacity):
        rep.empty_blocks += private
        rep.swap_used += private
        rep.swap_out_blocks += private
        s.status[v] = ST_SWAPPED
        fifo_push_back(s, &rep.swap_head, &rep.swap_tail, v)
        rep.n_swapped += 1
        return 0
    release_kv(s, rep, v, tokens)
    s.status[v] = ST_WAITING
    return wait_add(s, rep, v, True)


cdef void reject_running(Sim* s, Replica* rep, int32_t v) noexcept nogil:
    """v is the only running request and still cannot grow: it can never finish."""
    cdef bint decoding = is_decoding(s, rep, v)
    leave_running(s, rep, v)
    release_kv(s, rep, v, s.prompt[v] + s.generated[v] - 1 if decoding else s.computed[v])
    s.status[v] = ST_REJECTED_KV


# ---------------------------------------------------------------------------------------------
# The batch-step kernel
# ---------------------------------------------------------------------------------------------

cdef inline int64_t partial_chunks(Sim* s, Replica* rep, int64_t* blocks) noexcept nogil:
    """Give each prefill in progress its chunk (in admission order, from the budget left after
    the decodes); returns the tokens and sets *blocks to the new blocks they need."""
    cdef int64_t k, left = s.max_tokens - rep.n_decode, c, used = 0
    cdef int32_t i
    blocks[0] = 0
    for k in range(rep.n_pre):
        i = rep.pre_ids[k]
        c = s.target[i] - s.computed[i]
        if c > left - used:
            c = left - used
        s.chunk[i] = <int32_t> c
        used += c
        blocks[0] += ceil_div(s.computed[i] + c, s.block_size) - ceil_div(s.computed[i], s.block_size)
    return used


cdef inline int32_t pick_victim(Sim* s, Replica* rep) noexcept nogil:
    return rep.victims.items[0] if s.priority else rep.run_tail


cdef int admit_waiting(Sim* s, Replica* rep, double now, int64_t budget, int64_t* tokens,
                       int64_t* pairs, int64_t* context, int64_t* longest) noexcept nogil:
    """Admit waiting requests, first come first served (or by priority), while the budget, the
    sequence limit and the free blocks allow. Returns -1 only when memory runs out."""
    cdef int32_t i
    cdef int64_t tgt, hit, k, limit, c, nblocks, off, e
    while rep.n_running < s.max_seqs and budget > 0:
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
        if s.policy != POL_CHUNKED and tgt - hit > s.max_tokens:
            wait_pop(s, rep)
            s.status[i] = ST_REJECTED_BUDGET
            continue
        if ceil_div(tgt, s.block_size) > s.capacity:
            wait_pop(s, rep)
            s.status[i] = ST_REJECTED_KV
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
    cdef int64_t j, off = s.pfx_off[i] if s.caching else 0
    rep.n_swapped -= 1
    rep.swap_used -= private_blocks(s, i, s.prompt[i] + s.generated[i] - 1)
    for j in range(s.n_shared[i] - 1, -1, -1):
        prefix_unref(&rep.cache, prefix_find(&rep.cache, s.pfx_ids[off + j]))
    s.n_shared[i] = 0
    s.share_closed[i] = 0
    s.computed[i] = 0
    s.target[i] = 0
    s.status[i] = ST_WAITING
    return wait_add(s, rep, i, True)


cdef int swap_in(Sim* s, Replica* rep, int64_t step, int64_t* budget) noexcept nogil:
    """Bring swapped-out requests back (oldest first) to decode in this step."""
    cdef int32_t i
    cdef int64_t g, need, held
    while rep.swap_head >= 0 and rep.n_running < s.max_seqs and budget[0] > 0:
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
        s.status[i] = ST_RUNNING
        if run_append(s, rep, i) < 0 or decode_join(s, rep, i, step - g - 1) < 0:
            return -1
        rep.swapin_ids[rep.n_swapin] = i
        rep.n_swapin += 1
        budget[0] -= 1
    return 0


cdef int start_step(Sim* s, int64_t r, double now) noexcept nogil:
    """Select and price the next step of replica r (it ends at now + rep.step_dur; the replica
    stays idle if there is nothing to run). Returns -1 only when memory runs out."""
    cdef Replica* rep = &s.reps[r]
    cdef int64_t step = rep.step
    cdef int64_t bucket = pos_mod(-step, s.block_size)
    cdef bint preempted = False
    cdef int64_t need, pre_blocks = 0, pre_tokens, budget, k, c, x
    cdef int64_t tokens = 0, pairs = 0, context = 0, longest = 0, logits = 0
    cdef int64_t swapped_before = rep.swap_out_blocks + rep.swap_in_blocks
    cdef int32_t i
    cdef double dur
    cdef StepShape shape

    rep.n_swapin = 0
    # 1. Running requests first: one more block for every decode that crosses a block boundary
    #    and the blocks of each prefill chunk in progress; preempt while they do not fit.
    pre_tokens = partial_chunks(s, rep, &pre_blocks) if rep.n_pre > 0 else 0
    need = rep.phase[bucket] + pre_blocks
    while need > free_blocks(s, rep):
        if rep.n_running == 1:
            reject_running(s, rep, rep.run_head)
        else:
            if preempt(s, rep, pick_victim(s, rep), now) < 0:
                return -1
            preempted = True
        pre_tokens = partial_chunks(s, rep, &pre_blocks)
        need = rep.phase[bucket] + pre_blocks
    take_blocks(s, rep, need)
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

    # 2. Then swapped-out requests, then waiting ones, unless this step had to preempt (as in
    #    vLLM) or, for request-level batching, a batch is still running.
    budget = s.max_tokens - rep.n_decode - pre_tokens
    if (not preempted or rep.n_running == 0) and (s.policy != POL_STATIC or rep.n_running == 0):
        while True:
            if rep.swap_head >= 0 and swap_in(s, rep, step, &budget) < 0:
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
        return 0  # nothing to run: the replica idles until something arrives

    # 3. Price the step from its shape and put its end on the event queue.
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
    shape.logit_tokens = <double> (logits + rep.n_decode)
    shape.decode_tokens = <double> rep.n_decode
    shape.decode_context = <double> (rep.ctx_base + rep.n_decode * step)
    dur = step_seconds(&s.cost, &shape)
    if s.preempt_mode == PRE_SWAP:  # swaps are copied before the forward pass, as in vLLM V0
        dur += s.swap_s_per_block * (rep.swap_out_blocks + rep.swap_in_blocks - swapped_before)
    rep.busy = True
    rep.step_start = now
    rep.step_dur = dur
    rep.step_blocks = s.capacity - free_blocks(s, rep)
    rep.steps += 1
    rep.prefill_tokens += tokens
    rep.decode_tokens += rep.n_decode
    if tokens + rep.n_decode > rep.max_step_tokens:
        rep.max_step_tokens = tokens + rep.n_decode
    rep.busy_s += dur
    rep.kv_block_s += rep.step_blocks * dur
    if rep.step_blocks > rep.kv_peak:
        rep.kv_peak = rep.step_blocks
    return 0


cdef inline void finish(Sim* s, Replica* rep, int32_t i, double now) noexcept nogil:
    run_remove(s, rep, i)
    release_kv(s, rep, i, s.prompt[i] + s.output[i] - 1)
    s.status[i] = ST_FINISHED
    s.completion[i] = now


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


cdef int end_step(Sim* s, int64_t r, double now) noexcept nogil:
    """Hand out the step's tokens, finish prefills, retire finished requests."""
    cdef Replica* rep = &s.reps[r]
    cdef int64_t step = rep.step
    cdef int64_t k, kept = 0
    cdef int32_t i
    if rep.step_decodes > 0:
        record_gap(s, rep.step_dur, rep.step_decodes)
    for k in range(rep.n_swapin):  # their gap spans the time they spent swapped out
        record_gap(s, now - s.last_token[rep.swapin_ids[k]], 1)
    rep.n_swapin = 0
    for k in range(rep.n_pre):
        i = rep.pre_ids[k]
        s.computed[i] += s.chunk[i]
        s.chunk[i] = 0
        if s.caching:
            cache_new_granules(s, rep, i)
        if s.computed[i] < s.target[i]:
            rep.pre_ids[kept] = i
            kept += 1
            continue
        s.generated[i] += 1
        if s.generated[i] == 1:
            s.first_token[i] = now
        else:  # first token after a recompute: the gap spans the time spent preempted
            record_gap(s, now - s.last_token[i], 1)
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
# The event loop
# ---------------------------------------------------------------------------------------------

cdef int event_loop(Sim* s, double stop_time, double* end_time) noexcept nogil:
    cdef int64_t cursor = 0, r
    cdef double now = 0.0, t_arrival, t_event, t, t_end
    cdef Event ev
    cdef int32_t i
    cdef Replica* rep
    while True:
        t_arrival = s.arrival[cursor] if cursor < s.n else INFINITY
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
            if end_step(s, ev.target, now) < 0:
                return -1
            mark_dirty(s, ev.target)
        # ...then every request arriving now joins a queue (round robin over replicas)...
        while cursor < s.n and s.arrival[cursor] <= now:
            i = <int32_t> cursor
            r = s.rr_next
            s.rr_next = r + 1 if r + 1 < s.n_reps else 0
            s.replica_of[i] = <int32_t> r
            s.status[i] = ST_WAITING
            if wait_add(s, &s.reps[r], i, False) < 0:
                return -1
            s.events_processed += 1
            mark_dirty(s, r)
            cursor += 1
        # ...and then each idle replica with news picks its next step.
        if now > end_time[0]:
            end_time[0] = now
        while s.n_dirty > 0:
            s.n_dirty -= 1
            r = s.dirty_stack[s.n_dirty]
            rep = &s.reps[r]
            rep.dirty = False
            t = now
            while not rep.busy:
                if start_step(s, r, t) < 0:
                    return -1
                if not rep.busy:
                    break
                t_end = t + rep.step_dur
                # When nothing else can happen before this step ends (no other replica to
                # schedule now, no arrival, no other event, not past the stop), go straight
                # to its end instead of through the event queue: the order of events is the
                # same, and long runs of steps cost no queue operations.
                if (s.n_dirty > 0 or t_end > stop_time
                        or (cursor < s.n and s.arrival[cursor] <= t_end)
                        or (s.events.size > 0 and s.events.data[0].time <= t_end)):
                    if heap_push(&s.events, t_end, EV_STEP_END, <int32_t> r) < 0:
                        return -1
                    break
                s.events_processed += 1
                if end_step(s, r, t_end) < 0:
                    return -1
                t = t_end
                end_time[0] = t
    return 0


cdef void finalise_unfinished(Sim* s, double stop_time) noexcept nogil:
    """Fix token counts of requests still decoding when the simulation stopped early."""
    cdef int64_t r
    cdef int32_t i
    cdef Replica* rep
    cdef double over
    for r in range(s.n_reps):
        rep = &s.reps[r]
        i = rep.run_head
        while i >= 0:
            if is_decoding(s, rep, i):
                s.generated[i] = <int32_t> (rep.step - 1 - s.base[i])
            i = s.run_next[i]
        if rep.busy and rep.step_start + rep.step_dur > stop_time:
            over = rep.step_start + rep.step_dur - stop_time
            rep.busy_s -= over
            rep.kv_block_s -= rep.step_blocks * over


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

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
        double stop_time_s=INFINITY):
    """Simulate one or more identical replicas serving the requests under a batching policy.

    Requests arrive at `arrival_s` (seconds, sorted) and are assigned round robin to the
    replicas. Returns a dict of per-request result arrays, per-replica statistics and the
    inter-token-gap histogram. See tokenmill/_core.pyi and docs/schedulers.md.
    """
    cdef int64_t n = arrival_s.shape[0], k, r
    cdef Sim s
    cdef double end_time = 0.0
    cdef int rc = 0
    cdef int64_t granule_blocks = 1, max_entries
    cdef Replica* rep

    _check_inputs(arrival_s, prompt_tokens, output_tokens, cost, num_replicas, max_batch_tokens,
                  max_num_seqs, block_size, kv_capacity_blocks, policy, priority, preemption,
                  swap_capacity_blocks, swap_seconds_per_block, prefix_offsets, prefix_ids,
                  prefix_granule_tokens, prefix_caching, stop_time_s)
    if prefix_caching:
        granule_blocks = prefix_granule_tokens // block_size

    first_token = np.full(n, np.nan)
    completion = np.full(n, np.nan)
    admitted = np.full(n, np.nan)
    preemptions = np.zeros(n, dtype=np.int32)
    generated = np.zeros(n, dtype=np.int32)
    status = np.zeros(n, dtype=np.int8)
    replica_of = np.full(n, -1, dtype=np.int32)
    prefix_hit = np.zeros(n, dtype=np.int32)
    itl_hist = np.zeros(ITL_NBINS, dtype=np.int64)
    # working state owned by numpy: freed with the arrays, whatever happens
    base = np.zeros(n, dtype=np.int64)
    done_key = np.zeros(n, dtype=np.int64)
    prio_key = np.zeros(n, dtype=np.int64)
    victim_key = np.zeros(n, dtype=np.int64)
    positions = np.full((3, n), -1, dtype=np.int32)
    ints = np.zeros((7, n), dtype=np.int32)  # computed, target, chunk, n_shared, wait_next, prev, next
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
    cdef int32_t[::1] preemptions_v = preemptions
    cdef int32_t[::1] generated_v = generated
    cdef int8_t[::1] status_v = status
    cdef int32_t[::1] replica_v = replica_of
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
    cdef const int64_t[::1] off_v = empty_offsets
    cdef const int64_t[::1] ids_v = empty_ids
    if prefix_caching:
        off_v = prefix_offsets
        if prefix_ids.shape[0] > 0:
            ids_v = prefix_ids

    s.n = n
    s.arrival = &arrival_s[0] if n > 0 else NULL
    s.prompt = &prompt_tokens[0] if n > 0 else NULL
    s.output = &output_tokens[0] if n > 0 else NULL
    s.pfx_off = &off_v[0]
    s.pfx_ids = &ids_v[0]
    s.first_token = &first_token_v[0] if n > 0 else NULL
    s.completion = &completion_v[0] if n > 0 else NULL
    s.admitted = &admitted_v[0] if n > 0 else NULL
    s.preemptions = &preemptions_v[0] if n > 0 else NULL
    s.generated = &generated_v[0] if n > 0 else NULL
    s.status = &status_v[0] if n > 0 else NULL
    s.replica_of = &replica_v[0] if n > 0 else NULL
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
    s.share_closed = &closed_v[0] if n > 0 else NULL
    s.last_token = &last_token_v[0] if n > 0 else NULL
    s.itl_hist = &itl_v[0]
    s.itl_sum = 0.0
    s.itl_count = 0
    s.itl_max = 0.0
    s.n_reps = num_replicas
    s.policy = policy
    s.block_size = block_size
    s.max_tokens = max_batch_tokens
    s.max_seqs = max_num_seqs
    s.capacity = kv_capacity_blocks
    s.priority = priority_scheduling
    s.preempt_mode = preemption
    s.swap_capacity = swap_capacity_blocks
    s.swap_s_per_block = swap_seconds_per_block
    s.caching = prefix_caching
    s.granule = prefix_granule_tokens if prefix_caching else 1
    s.granule_blocks = granule_blocks
    s.rr_next = 0
    s.n_dirty = 0
    s.events_processed = 0
    _load_cost(&s.cost, cost)

    max_entries = kv_capacity_blocks // granule_blocks + 1 if prefix_caching else 1
    s.reps = <Replica*> calloc(num_replicas, sizeof(Replica))
    s.dirty_stack = <int32_t*> malloc(num_replicas * sizeof(int32_t))
    s.events.data = NULL
    try:
        if (s.reps == NULL or s.dirty_stack == NULL
                or heap_init(&s.events, 2 * num_replicas + 16) < 0):
            raise MemoryError("tokenmill core: out of memory allocating simulation state")
        for r in range(num_replicas):
            rep = &s.reps[r]
            rep.wait_head = -1
            rep.wait_tail = -1
            rep.swap_head = -1
            rep.swap_tail = -1
            rep.run_head = -1
            rep.run_tail = -1
            rep.empty_blocks = kv_capacity_blocks
            rep.phase = <int64_t*> calloc(block_size, sizeof(int64_t))
            rep.pre_ids = <int32_t*> malloc(max_num_seqs * sizeof(int32_t))
            rep.swapin_ids = <int32_t*> malloc(max_num_seqs * sizeof(int32_t))
            if (rep.phase == NULL or rep.pre_ids == NULL or rep.swapin_ids == NULL
                    or iheap_init(&rep.done, max_num_seqs, s.done_pos, s.done_key, 1) < 0
                    or iheap_init(&rep.victims, max_num_seqs if priority_scheduling else 1,
                                  s.victim_pos, s.victim_key, -1) < 0
                    or iheap_init(&rep.waitq, 64, s.wait_pos, s.prio_key, 1) < 0
                    or prefix_init(&rep.cache, max_entries, granule_blocks) < 0):
                raise MemoryError("tokenmill core: out of memory allocating replica state")

        with nogil:
            rc = event_loop(&s, stop_time_s, &end_time)
            if rc == 0:
                finalise_unfinished(&s, stop_time_s)
        if rc < 0:
            raise MemoryError("tokenmill core: out of memory during the simulation")
        replicas = _replica_stats(&s)
        return {
            "first_token_s": first_token,
            "completion_s": completion,
            "admitted_s": admitted,
            "preemptions": preemptions,
            "generated_tokens": generated,
            "status": status,
            "replica": replica_of,
            "prefix_hit_tokens": prefix_hit,
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
                rep = &s.reps[r]
                free(rep.phase)
                free(rep.pre_ids)
                free(rep.swapin_ids)
                iheap_release(&rep.done)
                iheap_release(&rep.victims)
                iheap_release(&rep.waitq)
                prefix_release(&rep.cache)
        free(s.reps)
        free(s.dirty_stack)
        heap_release(&s.events)


cdef dict _replica_stats(Sim* s):
    """Per-replica counters as numpy arrays (one entry per replica)."""
    cdef int64_t r, R = s.n_reps
    names_int = ("steps", "preemptions", "swap_out_blocks", "swap_in_blocks", "prefill_tokens",
                 "recompute_tokens", "decode_tokens", "prefix_query_tokens", "prefix_hit_tokens",
                 "max_step_tokens", "kv_peak_blocks", "kv_blocks_in_use_at_end", "swapped_at_end")
    ints = np.empty((len(names_int), R), dtype=np.int64)
    floats = np.empty((2, R))
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
        iv[11, r] = s.capacity - free_blocks(s, rep)
        iv[12, r] = rep.n_swapped
        fv[0, r] = rep.busy_s
        fv[1, r] = rep.kv_block_s
    out = {name: ints[k].copy() for k, name in enumerate(names_int)}
    out["busy_s"] = floats[0].copy()
    out["kv_block_seconds"] = floats[1].copy()
    return out


cdef void _load_cost(CostCoeffs* c, const double[::1] v) noexcept:
    # CostCoeffs is COST_NFIELDS doubles in COST_FIELDS order (checked at import), so the
    # coefficient array is its exact image.
    memcpy(c, &v[0], COST_NFIELDS * sizeof(double))


def _check_inputs(const double[::1] arrival_s, const int32_t[::1] prompt_tokens,
                  const int32_t[::1] output_tokens, const double[::1] cost,
                  int64_t num_replicas, int64_t max_batch_tokens, int64_t max_num_seqs,
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
