"""An account of how a workload was made: its source, and every row or draw that was changed.

Nothing is dropped or clamped silently: each trace row left out and each length moved by a cap
is counted here, carried by WorkloadArrays.info, and shown in `tokenmill workload describe`
and in the simulation's result (text notes and the JSON "workload" section).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WorkloadInfo:
    """Where the requests came from and what was adjusted on the way."""

    source: str
    counts: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "counts": dict(self.counts), "notes": list(self.notes),
                "classes": list(self.class_names)}
