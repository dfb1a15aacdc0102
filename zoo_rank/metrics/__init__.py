"""The metrics registry: name -> function, direction, description, citation.

`source_sign` / `target_sign` give the sign with which a HIGHER value predicts BETTER transfer:
in source mode (features of the pretraining distribution, the paper's setting) less collapse
transfers better, so VCI counts +1; in target mode (features of the user's own labelled images)
classes that are already separated fine-tune better, so VCI counts -1 and LogME / H-score / k-NN +1.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from zoo_rank._validation import ZooRankError, check_features_labels
from zoo_rank.metrics.collapse import (
    SampleSizeWarning,
    class_separation,
    cosine_distance,
    fuzziness,
    probe_trace,
    squared_distance,
    vci,
)
from zoo_rank.metrics.stats import ClassStats, pooled, stats_of
from zoo_rank.metrics.transfer import h_score, knn_accuracy, logme


@dataclass(frozen=True)
class MetricInfo:
    name: str
    fn: Callable[..., float]
    higher_means: str
    description: str
    citation: str
    needs_raw: bool
    source_sign: int
    target_sign: int

    def sign(self, mode: str) -> int:
        """+1 if a higher value predicts better transfer in `mode` ("source" or "target"), else -1."""
        if mode not in ("source", "target"):
            raise ZooRankError(f"mode must be 'source' or 'target', got {mode!r}.")
        return self.source_sign if mode == "source" else self.target_sign


_LESS_COLLAPSE = "more within-class variability (less collapse)"
_MORE_SEPARATED = "classes better separated (more collapse)"

METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in [
        MetricInfo(
            "vci",
            vci,
            _LESS_COLLAPSE,
            "Variability Collapse Index 1 - Tr[pinv(S_T) S_B] / rank(S_B); invariant to invertible linear maps",
            "Xu & Liu, ICML 2023",
            False,
            +1,
            -1,
        ),
        MetricInfo(
            "fuzziness",
            fuzziness,
            _LESS_COLLAPSE,
            "Tr[pinv(S_B) S_W] over the top min(p, K-1) directions of S_B (NC1)",
            "Papyan et al., PNAS 2020",
            False,
            +1,
            -1,
        ),
        MetricInfo(
            "squared_distance",
            squared_distance,
            _LESS_COLLAPSE,
            "Tr(S_W) / Tr(S_B), the paper's eq. 4 with N samples per class (S_B weighted by n_k/N when imbalanced)",
            "Hui et al., 2022",
            False,
            +1,
            -1,
        ),
        MetricInfo(
            "cosine_distance",
            cosine_distance,
            _LESS_COLLAPSE,
            'mean within-class cosine distance d_within (the paper\'s "Cosine Similarity"; 1 - d_within is the similarity)',
            "Kornblith et al., NeurIPS 2021",
            False,
            +1,
            -1,
        ),
        MetricInfo(
            "class_separation",
            class_separation,
            _MORE_SEPARATED,
            "1 - d_within / d_total on cosine distances",
            "Kornblith et al., NeurIPS 2021",
            False,
            -1,
            +1,
        ),
        MetricInfo(
            "h_score",
            h_score,
            _MORE_SEPARATED,
            "Tr[pinv(S_T) S_B], the feature-label H-score",
            "Bao et al., ICIP 2019",
            False,
            -1,
            +1,
        ),
        MetricInfo(
            "logme",
            logme,
            _MORE_SEPARATED,
            "log maximum evidence of a Bayesian linear model on one-hot labels, per sample",
            "You et al., ICML 2021",
            False,
            -1,
            +1,
        ),
        MetricInfo(
            "knn_accuracy",
            knn_accuracy,
            _MORE_SEPARATED,
            "leave-one-out 10-NN accuracy on L2-normalised features",
            "Wu et al., CVPR 2018 (kNN monitor)",
            True,
            -1,
            +1,
        ),
    ]
}


# Old registry names still accepted (with a FutureWarning) -> the name of what they return.
DEPRECATED_NAMES = {"cosine_similarity": "cosine_distance"}


def _deprecated(old: str) -> str:
    new = DEPRECATED_NAMES[old]
    warnings.warn(
        f"metric {old!r} is now called {new!r} (it returns the within-class cosine distance d_within); "
        f"the old name will be removed, use {new!r}.",
        FutureWarning,
        stacklevel=3,
    )
    return new


def resolve_metric_names(names: Iterable[str] | None) -> list[str]:
    """Validate metric names (None -> all, in registry order); deprecated names map to their new ones."""
    if names is None:
        return list(METRICS)
    names = [_deprecated(n) if n in DEPRECATED_NAMES else n for n in names]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ZooRankError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}.")
    if not names:
        raise ZooRankError(f"no metric named; choose from {', '.join(METRICS)}.")
    return names


def compute_metrics(features: Any, labels: Any, names: Iterable[str] | None = None) -> dict[str, float]:
    """Every requested metric of one labelled feature set, sharing one ClassStats (and its eigh)."""
    chosen = resolve_metric_names(names)
    if isinstance(features, ClassStats):
        stats, raw = features, None
        if any(METRICS[n].needs_raw for n in chosen):
            raise ZooRankError(
                "knn_accuracy needs raw features; pass (features, labels) or drop it from the metric list."
            )
    else:
        check_features_labels(features, labels)
        stats, raw = ClassStats.from_arrays(features, labels), (features, labels)
    return {n: (METRICS[n].fn(*raw) if METRICS[n].needs_raw else METRICS[n].fn(stats)) for n in chosen}


def __getattr__(name: str) -> Any:
    # `from zoo_rank.metrics import cosine_similarity` keeps working, with a FutureWarning.
    if name in DEPRECATED_NAMES:
        return globals()[_deprecated(name)]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METRICS",
    "ClassStats",
    "MetricInfo",
    "SampleSizeWarning",
    "class_separation",
    "compute_metrics",
    "cosine_distance",
    "fuzziness",
    "h_score",
    "knn_accuracy",
    "logme",
    "pooled",
    "probe_trace",
    "resolve_metric_names",
    "squared_distance",
    "stats_of",
    "vci",
]
