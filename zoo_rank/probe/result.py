"""What a probe returns: `ProbeResult` (chosen L2, test accuracies, validation path, the fitted map)."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from zoo_rank._validation import to_numpy
from zoo_rank.options import PROBE_METHODS
from zoo_rank.probe.split import Split

PROBES = PROBE_METHODS  # ("logistic", "ridge"): the `probe` field of a ProbeResult


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


def assemble(
    probe: str, split: Split, grid: np.ndarray, val_accs: Any, best_i: int, **fields: Any
) -> ProbeResult:
    """The ProbeResult of a selection over `grid` (strongest first) whose first len(val_accs) values ran;
    `fields` carry the test accuracies, the refit map and the solver's details."""
    return ProbeResult(
        probe=probe,
        l2=float(grid[best_i]),
        val_acc=float(val_accs[best_i]),
        l2_path=grid[: len(val_accs)].copy(),
        val_acc_path=np.asarray(val_accs, dtype=np.float64),
        n_train=len(split.fit_y),
        n_val=len(split.val_y),
        n_test=len(split.test_y),
        n_classes=len(split.classes),
        n_features=split.fit_x.shape[1],
        val_source=split.val_source,
        early_stopped=len(val_accs) < len(grid),
        classes=split.classes,
        **fields,
    )


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
