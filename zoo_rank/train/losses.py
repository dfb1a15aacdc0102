"""The two knobs of the paper's model families (Xu & Liu, ICML 2023, Sec. 6.3).

Notation for one batch: logits z_i in R^C, penultimate features h_i in R^p, labels y_i, B samples;
the classes present in the batch are c = 1..K_b with n_c samples each.

tau family (softmax temperature):

    L_tau = (1/B) sum_i CE(z_i / tau, y_i),      CE(z, y) = -log softmax(z)_y

lambda family (cross-entropy plus lambda times the within-class cosine similarity, as in the paper):

    s_c      = (1/n_c^2) sum_{m, n in c} cos(h_m, h_n) = || (1/n_c) sum_{i in c} h_i / ||h_i|| ||^2
    S        = (1/K_b) sum_c s_c                          (mean within-class cosine similarity)
    L_lambda = (1/B) sum_i CE(z_i, y_i) + lambda * S

The paper adds the batch's average within-class cosine similarity (divided by the number of samples of
each class in the batch) to the cross-entropy; minimising it pushes features of one class apart in
angle, and its Table 2 shows the consequence: as lambda grows, COS SIM falls and Squared Distance rises.
Our reading of "divided by the number of samples of each class": every ordered pair of a class,
self-pairs (m = n, cos = 1) included, is weighted by 1/n_c^2 (n_c the class's count in the batch), and each
class present in the batch counts once (1/K_b). With self-pairs S is exactly 1 - d_within of the batch,
Kornblith et al. (2021)'s within-class cosine distance (`zoo_rank.metrics.cosine_distance`), so the
regulariser and the metric share one definition. A class seen once in a batch contributes the constant
s_c = 1 (no gradient); self-pairs add the constant 1/n_c to s_c and change no gradient. Under
DistributedDataParallel S is computed on each process's own batch (per-GPU batch statistics, as batch
norm's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zoo_rank._validation import ZooRankError

# Zero feature vectors have no direction; the clamp keeps their (zero) unit vector finite.
_NORM_EPS = 1e-12


def within_class_cosine(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean within-class cosine similarity S of a batch (module docstring), differentiable.

    features (B, p) float, labels (B,) int. Returns a 0-d tensor in [-1, 1] (in [0, 1] for
    non-negative features such as post-ReLU pooled ones). Vectorised: one index_add over the batch.
    """
    classes, codes = torch.unique(labels, return_inverse=True)
    unit = features.float() / features.float().norm(dim=1, keepdim=True).clamp_min(_NORM_EPS)
    unit_sums = torch.zeros(len(classes), unit.shape[1], dtype=unit.dtype, device=unit.device)
    unit_sums = unit_sums.index_add(0, codes, unit)
    counts = torch.bincount(codes, minlength=len(classes)).to(unit.dtype)
    per_class = unit_sums.square().sum(dim=1) / counts.square()
    return per_class.mean()


@dataclass(frozen=True)
class LossParts:
    """One batch's loss and its parts; the parts are detached 0-d tensors (no host sync) for logging."""

    loss: torch.Tensor  # 0-d, the value to backpropagate
    cross_entropy: torch.Tensor  # (1/B) sum_i CE(z_i / tau, y_i), on the tempered logits for the tau family
    cosine_distance: torch.Tensor  # 1 - S of the batch (logged for both families)


class FamilyLoss:
    """Base: `loss(logits (B, C), features (B, p), labels (B,)) -> LossParts`."""

    family: str = ""
    value: float = 0.0

    def __call__(self, logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> LossParts:
        raise NotImplementedError


class TemperatureCrossEntropy(FamilyLoss):
    """L_tau = mean_i CE(z_i / tau, y_i): cross-entropy on the logits divided by the temperature tau > 0."""

    family = "tau"

    def __init__(self, tau: float) -> None:
        if not tau > 0:
            raise ZooRankError(f"temperature tau must be > 0, got {tau}; pass e.g. --values 0.1,0.5,1.0.")
        self.value = float(tau)

    def __call__(self, logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> LossParts:
        ce = F.cross_entropy(logits.float() / self.value, labels)
        with torch.no_grad():
            distance = 1.0 - within_class_cosine(features, labels)
        return LossParts(ce, ce.detach(), distance)


class CosineRegularisedCrossEntropy(FamilyLoss):
    """L_lambda = mean_i CE(z_i, y_i) + lambda * S, S the batch's mean within-class cosine similarity.

    lambda > 0 penalises within-class cosine similarity: it spreads the features of a class in angle
    (less collapse by the cosine and Squared Distance measures), the paper's lambda family.
    """

    family = "lambda"

    def __init__(self, lam: float) -> None:
        if not lam >= 0:
            raise ZooRankError(
                f"lambda must be >= 0, got {lam}; pass e.g. --values 2.5,5,10 (0 is plain cross-entropy)."
            )
        self.value = float(lam)

    def __call__(self, logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> LossParts:
        ce = F.cross_entropy(logits.float(), labels)
        similarity = within_class_cosine(features, labels)
        loss = ce + self.value * similarity if self.value else ce
        return LossParts(loss, ce.detach(), 1.0 - similarity.detach())


FAMILIES: dict[str, Callable[[float], FamilyLoss]] = {
    "tau": TemperatureCrossEntropy,
    "lambda": CosineRegularisedCrossEntropy,
}


def make_loss(family: str, value: float) -> FamilyLoss:
    """The loss of one family member: `make_loss("tau", 0.5)` or `make_loss("lambda", 5.0)`."""
    if family not in FAMILIES:
        raise ZooRankError(
            f"unknown family {family!r}; expected one of {', '.join(FAMILIES)} (e.g. --family tau)."
        )
    return FAMILIES[family](value)
