"""Linear probes on frozen features: the ground truth that transferability scores are judged against.

Protocol (Kornblith et al., 2019, as used by Xu & Liu, ICML 2023): multinomial logistic regression on
frozen features, trained with full-batch L-BFGS; the L2 strength chosen from 97 log-spaced values in
[1e-6, 1e6] on a validation set (a fixed, seeded, stratified split of train when the dataset has none);
refit on train + validation with the chosen value; report test top-1 and mean per-class accuracy.

How the L2 strength enters the loss (both probes, one convention)
----------------------------------------------------------------
Features are standardised with the statistics of the rows being fitted, then we minimise the
*per-sample* objective

    J(W, b) = (1/N) * sum_i loss(x_i W + b, y_i) + (l2 / 2) * ||W||_F^2         (bias not penalised)

with loss = softmax cross-entropy (`linear_probe`) or half the squared error to one-hot targets
(`ridge_probe`). Because the data term is a mean, `l2` means the same thing for 500 or 50,000 samples
and survives the refit on train + validation unchanged. The mappings to scikit-learn:

    LogisticRegression(C=1 / (l2 * N))        Ridge(alpha=l2 * N)

(scikit-learn minimises C * sum_i loss + ||W||^2 / 2 and sum_i ||r_i||^2 + alpha ||W||^2 respectively).
On standardised features the useful range of `l2` is about [1e-6, 1e1]: at 1e1 and above W is
essentially zero (the probe predicts the majority class), below 1e-6 it is unregularised. The default
grid therefore spends its upper half on near-trivial fits, which cost almost nothing with warm starts,
and early stopping skips the expensive weak end once validation accuracy has clearly peaked.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from zoo_rank._validation import ZooRankError, check_features, encode_labels, to_numpy
from zoo_rank.probe_solvers import LogisticPath

#: The paper's grid: 97 log-spaced L2 strengths in [1e-6, 1e6] (8 per decade).
DEFAULT_L2_GRID = np.logspace(-6, 6, 97)

PROBES = ("logistic", "ridge")


@dataclass
class ProbeResult:
    """Outcome of one probe: the chosen L2 strength, test accuracies, and the validation path.

    Accuracies are fractions in [0, 1]. `l2_path` lists the strengths evaluated, strongest first
    (shorter than the grid when early stopping cut the weak end); `val_acc_path[i]` is the validation
    accuracy at `l2_path[i]`. `coef` (p, K), `intercept` (K,) act on standardised features
    (x - feature_mean) / feature_scale; `classes` (K,) maps column k back to the original label.
    """

    probe: str
    l2: float
    top1: float
    mean_per_class: float
    val_acc: float
    l2_path: np.ndarray
    val_acc_path: np.ndarray
    n_train: int
    n_val: int
    n_test: int
    n_classes: int
    n_features: int
    val_source: str  # "given" or "split(fraction=..., seed=...)"
    early_stopped: bool = False
    n_iter: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "float64"
    coef: np.ndarray | None = field(default=None, repr=False)
    intercept: np.ndarray | None = field(default=None, repr=False)
    feature_mean: np.ndarray | None = field(default=None, repr=False)
    feature_scale: np.ndarray | None = field(default=None, repr=False)
    classes: np.ndarray | None = field(default=None, repr=False)

    def predict(self, x: Any) -> np.ndarray:
        """Predicted original labels (N,) for raw (unstandardised) features x (N, p)."""
        x = np.asarray(to_numpy(x), dtype=np.float64)
        logits = ((x - self.feature_mean) / self.feature_scale) @ self.coef + self.intercept
        return self.classes[np.argmax(logits, axis=1)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no weight matrices)."""
        out = asdict(self)
        for key in ("coef", "intercept", "feature_mean", "feature_scale", "classes"):
            out.pop(key)
        out["l2_path"] = [float(v) for v in self.l2_path]
        out["val_acc_path"] = [float(v) for v in self.val_acc_path]
        return out


# ---- shared plumbing -------------------------------------------------------------------------


@dataclass
class _Split:
    """Labelled features ready for a probe: codes index into `classes`."""

    fit_x: np.ndarray
    fit_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: np.ndarray
    val_source: str


def _as_matrix(x: Any, name: str) -> np.ndarray:
    check_features(x, name=name)
    arr = to_numpy(x)
    return arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float64)


