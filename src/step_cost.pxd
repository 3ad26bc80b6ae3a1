from libc.math cimport pow

# Price of one batch step of one pipeline stage, from coefficients computed once in Python.
#
# The kernel knows, for every step, its shape (StepShape): how many prompt tokens it computes,
# how many query-key pairs their causal attention covers and how much cached context they read,
# how many tokens need logits, how many sequences decode and how many cached tokens those
# decodes attend to. The coefficients (tokenmill.costmodel, for one chip of a tensor-parallel
# group running one stage's layers) turn those counts into seconds, operator by operator:
#
#   step = framework + max(gpu, launch floor)
#   framework = (prefill or decode step overhead) + per-token overhead x logit tokens
#   gpu = kernel floors
#       + sum over the GEMMs (QKV, output, MLP in, MLP out on T = prefill + decode tokens rows;
#         LM head on the logit rows) of max(FLOPs x (rows + m0) / FLOP/s, bytes / bytes/s),
#         i.e. a roofline whose compute side runs at an efficiency rows / (rows + m0) of its
#         ceiling (a GEMM with few rows never reaches peak)
#       + routed experts: a grouped GEMM of k x T rows over the E(1 - (1 - k/E)^T) experts the
#         step touches in expectation, each paying the m0 rows of a small GEMM
#       + prefill attention: max(pair FLOPs x (pairs + a0) / pairs at the attention rate,
#         KV bytes of the context and new tokens at the KV rate)
#       + decode attention: max(pair FLOPs of the cached keys, KV bytes read)
#       + element-wise bytes per token
#       + TP all-reduce (the cheaper of ring and tree for the step's size), EP all-to-all,
#         PP send to the next stage
#
# Windowed layers (sliding window, Llama 4 chunks) cap pairs and KV reads at window_tokens per
# token. MLA decodes pay flops_per_decode_pair_extra per cached key (absorbed form).
#
# A kernel table (tokenmill.kernel_table) may replace parts of the gpu term with measured times,
# interpolated linearly: per-layer GEMM times by rows (op tables), or the whole gpu term of a
# decode-only step (batch x context per sequence) or of a step that only prefills whole prompts
# (prompts x tokens per prompt). Outside a table's range the model prices the step.
#
# tokenmill.costmodel holds the identical formula in Python for the reference simulator; keep
# the two in step, including the order of the floating-point operations.

cdef enum:
    KT_GRID = 16    # points per axis of the step tables
    KT_OPS = 5      # op tables: qkv, o, mlp_in, mlp_out, lm_head
    KT_ROWS = 32    # points of one op table
    COST_FLOPS_PER_S = 4   # the two rates _check_inputs requires to be positive
    COST_BYTES_PER_S = 8
    COST_NSCALARS = 50
    COST_NFIELDS = 50 + 2 * (2 + 2 * 16 + 16 * 16) + 5 * (1 + 2 * 32)


ctypedef struct CostCoeffs:
    double overhead_prefill_s      # framework time of a step that prefills
    double overhead_decode_s       # framework time of a decode-only step
    double overhead_per_token_s    # framework time per token sampled (logit rows)
    double gemm_half_rows          # m0: rows at which a GEMM reaches half its ceiling
    double flops_per_s             # ceiling FLOP/s of a large GEMM on one chip
    double attn_s_per_flop         # seconds per attention FLOP at the attention ceiling
    double attn_half_pairs         # a0: pairs at which prefill attention reaches half its ceiling
    double kv_s_per_byte           # seconds per KV-cache byte
    double bytes_per_s             # achieved bytes/s streaming weights
    double elementwise_s_per_byte  # seconds per element-wise byte
    double kernel_fixed_s          # kernels x per-kernel floor of a step
    double prefill_launch_floor_s  # kernels x launch time when prefill steps launch eagerly
    double decode_launch_floor_s   # kernels x launch time of an eager decode step
    double graph_max_decodes       # decode steps above this many sequences launch eagerly
    double qkv_flops_per_row       # the GEMMs: FLOPs per row, weight bytes, activation bytes
    double qkv_weight_bytes        # per row, all summed over the stage's layers, per chip
    double qkv_act_bytes_per_row
    double o_flops_per_row
    double o_weight_bytes
    double o_act_bytes_per_row
    double mlp_in_flops_per_row
    double mlp_in_weight_bytes
    double mlp_in_act_bytes_per_row
    double mlp_out_flops_per_row
    double mlp_out_weight_bytes
    double mlp_out_act_bytes_per_row
    double lm_head_flops_per_row
    double lm_head_weight_bytes
    double lm_head_act_bytes_per_row
    double expert_flops_per_row    # one routed (token, expert) row, all MoE layers, per chip
    double expert_bytes            # bytes of one routed expert, all MoE layers, per chip
    double expert_act_bytes_per_row
    double num_experts             # routed experts per MoE layer (0: dense model)
    double expert_miss             # 1 - k/E: chance a token does not pick a given expert
    double experts_per_token       # k
    double flops_per_attn_pair     # full-attention layers, prefill form, per chip
    double flops_per_decode_pair_extra  # extra FLOPs per cached key a decode pays (MLA)
    double flops_per_window_pair   # windowed layers, per chip
    double kv_bytes_per_token      # full-attention layers' KV bytes per token per chip
    double kv_window_bytes_per_token    # windowed layers' KV bytes per token per chip
    double window_tokens           # keys a windowed layer attends to at most (0: none)
    double elementwise_bytes_per_token
    double ar_ring_fixed_s         # TP all-reduces of the step, ring algorithm
    double ar_ring_per_token_s
    double ar_tree_fixed_s         # the same, tree algorithm
    double ar_tree_per_token_s
    double a2a_fixed_s             # EP dispatch and combine
    double a2a_per_token_s
    double send_fixed_s            # PP send to the next stage (0 on the last stage)
    double send_per_token_s
    double kt_decode_nb            # decode step table: batch points (0: no table)
    double kt_decode_ns            # context-per-sequence points
    double kt_decode_batch[16]
    double kt_decode_seq[16]
    double kt_decode_s[256]   # seconds, row-major [batch][seq]
    double kt_prefill_nb           # prefill step table: prompts points (0: no table)
    double kt_prefill_ns           # tokens-per-prompt points
    double kt_prefill_batch[16]
    double kt_prefill_seq[16]
    double kt_prefill_s[256]
    double kt_op_n[5]         # points of each op table (0: none)
    double kt_op_rows[160]
    double kt_op_s[160]   # seconds for all of the stage's layers


