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

from zoo_rank._validation import ZooRankError
from zoo_rank.metrics.collapse import (
    class_separation,
    cosine_distance,
    fuzziness,
    squared_distance,
    vci,
    vci_lw,
)
from zoo_rank.metrics.fisher import ncti_ncc, ncti_seli, ncti_vc, sfda
from zoo_rank.metrics.selection import gbc, nleep, transrate
from zoo_rank.metrics.source import leep, nce
from zoo_rank.metrics.transfer import h_score, h_score_lw, knn_accuracy, logme

#: What a metric reads: "stats" (ClassStats suffice), "raw" (the (N, p) features and labels) or
#: "source_probs" (the source head's (N, Z) softmax on the target images, and the labels).
NEEDS = ("stats", "raw", "source_probs")


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
    #: One of NEEDS; left empty it follows needs_raw ("raw" if set, else "stats"). needs_raw stays True
    #: for every metric that ClassStats alone cannot give.
    needs: str = ""

    def __post_init__(self) -> None:
        if not self.needs:
            object.__setattr__(self, "needs", "raw" if self.needs_raw else "stats")
        if self.needs not in NEEDS or self.needs_raw != (self.needs != "stats"):
            raise ZooRankError(
                f"metric {self.name}: needs={self.needs!r} with needs_raw={self.needs_raw}; "
                f"expected one of {NEEDS}, with needs_raw False exactly for 'stats'."
            )

    #: For the scores built on an estimate of Sigma_T: None (plain pinv) or the shrinkage they use.
    shrinkage: str | None = None
    estimates_covariance: bool = False
    #: False for the scores that cost minutes at N = 50,000 (GMMs, Fisher solves, coding rates): they run
    #: when named (`--metrics nleep,sfda`, or `--metrics all`), not on every default board.
    in_default: bool = True

    def sign(self, mode: str) -> int:
        """+1 if a higher value predicts better transfer in `mode` ("source" or "target"), else -1."""
        return self.source_sign if check_mode(mode) == "source" else self.target_sign


#: Where features are scored: "source" on the pretraining data (the paper's setting), "target" on the user's.
MODES = ("source", "target")


def check_mode(mode: str) -> str:
    """`mode` itself when it is one of MODES, else a one-line ZooRankError."""
    if mode not in MODES:
        raise ZooRankError(
            f"mode {mode!r} is not known; expected one of {', '.join(MODES)} (see `zoo-rank rank --help`)."
        )
    return mode


_LESS_COLLAPSE = "more within-class variability (less collapse)"
_MORE_SEPARATED = "classes better separated (more collapse)"
_SOURCE_HEAD_FITS = "target labels better predicted from the source head"

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
            "leep",
            leep,
            _SOURCE_HEAD_FITS,
            "log expected empirical prediction of the target labels from the source head's softmax",
            "Nguyen et al., ICML 2020",
            True,
            -1,
            +1,
            "source_probs",
        ),
        MetricInfo(
            "nce",
            nce,
            _SOURCE_HEAD_FITS,
            "-H(Y | Z), Z the source head's argmax on the target images",
            "Tran et al., ICCV 2019",
            True,
            -1,
            +1,
            "source_probs",
        ),
        MetricInfo(
            "nleep",
            nleep,
            _MORE_SEPARATED,
            "LEEP on the posteriors of a K-component GMM fit to PCA features (80% of the variance)",
            "Li et al., CVPR 2021",
            True,
            -1,
            +1,
            in_default=False,
        ),
        MetricInfo(
            "gbc",
            gbc,
            _MORE_SEPARATED,
            "minus the summed Bhattacharyya coefficients of per-class diagonal Gaussians on 64-d PCA features",
            "Pandey et al., CVPR 2022",
            True,
            -1,
            +1,
            in_default=False,
        ),
        MetricInfo(
            "transrate",
            transrate,
            _MORE_SEPARATED,
            "coding rate R(Z, 1e-4) minus the mean per-class coding rate, on centred features",
            "Huang et al., ICML 2022",
            True,
            -1,
            +1,
            in_default=False,
        ),
        MetricInfo(
            "sfda",
            sfda,
            _MORE_SEPARATED,
            "mean true-class posterior of a regularised Fisher classifier after ConfMix",
            "Shao et al., ECCV 2022",
            True,
            -1,
            +1,
            in_default=False,
        ),
        MetricInfo(
            "ncti_seli",
            ncti_seli,
            _MORE_SEPARATED,
            "NCTI term: nuclear norm of the centred LDA projection (64-d PCA); ncti_combine ranks a zoo",
            "Wang et al., ICCV 2023",
            True,
            -1,
            +1,
            in_default=False,
        ),
        MetricInfo(
            "ncti_ncc",
            ncti_ncc,
            _MORE_SEPARATED,
            "NCTI term: mean true-class posterior of the LDA (nearest-centre) classifier",
            "Wang et al., ICCV 2023",
            True,
            -1,
            +1,
            in_default=False,
        ),
        MetricInfo(
            "ncti_vc",
            ncti_vc,
            "more within-class variability of the LDA posteriors",
            "NCTI term: log of the summed per-class nuclear norms of the LDA posteriors",
            "Wang et al., ICCV 2023",
            True,
            +1,
            -1,
            in_default=False,
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


def resolve_metric_names(names: Iterable[str] | None, *, source_probs: bool = False) -> list[str]:
    """Validate metric names. None -> the default list in registry order: every metric but the slow
    model-selection scores (`in_default=False`) and, unless `source_probs` says it is given, those that
    read the source head's softmax (they are there on request, N/A without it). ["all"] -> every metric."""
    if names is None:
        return [n for n, m in METRICS.items() if m.in_default and (source_probs or m.needs != "source_probs")]
    names = [_deprecated(n) if n in DEPRECATED_NAMES else n for n in names]
    if names == ["all"]:
        return list(METRICS)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ZooRankError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}.")
    if not names:
        raise ZooRankError(f"no metric named; choose from {', '.join(METRICS)}.")
    return names


def metric_sign(name: str, mode: str = "target") -> int:
    """+1 when a higher value of registered metric `name` predicts better transfer in `mode`, -1 when a
    lower one does; a one-line ZooRankError for an unknown name or mode."""
    if name not in METRICS:
        raise ZooRankError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}.")
    return METRICS[name].sign(mode)


def metric_functions(names: Iterable[str]) -> dict[str, Callable[..., float]]:
    """{name: fn} of registered metrics that read ClassStats alone (`needs == "stats"`), in the order given:
    for callers that evaluate a fixed set of scores on ClassStats (collapse tracking) without re-listing
    the functions. A one-line ZooRankError for an unknown name or one that needs raw features."""
    out = {}
    for name in names:
        if name not in METRICS:
            raise ZooRankError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}.")
        if METRICS[name].needs != "stats":
            raise ZooRankError(f"metric {name!r} needs {METRICS[name].needs} input, not ClassStats alone.")
        out[name] = METRICS[name].fn
    return out
