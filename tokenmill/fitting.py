"""Bounded nonlinear least squares (Levenberg-Marquardt), in numpy alone.

Why not scipy: the fits here have at most a dozen parameters and a few thousand residuals, and
numpy's least-squares solve is all Levenberg-Marquardt needs; a dependency of scipy's size would
not earn its place. Bounds are handled by reparametrising: a parameter bounded on both sides is
lo + (hi - lo) * sigmoid(z), one bounded below is lo + exp(z); the search runs in z.
Deterministic: the same inputs give the same parameters on every run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class Bound:
    """Closed interval a parameter may take (upper None: unbounded above)."""

    lower: float
    upper: Optional[float] = None


@dataclass(frozen=True)
class FitOutcome:
    x: np.ndarray
    cost_before: float    # sum of squared residuals at the start
    cost_after: float
    iterations: int


def _to_z(x: float, b: Bound) -> float:
    # A start on (or at) a bound is moved 1% inside it: there the reparametrisation is flat and
    # the search could never leave.
    if b.upper is None:
        return math.log(max(x - b.lower, 1e-2 * max(abs(b.lower), 1.0)))
    u = (x - b.lower) / (b.upper - b.lower)
    u = min(max(u, 1e-2), 1 - 1e-2)
    return math.log(u / (1 - u))


def _to_x(z: np.ndarray, bounds: Sequence[Bound]) -> np.ndarray:
    out = np.empty(len(bounds))
    for i, b in enumerate(bounds):
        if b.upper is None:
            out[i] = b.lower + math.exp(min(float(z[i]), 700.0))
        else:
            out[i] = b.lower + (b.upper - b.lower) / (1.0 + math.exp(-min(max(float(z[i]), -700.0), 700.0)))
    return out


def least_squares(residuals: Callable[[np.ndarray], np.ndarray], x0: Sequence[float],
                  bounds: Sequence[Bound], *, max_iter: int = 80, tol: float = 1e-9,
                  step: float = 1e-5) -> FitOutcome:
    """Minimise sum(residuals(x)**2) over x within `bounds`, starting from x0."""
    z = np.array([_to_z(float(x), b) for x, b in zip(x0, bounds)])

    def r_of(zz: np.ndarray) -> np.ndarray:
        r = np.asarray(residuals(_to_x(zz, bounds)), dtype=np.float64)
        return np.where(np.isfinite(r), r, 1e3)

    r = r_of(z)
    cost = float(r @ r)
    start = cost
    lam = 1e-2
    it = 0
    for it in range(1, max_iter + 1):
        jac = np.empty((r.shape[0], z.shape[0]))
        for j in range(z.shape[0]):
            dz = np.zeros_like(z)
            dz[j] = step
            jac[:, j] = (r_of(z + dz) - r) / step
        jtj = jac.T @ jac
        grad = jac.T @ r
        improved = False
        while lam < 1e12:
            a = jtj + lam * np.diag(np.diag(jtj) + 1e-12)
            try:
                delta = np.linalg.solve(a, -grad)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            trial = z + delta
            r_new = r_of(trial)
            c_new = float(r_new @ r_new)
            if c_new < cost:
                improved = True
                gain = (cost - c_new) / max(cost, 1e-300)
                z, r, cost = trial, r_new, c_new
                lam = max(lam / 3.0, 1e-12)
                break
            lam *= 4.0
        if not improved or gain < tol:
            break
    return FitOutcome(_to_x(z, bounds), start, cost, it)
