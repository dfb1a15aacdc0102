"""The named image sets, as data (datasets.json), and spec text -> (DatasetSpec, split).

Resolution order: registry names first (``./name`` reaches a local folder of the same name), then paths,
then Hub ids (``hf:org/name`` or ``org/name``); a ``:SPLIT`` suffix picks the split.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from zoo_rank._validation import ZooRankError


@dataclass(frozen=True)
class DatasetSpec:
    """A named image set, as data: where it lives, its splits, which columns hold images and labels.

    ``splits`` maps the zoo_rank split name to the source's split expression (e.g. Food-101's ``test`` is
    the Hub's ``validation``; datasets' ``train+validation`` syntax works). An empty mapping passes names
    through. ``kind`` picks the loader: builtin, local (a path; relative ones are under the shared data
    folder), or hub.
    """

    name: str
    kind: str
    location: str
    splits: dict[str, str] = field(default_factory=dict)
    default_split: str = "train"
    image_column: str | None = None  # None: detect ("image", "img", or the one Image column)
    label_column: str | None = None  # None: detect ("label", "labels", "fine_label", ...)
    metric: str = "top1"  # how the paper scores a linear probe: "top1" or "mean_per_class"
    num_classes: int | None = None
    needs_network: bool = False
    config: str | None = None  # Hub dataset config name
    description: str = ""


def _read_registry() -> dict[str, dict[str, DatasetSpec]]:
    """The named sets, kept as data in datasets.json beside this module (shipped as package data)."""
    record = json.loads((Path(__file__).parent / "datasets.json").read_text())
    return {
        group: {row["name"]: DatasetSpec(**row) for row in record[group]}
        for group in ("builtin", "pretraining", "downstream")
    }


_REGISTRY = _read_registry()
# Offline sets: Debian's Fashion-MNIST, scikit-learn's digits, ../shared/data. Add your own here (a
# DatasetSpec with kind="local" and a parquet path) and load_images finds it by name.
BUILTIN: dict[str, DatasetSpec] = _REGISTRY["builtin"]
# ImageNet-1k on the Hub: the pretraining data that source-mode scores are computed on (network, gated).
PRETRAINING: dict[str, DatasetSpec] = _REGISTRY["pretraining"]
# The paper's ten downstream sets on the Hugging Face Hub (network or a datasets-cache copy needed).
DOWNSTREAM: dict[str, DatasetSpec] = _REGISTRY["downstream"]


def known_datasets() -> dict[str, DatasetSpec]:
    """Every named set: the built-in offline ones, ImageNet-1k, then the paper's downstream sets."""
    return {**BUILTIN, **PRETRAINING, **DOWNSTREAM}


def shared_data_dir() -> Path:
    """``$ZOO_RANK_SHARED_DATA``, else ../shared/data beside the repository checkout."""
    env = os.environ.get("ZOO_RANK_SHARED_DATA")
    # This file is <repo>/zoo_rank/data/registry.py: parents[3] is the folder that holds the checkout.
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def resolve(spec: str) -> tuple[DatasetSpec, str | None]:
    """Spec text -> (DatasetSpec, the split its ``:SPLIT`` suffix names or None); unknown names raise."""
    text = str(spec).strip()
    if text.lower().startswith("hf:"):
        repo, split = _split_suffix(text[3:])
        return _hub_spec(repo), split
    base, split = _split_suffix(text)
    registry = known_datasets()
    if base.lower() in registry:
        return registry[base.lower()], split
    if Path(text).expanduser().exists():  # a path that itself contains ':'
        return _local_spec(Path(text)), None
    if Path(base).expanduser().exists():
        return _local_spec(Path(base)), split
    looks_like_path = base.startswith((".", "/", "~")) or base.endswith(".parquet") or base.count("/") > 1
    if base.count("/") == 1 and not looks_like_path:
        return _hub_spec(base), split
    close = difflib.get_close_matches(base.lower(), list(registry), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    what = f"no file or folder '{base}'" if looks_like_path else f"unknown dataset '{base}'"
    raise ZooRankError(
        f"{what}; {hint}known names: {', '.join(registry)}; or pass a parquet file, an image folder "
        "(one sub-folder per class) or a Hub id as hf:org/name:split"
    )


def _split_suffix(text: str) -> tuple[str, str | None]:
    base, sep, split = text.rpartition(":")
    if sep and base and split and "/" not in split and "\\" not in split:
        return base, split
    return text, None


def _hub_spec(repo: str) -> DatasetSpec:
    return DatasetSpec(repo, "hub", repo, needs_network=True, description=f"Hub dataset {repo}")


def _local_spec(path: Path) -> DatasetSpec:
    path = path.expanduser().resolve()
    if path.is_file():
        if path.suffix != ".parquet":
            raise ZooRankError(
                f"{path} is a {path.suffix or 'suffix-less'} file; expected a .parquet file in the datasets "
                "image layout, a folder of them, or an image folder with one sub-folder per class"
            )
        return DatasetSpec(str(path), "local", str(path), {path.stem: path.stem}, path.stem)
    return DatasetSpec(str(path), "local", str(path), {}, "train")
