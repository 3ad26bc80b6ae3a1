"""Time of the collectives a step runs: TP all-reduce, EP all-to-all, PP activation send.

Why a separate module: every collective is an affine function of the step's token count (a
fixed latency plus bytes per token over a link), and the cost model only needs those two
numbers per collective, computed once per simulation. The alpha-beta model here is the standard
one NCCL's own tuner uses (per-hop latency, bus bandwidth per algorithm):

* Ring all-reduce over n chips: 2(n-1) hops, each chip sends 2(n-1)/n of the message.
* Tree all-reduce (NCCL's double binary tree; also the shape of NVLink SHARP and vLLM's custom
  one-shot all-reduce on NVSwitch): 2*ceil(log2 n) hops, about 2x the message per chip. It wins
  on small messages (decode steps), the ring on large ones (prefill); the kernel takes the
  smaller of the two for each step's size, as NCCL picks the faster algorithm by size.
* A group wider than one scale-up domain (NVLink node) reduces hierarchically: reduce-scatter
  inside the domain, all-reduce of 1/g of the message across the domains over the scale-out
  fabric, all-gather inside the domain.
* All-to-all (expert-parallel dispatch and combine): one hop, each chip sends (e-1)/e of its
  tokens' routed copies; over the fabric when the group spans domains.
* Pipeline send: one hop of the hidden state to the next stage.

Every collective also pays `collective_base_us` once (kernel launch and synchronisation; NCCL's
per-call latency, vLLM's custom all-reduce ~ 5-10 us on 8 H100s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from .hardware import Hardware
from .systems import Fabric


@dataclass(frozen=True)
class Link:
    """A chip's achieved bandwidth per direction over a link, and the latency of one hop."""

    bytes_per_s: float
    hop_s: float


@dataclass(frozen=True)
class Affine:
    """fixed_s + per_token_s x tokens: the time of one collective as a step's size grows."""

    fixed_s: float = 0.0
    per_token_s: float = 0.0

    def times(self, count: float) -> "Affine":
        return Affine(self.fixed_s * count, self.per_token_s * count)

    def plus(self, other: "Affine") -> "Affine":
        return Affine(self.fixed_s + other.fixed_s, self.per_token_s + other.per_token_s)


def scale_up_link(hw: Hardware, efficiency: float) -> Optional[Link]:
    """NVLink / Infinity Fabric / ICI, at the achieved fraction of its per-direction bandwidth."""
    if hw.scale_up_bandwidth_gbps <= 0:
        return None
    return Link(hw.scale_up_bytes_per_s_per_direction() * efficiency, hw.scale_up_latency_us * 1e-6)


def fabric_link(fabric: Fabric, efficiency: float) -> Link:
    """A scale-out network, at the achieved fraction of its per-chip bandwidth."""
    return Link(fabric.bandwidth_per_chip_gbps * 1e9 * efficiency, fabric.latency_us * 1e-6)


def _ring(n: int, bytes_per_token: float, link: Link) -> Affine:
    return Affine(2 * (n - 1) * link.hop_s, 2.0 * (n - 1) / n * bytes_per_token / link.bytes_per_s)


def _tree(n: int, bytes_per_token: float, link: Link) -> Affine:
    return Affine(2 * math.ceil(math.log2(n)) * link.hop_s, 2.0 * bytes_per_token / link.bytes_per_s)


def all_reduce(n: int, bytes_per_token: float, domain: int, intra: Optional[Link],
               inter: Optional[Link], base_s: float) -> tuple[Affine, Affine]:
    """(ring, tree) time of one all-reduce of `bytes_per_token` x tokens over `n` chips whose
    scale-up domains hold `domain` chips each. Zero for n = 1."""
    if n <= 1:
        return Affine(), Affine()
    if intra is None and inter is None:
        raise ValueError("an all-reduce over several chips needs a scale-up link or a fabric")
    if n <= domain and intra is not None:
        base = Affine(base_s, 0.0)
        return base.plus(_ring(n, bytes_per_token, intra)), base.plus(_tree(n, bytes_per_token, intra))
    if inter is None:
        raise ValueError(f"a group of {n} chips spans scale-up domains of {domain} chips: "
                         "give the scale-out fabric between them")
    g = min(domain, n) if intra is not None else 1
    nodes = math.ceil(n / g)
    local = Affine()
    if g > 1 and intra is not None:  # reduce-scatter, then all-gather, inside the domain
        half = Affine((g - 1) * intra.hop_s, (g - 1) / g * bytes_per_token / intra.bytes_per_s)
        local = half.times(2)
    share = bytes_per_token / g
    base = Affine(base_s, 0.0)
    ring = base.plus(local).plus(_ring(nodes, share, inter))
    tree = base.plus(local).plus(_tree(nodes, share, inter))
    return ring, tree


def all_to_all(n: int, bytes_per_token: float, domain: int, intra: Optional[Link],
               inter: Optional[Link], base_s: float) -> Affine:
    """One all-to-all over `n` chips where the step's tokens are spread evenly over them and
    each token sends `bytes_per_token` in all; a chip ships (n-1)/n of its 1/n share."""
    if n <= 1:
        return Affine()
    link = intra if (n <= domain and intra is not None) else inter
    if link is None:
        raise ValueError(f"an all-to-all over {n} chips spanning domains of {domain} needs a fabric")
    return Affine(base_s + link.hop_s, (n - 1) / n / n * bytes_per_token / link.bytes_per_s)


def send(bytes_per_token: float, link: Link, base_s: float) -> Affine:
    """Point-to-point send of the step's hidden states to the next pipeline stage."""
    return Affine(base_s + link.hop_s, bytes_per_token / link.bytes_per_s)
