"""The trained network and what drives it: a timm model that returns (features, logits), timm's
optimizer and scheduler factories with a recipe's settings."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo_rank.train.recipes import Recipe


class FeaturesAndLogits(nn.Module):
    """timm model -> (pre-logit features (B, p), logits (B, C)); the classifier is applied to those features."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return features, self.model.get_classifier()(features)


def num_features(model: nn.Module) -> int:
    """p, the width of the pre-logit features of a timm model (or of the one a FeaturesAndLogits wraps)."""
    inner = model.model if isinstance(model, FeaturesAndLogits) else model
    return int(getattr(inner, "head_hidden_size", None) or inner.num_features)


def create_model(recipe: Recipe, num_classes: int) -> nn.Module:
    import timm

    torch.manual_seed(recipe.seed)  # every rank starts from the same weights
    return timm.create_model(recipe.model, num_classes=num_classes, **recipe.model_args)


def build_optimizer(recipe: Recipe, model: nn.Module, world_size: int = 1) -> torch.optim.Optimizer:
    """timm's optimizer factory with the recipe's settings (no weight decay on biases and norms, timm's default)."""
    import timm.optim

    return timm.optim.create_optimizer_v2(
        model,
        opt=recipe.opt,
        lr=recipe.lr(world_size),
        weight_decay=recipe.weight_decay,
        momentum=recipe.momentum,
    )


def build_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
    """timm's scheduler factory, updated every step: linear warm-up from warmup_lr, then cosine or step decay.

    Call `step_update(num_updates)` after every optimizer step and `step(epoch)` after every epoch.
    """
    import timm.scheduler

    scheduler, _ = timm.scheduler.create_scheduler_v2(
        optimizer,
        sched=recipe.sched,
        num_epochs=recipe.epochs,
        decay_epochs=recipe.decay_epochs,
        decay_rate=recipe.decay_rate,
        min_lr=recipe.min_lr,
        warmup_lr=recipe.warmup_lr,
        warmup_epochs=recipe.warmup_epochs,
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )
    return scheduler
