"""Several request classes in one workload: which class each request belongs to.

Each request draws its class independently with probability share / sum(shares), from its own
random stream, so adding a class does not move the arrival times. Lengths are then drawn class
by class (see generate.py), and the class's priority fills the priority column.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .config import RequestClass


def assign_classes(rng: np.random.Generator, classes: Sequence[RequestClass],
                   n: int) -> np.ndarray:
    """int32 class index of each of n requests."""
    shares = np.array([c.share for c in classes], dtype=np.float64)
    edges = np.cumsum(shares / shares.sum())
    picks = np.searchsorted(edges, rng.random(n), side="right")
    return np.minimum(picks, len(classes) - 1).astype(np.int32)  # guard the top edge's rounding


def class_priorities(classes: Sequence[RequestClass], class_id: np.ndarray) -> np.ndarray:
    return np.array([c.priority for c in classes], dtype=np.int32)[class_id]
