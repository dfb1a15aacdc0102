"""Measuring a model during training: class statistics of its features, top-1 and cross-entropy,
sharded over torchrun's processes and all-reduced."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from zoo_rank.metrics import ClassStats
from zoo_rank.train.model import num_features
from zoo_rank.train.recipes import Recipe


@torch.no_grad()
def _evaluate(
    model: nn.Module,
    dataset: Any,
    recipe: Recipe,
    device: torch.device,
    rank: int,
    world: int,
) -> tuple[ClassStats, dict[str, float]]:
    """ClassStats of the features and top-1/CE of `dataset` (map-style: (image (3, H, W), label) rows)."""
    was_training = model.training
    model.eval()
    shard = torch.utils.data.Subset(dataset, list(range(rank, len(dataset), world)))
    loader = torch.utils.data.DataLoader(shard, batch_size=recipe.batch_size, num_workers=recipe.num_workers)
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # correct, cross-entropy sum, n
    stats = None
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            features, logits = model(x)
        features, logits = features.float(), logits.float()
        if stats is None:
            stats = ClassStats(dim=features.shape[1])
        stats.update(features, y)
        totals += torch.stack(
            [
                (logits.argmax(1) == y).sum().double(),
                nn.functional.cross_entropy(logits, y, reduction="sum").double(),
                torch.tensor(float(len(y)), dtype=torch.float64, device=device),
            ]
        )
    if stats is None:
        stats = ClassStats(dim=num_features(model))
    if world > 1:
        stats.all_reduce()
        dist.all_reduce(totals)
    model.train(was_training)
    correct, ce_sum, n = totals.tolist()
    return stats, {"top1": correct / max(n, 1), "loss": ce_sum / max(n, 1)}