ctypedef struct StepShape:
    double prefill_tokens    # prompt tokens computed in the step (whole prompts or chunks)
    double prefill_pairs     # causal (query, key) pairs of those tokens, prior context included
    double prefill_context   # cached tokens the prefills attend to (prefix hits, earlier chunks)
    double logit_tokens      # tokens that need logits: one per decode and per finishing prefill
    double decode_tokens     # sequences decoding one token each
    double decode_context    # cached tokens the decodes attend to, their own new one included


cdef inline double capped(double x, double cap) noexcept nogil:
    return x if x < cap else cap


cdef inline double larger(double a, double b) noexcept nogil:
    return a if a > b else b


cdef inline int bracket(const double* x, int n, double v) noexcept nogil:
    """Index i of the segment [x[i], x[i+1]] holding v (x ascending, n >= 2)."""
    cdef int i = 0
    while i < n - 2 and x[i + 1] <= v:
        i += 1
    return i


cdef inline double interp1(const double* x, const double* y, int n, double v) noexcept nogil:
    cdef int i
    cdef double dx
    if n == 1:
        return y[0]
    i = bracket(x, n, v)
    dx = x[i + 1] - x[i]
    if dx <= 0.0:
        return y[i]
    return y[i] + (y[i + 1] - y[i]) * ((v - x[i]) / dx)


cdef inline double interp2(const double* bx, int nb, const double* sx, int ns, const double* t,
                           double b, double sv) noexcept nogil:
    cdef int i
    cdef double lo, hi, dx
    if nb == 1:
        return interp1(sx, t, ns, sv)
    i = bracket(bx, nb, b)
    lo = interp1(sx, &t[i * KT_GRID], ns, sv)
    hi = interp1(sx, &t[(i + 1) * KT_GRID], ns, sv)
    dx = bx[i + 1] - bx[i]
    if dx <= 0.0:
        return lo
    return lo + (hi - lo) * ((b - bx[i]) / dx)


cdef inline double gemm_seconds(const CostCoeffs* c, int op, double flops, double wbytes,
                                double act, double rows, double s_per_flop,
                                double s_per_byte) noexcept nogil:
    """One GEMM operator on `rows` rows: its op table inside the table's range, else the
    roofline. s_per_flop = (rows + m0) / (FLOP/s ceiling), so FLOPs per row x s_per_flop is
    the compute time at efficiency rows / (rows + m0); s_per_byte = 1 / (bytes/s)."""
    cdef int n
    cdef const double* x
    if c.kt_op_n[op] > 0.0:
        n = <int> c.kt_op_n[op]
        x = &c.kt_op_rows[op * KT_ROWS]
        if rows >= x[0] and rows <= x[n - 1]:
            return interp1(x, &c.kt_op_s[op * KT_ROWS], n, rows)
    return larger(flops * s_per_flop, (wbytes + act * rows) * s_per_byte)