def _codes_in(classes: np.ndarray, labels: np.ndarray, name: str) -> np.ndarray:
    """Map labels onto the training classes; labels unseen in training are an error."""
    pos = np.searchsorted(classes, labels) if classes.dtype != object else None
    if pos is not None:
        pos = np.clip(pos, 0, len(classes) - 1)
        ok = classes[pos] == labels
    else:
        lookup = {c: i for i, c in enumerate(classes)}
        pos = np.array([lookup.get(v, -1) for v in labels], dtype=np.int64)
        ok = pos >= 0
    if not ok.all():
        unseen = sorted({str(v) for v in np.asarray(labels)[~ok]})[:5]
        raise ZooRankError(
            f"{name} contain {int((~ok).sum())} rows whose class never occurs in train (e.g. {unseen}); "
            "a probe can only predict training classes, so drop those rows or use a split that covers every class."
        )
    return pos.astype(np.int64)


def _prepare(train_x, train_y, test_x, test_y, val_x, val_y, val_fraction: float, seed: int) -> _Split:
    tx = _as_matrix(train_x, "train_x")
    sx = _as_matrix(test_x, "test_x")
    if sx.shape[1] != tx.shape[1]:
        raise ZooRankError(
            f"test_x has {sx.shape[1]} features but train_x has {tx.shape[1]}; extract both splits with the same model."
        )
    ty_codes, classes = encode_labels(train_y, tx.shape[0])
    if len(classes) < 2:
        raise ZooRankError(
            f"train labels hold {len(classes)} class, need at least 2; a probe separates classes."
        )
    sy = to_numpy(test_y).reshape(-1)
    if len(sy) != sx.shape[0]:
        raise ZooRankError(f"test_x has {sx.shape[0]} rows but test_y has {len(sy)}; pass one label per row.")
    test_codes = _codes_in(classes, sy, "test labels")
    if (val_x is None) != (val_y is None):
        raise ZooRankError(
            "got only one of val_x / val_y; pass both for a given validation set, or neither to split train."
        )
    if val_x is not None:
        vx = _as_matrix(val_x, "val_x")
        if vx.shape[1] != tx.shape[1]:
            raise ZooRankError(
                f"val_x has {vx.shape[1]} features but train_x has {tx.shape[1]}; use the same model."
            )
        vy = to_numpy(val_y).reshape(-1)
        if len(vy) != vx.shape[0]:
            raise ZooRankError(
                f"val_x has {vx.shape[0]} rows but val_y has {len(vy)}; pass one label per row."
            )
        return _Split(
            tx, ty_codes, vx, _codes_in(classes, vy, "val labels"), sx, test_codes, classes, "given"
        )
    if not 0.0 < val_fraction < 1.0:
        raise ZooRankError(f"val_fraction={val_fraction} is outside (0, 1); use e.g. 0.2 (the default).")
    from sklearn.model_selection import train_test_split

    counts = np.bincount(ty_codes, minlength=len(classes))
    # Stratify so every class keeps the same share in both parts; impossible with singleton classes.
    stratify = ty_codes if counts.min() >= 2 else None
    try:
        fit_idx, val_idx = train_test_split(
            np.arange(len(ty_codes)), test_size=val_fraction, random_state=seed, stratify=stratify
        )
    except ValueError as err:  # too few rows for a stratified split of this size
        raise ZooRankError(
            f"cannot split {len(ty_codes)} training rows of {len(classes)} classes into fit/validation "
            f"with val_fraction={val_fraction} ({err}); pass a larger train set or an explicit val_x/val_y."
        ) from None
    fit_idx, val_idx = np.sort(fit_idx), np.sort(val_idx)
    return _Split(
        tx[fit_idx], ty_codes[fit_idx], tx[val_idx], ty_codes[val_idx], sx, test_codes, classes,
        f"split(fraction={val_fraction}, seed={seed})",
    )  # fmt: skip


def _grid(l2_grid: Any) -> np.ndarray:
    grid = np.asarray(l2_grid, dtype=np.float64).reshape(-1)
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise ZooRankError(
            f"l2_grid must hold positive finite values, got {grid[:5]}...; use e.g. np.logspace(-6, 6, 97)."
        )
    return np.unique(grid)[::-1]  # strongest first: warm starts go from the simple model to the complex


