"""Every requested metric of one labelled feature set, sharing one ClassStats (and its eigh)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from zoo_rank._validation import ZooRankError, check_features_labels
from zoo_rank.metrics.collapse import estimator_text
from zoo_rank.metrics.fisher import TermOf
from zoo_rank.metrics.registry import METRICS, resolve_metric_names
from zoo_rank.metrics.shrinkage import UndefinedMetricError, require_spread
from zoo_rank.metrics.stats import ClassStats


class MissingInputWarning(UserWarning):
    """A requested metric was left N/A (NaN) because its input was not given."""


class MetricScores(dict):
    """{metric: value} as `compute_metrics` returns it, with what a board needs to read the values:

    reasons     {metric: one line}  why a value is NaN (undefined on these features: N <= p + 1 without
                                    shrinkage, constant features, coinciding class means, a source-head
                                    score without source_probs)
    estimators  {metric: one line}  how each covariance-based score estimated Sigma_T on these features
                                    ('plain (pinv of Sigma_T)', 'Ledoit-Wolf shrinkage, a = 0.213')
    """

    def __init__(self, values: dict[str, float], reasons: dict[str, str], estimators: dict[str, str]):
        super().__init__(values)
        self.reasons = reasons
        self.estimators = estimators


def compute_metrics(
    features: Any, labels: Any, names: Iterable[str] | None = None, *, source_probs: Any = None
) -> MetricScores:
    """Every requested metric of one labelled feature set, sharing one ClassStats (and its eigh).

    features (N, p) with labels (N,), or a ClassStats (labels None). `source_probs` (N, Z), the source
    head's softmax on the same images, feeds the metrics that need it (LEEP, NCE; in the default list
    only when given); named without it they come back NaN (N/A) with a MissingInputWarning saying why.
    A metric that is undefined on these features (UndefinedMetricError; every metric of constant
    features) is NaN, with its reason in `.reasons`, instead of failing the others.
    """
    chosen = resolve_metric_names(names, source_probs=source_probs is not None)
    if isinstance(features, ClassStats):
        stats, raw = features, None
        need_raw = [n for n in chosen if METRICS[n].needs == "raw"]
        if need_raw:
            raise ZooRankError(
                f"{', '.join(need_raw)} need(s) raw features; pass (features, labels) or drop them from the metric list."
            )
    else:
        check_features_labels(features, labels)
        stats, raw = ClassStats.from_arrays(features, labels), (features, labels)
    values: dict[str, float] = {}
    reasons: dict[str, str] = {}
    estimators: dict[str, str] = {}
    shared: dict[Callable[..., Any], Any] = {}  # terms computed once for every metric that is one of them
    for n in chosen:
        info = METRICS[n]
        if info.needs == "source_probs" and (source_probs is None or labels is None):
            missing = "source_probs (the source head's softmax on these images)"
            if source_probs is not None:
                missing = "the labels (a ClassStats carries none)"
            reasons[n] = f"{n}: N/A, it needs {missing}; models without a pretraining head have none."
            warnings.warn(reasons[n], MissingInputWarning, stacklevel=2)
            values[n] = math.nan
            continue
        try:
            # Constant features (a dead backbone) score perfect or no collapse by accident of each formula
            # (squared distance 0/0, cosine 1 - 1): no score of them says anything about transfer.
            require_spread(stats, n)
            if info.needs == "stats":
                values[n] = info.fn(stats)
            elif isinstance(info.fn, TermOf):
                if info.fn.terms not in shared:
                    shared[info.fn.terms] = info.fn.terms(*raw)
                values[n] = float(getattr(shared[info.fn.terms], info.fn.field))
            elif info.needs == "raw":
                values[n] = info.fn(*raw)
            else:
                values[n] = info.fn(source_probs, labels)
        except UndefinedMetricError as err:
            values[n], reasons[n] = math.nan, str(err)
            continue
        if info.estimates_covariance:
            estimators[n] = estimator_text(stats, info.shrinkage)
    return MetricScores(values, reasons, estimators)
