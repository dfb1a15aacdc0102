"""The factory: a spec -> a timm network in eval mode, its eval transform, its weights digest and metadata."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import timm
import timm.data
import torch

from zoo_rank._validation import ZooRankError
from zoo_rank.models.plans import LOCAL_HINT, BackboneIdentity, Plan, identity, plan_backbone


class RGBTransform:
    """PIL image in any mode -> RGB -> timm's eval transform -> (3, H, W) float tensor.

    A module-level class (not a lambda) so DataLoader workers can pickle it.
    """

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        return self.transform(image)

    def __repr__(self) -> str:
        return f"RGBTransform({self.transform!r})"


@dataclass
class Backbone:
    """A pretrained (or random) timm network ready for feature extraction.

    ``model`` is in eval mode with its classifier kept; ``features`` gives the penultimate (pre-logits)
    features of width ``num_features`` (= ``model.head_hidden_size``).
    """

    name: str
    model: torch.nn.Module
    transform: Callable
    data_config: dict
    num_features: int
    weights_id: str
    meta: dict = field(default_factory=dict)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_features): ``forward_head(forward_features(x), pre_logits=True)``."""
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True).flatten(1)

    def classifier(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The linear classifier ``(W (K, num_features), b (K,) or None)``, or None if it is not one linear layer.

        For these models ``logits = features @ W.T + b`` equals the network's own forward pass.
        """
        head = self.model.get_classifier()
        if not isinstance(head, torch.nn.Linear):
            return None
        return head.weight.detach(), None if head.bias is None else head.bias.detach()


def create_backbone(
    spec: str, *, pretrained: bool = True, checkpoint: str | os.PathLike | None = None, seed: int = 0
) -> Backbone:
    """Build a backbone from a spec (see the package docstring for the syntax).

    Raises ZooRankError (one line: what was tried, how to provide the weights) for unknown names, weights
    that are neither cached nor reachable (fast under ``HF_HUB_OFFLINE=1``) and checkpoints that do not fit.
    """
    plan, pretrained = plan_backbone(spec, pretrained=pretrained, checkpoint=checkpoint)
    return _build(plan, pretrained=pretrained, seed=seed)


def describe_backbone(
    spec: str, *, pretrained: bool = True, checkpoint: str | os.PathLike | None = None, seed: int = 0
) -> BackboneIdentity | None:
    """The cache-key identity `create_backbone` gives this spec, from a weightless (meta-device) skeleton:
    name, weights digest (memoised file hash), resolved data config. None when the weights have no known
    file (their digest needs the loaded tensors). Raises ZooRankError as create_backbone does."""
    plan, pretrained = plan_backbone(spec, pretrained=pretrained, checkpoint=checkpoint)
    try:
        with torch.device("meta"):
            model = timm.create_model(plan.model_name, pretrained=False, **plan.kwargs)
    except Exception:  # anything create_backbone would report itself: let it, on the slow path
        return None
    ident = identity(plan, model, pretrained=pretrained, seed=seed, hash_tensors=False)
    return ident if ident.weights_id else None


def _build(plan: Plan, *, pretrained: bool, seed: int) -> Backbone:
    model = _create_model(plan, pretrained=pretrained, seed=seed)
    cfg = {k: v for k, v in model.pretrained_cfg.items() if k != "state_dict"}
    ident = identity(plan, model, pretrained=pretrained, seed=seed, hash_tensors=True)
    transform = RGBTransform(timm.data.create_transform(**ident.data_config, is_training=False))
    meta = {
        "spec": plan.name,
        "source": plan.source if pretrained else "random",
        "architecture": cfg.get("architecture", type(model).__name__),
        "pretrained_tag": cfg.get("tag"),
        "pretrained_cfg": _jsonable(cfg),
        "weights_file": str(ident.weights_file) if ident.weights_file else None,
        "num_classes": int(getattr(model, "num_classes", 0)),
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "timm_version": timm.__version__,
        "torch_version": torch.__version__,
        **plan.meta,
    }
    return Backbone(
        ident.name, model, transform, dict(ident.data_config), ident.num_features, ident.weights_id, meta
    )


def _create_model(plan: Plan, *, pretrained: bool, seed: int) -> torch.nn.Module:
    """timm.create_model for `plan` in eval mode; a random init is drawn from `seed` alone."""
    try:
        if pretrained:
            model = timm.create_model(plan.model_name, pretrained=True, **plan.kwargs)
        else:
            # Seed a private RNG stream: the same seed gives the same weights and the caller's RNG is untouched.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = timm.create_model(plan.model_name, pretrained=False, **plan.kwargs)
    except ZooRankError:
        raise
    except Exception as err:  # timm, huggingface_hub and torch raise many types; all mean "could not load"
        first_line = (str(err).strip().splitlines() or [""])[0][:300]
        raise ZooRankError(
            f"could not build '{plan.name}' ({type(err).__name__}: {first_line}); tried {plan.tried}; {LOCAL_HINT}"
        ) from err
    return model.eval()


def _jsonable(obj: Any) -> Any:
    """A pretrained cfg as plain JSON values (tuples -> lists, anything else unknown -> str)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)
