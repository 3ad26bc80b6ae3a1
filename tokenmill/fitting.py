"""Bounded nonlinear least squares (Levenberg-Marquardt), in numpy alone.

Why not scipy: the fits here have at most a dozen parameters and a few thousand residuals, and
numpy's least-squares solve is all Levenberg-Marquardt needs; a dependency of scipy's size would
not earn its place. Bounds are handled by scaling every parameter onto [0, 1] and clipping steps that leave the
box. Deterministic: the same inputs give the same parameters on every run.
"""

from __future__ import annotations

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


def _scale(bounds: Sequence[Bound], x0: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Lower ends and widths that map every parameter onto [0, 1] (unbounded above: 4x start)."""
    lo = np.array([b.lower for b in bounds], dtype=np.float64)
    hi = np.array([b.upper if b.upper is not None else max(4.0 * abs(x), b.lower + 1.0)
                   for b, x in zip(bounds, x0)], dtype=np.float64)
    return lo, hi - lo


def _descend(r_of: Callable[[np.ndarray], np.ndarray], u: np.ndarray, max_iter: int, tol: float,
             step: float) -> tuple[np.ndarray, float, int]:
    """Levenberg-Marquardt on u in the unit box; steps that leave it are clipped back."""
    r = r_of(u)
    cost = float(r @ r)
    lam = 1e-3
    it = 0
    for it in range(1, max_iter + 1):
        jac = np.empty((r.shape[0], u.shape[0]))
        for j in range(u.shape[0]):
            h = step if u[j] + step <= 1.0 else -step   # stay inside the box
            du = np.zeros_like(u)
            du[j] = h
            jac[:, j] = (r_of(u + du) - r) / h
        jtj = jac.T @ jac
        grad = jac.T @ r
        improved, gain = False, 0.0
        while lam < 1e12:
            a = jtj + lam * (np.diag(np.diag(jtj)) + 1e-9 * np.eye(u.shape[0]))
            try:
                delta = np.linalg.solve(a, -grad)
            except np.linalg.LinAlgError:
                lam *= 10.0
                continue
            trial = np.clip(u + delta, 0.0, 1.0)
            r_new = r_of(trial)
            c_new = float(r_new @ r_new)
            if c_new < cost:
                improved = True
                gain = (cost - c_new) / max(cost, 1e-300)
                u, r, cost = trial, r_new, c_new
                lam = max(lam / 3.0, 1e-12)
                break
            lam *= 4.0
        if not improved or gain < tol:
            break
    return u, cost, it


def least_squares(residuals: Callable[[np.ndarray], np.ndarray], x0: Sequence[float],
                  bounds: Sequence[Bound], *, max_iter: int = 100, tol: float = 1e-10,
                  step: float = 1e-6) -> FitOutcome:
    """Minimise sum(residuals(x)**2) over x within `bounds`, starting from x0.

    Each parameter is mapped onto [0, 1] by its bounds, so every direction is equally scaled;
    the search starts from x0 and again from the middle of the box (a second start guards
    against the shallow valleys correlated parameters make) and keeps the better end point."""
    lo, width = _scale(bounds, x0)
    u0 = np.clip((np.asarray(x0, dtype=np.float64) - lo) / width, 0.0, 1.0)

    def r_of(u: np.ndarray) -> np.ndarray:
        r = np.asarray(residuals(lo + u * width), dtype=np.float64)
        return np.where(np.isfinite(r), r, 1e3)

    r0 = r_of(u0)
    start = float(r0 @ r0)
    best_u, best_cost, iterations = u0, start, 0
    for u_start in (u0, np.full_like(u0, 0.5)):
        u, cost, it = _descend(r_of, u_start.copy(), max_iter, tol, step)
        iterations += it
        if cost < best_cost:
            best_u, best_cost = u, cost
    return FitOutcome(lo + best_u * width, start, best_cost, iterations)