def accuracies(pred: np.ndarray, target: np.ndarray, n_classes: int) -> tuple[float, float]:
    """(top-1, mean per-class accuracy) of integer predictions (N,) against codes (N,).

    Mean per-class accuracy averages the recall of the classes present in `target` (the metric the
    paper uses for Aircraft, Pets, Caltech-101 and Flowers): scikit-learn's balanced accuracy.
    `n_classes` is kept for callers; classes absent from `target` do not enter either number.
    """
    with warnings.catch_warnings():
        # A prediction of a class absent from `target` is legitimate here (a small test split): sklearn
        # leaves that class out of the mean, as intended, and only warns about it.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(accuracy_score(target, pred)), float(balanced_accuracy_score(target, pred))


# ---- logistic regression with L-BFGS along the regularisation path ---------------------------


def _resolve_dtype(dtype: str, device: str, n: int, p: int):
    import torch

    if dtype == "auto":
        # float64 is free on small problems and matches scikit-learn to many digits; on big ones (and on
        # GPUs) float32 halves the time and the accuracy of an argmax does not need more.
        return torch.float64 if device == "cpu" and n * p <= 4_000_000 else torch.float32
    if dtype not in ("float32", "float64"):
        raise ZooRankError(f"dtype={dtype!r} is not supported; use 'auto', 'float32' or 'float64'.")
    return getattr(torch, dtype)


def linear_probe(
    train_x: Any,
    train_y: Any,
    test_x: Any,
    test_y: Any,
    val_x: Any = None,
    val_y: Any = None,
    *,
    l2_grid: Any = DEFAULT_L2_GRID,
    device: str = "auto",
    dtype: str = "auto",
    val_fraction: float = 0.2,
    seed: int = 0,
    early_stop: bool = True,
    patience: int = 12,
    tol: float = 1e-4,
    max_iter: int = 500,
) -> ProbeResult:
    """Multinomial logistic-regression probe with the L2 strength chosen on validation accuracy.

    Shapes: train_x (N, p), train_y (N,), test_x (M, p), test_y (M,), optional val_x (V, p), val_y (V,);
    numpy or torch, labels of any hashable type. Without a validation set, a stratified `val_fraction`
    of train (seeded by `seed`) is held out for the selection.

    The path runs from the strongest to the weakest `l2` (see the module docstring for what `l2` means),
    each fit warm-started from the previous one with full-batch L-BFGS (stop when max |gradient| <= `tol`
    or after `max_iter` iterations); the L-BFGS curvature memory is carried along the path too, corrected
    exactly for the change of penalty, and a value whose corrected gradient is already below `tol` costs
    no pass over the data (`zoo_rank.probe_solvers.LogisticPath`). With `early_stop`, the path ends once
    `patience` consecutive values (12 = 1.5 decades of the default grid) failed to beat the best
    validation accuracy, counting only values below (1/2) lambda_max(X^T X / N), the curvature bound of
    the data term: above it W only shrinks towards 0 and no prediction changes, however long that
    plateau lasts; or at once on a perfect validation score. Far on the plateau (l2 >= 10 times that
    bound) the fit is its second-order expansion around W = 0 (relative error < 4%, see
    `LogisticPath.set_expansion`) instead of an L-BFGS run whose loss changes drown in rounding. The
    weak end is where L-BFGS needs the most iterations and, past the peak, only overfits further.
    Ties go to the stronger penalty. The chosen value is then refit on train +
    validation (restandardised on those rows), and test top-1 and mean per-class accuracy reported.
    """
    split = _prepare(train_x, train_y, test_x, test_y, val_x, val_y, val_fraction, seed)
    grid = _grid(l2_grid)
    from zoo_rank._device import pick_device

    device = str(pick_device(device, allow_mps=False))
    n_classes = len(split.classes)
    tdtype = _resolve_dtype(dtype, device, *split.fit_x.shape)

    t0 = time.perf_counter()
    path = LogisticPath(split.fit_x, split.fit_y, n_classes, device, tdtype, tol=tol, max_iter=max_iter)
    val_std = path.standardise(split.val_x)
    val_accs: list[float] = []
    best_acc, best_i, stale = -1.0, 0, 0
    best_W = best_b = None
    # Above this strength every fit predicts the same (W only shrinks): no evidence of a peak there.
    active_below = path.curvature
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
        acc = accuracy_score(split.val_y, path.predict(val_std)) if moved or not val_accs else val_accs[-1]
        val_accs.append(float(acc))
        if acc > best_acc:
            best_acc, best_i, stale = acc, i, 0
            best_W, best_b = path.W.clone(), path.b.clone()
        elif l2 < active_below:
            stale += 1
        if early_stop and (stale >= patience or best_acc == 1.0):
            break  # 1.0 cannot be beaten, and ties go to the stronger penalty already chosen
    t_select = time.perf_counter() - t0

    t1 = time.perf_counter()
    l2 = float(grid[best_i])
    all_x = np.concatenate([split.fit_x, split.val_x])
    all_y = np.concatenate([split.fit_y, split.val_y])
    final = LogisticPath(all_x, all_y, n_classes, device, tdtype, tol=tol, max_iter=max_iter)
    # Warm start in the new standardisation: the same affine function of the raw features.
    ratio = (final.scale / path.scale).unsqueeze(1)
    final.W.copy_(best_W * ratio)
    shifted = best_b + ((final.mean - path.mean) / path.scale) @ best_W
    final.b.copy_(shifted - shifted.mean())
    final.fit(l2)
    pred = final.predict(final.standardise(split.test_x))
    top1, mpc = accuracies(pred, split.test_y, n_classes)
    t_refit = time.perf_counter() - t1

    return ProbeResult(
        probe="logistic",
        l2=l2,
        top1=top1,
        mean_per_class=mpc,
        val_acc=best_acc,
        l2_path=grid[: len(val_accs)].copy(),
        val_acc_path=np.asarray(val_accs),
        n_train=len(split.fit_y),
        n_val=len(split.val_y),
        n_test=len(split.test_y),
        n_classes=n_classes,
        n_features=split.fit_x.shape[1],
        val_source=split.val_source,
        early_stopped=len(val_accs) < len(grid),
        n_iter=path.n_iter + final.n_iter,
        seconds={"select": t_select, "refit": t_refit},
        device=device,
        dtype=str(tdtype).replace("torch.", ""),
        coef=final.W.detach().double().cpu().numpy(),
        intercept=final.b.detach().double().cpu().numpy(),
        feature_mean=final.mean.double().cpu().numpy(),
        feature_scale=final.scale.double().cpu().numpy(),
        classes=split.classes,
    )


