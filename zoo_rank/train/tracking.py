"""Collapse while training: the measurements behind the paper's Figs. 1-6, their logs and plots.

Pure math (`within_class_split`, `spectra`, `measure`) takes a `ClassStats` or (features, labels);
`TrackingLog` keeps the rows of one run and writes them as parquet + CSV and PNG figures.

Notation as in `zoo_rank.metrics.collapse`: Sigma_W, Sigma_B, Sigma_T = Sigma_B + Sigma_W of p-dim
features, class means mu_k, global mean mu_G, K classes.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo_rank._console import warn
from zoo_rank._paths import atomic_path
from zoo_rank.metrics import METRICS, ClassStats, SampleSizeWarning, UndefinedMetricError
from zoo_rank.metrics.collapse import vci_lw
from zoo_rank.metrics.shrinkage import intensity
from zoo_rank.metrics.stats import stats_of

# The four collapse metrics of Figs. 3-6 plus class separation, each a function of ClassStats: the
# registry's own functions, so a tracked curve and a board's column are one computation.
COLLAPSE_METRICS = {
    name: METRICS[name].fn
    for name in ("vci", "fuzziness", "squared_distance", "cosine_distance", "class_separation")
}


@dataclass(frozen=True)
class WithinSplit:
    """Fig. 1: within-class variation inside and outside the span of the class means.

    within_trace = Tr(Sigma_W); in_span = Tr(P Sigma_W P) with P the orthogonal projector onto
    span{mu_k - mu_G : k = 1..K} (dimension span_dim <= K - 1); out_span = within_trace - in_span.
    """

    within_trace: float
    in_span: float
    span_dim: int
    dim: int

    @property
    def out_span(self) -> float:
        return self.within_trace - self.in_span

    @property
    def fraction_in_span(self) -> float:
        """in_span / within_trace: 1 means all within-class variation lies along the class-mean directions."""
        return self.in_span / self.within_trace if self.within_trace > 0 else 0.0

    @property
    def isotropic_fraction(self) -> float:
        """span_dim / p: the fraction an isotropic Sigma_W would put inside the span (the no-structure reference)."""
        return self.span_dim / self.dim


def _span_basis(stats: ClassStats, rcond: float | None = None) -> np.ndarray:
    """(p, r) orthonormal basis of span{mu_k - mu_G}, from the SVD of the (K, p) rows sqrt(w_k)(mu_k - mu_G).

    Positive row weights do not change the span. Singular values below sqrt(rcond) * max count as zero
    (rcond is the eigenvalue cut-off of `ClassStats.default_rcond`, and eigenvalues are squares).
    """
    rcond = stats.default_rcond() if rcond is None else rcond
    deviations = stats.mean_deviations()
    _, singular, vt = np.linalg.svd(deviations, full_matrices=False)
    if singular.size == 0 or singular[0] <= 0:
        return np.zeros((stats.dim, 0))
    keep = singular > np.sqrt(rcond) * singular[0]
    return vt[keep].T


def within_class_split(
    features: Any, labels: Any | None = None, *, rcond: float | None = None
) -> WithinSplit:
    """Split Tr(Sigma_W) into the part inside span{mu_k - mu_G} and its orthogonal complement (Fig. 1).

    features (N, p) with labels (N,), or a ClassStats. With U (p, r) an orthonormal basis of the span,
    in_span = Tr(U^T Sigma_W U) = sum_j u_j^T Sigma_W u_j.
    """
    stats = stats_of(features, labels)
    stats._require()
    basis = _span_basis(stats, rcond)
    within = stats.within_cov()
    in_span = float(np.sum((within @ basis) * basis)) if basis.size else 0.0
    return WithinSplit(
        within_trace=float(np.trace(within)), in_span=in_span, span_dim=int(basis.shape[1]), dim=stats.dim
    )


def spectra(features: Any, labels: Any | None = None, *, top: int | None = None) -> dict[str, np.ndarray]:
    """Eigenvalues of Sigma_B and Sigma_T in descending order (Fig. 2), the first `top` of each.

    Returns {"between": (min(top, K - 1, p),), "total": (min(top, p),)} float64. Sigma_B = A^T A has the
    nonzero eigenvalues of the K x K Gram A A^T (A the rows sqrt(w_k)(mu_k - mu_G)), so no p x p
    eigendecomposition is needed for it; Sigma_T's comes from the stats' cached float64 eigh (the one
    VCI uses). Tiny negative rounding is clipped to 0.
    """
    stats = stats_of(features, labels)
    stats._require()
    deviations = stats.mean_deviations()
    gram = (
        deviations @ deviations.T if deviations.shape[0] <= deviations.shape[1] else deviations.T @ deviations
    )
    # Sigma_B has rank <= K - 1: the K-th eigenvalue is rounding noise.
    between = np.clip(np.linalg.eigvalsh(gram)[::-1][: stats.n_classes - 1], 0.0, None)
    total = np.clip(stats.total_eigh()[0][::-1], 0.0, None)
    if top is not None:
        between, total = between[:top], total[:top]
    return {"between": between, "total": total}


def _value(fn: Any, stats: ClassStats) -> float:
    """A metric's value for the curve; NaN where it is undefined (a network whose features all died in
    training has no spread to compare), which the curve shows as a gap instead of ending the training."""
    try:
        return float(fn(stats))
    except UndefinedMetricError:
        return math.nan


def measure(stats: ClassStats) -> dict[str, float]:
    """All scalar collapse measurements of one feature set: the metrics, Tr(Sigma_B), Tr(Sigma_T) and Fig. 1's split."""
    # A tracking split of at most p + 1 samples leaves the plain VCI undefined (every feature set scores 0):
    # track the Ledoit-Wolf VCI there, and record its intensity (0 = plain) so the curve says which it is.
    small = stats.n_samples <= stats.dim + 1
    fns = {**COLLAPSE_METRICS, "vci": vci_lw} if small else COLLAPSE_METRICS
    row = {name: _value(fn, stats) for name, fn in fns.items()}
    row["vci_shrinkage"] = intensity(stats, "ledoit-wolf") if small else 0.0
    split = within_class_split(stats)
    row.update(
        within_trace=split.within_trace,
        within_in_span=split.in_span,
        within_fraction_in_span=split.fraction_in_span,
        isotropic_fraction=split.isotropic_fraction,
        span_dim=float(split.span_dim),
        between_trace=float(np.trace(stats.between_cov())),
        total_trace=float(np.trace(stats.total_cov())),
    )
    return row


