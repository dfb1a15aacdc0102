"""What the collapse metrics read from a ClassStats: class means, covariances, their eigh (derived quantities).

`ClassCovariances` is the half of `ClassStats` (metrics/stats.py) that reads the streamed sums: float64 numpy
views, cached until the next update. It holds no state of its own; the accumulator owns the tensors named
in `STATE` (shift, counts, sums, second, ...) and the `_cache` dict, and clears the cache on every update.
`fourth_moments` moves the streamed fourth moment to any centre (Ledoit-Wolf, re-shifting on a merge).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from zoo_rank._validation import ZooRankError

#: The accumulated tensors of a ClassStats (see the table in metrics/stats.py).
STATE = ("shift", "counts", "sums", "second", "sq_norms", "unit_sums", "quartic", "cubic")


class ClassCovariances:
    """Means, covariances and the eigh of Sigma_T of the statistics a subclass accumulates (ClassStats)."""

    def _cached(self, key: str, make: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _require(self, min_classes: int = 2) -> None:
        if self.second is None or self.n_samples == 0:
            raise ZooRankError(
                "these statistics are empty; call update(features, labels) with at least one batch first."
            )
        if self.n_classes < min_classes:
            raise ZooRankError(
                f"found {self.n_classes} class(es) in the labels, need at least {min_classes}; "
                "collapse metrics compare classes, so pass features of two or more classes."
            )

    def numpy(self) -> dict[str, np.ndarray]:
        """All state as float64 numpy arrays (host copies)."""
        self._require(min_classes=1)
        return self._cached(
            "numpy",
            lambda: {name: getattr(self, name).cpu().numpy() for name in STATE},
        )

    def class_weights(self) -> np.ndarray:
        """(K,) class frequencies n_k / N."""
        counts = self.numpy()["counts"]
        return counts / counts.sum()

    def class_means(self) -> np.ndarray:
        """(K, p) class means mu_k in the original (unshifted) coordinates."""
        s = self.numpy()
        return s["sums"] / s["counts"][:, None] + s["shift"]

    def global_mean(self) -> np.ndarray:
        """(p,) global mean mu_G."""
        s = self.numpy()
        return s["sums"].sum(axis=0) / s["counts"].sum() + s["shift"]

    def mean_deviations(self) -> np.ndarray:
        """(K, p) rows sqrt(n_k / N) (mu_k - mu_G), so that Sigma_B = A^T A."""

        def make() -> np.ndarray:
            s = self.numpy()
            shifted_means = s["sums"] / s["counts"][:, None]
            shifted_global = s["sums"].sum(axis=0) / s["counts"].sum()
            return np.sqrt(self.class_weights())[:, None] * (shifted_means - shifted_global)

        return self._cached("mean_deviations", make)

    def total_cov(self) -> np.ndarray:
        """(p, p) Sigma_T = (1/N) sum_i (h_i - mu_G)(h_i - mu_G)^T."""

        def make() -> np.ndarray:
            s = self.numpy()
            n = s["counts"].sum()
            m = s["sums"].sum(axis=0) / n
            cov = s["second"] / n - np.outer(m, m)
            return (cov + cov.T) / 2

        return self._cached("total_cov", make)

    def between_cov(self) -> np.ndarray:
        """(p, p) Sigma_B = sum_k (n_k/N) (mu_k - mu_G)(mu_k - mu_G)^T (equals the paper's 1/K form when balanced)."""
        a = self.mean_deviations()
        return a.T @ a

    def within_cov(self) -> np.ndarray:
        """(p, p) Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T = Sigma_T - Sigma_B."""
        return self.total_cov() - self.between_cov()

    def total_eigh(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (p,) ascending and eigenvectors (p, p) of Sigma_T, in float64 (LAPACK syevd)."""
        return self._cached("total_eigh", lambda: np.linalg.eigh(self.total_cov()))

    def default_rcond(self) -> float:
        """Relative eigenvalue cut-off below which a direction of a covariance counts as zero.

        Float64 products leave errors near 1e-16 relative; float32 products (the fast path for
        float32 features) leave Sigma_T off by 1e-7 to 1e-6 of its largest eigenvalue (4e-7 measured on
        50,000 ReLU-like features, whatever the block length), so everything under 1e-5 of the largest
        eigenvalue is indistinguishable from rounding.
        """
        return 1e-10 if self.exact else 1e-5


def fourth_moments(stats: Any, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_i ||z_i - d||^4, sum_i ||z_i - d||^2 (z_i - d)) from the moments about the shift, z_i = h_i - c.

    With q_i = ||z_i||^2, D = ||d||^2, s = sum_i z_i, M = sum_i z_i z_i^T, r = sum_i q_i z_i, Q = sum_i q_i^2:
        sum ||z_i - d||^4           = Q - 4 r.d + 4 d^T M d + 2 D sum q_i - 4 D s.d + N D^2
        sum ||z_i - d||^2 (z_i - d) = r - 2 M d - (sum q_i) d + 2 (s.d) d + D s - N D d
    so the moments about any point (the global mean, another shard's shift) follow from one pass.
    """
    n = float(stats.counts.sum())
    s, m, r = stats.sums.sum(dim=0), stats.second, stats.cubic
    q_sum, big_d = stats.sq_norms.sum(), d.dot(d)
    md = m @ d
    quartic = stats.quartic - 4 * r.dot(d) + 4 * d.dot(md) + 2 * big_d * q_sum - 4 * big_d * s.dot(d)
    quartic = quartic + n * big_d**2
    cubic = r - 2 * md - q_sum * d + 2 * s.dot(d) * d + big_d * s - n * big_d * d
    return quartic, cubic
