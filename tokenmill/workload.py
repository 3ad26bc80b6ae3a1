"""The columns the kernel reads: WorkloadArrays, and generate() to make them from a Workload.

How workloads are made (arrival processes, length distributions, classes, trace replay) lives
in the tokenmill.workloads package; this module keeps the agreed interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from .scenario import Workload

if TYPE_CHECKING:
    from .workloads.info import WorkloadInfo


@dataclass(frozen=True)
class WorkloadArrays:
    """One row per request, sorted by arrival time: the columns the kernel reads.

    Optional columns (None when the workload does not have them):
    * class_id: int32 index of the request's class in the workload's class table;
    * priority: int32, lower is served first (vLLM's convention);
    * prefix_ids / prefix_offsets: content ids of the request's consecutive prompt blocks of
      `prefix_block_tokens` tokens each (equal ids = shareable KV, e.g. Mooncake's hash_ids);
      request i's ids are prefix_ids[prefix_offsets[i]:prefix_offsets[i + 1]].
    * info: where the requests came from, and every trace row or length draw left out or
      changed on the way (shown with the result).
    """

    arrival_s: np.ndarray      # float64
    prompt_tokens: np.ndarray  # int32
    output_tokens: np.ndarray  # int32
    class_id: Optional[np.ndarray] = None
    priority: Optional[np.ndarray] = None
    prefix_ids: Optional[np.ndarray] = None      # int64
    prefix_offsets: Optional[np.ndarray] = None  # int64, length n + 1
    prefix_block_tokens: int = 0
    info: Optional["WorkloadInfo"] = None  # how it was made; rows or draws left out or changed

    def __post_init__(self) -> None:
        n = self.arrival_s.shape[0]
        for name in ("prompt_tokens", "output_tokens", "class_id", "priority"):
            col = getattr(self, name)
            if col is not None and col.shape != (n,):
                raise ValueError(f"WorkloadArrays.{name} has shape {col.shape}; expected ({n},)")
        if (self.prefix_ids is None) != (self.prefix_offsets is None):
            raise ValueError("WorkloadArrays: give both prefix_ids and prefix_offsets, or neither")
        if self.prefix_offsets is not None:
            if self.prefix_offsets.shape != (n + 1,):
                raise ValueError(f"WorkloadArrays.prefix_offsets has shape "
                                 f"{self.prefix_offsets.shape}; expected ({n + 1},)")
            if self.prefix_block_tokens < 1:
                raise ValueError("WorkloadArrays.prefix_block_tokens must be >= 1 with prefix ids")

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])


def generate(workload: Workload, seed: int) -> WorkloadArrays:
    """The requests of `workload` for this seed (see tokenmill.workloads.generate)."""
    from .workloads.generate import generate as _generate  # the workloads package imports us

    return _generate(workload, seed)
