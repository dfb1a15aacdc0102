"""Hub sources: any Hugging Face image data set with an image and a label column (network, or a copy in
the datasets cache; ``HF_DATASETS_OFFLINE=1`` makes an absent one fail fast, in one line)."""

from __future__ import annotations

from zoo_rank._validation import ZooRankError
from zoo_rank.data.images import (
    _IMAGE_COLUMNS,
    _LABEL_COLUMNS,
    DATA_FORMAT,
    ImageSet,
    _call_datasets,
    _image_set,
    _open_once,
)
from zoo_rank.data.registry import DatasetSpec


def _load_hub(spec: DatasetSpec, split: str) -> ImageSet:
    """The split of a Hub data set, opened once per process."""
    return _open_once(("hub", repr(spec), split), lambda: _read_hub(spec, split))


def _read_hub(spec: DatasetSpec, split: str) -> ImageSet:
    import datasets

    source_split = spec.splits.get(split, split)
    ds = _call_datasets(
        f"load the Hub dataset {spec.location} (split {source_split})",
        lambda: datasets.load_dataset(spec.location, name=spec.config, split=source_split),
        hub=True,
    )
    image_col = spec.image_column or _detect_column(
        ds.features, _IMAGE_COLUMNS, datasets.Image, "image", spec.name
    )
    label_col = spec.label_column or _detect_column(
        ds.features, _LABEL_COLUMNS, datasets.ClassLabel, "label", spec.name
    )
    provenance = {
        "kind": "hub",
        "format": DATA_FORMAT,
        "repo": spec.location,
        "config": spec.config,
        "split": source_split,
        "columns": [image_col, label_col],
        "datasets_fingerprint": ds._fingerprint,  # datasets' own: config, revision and data files
    }
    return _image_set(ds, image_col, label_col, None, spec=spec, split=split, provenance=provenance)


def _detect_column(features, preferred: tuple[str, ...], feature_type, role: str, name: str) -> str:
    for column in preferred:
        if column in features:
            return column
    typed = [c for c, f in features.items() if isinstance(f, feature_type)]
    if len(typed) == 1:
        return typed[0]
    raise ZooRankError(
        f"cannot tell the {role} column of {name}: columns {list(features)}; add a DatasetSpec with "
        f"{role}_column set to DOWNSTREAM (or BUILTIN)"
    )
