"""The paper's probe: multinomial logistic regression along the L2 grid, chosen on validation accuracy.

`linear_probe` walks the grid strongest first with one warm-started `LogisticPath` (our own L-BFGS,
`zoo_rank.probe.solvers`), then refits the chosen value on train + validation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zoo_rank._device import pick_device
from zoo_rank._validation import ZooRankError
from zoo_rank.options import ProbeOptions
from zoo_rank.probe.result import ProbeResult, accuracies, assemble
from zoo_rank.probe.solvers import LogisticPath
from zoo_rank.probe.split import Split, prepare, strongest_first


def _resolve_dtype(dtype: str, device: str, n: int, p: int) -> torch.dtype:
    if dtype == "auto":
        # float64 is free on small problems and matches scikit-learn to many digits; on big ones (and on
        # GPUs) float32 halves the time and the accuracy of an argmax does not need more.
        return torch.float64 if device == "cpu" and n * p <= 4_000_000 else torch.float32
    if dtype not in ("float32", "float64"):
        raise ZooRankError(f"dtype={dtype!r} is not supported; use 'auto', 'float32' or 'float64'.")
    return getattr(torch, dtype)


@dataclass
class _Selection:
    """The walk along the grid: validation accuracy per value run, the best index and its (W, b)."""

    path: LogisticPath
    val_accs: list[float]
    best_i: int
    best_W: torch.Tensor
    best_b: torch.Tensor


def _select(
    split: Split, grid: np.ndarray, options: ProbeOptions, device: str, dtype: torch.dtype
) -> _Selection:
    """Fit every value of `grid` (strongest first) warm-started, scoring each on validation.

    With `options.early_stop` the walk ends once `patience` consecutive values failed to beat the best
    validation accuracy, counting only values below `path.curvature` (above it W only shrinks towards 0
    and no prediction changes), or at once on a perfect score. Far on the plateau (l2 >= 10 times that
    bound) the fit is its second-order expansion (`LogisticPath.set_expansion`). Ties go to the stronger.
    """
    path = LogisticPath(
        split.fit_x,
        split.fit_y,
        len(split.classes),
        device,
        dtype,
        tol=options.tol,
        max_iter=options.max_iter,
    )
    val_std = path.standardise(split.val_x, column_major=True)
    val_accs: list[float] = []
    best_acc, best_i, stale = -1.0, 0, 0
    best_W = best_b = None
    active_below = path.curvature  # above it every fit predicts the same: no evidence of a peak there
    expansion_above = 10.0 * path.curvature
    fitted = False
    for i, l2 in enumerate(grid):
        if l2 >= expansion_above and not fitted:
            path.set_expansion(float(l2))
            moved = True
        else:
            evals = path.n_evals
            path.fit(float(l2))
            # No pass over X means W did not move (the corrected gradient was already below tol).
            moved, fitted = path.n_evals > evals or not fitted, True
        # accuracy_score's number, without its input checks (3 ms a call, 5% of a 97-value path)
        acc = float(np.mean(path.predict(val_std) == split.val_y)) if moved or not val_accs else val_accs[-1]
        val_accs.append(float(acc))
        if acc > best_acc:
            best_acc, best_i, stale = acc, i, 0
            best_W, best_b = path.W.clone(), path.b.clone()
        elif l2 < active_below:
            stale += 1
        if options.early_stop and (stale >= options.patience or best_acc == 1.0):
            break  # 1.0 cannot be beaten, and ties go to the stronger penalty already chosen
    return _Selection(path, val_accs, best_i, best_W, best_b)


def _refit(split: Split, sel: _Selection, l2: float, options: ProbeOptions) -> LogisticPath:
    """Fit train + validation at the chosen `l2` (restandardised on those rows), from the selected fit."""
    path = sel.path
    all_x = np.concatenate([split.fit_x, split.val_x])
    all_y = np.concatenate([split.fit_y, split.val_y])
    final = LogisticPath(
        all_x,
        all_y,
        len(split.classes),
        str(path.x.device),
        path.x.dtype,
        tol=options.tol,
        max_iter=options.max_iter,
    )
    final.start_from(path, sel.best_W, sel.best_b)
    final.fit(l2)
    return final


def linear_probe(
    train_x: Any,
    train_y: Any,
    test_x: Any,
    test_y: Any,
    val_x: Any = None,
    val_y: Any = None,
    *,
    options: ProbeOptions | None = None,
) -> ProbeResult:
    """Multinomial logistic-regression probe with the L2 strength chosen on validation accuracy.

    Shapes: train_x (N, p), train_y (N,), test_x (M, p), test_y (M,), optional val_x (V, p), val_y (V,);
    numpy or torch, labels of any hashable type. Without a validation set, a stratified
    `options.val_fraction` of train (seeded by `options.seed`) is held out for the selection.

    The path runs over `options.l2_grid` (None: the paper's 97 values) from the strongest to the weakest
    `l2` (see `zoo_rank.probe` for what `l2` means), each fit warm-started from the previous one with
    full-batch L-BFGS (stop when max |gradient| <= `tol` or after `max_iter` iterations); the L-BFGS
    curvature memory is carried along the path too, corrected exactly for the change of penalty, and a
    value whose corrected gradient is already below `tol` costs no pass over the data
    (`zoo_rank.probe.solvers.LogisticPath`); early stopping as in `_select`. The chosen value is then
    refit on train + validation (restandardised on those rows), and test top-1 and mean per-class
    accuracy reported. None: `ProbeOptions()`.
    """
    options = options or ProbeOptions()
    split = prepare(train_x, train_y, test_x, test_y, val_x, val_y, options.val_fraction, options.seed)
    grid = strongest_first(options.l2_grid)
    device = str(pick_device(options.device, allow_mps=False))
    dtype = _resolve_dtype(options.dtype, device, *split.fit_x.shape)

    t0 = time.perf_counter()
    sel = _select(split, grid, options, device, dtype)
    t1 = time.perf_counter()
    final = _refit(split, sel, float(grid[sel.best_i]), options)
    top1, mpc = accuracies(final.predict(final.standardise(split.test_x)), split.test_y, len(split.classes))
    t_refit = time.perf_counter() - t1
    return assemble(
        "logistic", split, grid, sel.val_accs, sel.best_i, top1=top1, mean_per_class=mpc,
        n_iter=sel.path.n_iter + final.n_iter, seconds={"select": t1 - t0, "refit": t_refit},
        device=device, dtype=str(dtype).replace("torch.", ""),
        coef=final.W.detach().double().cpu().numpy(), intercept=final.b.detach().double().cpu().numpy(),
        feature_mean=final.mean.double().cpu().numpy(), feature_scale=final.scale.double().cpu().numpy(),
    )  # fmt: skip


def sklearn_C(l2: float, n_samples: int) -> float:
    """scikit-learn LogisticRegression's C for our per-sample `l2` on `n_samples` rows: 1 / (l2 N)."""
    if l2 <= 0 or n_samples <= 0 or not math.isfinite(l2):
        raise ZooRankError(f"need l2 > 0 and n_samples > 0, got l2={l2}, n_samples={n_samples}.")
    return 1.0 / (l2 * n_samples)