# ---- closed-form ridge probe -----------------------------------------------------------------


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
    l2_grid: Any = DEFAULT_L2_GRID,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> ProbeResult:
    """Closed-form ridge probe: least squares on one-hot targets, predicted class = argmax.

    A quick stand-in for `linear_probe` (same inputs, same selection protocol, same `ProbeResult`):
    the whole grid is scored on validation from one eigendecomposition (`RidgePath`), the best value
    refit on train + validation with one linear solve. Not the paper's protocol: report it as "ridge".
    """
    split = _prepare(train_x, train_y, test_x, test_y, val_x, val_y, val_fraction, seed)
    grid = _grid(l2_grid)
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
    l2 = float(grid[best_i])
    all_x = np.concatenate([split.fit_x, split.val_x]).astype(np.float64)
    all_y = np.concatenate([split.fit_y, split.val_y])
    mean, scale = _fit_stats(all_x)
    W, b = _ridge_solve(_standardise_np(all_x, mean, scale), onehot[all_y], l2)
    pred = np.argmax(_standardise_np(split.test_x, mean, scale) @ W + b, axis=1)
    top1, mpc = accuracies(pred, split.test_y, n_classes)
    t_refit = time.perf_counter() - t1

    return ProbeResult(
        probe="ridge",
        l2=l2,
        top1=top1,
        mean_per_class=mpc,
        val_acc=float(val_accs[best_i]),
        l2_path=grid.copy(),
        val_acc_path=np.asarray(val_accs, dtype=np.float64),
        n_train=len(split.fit_y),
        n_val=len(split.val_y),
        n_test=len(split.test_y),
        n_classes=n_classes,
        n_features=split.fit_x.shape[1],
        val_source=split.val_source,
        seconds={"select": t_select, "refit": t_refit},
        coef=W,
        intercept=b,
        feature_mean=mean,
        feature_scale=scale,
        classes=split.classes,
    )


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


def sklearn_C(l2: float, n_samples: int) -> float:
    """scikit-learn LogisticRegression's C for our per-sample `l2` on `n_samples` rows: 1 / (l2 N)."""
    if l2 <= 0 or n_samples <= 0 or not math.isfinite(l2):
        raise ZooRankError(f"need l2 > 0 and n_samples > 0, got l2={l2}, n_samples={n_samples}.")
    return 1.0 / (l2 * n_samples)