# ---- logs and figures ----------------------------------------------------------------------------


def _write_table(rows: list[dict[str, Any]], stem: Path) -> None:
    """rows -> stem.parquet and stem.csv, each written to a temporary name and renamed (atomic)."""
    import polars as pl

    if not rows:
        return
    frame = pl.DataFrame(rows)
    for suffix, write in ((".parquet", frame.write_parquet), (".csv", frame.write_csv)):
        with atomic_path(stem.with_suffix(suffix)) as tmp:
            write(tmp)


@dataclass
class TrackingLog:
    """The logs of one run: per-epoch training history, per-measurement metrics and spectra.

    history rows: epoch, lr, loss, cross_entropy, cosine_distance, train_top1, images, seconds
    tracking rows: epoch, split ("train" | "test"), n, top1, loss, and `measure`'s columns
    spectra rows:  epoch, split, matrix ("between" | "total"), index (0 = largest), eigenvalue
    """

    history: list[dict[str, Any]]
    tracking: list[dict[str, Any]]
    spectra: list[dict[str, Any]]
    warned: bool = False

    @classmethod
    def empty(cls) -> TrackingLog:
        return cls([], [], [])

    def add_measurement(
        self, epoch: int, split: str, stats: ClassStats, extra: dict[str, float], top: int
    ) -> dict[str, Any]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SampleSizeWarning)
            measured = measure(stats)
        if caught and not self.warned:
            # Once per run, not at every measurement.
            self.warned = True
            warn(
                f"collapse tracking ({split} subset): {caught[0].message} Raise track_*_per_class in the recipe."
            )
        row: dict[str, Any] = {"epoch": epoch, "split": split, "n": stats.n_samples, **extra, **measured}
        self.tracking.append(row)
        for matrix, values in spectra(stats, top=top).items():
            self.spectra.extend(
                {"epoch": epoch, "split": split, "matrix": matrix, "index": i, "eigenvalue": float(v)}
                for i, v in enumerate(values)
            )
        return row

    def state(self) -> dict[str, list[dict[str, Any]]]:
        return {"history": self.history, "tracking": self.tracking, "spectra": self.spectra}

    def write(self, run_dir: Path, title: str = "", *, plots: bool = True) -> None:
        """history/tracking/spectra .parquet + .csv, and (with `plots`) collapse.png, within_split.png, spectra.png."""
        _write_table(self.history, run_dir / "history")
        _write_table(self.tracking, run_dir / "tracking")
        _write_table(self.spectra, run_dir / "spectra")
        if plots and self.tracking:
            plot_run(self, run_dir, title)


