"""The model card: what a model is, what it weighs at a precision, and whether a plan fits.

Why: before simulating anything a planner asks "does it fit, how much KV is left, what does a
token cost". This module gathers the exact derived quantities (tokenmill.architecture) and the
memory fit (tokenmill.memory) for one model, chip, precision and plan into a plain dictionary,
and renders it as text. `tokenmill info` prints it; its JSON form is for other tools.
"""

from __future__ import annotations

from typing import Any, Optional

from .architecture import ModelArch, agrees_with_published
from .hardware import GIB, Hardware
from .memory import does_not_fit_message, memory_fit
from .precision import Precision
from .scenario import Plan, SchedulerPolicy
from .systems import System


def model_card(model: ModelArch, hw: Hardware, precision: Precision, plan: Plan,
               policy: SchedulerPolicy, *, context: Optional[int] = None,
               system: Optional[System] = None) -> dict[str, Any]:
    """Everything `tokenmill info` reports, as JSON-ready values (bytes, counts, FLOPs)."""
    context = context or min(model.max_position_embeddings or 8192, 8192)
    wb, kvb, sparse = precision.weight_bytes, precision.kv_bytes, precision.sparsity_factor
    total, active = model.total_params(), model.active_params()
    published: dict[str, Any] = {}
    if model.published:
        p = model.published
        served_total = total + p.non_text_params
        published = {"total": p.total, "active": p.active, "source": p.source,
                     "active_counts_input_embedding": p.active_counts_input_embedding,
                     "non_text_params": p.non_text_params, "note": p.note,
                     "total_agrees": agrees_with_published(served_total, p.total)}
        if p.active:
            counted = model.active_params(p.active_counts_input_embedding)
            published["active_agrees"] = agrees_with_published(counted, p.active)
    fit = memory_fit(model, hw, precision, plan.tp, policy, pp=plan.pp, ep=plan.ep)
    tier = precision.compute_dtype
    return {
        "model": {
            "name": model.name, "hf_id": model.hf_id, "architecture": model.describe(),
            "layers": model.num_layers, "hidden_size": model.hidden_size,
            "attention": "mla" if model.is_mla else "gqa",
            "attention_heads": model.num_attention_heads,
            "kv_heads": None if model.is_mla else model.num_kv_heads,
            "head_dim": model.head_dim, "vocab_size": model.vocab_size,
            "experts": model.num_experts, "experts_per_token": model.experts_per_token,
            "moe_layers": model.num_moe_layers, "windowed_layers": model.num_windowed_layers,
            "window_tokens": model.window, "max_context": model.max_position_embeddings,
            "checkpoint_format": model.checkpoint_format, "provenance": model.provenance,
            "source": model.source, "notes": model.notes,
        },
        "params": {"total": total, "active": active,
                   "active_with_input_embedding": model.active_params(True), "published": published},
        "precision": {**precision.model_dump(), "kv_cache": precision.kv_dtype,
                      "weight_bytes_per_element": wb, "kv_bytes_per_element": kvb,
                      "compute_tier": tier},
        "weight_bytes": model.total_weight_bytes(wb, sparse),
        "kv_bytes_per_token": model.kv_bytes_per_token(1, kvb),
        "kv_bytes_per_token_full_layers": model.kv_bytes_per_token_full(1, kvb),
        "context_tokens": context,
        "kv_bytes_at_context": model.kv_bytes_for_context(context, 1, kvb),
        "flops_per_token": {
            "matmul": model.matmul_flops_per_token(1, sparse),
            "lm_head": model.lm_head_flops_per_token(1),
            "attention_at_context": model.attention_flops_per_token(context),
        },
        "gpu": {"name": hw.name, "display_name": hw.display_name, "memory_gib": hw.memory_gib,
                "memory_kind": hw.memory_kind, "memory_bandwidth_tbps": hw.memory_bandwidth_tbps,
                "compute_tier_tflops": hw.tier_tflops(tier), "scale_up_domain": hw.scale_up_domain,
                "sparsity_2_4": hw.sparsity_2_4},
        "system": None if system is None else {"name": system.name, "chip": system.chip,
                                                "scale_up_domain": system.scale_up_domain,
                                                "default_fabric": system.default_fabric},
        "plan": {"tp": plan.tp, "pp": plan.pp, "ep": plan.ep, "chips": fit.chips},
        "memory": {**fit.to_dict(), "verdict": "fits" if fit.fits else "does not fit",
                   "message": None if fit.fits else does_not_fit_message(model, hw, precision, policy, fit)},
    }


def _b(x: float) -> str:
    return f"{x / GIB:,.2f} GiB"


def _n(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:,.3f}{unit}"
    return f"{x:,.0f}"


def render_card(card: dict[str, Any]) -> str:
    """The model card as text for people."""
    m, p, prec, mem = card["model"], card["params"], card["precision"], card["memory"]
    pub = p["published"]
    lines = [f"{m['name']}" + (f"  ({m['hf_id']})" if m["hf_id"] else ""),
             f"  architecture  {m['architecture']}",
             f"  hidden {m['hidden_size']}, vocab {m['vocab_size']:,}, context "
             f"{m['max_context'] or '?'}; checkpoint {m['checkpoint_format'] or '?'}; config "
             f"{m['provenance'] or 'from file'}",
             f"  parameters    total {_n(p['total'])}, active per token {_n(p['active'])} "
             f"({_n(p['active_with_input_embedding'])} counting the input embedding)"]
    if pub:
        check = "agrees" if pub.get("total_agrees") and pub.get("active_agrees", True) else "DIFFERS"
        extra = f", active {pub['active']}" if pub.get("active") else ""
        lines.append(f"  published     total {pub['total']}{extra} ({check})")
    lines += [
        f"  precision     {prec['weights']} weights ({prec['weight_bytes_per_element']:g} B), "
        f"{prec['activations']} activations (tier {prec['compute_tier']}), {prec['kv_cache']} KV"
        + (f", {prec['sparsity']} sparse" if prec["sparsity"] else ""),
        f"  weights       {_b(card['weight_bytes'])} in all",
        f"  KV cache      {card['kv_bytes_per_token']:,.0f} B/token (all layers); "
        f"{_b(card['kv_bytes_at_context'])} for one {card['context_tokens']:,}-token sequence"
        + (f" (windowed layers capped at {m['window_tokens']:,})" if m["window_tokens"] else ""),
        f"  FLOPs/token   matmul {_n(card['flops_per_token']['matmul'])}, LM head "
        f"{_n(card['flops_per_token']['lm_head'])}, attention at {card['context_tokens']:,} tokens "
        f"{_n(card['flops_per_token']['attention_at_context'])}",
    ]
    g, plan = card["gpu"], card["plan"]
    where = f"{plan['chips']} x {g['name']} (tp {plan['tp']}, pp {plan['pp']}, ep {plan['ep']})"
    if card["system"]:
        where += f" in {card['system']['name']}"
    lines += [
        "",
        f"memory fit on {where}: {mem['verdict'].upper()}",
        f"  per chip      usable {_b(mem['usable_bytes'])}, weights {_b(mem['weight_bytes'])}, "
        f"reserves {_b(mem['activation_reserve_bytes'] + mem['runtime_reserve_bytes'])}, "
        f"KV {_b(max(mem['kv_bytes_available'], 0.0))}",
    ]
    if mem["fits"]:
        lines.append(f"  KV capacity   {mem['kv_capacity_tokens']:,} tokens in "
                     f"{mem['kv_capacity_blocks']:,} blocks of {mem['kv_block_size']} per replica")
    else:
        lines.append(f"  {mem['message']}")
    return "\n".join(lines) + "\n"