cdef inline double table_step_seconds(const CostCoeffs* c, const StepShape* s) noexcept nogil:
    """Measured GPU time of a pure decode step or a whole-prompt prefill step inside a step
    table's range; -1 where no table applies."""
    cdef int nb, ns
    cdef double per
    nb = <int> c.kt_decode_nb
    if nb > 0 and s.prefill_tokens == 0.0 and s.decode_tokens > 0.0:
        ns = <int> c.kt_decode_ns
        per = s.decode_context / s.decode_tokens
        if (s.decode_tokens >= c.kt_decode_batch[0] and s.decode_tokens <= c.kt_decode_batch[nb - 1]
                and per >= c.kt_decode_seq[0] and per <= c.kt_decode_seq[ns - 1]):
            return interp2(c.kt_decode_batch, nb, c.kt_decode_seq, ns, c.kt_decode_s,
                           s.decode_tokens, per)
    nb = <int> c.kt_prefill_nb
    if (nb > 0 and s.decode_tokens == 0.0 and s.prefill_context == 0.0 and s.logit_tokens > 0.0
            and s.prefill_tokens > 0.0):
        ns = <int> c.kt_prefill_ns
        per = s.prefill_tokens / s.logit_tokens
        if (s.logit_tokens >= c.kt_prefill_batch[0] and s.logit_tokens <= c.kt_prefill_batch[nb - 1]
                and per >= c.kt_prefill_seq[0] and per <= c.kt_prefill_seq[ns - 1]):
            return interp2(c.kt_prefill_batch, nb, c.kt_prefill_seq, ns, c.kt_prefill_s,
                           s.logit_tokens, per)
    return -1.0


cdef inline double gpu_seconds(const CostCoeffs* c, const StepShape* s) noexcept nogil:
    """The model's GPU time of one step: operators, attention, element-wise work, collectives."""
    cdef double tokens = s.prefill_tokens + s.decode_tokens
    cdef double g = c.kernel_fixed_s
    cdef double s_per_byte = 1.0 / c.bytes_per_s
    cdef double s_per_flop = (tokens + c.gemm_half_rows) / c.flops_per_s
    cdef double touched, rows, compute, memory, wcap, flops, context, nbytes, ring, tree
    g += gemm_seconds(c, 0, c.qkv_flops_per_row, c.qkv_weight_bytes, c.qkv_act_bytes_per_row,
                      tokens, s_per_flop, s_per_byte)
    g += gemm_seconds(c, 1, c.o_flops_per_row, c.o_weight_bytes, c.o_act_bytes_per_row,
                      tokens, s_per_flop, s_per_byte)
    g += gemm_seconds(c, 2, c.mlp_in_flops_per_row, c.mlp_in_weight_bytes,
                      c.mlp_in_act_bytes_per_row, tokens, s_per_flop, s_per_byte)
    g += gemm_seconds(c, 3, c.mlp_out_flops_per_row, c.mlp_out_weight_bytes,
                      c.mlp_out_act_bytes_per_row, tokens, s_per_flop, s_per_byte)
    if s.logit_tokens > 0.0 and c.lm_head_weight_bytes > 0.0:
        g += gemm_seconds(c, 4, c.lm_head_flops_per_row, c.lm_head_weight_bytes,
                          c.lm_head_act_bytes_per_row, s.logit_tokens,
                          (s.logit_tokens + c.gemm_half_rows) / c.flops_per_s, s_per_byte)
    if c.num_experts > 0.0:  # dense models skip the pow() call
        touched = c.num_experts * (1.0 - pow(c.expert_miss, tokens))
        rows = c.experts_per_token * tokens
        compute = c.expert_flops_per_row * (rows + c.gemm_half_rows * touched) / c.flops_per_s
        memory = (c.expert_bytes * touched + c.expert_act_bytes_per_row * rows) * s_per_byte
        g += larger(compute, memory)
    if s.prefill_tokens > 0.0:
        wcap = c.window_tokens * s.prefill_tokens
        flops = (c.flops_per_attn_pair * s.prefill_pairs
                 + c.flops_per_window_pair * capped(s.prefill_pairs, wcap))
        compute = flops * (s.prefill_pairs + c.attn_half_pairs) / s.prefill_pairs * c.attn_s_per_flop
        context = s.prefill_context + s.prefill_tokens
        nbytes = c.kv_bytes_per_token * context + c.kv_window_bytes_per_token * capped(context, wcap)
        g += larger(compute, nbytes * c.kv_s_per_byte)
    if s.decode_tokens > 0.0:
        wcap = c.window_tokens * s.decode_tokens
        flops = ((c.flops_per_attn_pair + c.flops_per_decode_pair_extra) * s.decode_context
                 + c.flops_per_window_pair * capped(s.decode_context, wcap))
        nbytes = (c.kv_bytes_per_token * s.decode_context
                  + c.kv_window_bytes_per_token * capped(s.decode_context, wcap))
        g += larger(flops * c.attn_s_per_flop, nbytes * c.kv_s_per_byte)
    g += c.elementwise_bytes_per_token * tokens * c.elementwise_s_per_byte
    ring = c.ar_ring_fixed_s + c.ar_ring_per_token_s * tokens
    tree = c.ar_tree_fixed_s + c.ar_tree_per_token_s * tokens
    g += ring if ring < tree else tree
    g += c.a2a_fixed_s + c.a2a_per_token_s * tokens
    g += c.send_fixed_s + c.send_per_token_s * tokens
    return g


