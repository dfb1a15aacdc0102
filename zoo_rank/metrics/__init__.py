"""Transferability and collapse metrics: pure math on features or ClassStats, and their registry.

collapse.py (VCI + baselines), shrinkage.py (Ledoit-Wolf / OAS), transfer.py (H-score, LogME, k-NN),
source.py (LEEP, NCE), selection.py (N-LEEP, GBC, TransRate), fisher.py (SFDA, NCTI); stats.py streams the
ClassStats they read, covariances.py derives means and covariances from it; registry.py names every metric
with its direction (`metric_sign`), compute.py runs a list of them on one feature set (`compute_metrics`).
"""

from __future__ import annotations

from typing import Any

from zoo_rank.metrics.collapse import (
    SampleSizeWarning,
    class_separation,
    cosine_distance,
    fuzziness,
    probe_trace,
    squared_distance,
    vci,
    vci_lw,
)
from zoo_rank.metrics.compute import MetricScores, MissingInputWarning, compute_metrics
from zoo_rank.metrics.fisher import (
    NCTITerms,
    ncti_combine,
    ncti_ncc,
    ncti_seli,
    ncti_terms,
    ncti_vc,
    sfda,
)
from zoo_rank.metrics.registry import (
    DEPRECATED_NAMES,
    METRICS,
    MODES,
    NEEDS,
    MetricInfo,
    _deprecated,
    check_mode,
    metric_functions,
    metric_sign,
    resolve_metric_names,
)
from zoo_rank.metrics.selection import gbc, nleep, transrate
from zoo_rank.metrics.shrinkage import UndefinedMetricError
from zoo_rank.metrics.source import leep, nce
from zoo_rank.metrics.stats import ClassStats, pooled, stats_of
from zoo_rank.metrics.transfer import h_score, h_score_lw, knn_accuracy, logme


def __getattr__(name: str) -> Any:
    # `from zoo_rank.metrics import cosine_similarity` keeps working, with a FutureWarning.
    if name in DEPRECATED_NAMES:
        return globals()[_deprecated(name)]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METRICS",
    "MODES",
    "NEEDS",
    "ClassStats",
    "MetricInfo",
    "MetricScores",
    "MissingInputWarning",
    "NCTITerms",
    "SampleSizeWarning",
    "UndefinedMetricError",
    "check_mode",
    "class_separation",
    "compute_metrics",
    "cosine_distance",
    "fuzziness",
    "gbc",
    "h_score",
    "h_score_lw",
    "knn_accuracy",
    "leep",
    "logme",
    "metric_functions",
    "metric_sign",
    "nce",
    "ncti_combine",
    "ncti_ncc",
    "ncti_seli",
    "ncti_terms",
    "ncti_vc",
    "nleep",
    "pooled",
    "probe_trace",
    "resolve_metric_names",
    "sfda",
    "squared_distance",
    "stats_of",
    "transrate",
    "vci",
    "vci_lw",
]