_PANELS = (
    ("vci", "VCI", False),
    ("fuzziness", "Fuzziness Tr(Σ_B⁺ Σ_W)", True),
    ("squared_distance", "Squared distance", True),
    ("cosine_distance", "Cosine distance (within)", False),
    ("top1", "Top-1 accuracy", False),
    ("within_fraction_in_span", "Tr(Σ_W) fraction in span{μ_k − μ_G}", False),
)


def _save(fig: Any, path: Path, title: str) -> None:
    """fig, titled and laid out, -> path as PNG (atomically), then closed."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")  # the temporary name has no .png suffix to infer it from
    plt.close(fig)


def _collapse_figure(curves: list[tuple[str, str, list[dict[str, Any]]]]) -> Any:
    """2 x 3 panels (`_PANELS`) against epoch; curves: (legend label, line style, rows with "epoch" and the
    panels' keys; a missing key plots as NaN)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for ax, (key, label, log_scale) in zip(axes.flat, _PANELS, strict=True):
        for name, style, rows in curves:
            ax.plot([r["epoch"] for r in rows], [r.get(key, np.nan) for r in rows], style, ms=3, label=name)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        if log_scale:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    return fig


def plot_run(log: TrackingLog, run_dir: Path, title: str = "") -> None:
    """collapse.png (Figs. 3-6: train solid, test dashed), within_split.png (Fig. 1), spectra.png (Fig. 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_split: dict[str, list[dict[str, Any]]] = {}
    for row in log.tracking:
        by_split.setdefault(row["split"], []).append(row)

    curves = [(split, "-o" if split == "train" else "--s", rows) for split, rows in by_split.items()]
    _save(_collapse_figure(curves), run_dir / "collapse.png", f"{title} — train and test collapse")

    fig, axes = plt.subplots(1, len(by_split), figsize=(5 * len(by_split), 3.4), squeeze=False)
    for ax, (split, rows) in zip(axes.flat, by_split.items(), strict=True):
        epochs = [r["epoch"] for r in rows]
        inside = np.array([r["within_in_span"] for r in rows])
        outside = np.array([r["within_trace"] - r["within_in_span"] for r in rows])
        ax.stackplot(
            epochs, inside, outside, labels=["in span{μ_k − μ_G}", "orthogonal complement"], alpha=0.8
        )
        ax.set_title(f"{split}: Tr(Σ_W) split", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.legend(fontsize=7)
    _save(fig, run_dir / "within_split.png", f"{title} — within-class variation vs class-mean span (Fig. 1)")

    fig, axes = plt.subplots(len(by_split), 2, figsize=(10, 3.2 * len(by_split)), squeeze=False)
    measured = sorted({r["epoch"] for r in log.spectra})
    cmap = plt.get_cmap("viridis")
    for row_axes, split in zip(axes, by_split, strict=True):
        for ax, matrix in zip(row_axes, ("between", "total"), strict=True):
            for j, epoch in enumerate(measured):
                values = [
                    r["eigenvalue"]
                    for r in log.spectra
                    if r["split"] == split and r["matrix"] == matrix and r["epoch"] == epoch
                ]
                if values:
                    colour = cmap(j / max(len(measured) - 1, 1))
                    ax.semilogy(np.maximum(values, 1e-12), color=colour, label=f"epoch {epoch}")
            ax.set_title(f"{split}: eigenvalues of Σ_{'B' if matrix == 'between' else 'T'}", fontsize=9)
            ax.set_xlabel("index", fontsize=8)
            ax.legend(fontsize=6)
    _save(fig, run_dir / "spectra.png", f"{title} — spectra (Fig. 2)")


def plot_family(run_dirs: list[Path], labels: list[str], path: Path, split: str = "test") -> None:
    """One figure comparing family members: each collapse metric against epoch, one line per member."""
    import matplotlib

    matplotlib.use("Agg")
    import polars as pl

    curves = []
    for run_dir, label in zip(run_dirs, labels, strict=True):
        table = run_dir / "tracking.parquet"
        if table.is_file():
            rows = pl.read_parquet(table).filter(pl.col("split") == split).sort("epoch").to_dicts()
            curves.append((label, "-o", rows))
    _save(_collapse_figure(curves), path, f"family comparison ({split} split)")