cdef inline double step_seconds(const CostCoeffs* c, const StepShape* s) noexcept nogil:
    cdef double framework, launch, gpu = -1.0
    if s.prefill_tokens > 0.0:
        framework = c.overhead_prefill_s
        launch = c.prefill_launch_floor_s
    else:
        framework = c.overhead_decode_s
        launch = c.decode_launch_floor_s if s.decode_tokens > c.graph_max_decodes else 0.0
    framework = framework + c.overhead_per_token_s * s.logit_tokens
    if c.kt_decode_nb > 0.0 or c.kt_prefill_nb > 0.0:
        gpu = table_step_seconds(c, s)
    if gpu < 0.0:
        gpu = gpu_seconds(c, s)
    return framework + larger(gpu, launch)


cdef inline void step_activity(const CostCoeffs* c, const StepShape* s, double* compute_s,
                               double* memory_s) noexcept nogil:
    # How long one step keeps each side of the chip busy, so power can follow the work
    # (tokenmill.power): compute_s is the step's FLOPs at the calibrated compute rates (GEMMs at
    # flops_per_s, attention at attn_s_per_flop), memory_s its bytes at the calibrated
    # bandwidths (weights and activations, KV reads, element-wise traffic). Unlike gpu_seconds
    # these are sums of each side over the operators, not the larger side of each, and carry no
    # shape-dependent efficiency, floors or collectives. tokenmill.costmodel.step_activity is
    # the Python twin, operation for operation.
    cdef double tokens = s.prefill_tokens + s.decode_tokens
    cdef double logits = s.logit_tokens if c.lm_head_weight_bytes > 0.0 else 0.0
    cdef double touched, rows, wcap, context
    cdef double gemm_flops = ((c.qkv_flops_per_row + c.o_flops_per_row + c.mlp_in_flops_per_row
                               + c.mlp_out_flops_per_row) * tokens
                              + c.lm_head_flops_per_row * logits)
    cdef double weight_bytes = (c.qkv_weight_bytes + c.o_weight_bytes + c.mlp_in_weight_bytes
                                + c.mlp_out_weight_bytes)
    cdef double act_bytes = ((c.qkv_act_bytes_per_row + c.o_act_bytes_per_row
                              + c.mlp_in_act_bytes_per_row + c.mlp_out_act_bytes_per_row) * tokens)
    cdef double attn_flops = 0.0
    cdef double kv_bytes = 0.0
    if logits > 0.0:
        weight_bytes = weight_bytes + c.lm_head_weight_bytes
        act_bytes = act_bytes + c.lm_head_act_bytes_per_row * logits
    if c.num_experts > 0.0:
        touched = c.num_experts * (1.0 - pow(c.expert_miss, tokens))
        rows = c.experts_per_token * tokens
        gemm_flops = gemm_flops + c.expert_flops_per_row * rows
        weight_bytes = weight_bytes + c.expert_bytes * touched
        act_bytes = act_bytes + c.expert_act_bytes_per_row * rows
    if s.prefill_tokens > 0.0:
        wcap = c.window_tokens * s.prefill_tokens
        attn_flops = (c.flops_per_attn_pair * s.prefill_pairs
                      + c.flops_per_window_pair * capped(s.prefill_pairs, wcap))
        context = s.prefill_context + s.prefill_tokens
        kv_bytes = (c.kv_bytes_per_token * context
                    + c.kv_window_bytes_per_token * capped(context, wcap))
    if s.decode_tokens > 0.0:
        wcap = c.window_tokens * s.decode_tokens
        attn_flops = attn_flops + ((c.flops_per_attn_pair + c.flops_per_decode_pair_extra)
                                   * s.decode_context
                                   + c.flops_per_window_pair * capped(s.decode_context, wcap))
        kv_bytes = kv_bytes + (c.kv_bytes_per_token * s.decode_context
                               + c.kv_window_bytes_per_token * capped(s.decode_context, wcap))
    compute_s[0] = gemm_flops / c.flops_per_s + attn_flops * c.attn_s_per_flop
    memory_s[0] = ((weight_bytes + act_bytes) / c.bytes_per_s + kv_bytes * c.kv_s_per_byte
                   + c.elementwise_bytes_per_token * tokens * c.elementwise_s_per_byte)
