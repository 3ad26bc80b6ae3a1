"""Systems (a chip in its standard box and scale-up domain) and scale-out fabrics.

Why: a capacity planner buys DGX boxes or NVL72 racks, not loose chips, and connects them with
a named network. A system fixes the chip, how many sit in one node, how many share a scale-up
domain (NVLink, Infinity Fabric, ICI), and the network between domains; a fabric gives the
per-chip bandwidth and latency of that network. Every figure carries its source, as the chip
presets do. The simulator uses the system's chip and scale-up domain today; the fabric figures
are for the cluster planner (replicas and parallel groups spanning nodes).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, PositiveFloat, PositiveInt

from ._validation import NameTuple, StrictModel


class Fabric(StrictModel):
    """A scale-out network, per chip: what one accelerator can send to another node."""

    name: str = Field(description="Preset name, lower case (e.g. 'ndr-400').")
    display_name: str = Field(description="Full name of the network technology.")
    aliases: NameTuple = Field(default=(), description="Other names accepted for this fabric.")
    kind: Literal["infiniband", "ethernet", "datacenter"] = Field(
        description="Network family: InfiniBand, RDMA Ethernet, or a cloud data-center network.")
    line_rate_gbit: PositiveFloat = Field(description="Line rate of one NIC port, Gb/s.")
    bandwidth_per_chip_gbps: PositiveFloat = Field(
        description="Bandwidth one chip can drive to other nodes, GB/s per direction.")
    latency_us: PositiveFloat = Field(
        description="Small-message latency chip to chip across the fabric, microseconds.")
    estimates: NameTuple = Field(
        default=(), description="Fields whose values are estimates rather than published figures.")
    sources: dict[str, str] = Field(
        default_factory=dict, description="Source of each figure, keyed by field name.")


class System(StrictModel):
    """A standard box or rack of one chip type."""

    name: str = Field(description="Preset name, lower case (e.g. 'dgx-h100').")
    display_name: str = Field(description="Full product name.")
    vendor: str = Field(description="Maker, lower case.")
    aliases: NameTuple = Field(default=(), description="Other names accepted for this system.")
    chip: str = Field(description="Chip preset the system is built from.")
    chips_per_node: PositiveInt = Field(description="Accelerators in one node (server, tray or TPU host).")
    scale_up_domain: PositiveInt = Field(
        description="Accelerators sharing one scale-up fabric (NVLink domain, TPU slice).")
    default_fabric: Optional[str] = Field(
        default=None, description="Fabric preset between scale-up domains; None if unpublished.")
    notes: Optional[str] = Field(default=None, description="Caveats about the figures.")
    estimates: NameTuple = Field(
        default=(), description="Fields whose values are estimates rather than published figures.")
    sources: dict[str, str] = Field(
        default_factory=dict, description="Source of each figure, keyed by field name.")
