"""LP-FT's first stage (Kumar et al., ICLR 2022): the new head starts as a logistic probe on frozen features."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from zoo_rank._validation import ZooRankError
from zoo_rank.finetune.options import FinetuneOptions
from zoo_rank.models import Backbone
from zoo_rank.options import ProbeOptions
from zoo_rank.probe import linear_probe

#: A feature's spread is floored at this fraction of the median spread before it divides the probe's weights.
SCALE_FLOOR = 0.1
#: 25 L2 values, not the probe check's 97: a starting head, picked in a quarter of the time.
HEAD_L2_GRID = tuple(np.logspace(-6, 6, 25).tolist())


def probe_head(backbone: Backbone, fit_set: Any, device: torch.device, bf16: bool, n_classes: int,
               options: FinetuneOptions) -> float:  # fmt: skip
    """Replace the classifier by a linear layer holding a logistic probe fitted on the frozen features of
    `fit_set` (the fit rows only); returns the probe's L2 strength.

    The probe acts on standardised features z = (h - m) / s with z @ C + c, so the layer on raw h gets
    W = (C / s[:, None]).T, b = c - (m / s) @ C (s floored at SCALE_FLOOR x its median); a class absent
    from the fit rows gets a zero row.
    """
    loader = torch.utils.data.DataLoader(fit_set, batch_size=2 * options.batch_size)
    fit_x, fit_y = frozen_features(backbone, loader, device, bf16)
    # The probe picks its L2 on its own split of the fit rows and refits on all of them: the validation
    # rows that later pick the learning rate and epoch stay unseen (given to linear_probe as its
    # validation set, they would be refit on, and score ~0.97 where the test split gets ~0.45).
    res = linear_probe(fit_x, fit_y, fit_x, fit_y, options=ProbeOptions(l2_grid=HEAD_L2_GRID, seed=options.seed, device="cpu"))
    # A feature that barely varies gets weight C/s with a tiny s: its huge weights sent huge gradients into
    # the backbone and the first steps blew it up (validation loss ~2e3). Spreads below a tenth of the median
    # are floored there, which damps only those features' votes.
    scale = np.maximum(res.feature_scale, SCALE_FLOOR * np.median(res.feature_scale))
    coef = res.coef / scale[:, None]  # (p, K')
    bias = res.intercept - (res.feature_mean / scale) @ res.coef  # (K',)
    weight = np.zeros((n_classes, coef.shape[0]))
    full_bias = np.zeros(n_classes)
    weight[res.classes.astype(np.int64)] = coef.T
    full_bias[res.classes.astype(np.int64)] = bias
    backbone.model.reset_classifier(n_classes)
    head = backbone.model.get_classifier()
    if not isinstance(head, nn.Linear):
        raise ZooRankError(
            f"{backbone.name}: its classifier is {type(head).__name__}, not one linear layer; use head_init='random'."
        )
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(full_bias, dtype=head.bias.dtype))
    head.to(device)
    return float(res.l2)


def frozen_features(
    backbone: Backbone, loader: Any, device: torch.device, bf16: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, num_features) float32, labels (N,)) of every batch of `loader`, the backbone in eval mode."""
    backbone.model.eval()
    xs, ys = [], []
    with torch.inference_mode():
        for x, y in loader:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                xs.append(backbone.features(x.to(device)).float().cpu().numpy())
            ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)
