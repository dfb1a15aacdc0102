"""The metrics registry: name -> function, direction, description, citation.

`source_sign` / `target_sign` give the sign with which a HIGHER value predicts BETTER transfer:
in source mode (features of the pretraining distribution, the paper's setting) less collapse
transfers better, so VCI counts +1; in target mode (features of the user's own labelled images)
classes that are already separated fine-tune better, so VCI counts -1 and LogME / H-score / k-NN +1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from zoo_rank._validation import ZooRankError, check_features_labels
from zoo_rank.metrics.collapse import (
    SampleSizeWarning,
    class_separation,
    cosine_similarity,
    estimator_text,
    fuzziness,
    probe_trace,
    squared_distance,
    vci,
    vci_lw,
)
from zoo_rank.metrics.shrinkage import UndefinedMetricError, require_spread
from zoo_rank.metrics.stats import ClassStats, pooled, stats_of
from zoo_rank.metrics.transfer import h_score, h_score_lw, knn_accuracy, logme


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
    #: For the scores built on an estimate of Sigma_T: None (plain pinv) or the shrinkage they use.
    shrinkage: str | None = None
    estimates_covariance: bool = False

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
            estimates_covariance=True,
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
            "sum_i ||h_i - mu_k||^2 / (N sum_k ||mu_k - mu_G||^2)",
            "Hui et al., 2022",
            False,
            +1,
            -1,
        ),
        MetricInfo(
            "cosine_similarity",
            cosine_similarity,
            _LESS_COLLAPSE,
            "mean within-class cosine distance d_within",
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
            estimates_covariance=True,
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
        MetricInfo(
            "vci_lw",
            vci_lw,
            _LESS_COLLAPSE,
            "VCI with Ledoit-Wolf shrinkage 1 - (1-a) Tr[S_a^-1 S_B] / min(p, K-1), S_a = (1-a) S_T + a Tr(S_T)/p I; "
            "defined below N = p+1, invariant to rotations, shifts and isotropic scaling",
            "Ibrahim, Ponomareva & Dong, ECML-PKDD 2022 (regularized H-score); Ledoit & Wolf, 2004",
            False,
            +1,
            -1,
            shrinkage="ledoit-wolf",
            estimates_covariance=True,
        ),
        MetricInfo(
            "h_score_lw",
            h_score_lw,
            _MORE_SEPARATED,
            "regularized H-score (1-a) Tr[S_a^-1 S_B] with the Ledoit-Wolf intensity a; defined below N = p+1",
            "Ibrahim, Ponomareva & Dong, ECML-PKDD 2022; Ledoit & Wolf, 2004",
            False,
            -1,
            +1,
            shrinkage="ledoit-wolf",
            estimates_covariance=True,
        ),
    ]
}


def resolve_metric_names(names: Iterable[str] | None) -> list[str]:
    """Validate metric names (None -> all, in registry order)."""
    if names is None:
        return list(METRICS)
    names = list(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ZooRankError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}.")
    if not names:
        raise ZooRankError(f"no metric named; choose from {', '.join(METRICS)}.")
    return names


class MetricScores(dict):
    """{metric: value} as `compute_metrics` returns it, with what a board needs to read the values:

    reasons     {metric: one line}  why a value is NaN (undefined on these features: N <= p + 1 without
                                    shrinkage, constant features, coinciding class means)
    estimators  {metric: one line}  how each covariance-based score estimated Sigma_T on these features
                                    ('plain (pinv of Sigma_T)', 'Ledoit-Wolf shrinkage, a = 0.213')
    """

    def __init__(self, values: dict[str, float], reasons: dict[str, str], estimators: dict[str, str]):
        super().__init__(values)
        self.reasons = reasons
        self.estimators = estimators


def compute_metrics(features: Any, labels: Any, names: Iterable[str] | None = None) -> MetricScores:
    """Every requested metric of one labelled feature set, sharing one ClassStats (and its eigh).

    A metric that is undefined on these features (UndefinedMetricError; every metric of constant
    features) is NaN, with its reason in `.reasons`, instead of failing the others.
    """
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
    values, reasons, estimators = {}, {}, {}
    for n in chosen:
        info = METRICS[n]
        try:
            # Constant features (a dead backbone) score perfect or no collapse by accident of each formula
            # (squared distance 0/0, cosine 1 - 1): no score of them says anything about transfer.
            require_spread(stats, n)
            values[n] = info.fn(*raw) if info.needs_raw else info.fn(stats)
        except UndefinedMetricError as err:
            values[n], reasons[n] = math.nan, str(err)
            continue
        if info.estimates_covariance:
            estimators[n] = estimator_text(stats, info.shrinkage)
    return MetricScores(values, reasons, estimators)


__all__ = [
    "METRICS",
    "ClassStats",
    "MetricInfo",
    "MetricScores",
    "SampleSizeWarning",
    "UndefinedMetricError",
    "class_separation",
    "compute_metrics",
    "cosine_similarity",
    "fuzziness",
    "h_score",
    "h_score_lw",
    "knn_accuracy",
    "logme",
    "pooled",
    "probe_trace",
    "resolve_metric_names",
    "squared_distance",
    "stats_of",
    "vci",
    "vci_lw",
]
