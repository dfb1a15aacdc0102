"""Closed-form ridge probe: least squares on one-hot targets, every L2 strength from one eigendecomposition.

Same per-sample convention as the logistic probe (`zoo_rank.probe`): minimise
(1 / 2N) ||x W + b - targets||^2 + (l2 / 2) ||W||^2, i.e. scikit-learn's Ridge(alpha=l2 * N).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from zoo_rank.options import ProbeOptions
from zoo_rank.probe.result import ProbeResult, accuracies, assemble
from zoo_rank.probe.split import prepare, strongest_first


def _standardise_np(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (x - mean) / scale


def _fit_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    scale = x.std(0)  # ddof=0, as StandardScaler
    return mean, np.where(scale > 0, scale, 1.0)


class RidgePath:
    """Ridge regression for every L2 strength from ONE eigendecomposition.

    Fit on x (N, p) and targets (N, K) (one-hot for a probe), with an unpenalised intercept and the
    per-sample convention of this module: minimise (1 / 2N) ||x W + b - targets||^2 + (l2 / 2) ||W||^2,
    i.e. scikit-learn's Ridge(alpha=l2 * N). With centred xc, yc the solution is
    W(l2) = (xc^T xc + N l2 I)^-1 xc^T yc. When N >= p we eigendecompose xc^T xc = V diag(s) V^T (primal);
    when N < p the Gram matrix xc xc^T = U diag(s) U^T (dual, W = xc^T U diag(1/(s + N l2)) U^T yc).
    Either way each l2 then costs one diagonal rescaling.
    """

    def __init__(self, x: np.ndarray, targets: np.ndarray):
        x = np.asarray(x, dtype=np.float64)
        targets = np.asarray(targets, dtype=np.float64)
        if targets.ndim == 1:
            targets = targets[:, None]
        self.n, self.p = x.shape
        self.x_mean = x.mean(0)
        self.y_mean = targets.mean(0)
        xc = x - self.x_mean
        yc = targets - self.y_mean
        self.primal = self.n >= self.p
        if self.primal:
            s, v = np.linalg.eigh(xc.T @ xc)
            self.basis = v  # (p, r)
            self.proj_targets = v.T @ (xc.T @ yc)  # (r, K)
        else:
            s, u = np.linalg.eigh(xc @ xc.T)
            self.basis = xc.T @ u  # (p, N): W = basis diag(1/(s+a)) u^T yc
            self.proj_targets = u.T @ yc  # (N, K)
        # eigh can return tiny negative eigenvalues of a PSD matrix; they are zero.
        self.eigvals = np.clip(s, 0.0, None)

    def coef(self, l2: float) -> tuple[np.ndarray, np.ndarray]:
        """(W (p, K), b (K,)) at one L2 strength."""
        shrink = 1.0 / (self.eigvals + self.n * l2)
        W = self.basis @ (shrink[:, None] * self.proj_targets)
        return W, self.y_mean - self.x_mean @ W

    def decision(self, x: np.ndarray, l2_values: np.ndarray) -> np.ndarray:
        """Predictions (A, M, K) of x (M, p) for each of A strengths, projecting x only once."""
        xb = (np.asarray(x, dtype=np.float64) - self.x_mean) @ self.basis  # (M, r)
        shrink = 1.0 / (self.eigvals[None, :] + self.n * np.asarray(l2_values)[:, None])  # (A, r)
        out = np.einsum("mr,ar,rk->amk", xb, shrink, self.proj_targets, optimize=True)
        return out + self.y_mean


def ridge_probe(
    train_x: Any,
    train_y: Any,
    test_x: Any,
    test_y: Any,
    val_x: Any = None,
    val_y: Any = None,
    *,
    options: ProbeOptions | None = None,
) -> ProbeResult:
    """Closed-form ridge probe: least squares on one-hot targets, predicted class = argmax.

    A quick stand-in for `linear_probe` (same inputs, same selection protocol, same `ProbeResult`):
    the whole grid is scored on validation from one eigendecomposition (`RidgePath`), the best value
    refit on train + validation with one linear solve. Not the paper's protocol: report it as "ridge".
    Reads `options.l2_grid`, `val_fraction` and `seed` (None: `ProbeOptions()`).
    """
    options = options or ProbeOptions(method="ridge")
    split = prepare(train_x, train_y, test_x, test_y, val_x, val_y, options.val_fraction, options.seed)
    grid = strongest_first(options.l2_grid)
    n_classes = len(split.classes)
    onehot = np.eye(n_classes)

    t0 = time.perf_counter()
    mean, scale = _fit_stats(split.fit_x)
    path = RidgePath(_standardise_np(split.fit_x, mean, scale), onehot[split.fit_y])
    scores = path.decision(_standardise_np(split.val_x, mean, scale), grid)  # (A, V, K)
    val_accs = (scores.argmax(2) == split.val_y[None, :]).mean(1)
    best_i = int(np.argmax(val_accs))  # first maximum = strongest penalty among ties
    t_select = time.perf_counter() - t0

    t1 = time.perf_counter()
    all_x = np.concatenate([split.fit_x, split.val_x]).astype(np.float64)
    all_y = np.concatenate([split.fit_y, split.val_y])
    mean, scale = _fit_stats(all_x)
    W, b = _ridge_solve(_standardise_np(all_x, mean, scale), onehot[all_y], float(grid[best_i]))
    pred = np.argmax(_standardise_np(split.test_x, mean, scale) @ W + b, axis=1)
    top1, mpc = accuracies(pred, split.test_y, n_classes)
    t_refit = time.perf_counter() - t1
    return assemble(
        "ridge", split, grid, val_accs, best_i, top1=top1, mean_per_class=mpc,
        seconds={"select": t_select, "refit": t_refit},
        coef=W, intercept=b, feature_mean=mean, feature_scale=scale,
    )  # fmt: skip


def _ridge_solve(x: np.ndarray, targets: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """One ridge fit at one strength: primal (p x p) or dual (N x N) system, whichever is smaller."""
    n, p = x.shape
    x_mean, y_mean = x.mean(0), targets.mean(0)
    xc, yc = x - x_mean, targets - y_mean
    if n >= p:
        W = np.linalg.solve(xc.T @ xc + n * l2 * np.eye(p), xc.T @ yc)
    else:
        W = xc.T @ np.linalg.solve(xc @ xc.T + n * l2 * np.eye(n), yc)
    return W, y_mean - x_mean @ W
