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
from .costmodel import CostCoefficients, coefficients
from .errors import ConfigError
from .hardware import GIB, Hardware
from .memory import MemoryFit, plan_memory
from .policy import ResolvedPolicy, resolve_policy
from .precision import ACTIVATION_TRAFFIC_BYTES, Precision

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
                       params: Any, send_bytes_per_s: float, send_latency_s: float
                       ) -> list[CostCoefficients]:
    """Coefficients for each of the `pp` stages of a replica. A stage computes its own layers
    (per-layer terms scale with its share of the layers), its weights are exactly its layers'
    (plus the LM head on the last stage), the LM head's FLOPs and the framework overhead fall
    on the last and first stage, and every stage but the last sends its activations on."""
    whole = coefficients(model, hw, precision, tp, params)
    if pp == 1:
        return [whole]
    wb, sparse = precision.weight_bytes, precision.sparsity_factor
    rows = []
    act_bytes = ACTIVATION_TRAFFIC_BYTES
    moe = set(model.moe_layers) if model.is_moe else set()
    for stage in range(pp):
        layers = model.stage_layers(pp, stage)
        share = len(layers) / model.num_layers
        moe_share = (len(moe & set(layers)) / len(moe)) if moe else 0.0
        last = stage == pp - 1
        weights = model.weight_bytes_per_chip(tp, wb, layers=layers, first=False, last=last,
                                              sparsity=sparse)
        routed = whole.expert_bytes * whole.num_experts * moe_share
        send_fixed = 0.0 if last else send_latency_s
        send_per_token = 0.0 if last else model.hidden_size * act_bytes / send_bytes_per_s
        rows.append(replace(
            whole,
            overhead_s=whole.overhead_s if stage == 0 else 0.0,
            flops_per_token=whole.flops_per_token * share,
            flops_per_logit=whole.flops_per_logit if last else 0.0,
            flops_per_attn_pair=whole.flops_per_attn_pair * share,
            weight_bytes=weights - routed,
            kv_bytes_per_token=whole.kv_bytes_per_token * share,
            act_bytes_per_token=whole.act_bytes_per_token * share,
            comm_fixed_s=whole.comm_fixed_s * share + send_fixed,
            comm_per_token_s=whole.comm_per_token_s * share + send_per_token,
            expert_bytes=whole.expert_bytes * moe_share,
            flops_per_decode_pair_extra=whole.flops_per_decode_pair_extra * share,
            flops_per_window_pair=whole.flops_per_window_pair * share,
            kv_window_bytes_per_token=whole.kv_window_bytes_per_token * share,
        ))
    return rows


def head_coefficients(model: ModelArch, hw: Hardware, precision: Precision, tp: int,
                      params: Any) -> CostCoefficients:
    """One MTP/EAGLE head: the model's last layer and its LM head, without framework overhead."""
    whole = coefficients(model, hw, precision, tp, params)
    share = 1.0 / model.num_layers
    last = range(model.num_layers - 1, model.num_layers)
    moe_share = (1.0 / len(model.moe_layers)) if model.is_moe and (model.num_layers - 1) in set(model.moe_layers) else 0.0
    weights = model.weight_bytes_per_chip(tp, precision.weight_bytes, layers=last, first=False,
                                          last=True, sparsity=precision.sparsity_factor)
    return replace(
        whole, overhead_s=0.0, flops_per_token=whole.flops_per_token * share,
        flops_per_attn_pair=whole.flops_per_attn_pair * share,
        weight_bytes=weights - whole.expert_bytes * whole.num_experts * moe_share,
        kv_bytes_per_token=whole.kv_bytes_per_token * share,
        act_bytes_per_token=whole.act_bytes_per_token * share,
        comm_fixed_s=whole.comm_fixed_s * share, comm_per_token_s=whole.comm_per_token_s * share,
        expert_bytes=whole.expert_bytes * moe_share,
        flops_per_decode_pair_extra=whole.flops_per_decode_pair_extra * share,
        flops_per_window_pair=whole.flops_per_window_pair * share,
        kv_window_bytes_per_token=whole.kv_window_bytes_per_token * share)


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


