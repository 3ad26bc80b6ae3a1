"""The cluster a scenario describes: replicas, routing, pipeline stages, disaggregated pools and
speculative decoding, turned into the numbers the kernel runs on.

A pool is a set of identical replicas; a replica is `pp` pipeline stages of `tp` chips each. A
unified deployment has one pool. A disaggregated deployment has a prefill pool, which only
prefills, and a decode pool, which receives each request's KV over a link and decodes it
(docs/cluster.md has the rules).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional

import numpy as np
from . import _core
from .architecture import ModelArch
from .catalogue import find_fabric, find_model, find_system
from .cluster_config import RouterConfig
from . import costmodel
from .costmodel import CostCoefficients, coefficients
from .costparams import CostModelParams
from .errors import ConfigError
from .hardware import GIB, Hardware
from .kernel_table import KernelTable
from .memory import MemoryFit, plan_memory
from .policy import ResolvedPolicy, resolve_policy
from .precision import Precision
from .systems import Fabric

ROUTERS = {
    "round-robin": _core.ROUTER_ROUND_ROBIN,
    "random": _core.ROUTER_RANDOM,
    "least-requests": _core.ROUTER_LEAST_REQUESTS,
    "least-tokens": _core.ROUTER_LEAST_TOKENS,
    "power-of-two": _core.ROUTER_POWER_OF_TWO,
    "prefix-affinity": _core.ROUTER_PREFIX_AFFINITY,
}
DEFAULT_FABRIC = "ndr-400"  # one NDR InfiniBand port per GPU: the common H100/H200 cluster


# Draft models picked when none is named: the smallest released model of the family.
AUTO_DRAFTS = {"llama-3": "llama-3.2-1b", "llama-2": "llama-3.2-1b", "qwen3": "qwen3-8b",
               "qwen2.5": "qwen2.5-7b", "mistral": "mistral-7b", "mixtral": "mistral-7b"}


def auto_draft(model: ModelArch) -> ModelArch:
    for prefix, draft in AUTO_DRAFTS.items():
        if model.name.startswith(prefix):
            chosen = find_model(draft)
            if chosen.name != model.name:
                return chosen
    raise ConfigError(f"no default draft model for {model.name}; name one with "
                      "speculative.draft_model (--draft-model) or use method 'mtp'")


# ---------------------------------------------------------------------------------------------
# Cost rows per pipeline stage
# ---------------------------------------------------------------------------------------------

def stage_coefficients(model: ModelArch, hw: Hardware, precision: Precision, tp: int, pp: int,
                       params: CostModelParams, *, ep: int = 1, fabric: Optional[Fabric] = None,
                       kernel_table: Optional[KernelTable] = None) -> list[CostCoefficients]:
    """Coefficients for each of the `pp` stages of a replica (costmodel.stage_coefficients:
    each stage its own layers, the embedding on the first, the LM head on the last, the send
    of its hidden states to the next). The engine's per-step work is paid once per step, not
    once per stage: scheduling on the first stage, sampling (per-sequence CPU time) on the last.
    """
    rows = costmodel.stage_coefficients(model, hw, precision, tp, pp, params, ep=ep,
                                        fabric=fabric, kernel_table=kernel_table)
    if pp == 1:
        return rows
    if rows[0].kt_decode_nb > 0 or rows[0].kt_prefill_nb > 0:
        raise ConfigError(f"kernel_table: its whole-step rows (op decode / prefill) time all "
                          f"{model.num_layers} layers of {model.name}, so they cannot price one "
                          f"of plan.pp = {pp} pipeline stages; use per-operator rows "
                          f"({', '.join(costmodel.OP_NAMES)}) or pp = 1")
    out = []
    for stage, row in enumerate(rows):
        changes: dict[str, Any] = {}
        if stage > 0:
            changes.update(overhead_prefill_s=0.0, overhead_decode_s=0.0)
        if stage < pp - 1:
            changes.update(overhead_per_token_s=0.0)
        out.append(replace(row, **changes))
    return out


def head_coefficients(model: ModelArch, hw: Hardware, precision: Precision, tp: int,
                      params: CostModelParams, ep: int = 1) -> CostCoefficients:
    """One MTP/EAGLE head: the model's last layer and its LM head, without the engine's per-step
    overheads (the target step pays those)."""
    last = range(model.num_layers - 1, model.num_layers)
    row = coefficients(model, hw, precision, tp, params, layers=last, first=False, last=True,
                       ep=ep)
    return replace(row, overhead_prefill_s=0.0, overhead_decode_s=0.0, overhead_per_token_s=0.0)


# ---------------------------------------------------------------------------------------------
# Building the kernel's view of the cluster
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PoolBuild:
    """One pool as the kernel sees it, with what produced its numbers."""

    role: str                 # "unified", "prefill" or "decode"
    hw: Hardware
    tp: int
    pp: int
    replicas: int
    policy: ResolvedPolicy
    fit: MemoryFit
    costs: list[CostCoefficients]
    kv_capacity_blocks: int   # per replica
    draft: Optional[CostCoefficients] = None

    @property
    def chips(self) -> int:
        return self.tp * self.pp * self.replicas

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "gpu": self.hw.name, "tp": self.tp, "pp": self.pp,
                "replicas": self.replicas, "chips": self.chips,
                "kv_capacity_blocks_per_replica": self.kv_capacity_blocks}


@dataclass(frozen=True)
class ClusterBuild:
    pools: list[PoolBuild]
    router: RouterConfig
    kernel_args: dict[str, Any] = field(default_factory=dict)

    @property
    def entry(self) -> PoolBuild:
        return self.pools[0]

    @property
    def disaggregated(self) -> bool:
        return len(self.pools) == 2


def _fabric(scenario: Any) -> Fabric:
    """The scale-out fabric between nodes: the scenario's, else its system's, else NDR-400."""
    name = scenario.fabric
    if name is None and scenario.system is not None:
        name = find_system(scenario.system).default_fabric
    return find_fabric(name or DEFAULT_FABRIC)


def _draft_costs(scenario: Any, hw: Hardware, tp: int) -> tuple[Optional[CostCoefficients], float, float]:
    """Per-chip draft coefficients, draft weight bytes and draft KV bytes per token."""
    spec = scenario.speculative
    if spec is None:
        return None, 0.0, 0.0
    model = scenario.model_arch()
    precision = scenario.precision
    if spec.method == "mtp":
        coeff = head_coefficients(model, hw, precision, tp, scenario.cost, scenario.plan.ep)
        last = range(model.num_layers - 1, model.num_layers)
        weights = model.weight_bytes_per_chip(tp, precision.weight_bytes, layers=last,
                                              first=False, last=False,
                                              sparsity=precision.sparsity_factor)
        return coeff, weights, model.kv_bytes_per_token(tp, precision.kv_bytes, layers=last)
    draft = find_model(spec.draft_model) if spec.draft_model else auto_draft(model)
    dtp = tp if draft.num_attention_heads % tp == 0 else 1
    coeff = replace(coefficients(draft, hw, precision, dtp, scenario.cost), overhead_prefill_s=0.0,
                    overhead_decode_s=0.0, overhead_per_token_s=0.0)
    weights = draft.weight_bytes_per_chip(dtp, precision.weight_bytes,
                                          sparsity=precision.sparsity_factor)
    return coeff, weights, draft.kv_bytes_per_token(dtp, precision.kv_bytes)


def _pool(scenario: Any, role: str, hw: Hardware, tp: int, pp: int, replicas: int,
          fabric: Fabric, kernel_table: Optional[KernelTable]) -> PoolBuild:
    model = scenario.model_arch()
    model.check_tensor_parallel(tp)
    if tp > hw.scale_up_domain:
        raise ConfigError(f"{role} pool: tp = {tp} exceeds {hw.name}'s scale-up domain of "
                          f"{hw.scale_up_domain} chips; tensor parallelism across nodes is not "
                          "modelled (use pipeline stages across nodes)")
    policy = resolve_policy(scenario.scheduler, hw)
    fit = plan_memory(model, hw, scenario.precision, tp, scenario.scheduler, pp=pp,
                      ep=scenario.plan.ep)
    costs = stage_coefficients(model, hw, scenario.precision, tp, pp, scenario.cost,
                               ep=scenario.plan.ep, fabric=fabric, kernel_table=kernel_table)
    blocks = fit.kv_capacity_blocks
    draft, draft_weights, draft_kv = _draft_costs(scenario, hw, tp)
    if draft is not None and not fit.kv_blocks_overridden:
        # The draft's weights and its KV cache come out of the same memory as the target's.
        per_block = (fit.kv_bytes_per_token + draft_kv) * fit.kv_block_size
        blocks = int((fit.kv_bytes_available - draft_weights) // per_block)
        if blocks < 1:
            raise ConfigError(f"{role} pool: the speculative draft ({draft_weights / GIB:.2f} GiB "
                              f"of weights per chip) leaves no room for the KV cache on {hw.name}")
    return PoolBuild(role=role, hw=hw, tp=tp, pp=pp, replicas=replicas, policy=policy, fit=fit,
                     costs=costs, kv_capacity_blocks=blocks, draft=draft)


def build_cluster(scenario: Any, kernel_table: Optional[KernelTable] = None) -> ClusterBuild:
    """The pools, their cost rows and capacities, and the kernel arguments they make."""
    fabric = _fabric(scenario)
    fabric_bps = fabric.bandwidth_per_chip_gbps * 1e9
    fabric_lat = fabric.latency_us * 1e-6
    hw = scenario.hardware()
    plan = scenario.plan
    dis = scenario.disaggregation
    if dis is None:
        pools = [_pool(scenario, "unified", hw, plan.tp, plan.pp, plan.replicas, fabric,
                       kernel_table)]
    else:
        pools = []
        for role, pp_ in (("prefill", dis.prefill), ("decode", dis.decode)):
            chip = scenario.hardware_named(pp_.gpu) if pp_.gpu else hw
            pools.append(_pool(scenario, role, chip, pp_.tp or plan.tp, pp_.pp or plan.pp, pp_.replicas,
                               fabric, kernel_table))
    router = scenario.router
    args: dict[str, Any] = {
        "num_replicas": pools[0].replicas,
        "pipeline_stages": pools[0].pp,
        "cost": np.stack([c.to_array() for c in pools[0].costs]),
        "max_batch_tokens": pools[0].policy.max_batch_tokens,
        "max_num_seqs": pools[0].policy.max_num_seqs,
        "kv_capacity_blocks": pools[0].kv_capacity_blocks,
        "router": ROUTERS[router.name],
        "seed": scenario.seed,
        "balance_abs": router.balance_abs,
        "balance_rel": router.balance_rel,
        "cache_threshold": router.cache_threshold,
    }
    if dis is not None:
        pre, dec = pools
        if pre.fit.kv_block_size != dec.fit.kv_block_size:
            raise ConfigError("prefill and decode pools must use the same kv_block_size")
        chips = pre.tp * pre.pp
        link = (dis.kv_link_gbps * 1e9 if dis.kv_link_gbps is not None else fabric_bps * chips)
        latency = (dis.kv_link_latency_us * 1e-6 if dis.kv_link_latency_us is not None else fabric_lat)
        args.update(
            decode_replicas=dec.replicas, decode_pipeline_stages=dec.pp,
            decode_cost=np.stack([c.to_array() for c in dec.costs]),
            decode_max_batch_tokens=dec.policy.max_batch_tokens,
            decode_max_num_seqs=dec.policy.max_num_seqs,
            decode_kv_capacity_blocks=dec.kv_capacity_blocks,
            kv_link_bytes_per_s=link, kv_link_latency_s=latency,
            # the whole replica's KV of one token: every chip of every stage sends its share
            kv_bytes_per_token=pre.fit.kv_bytes_per_token * pre.tp * pre.pp)
    spec = scenario.speculative
    if spec is not None:
        args["spec_tokens"] = spec.tokens
        args["spec_acceptance"] = spec.acceptance()
        drafts = [p.draft for p in pools if p.draft is not None]
        if len(drafts) == len(pools):
            args["draft_cost"] = np.stack([d.to_array() for d in drafts])
    return ClusterBuild(pools=pools, router=router, kernel_args=args)
