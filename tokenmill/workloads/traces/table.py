"""What a trace reader returns: the rows it kept, as columns, and an account of the rest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np


@dataclass
class TraceTable:
    """Requests read from one file, in file order (times not yet sorted or shifted).

    time_s: seconds on the trace's own clock (any origin); prompt, output: int64 tokens.
    prefix_ids / prefix_offsets: each request's prompt-block ids (Mooncake hash_ids), with
    `block_tokens` tokens per block. counts: rows read and every row left out, by reason.
    """

    path: Path
    format: str
    time_s: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    prefix_ids: Optional[np.ndarray] = None
    prefix_offsets: Optional[np.ndarray] = None
    block_tokens: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    bad_examples: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.time_s.shape[0])

    def keep(self, mask: np.ndarray, reason: str) -> None:
        """Drop the rows where `mask` is False, counting them under `reason`."""
        dropped = int(mask.shape[0] - np.count_nonzero(mask))
        if dropped == 0:
            return
        self.counts[reason] = self.counts.get(reason, 0) + dropped
        self.time_s = self.time_s[mask]
        self.prompt = self.prompt[mask]
        self.output = self.output[mask]
        if self.prefix_offsets is not None and self.prefix_ids is not None:
            self.prefix_ids, self.prefix_offsets = select_prefixes(
                self.prefix_ids, self.prefix_offsets, np.flatnonzero(mask))


def select_prefixes(ids: np.ndarray, offsets: np.ndarray,
                    rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flat ids and offsets of the requests `rows` (in that order)."""
    lengths = offsets[rows + 1] - offsets[rows]
    new_offsets = np.zeros(rows.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    total = int(new_offsets[-1])
    if total == 0:
        return np.zeros(0, dtype=np.int64), new_offsets
    # position of each output id in the old flat array: start of its row + rank in the row
    starts = np.repeat(offsets[rows] - new_offsets[:-1], lengths)
    return ids[starts + np.arange(total)], new_offsets
