"""Serving policies: their defaults, resolved for a chip, and the kernel's parameters.

Where a policy copies an engine, its defaults are that engine's, with the version cited:
* vllm: vLLM's V1 scheduler (vllm/v1/core/sched/scheduler.py, main @ 00024d3, late 2025) with
  the batch limits `vllm serve` picks (EngineArgs.get_batch_defaults in
  vllm/engine/arg_utils.py @ 99d7eb5): on a device with at least 70 GiB that is not an A100,
  8192 tokens per step and 1024 sequences; otherwise 2048 and 256. V1 always chunks prefills
  and enables prefix caching by default.
* sarathi: Sarathi-Serve's stall-free batching (Agrawal et al., OSDI 2024) with a token budget
  of 512 per step, the original tokenmill's --chunk-size default and one of the budgets the
  paper evaluates; 256 sequences.
* orca: the original tokenmill's continuous batching defaults: 8192 tokens, 256 sequences
  (vLLM's long-standing max_num_seqs).
* static: the same limits as orca, applied to a batch formed only on an empty replica.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from . import _core
from .errors import ConfigError
from .hardware import Hardware
from .scenario import SchedulerPolicy

KERNEL_POLICY = {"orca": _core.POLICY_ORCA, "vllm": _core.POLICY_CHUNKED,
                 "sarathi": _core.POLICY_CHUNKED, "static": _core.POLICY_STATIC}


@dataclass(frozen=True)
class ResolvedPolicy:
    """A SchedulerPolicy with every default filled in for a particular chip."""

    name: str
    max_batch_tokens: int
    max_num_seqs: int
    kv_block_size: int
    priority_scheduling: bool
    preemption: str
    swap_space_gib: float
    prefix_caching: bool
    chunked_prefill: bool
    defaults_from: str

    @property
    def kernel_policy(self) -> int:
        return KERNEL_POLICY[self.name]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _defaults(name: str, hw: Hardware) -> tuple[int, int, str]:
    if name == "vllm":
        big = hw.memory_gib >= 70 and not hw.name.startswith("a100")
        if big:
            return 8192, 1024, "vLLM `vllm serve` defaults for >= 70 GiB GPUs other than A100"
        return 2048, 256, "vLLM `vllm serve` defaults for GPUs under 70 GiB or A100"
    if name == "sarathi":
        return 512, 256, "Sarathi-Serve token budget 512 (the original tokenmill's --chunk-size)"
    return 8192, 256, "the original tokenmill's --max-batch-tokens 8192; vLLM's max_num_seqs 256"


def resolve_policy(policy: SchedulerPolicy, hw: Hardware) -> ResolvedPolicy:
    """Fill in the policy's defaults for `hw` and check the limits fit together."""
    tokens, seqs, source = _defaults(policy.name, hw)
    max_tokens = policy.max_batch_tokens if policy.max_batch_tokens is not None else tokens
    max_seqs = policy.max_num_seqs if policy.max_num_seqs is not None else seqs
    if max_tokens < max_seqs:
        raise ConfigError(
            f"scheduler.max_batch_tokens ({max_tokens}) must be >= scheduler.max_num_seqs "
            f"({max_seqs}) so that every running request can decode in each step")
    caching = policy.prefix_caching if policy.prefix_caching is not None else policy.name == "vllm"
    if policy.preemption == "swap" and hw.host_link_gbps <= 0:
        raise ConfigError(f"scheduler.preemption = 'swap' needs a host link, and {hw.name} has "
                          "host_link_gbps = 0; use 'recompute'")
    return ResolvedPolicy(
        name=policy.name, max_batch_tokens=max_tokens, max_num_seqs=max_seqs,
        kv_block_size=policy.kv_block_size, priority_scheduling=policy.priority_scheduling,
        preemption=policy.preemption, swap_space_gib=policy.swap_space_gib,
        prefix_caching=caching, chunked_prefill=policy.name in ("vllm", "sarathi"),
        defaults_from=source)
