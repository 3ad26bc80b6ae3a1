"""`tokenmill run` flags for the cluster: replicas, routing, disaggregation, speculation.

They keep the original Rust tokenmill's names (--disaggregate, --internode-bw-gbps,
--spec-tokens, --spec-acceptance-rate, --draft-model, --mtp-heads, --mtp-acceptance-rate,
--scale-out-fabric) next to the new ones (docs/cluster.md)."""

from __future__ import annotations

import argparse
from typing import Any, Callable

# flag dest -> path of the Scenario field it sets directly
CLUSTER_FLAG_FIELDS: dict[str, tuple[str, ...]] = {
    "replicas": ("plan", "replicas"),
    "gpus": ("plan", "gpus"),
    "router": ("router", "name"),
    "fabric": ("fabric",),
}


def add_cluster_arguments(run: argparse.ArgumentParser, whole: Callable[[str], Any],
                          real: Callable[[str], Any]) -> None:
    g = run.add_argument_group("cluster (docs/cluster.md)")
    g.add_argument("--replicas", type=whole, help="identical replicas behind the router (default 1)")
    g.add_argument("--gpus", type=whole, help="total chips instead of --replicas: replicas = "
                   "gpus / (tp x pp); without --tp the smallest tp that fits is chosen")
    g.add_argument("--router", help="round-robin (default), random, least-requests, least-tokens, "
                   "power-of-two or prefix-affinity")
    g.add_argument("--scale-out-fabric", dest="fabric",
                   help="fabric between nodes: hdr-200, ndr-400 (default), xdr-800, spectrum-x400, ...")
    g.add_argument("--disaggregate", action="store_true", default=None,
                   help="separate prefill and decode pools (xPyD)")
    g.add_argument("--prefill-replicas", type=whole, help="replicas in the prefill pool (default 1)")
    g.add_argument("--decode-replicas", type=whole, help="replicas in the decode pool (default 1)")
    g.add_argument("--prefill-gpu", help="chip of the prefill pool (default --gpu)")
    g.add_argument("--decode-gpu", help="chip of the decode pool (default --gpu)")
    g.add_argument("--prefill-tp", type=whole, help="tensor parallelism of the prefill pool (default --tp)")
    g.add_argument("--decode-tp", type=whole, help="tensor parallelism of the decode pool (default --tp)")
    g.add_argument("--prefill-pp", type=whole, help="pipeline stages of a prefill replica (default: --pp)")
    g.add_argument("--decode-pp", type=whole, help="pipeline stages of a decode replica (default: --pp)")
    g.add_argument("--kv-link-gbps", "--internode-bw-gbps", type=real, dest="kv_link_gbps",
                   help="KV link bandwidth of one prefill replica, GB/s (default: the fabric's "
                   "per-chip bandwidth x its chips; --internode-bw-gbps is the original name)")
    g.add_argument("--kv-link-latency-us", type=real, help="latency of one KV transfer (default: the fabric's)")
    g.add_argument("--spec-tokens", type=whole, help="speculative tokens proposed per step by a draft model")
    g.add_argument("--spec-acceptance-rate", type=real, help="acceptance probability per proposal (default 0.7)")
    g.add_argument("--draft-model", help="draft model preset (default: the family's smallest, e.g. llama-3.2-1b)")
    g.add_argument("--mtp-heads", type=whole, help="multi-token-prediction heads (proposals per step)")
    g.add_argument("--mtp-acceptance-rate", type=real, help="acceptance probability per MTP proposal (default 0.9)")


def apply_cluster_flags(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """Flags that shape nested optional sections (disaggregation, speculative)."""
    pools: dict[str, dict[str, Any]] = {"prefill": {}, "decode": {}}
    for role in pools:
        for key in ("replicas", "gpu", "tp", "pp"):
            value = getattr(args, f"{role}_{key}", None)
            if value is not None:
                pools[role][key] = value
    link = {k: getattr(args, k, None) for k in ("kv_link_gbps", "kv_link_latency_us")}
    wants_split = getattr(args, "disaggregate", None) or any(pools.values()) or any(
        v is not None for v in link.values())
    if wants_split:
        section = data.setdefault("disaggregation", {})
        if not isinstance(section, dict):
            section = {}
            data["disaggregation"] = section
        for role, fields in pools.items():
            if fields:
                section.setdefault(role, {}).update(fields)
        section.update({k: v for k, v in link.items() if v is not None})
    given = data.get("speculative")
    spec: dict[str, Any] = dict(given) if isinstance(given, dict) else {}
    if getattr(args, "spec_tokens", None) is not None:
        spec.update(method="draft", tokens=args.spec_tokens)
    if getattr(args, "mtp_heads", None) is not None:
        spec.update(method="mtp", tokens=args.mtp_heads)
        spec.setdefault("acceptance_rate", 0.9)  # the original tokenmill's MTP default
    if getattr(args, "spec_acceptance_rate", None) is not None:
        spec["acceptance_rate"] = args.spec_acceptance_rate
    if getattr(args, "mtp_acceptance_rate", None) is not None:
        spec["acceptance_rate"] = args.mtp_acceptance_rate
    if getattr(args, "draft_model", None) is not None:
        spec["draft_model"] = args.draft_model
    if spec:
        data["speculative"] = spec
