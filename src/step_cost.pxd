# Price of one batch step of one replica, from coefficients computed once in Python.
#
# The kernel knows, for every step, its shape (StepShape): how many prompt tokens it computes,
# how many query-key pairs their causal attention covers and how much cached context they read,
# how many sequences decode and how many cached tokens those decodes attend to. The coefficients turn those counts into FLOPs, bytes and
# communication time; the step takes the larger of its compute time and its memory time (a
# roofline), plus collectives and a fixed framework overhead. tokenmill.costmodel computes
# the coefficients and holds the identical formula in Python for the reference simulator;
# keep the two in step, including the order of the floating-point operations.

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
    COST_NFIELDS = 11


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


ctypedef struct StepShape:
    double prefill_tokens    # prompt tokens computed in the step (whole prompts or chunks)
    double prefill_pairs     # causal (query, key) pairs of those tokens, prior context included
    double prefill_context   # cached tokens the prefills attend to (prefix hits, earlier chunks)
    double logit_tokens      # tokens that need logits: one per decode and per finishing prefill
    double decode_tokens     # sequences decoding one token each
    double decode_context    # cached tokens the decodes attend to, their own new one included


cdef inline double step_seconds(const CostCoeffs* c, const StepShape* s) noexcept nogil:
    cdef double tokens = s.prefill_tokens + s.decode_tokens
    cdef double flops = (c.flops_per_token * tokens
                         + c.flops_per_logit * s.logit_tokens
                         + c.flops_per_attn_pair * (s.prefill_pairs + s.decode_context))
    cdef double nbytes = (c.weight_bytes
                          + c.kv_bytes_per_token * (s.decode_context + s.prefill_context
                                                    + s.prefill_tokens)
                          + c.act_bytes_per_token * tokens)
    cdef double compute_s = flops / c.flops_per_s
    cdef double memory_s = nbytes / c.bytes_per_s
    cdef double roofline_s = compute_s if compute_s > memory_s else memory_s
    return c.overhead_s + (c.comm_fixed_s + c.comm_per_token_s * tokens) + roofline_s