def _fabric(scenario: Any) -> tuple[float, float, str]:
    """Scale-out bandwidth per chip (bytes/s) and latency (s) of the scenario's fabric."""
    name = scenario.fabric
    if name is None and scenario.system is not None:
        name = find_system(scenario.system).default_fabric
    fab = find_fabric(name or DEFAULT_FABRIC)
    return fab.bandwidth_per_chip_gbps * 1e9, fab.latency_us * 1e-6, fab.name


def _send_link(hw: Hardware, tp: int, pp: int, fabric_bps: float, fabric_lat: float,
               params: Any) -> tuple[float, float]:
    """Where a replica's pipeline stages hand activations to each other: over the scale-up
    domain when the whole replica fits in it, else over the scale-out fabric."""
    if tp * pp <= hw.scale_up_domain and hw.scale_up_bandwidth_gbps > 0:
        return (hw.scale_up_bytes_per_s_per_direction() * params.collective_efficiency,
                hw.scale_up_latency_us * 1e-6)
    return fabric_bps * params.collective_efficiency, fabric_lat


def _draft_costs(scenario: Any, hw: Hardware, tp: int) -> tuple[Optional[CostCoefficients], float, float]:
    """Per-chip draft coefficients, draft weight bytes and draft KV bytes per token."""
    spec = scenario.speculative
    if spec is None:
        return None, 0.0, 0.0
    model = scenario.model_arch()
    precision = scenario.precision
    if spec.method == "mtp":
        coeff = head_coefficients(model, hw, precision, tp, scenario.cost)
        last = range(model.num_layers - 1, model.num_layers)
        weights = model.weight_bytes_per_chip(tp, precision.weight_bytes, layers=last,
                                              first=False, last=False,
                                              sparsity=precision.sparsity_factor)
        return coeff, weights, model.kv_bytes_per_token(tp, precision.kv_bytes, layers=last)
    draft = find_model(spec.draft_model) if spec.draft_model else auto_draft(model)
    dtp = tp if draft.num_attention_heads % tp == 0 else 1
    coeff = replace(coefficients(draft, hw, precision, dtp, scenario.cost), overhead_s=0.0)
    weights = draft.weight_bytes_per_chip(dtp, precision.weight_bytes,
                                          sparsity=precision.sparsity_factor)
    return coeff, weights, draft.kv_bytes_per_token(dtp, precision.kv_bytes)


def _pool(scenario: Any, role: str, hw: Hardware, tp: int, pp: int, replicas: int,
          fabric_bps: float, fabric_lat: float) -> PoolBuild:
    model = scenario.model_arch()
    model.check_tensor_parallel(tp)
    if tp > hw.scale_up_domain:
        raise ConfigError(f"{role} pool: tp = {tp} exceeds {hw.name}'s scale-up domain of "
                          f"{hw.scale_up_domain} chips; tensor parallelism across nodes is not "
                          "modelled (use pipeline stages across nodes)")
    policy = resolve_policy(scenario.scheduler, hw)
    fit = plan_memory(model, hw, scenario.precision, tp, scenario.scheduler, pp=pp,
                      ep=scenario.plan.ep)
    send_bps, send_lat = _send_link(hw, tp, pp, fabric_bps, fabric_lat, scenario.cost)
    costs = stage_coefficients(model, hw, scenario.precision, tp, pp, scenario.cost, send_bps,
                               send_lat)
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


def build_cluster(scenario: Any) -> ClusterBuild:
    """The pools, their cost rows and capacities, and the kernel arguments they make."""
    fabric_bps, fabric_lat, _ = _fabric(scenario)
    hw = scenario.hardware()
    plan = scenario.plan
    dis = scenario.disaggregation
    if dis is None:
        pools = [_pool(scenario, "unified", hw, plan.tp, plan.pp, plan.replicas, fabric_bps,
                       fabric_lat)]
    else:
        pools = []
        for role, pp_ in (("prefill", dis.prefill), ("decode", dis.decode)):
            chip = scenario.hardware_named(pp_.gpu) if pp_.gpu else hw
            pools.append(_pool(scenario, role, chip, pp_.tp or plan.tp, pp_.pp, pp_.replicas,
                               fabric_bps, fabric_lat))
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
        if all(p.draft is not None for p in pools):
            args["draft_cost"] = np.stack([p.draft.to_array() for p in pools])
    return ClusterBuild(pools=pools, router=router, kernel_args=args)
