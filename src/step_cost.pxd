from libc.math cimport pow

# Price of one batch step of one replica, from coefficients computed once in Python.
#
# The kernel knows, for every step, its shape (StepShape): how many prompt tokens it computes,
# how many query-key pairs their causal attention covers and how much cached context they read,
# how many sequences decode and how many cached tokens those decodes attend to. The coefficients turn those counts into FLOPs, bytes and
# communication time; the step takes the larger of its compute time and its memory time (a
# roofline), plus collectives and a fixed framework overhead. tokenmill.costmodel computes
# the coefficients and holds the identical formula in Python for the reference simulator;
# keep the two in step, including the order of the floating-point operations.
#
# Architecture terms (all zero for a dense model with full attention, leaving its price
# bit-identical to the plain formula):
# * Mixture of experts: every token is routed to k of E experts per MoE layer; a step of T
#   tokens reads E * (1 - (1 - k/E)^T) distinct experts in expectation (uniform routing), each
#   costing expert_bytes per chip. The always-read weights (attention, dense and shared MLPs,
#   routers, LM head) stay in weight_bytes; the active experts' FLOPs are in flops_per_token.
# * Multi-head latent attention: decodes attend in the compressed latent (absorbed weights),
#   paying flops_per_decode_pair_extra per cached key on top of the prefill-form pair FLOPs.
# * Sliding-window or chunked layers: a query attends to at most window_tokens keys there, so
#   their pair FLOPs and KV reads are capped at window_tokens per token of the step.

cdef enum:
    COST_OVERHEAD_S = 0
    COST_FLOPS_PER_TOKEN = 1
    COST_FLOPS_PER_LOGIT = 2
    COST_FLOPS_PER_ATTN_PAIR = 3
    COST_FLOPS_PER_S = 4
    COST_WEIGHT_BYTES = 5
    COST_KV_BYTES_PER_TOKEN = 6
    COST_ACT_BYTES_PER_TOKEN = 7
    COST_BYTES_PER_S = 8
    COST_COMM_FIXED_S = 9
    COST_COMM_PER_TOKEN_S = 10
    COST_EXPERT_BYTES = 11
    COST_NUM_EXPERTS = 12
    COST_EXPERT_MISS = 13
    COST_FLOPS_PER_DECODE_PAIR_EXTRA = 14
    COST_FLOPS_PER_WINDOW_PAIR = 15
    COST_KV_WINDOW_BYTES_PER_TOKEN = 16
    COST_WINDOW_TOKENS = 17
    COST_NFIELDS = 18


ctypedef struct CostCoeffs:
    double overhead_s          # framework time per step (scheduling, sampling, launch)
    double flops_per_token     # dense matmul FLOPs per token per chip (projections and MLP)
    double flops_per_logit     # LM-head FLOPs per token that needs logits, per chip
    double flops_per_attn_pair # attention FLOPs per (query, key) pair, all layers, per chip
    double flops_per_s         # achieved FLOP/s of one chip
    double weight_bytes        # weight bytes each chip reads once per step
    double kv_bytes_per_token  # KV-cache bytes per token per chip (read or written)
    double act_bytes_per_token # activation bytes per token per chip moved through memory
    double bytes_per_s         # achieved memory bytes/s of one chip
    double comm_fixed_s        # collective latency per step (zero without tensor parallelism)
    double comm_per_token_s    # collective transfer time per token in the step
    double expert_bytes        # bytes per chip of one routed expert over all MoE layers
    double num_experts         # routed experts per MoE layer (0: dense model)
    double expert_miss         # 1 - k/E: chance a token does not pick a given expert (1: dense)
    double flops_per_decode_pair_extra  # extra FLOPs per cached key a decode pays (MLA absorbed)
    double flops_per_window_pair        # attention FLOPs per pair in windowed layers, per chip
    double kv_window_bytes_per_token    # KV bytes per token of the windowed layers, per chip
    double window_tokens       # keys a windowed layer attends to at most (0: no such layers)


ctypedef struct StepShape:
    double prefill_tokens    # prompt tokens computed in the step (whole prompts or chunks)
    double prefill_pairs     # causal (query, key) pairs of those tokens, prior context included
    double prefill_context   # cached tokens the prefills attend to (prefix hits, earlier chunks)
    double logit_tokens      # tokens that need logits: one per decode and per finishing prefill
    double decode_tokens     # sequences decoding one token each
    double decode_context    # cached tokens the decodes attend to, their own new one included


cdef inline double capped(double x, double cap) noexcept nogil:
    return x if x < cap else cap


cdef inline double step_seconds(const CostCoeffs* c, const StepShape* s) noexcept nogil:
    cdef double tokens = s.prefill_tokens + s.decode_tokens
    cdef double window_cap = c.window_tokens * tokens
    cdef double pairs = s.prefill_pairs + s.decode_context
    cdef double context = s.decode_context + s.prefill_context + s.prefill_tokens
    cdef double experts = 0.0
    if c.num_experts > 0.0:  # dense models skip the pow() call; the result is 0 either way
        experts = c.num_experts * (1.0 - pow(c.expert_miss, tokens))
    cdef double flops = (c.flops_per_token * tokens
                         + c.flops_per_logit * s.logit_tokens
                         + c.flops_per_attn_pair * pairs
                         + c.flops_per_decode_pair_extra * s.decode_context
                         + c.flops_per_window_pair * capped(pairs, window_cap))
    cdef double nbytes = (c.weight_bytes
                          + c.expert_bytes * experts
                          + c.kv_bytes_per_token * context
                          + c.kv_window_bytes_per_token * capped(context, window_cap)
                          + c.act_bytes_per_token * tokens)
    cdef double compute_s = flops / c.flops_per_s
    cdef double memory_s = nbytes / c.bytes_per_s
    cdef double roofline_s = compute_s if compute_s > memory_s else memory_s
    return c.overhead_s + (c.comm_fixed_s + c.comm_per_token_s * tokens) + roofline_s


cdef inline void step_activity(const CostCoeffs* c, const StepShape* s, double* compute_s,
                               double* memory_s) noexcept nogil:
    # The compute-time and memory-time terms of step_seconds (the two sides of its roofline),
    # with exactly the same operations, so power can follow what a step keeps busy
    # (tokenmill.power). tokenmill.costmodel.step_activity is the Python twin.
    cdef double tokens = s.prefill_tokens + s.decode_tokens
    cdef double window_cap = c.window_tokens * tokens
    cdef double pairs = s.prefill_pairs + s.decode_context
    cdef double context = s.decode_context + s.prefill_context + s.prefill_tokens
    cdef double experts = 0.0
    if c.num_experts > 0.0:
        experts = c.num_experts * (1.0 - pow(c.expert_miss, tokens))
    cdef double flops = (c.flops_per_token * tokens
                         + c.flops_per_logit * s.logit_tokens
                         + c.flops_per_attn_pair * pairs
                         + c.flops_per_decode_pair_extra * s.decode_context
                         + c.flops_per_window_pair * capped(pairs, window_cap))
    cdef double nbytes = (c.weight_bytes
                          + c.expert_bytes * experts
                          + c.kv_bytes_per_token * context
                          + c.kv_window_bytes_per_token * capped(context, window_cap)
                          + c.act_bytes_per_token * tokens)
    compute_s[0] = flops / c.flops_per_s
    memory_s[0] = nbytes / c.bytes_per_s
