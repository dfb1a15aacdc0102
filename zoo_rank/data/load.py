"""``load_images(spec, split)``: spec text -> DatasetSpec (registry) -> the loader of its kind -> ImageSet.

Each loader opens a (spec, split) once per process and hands the same ImageSet to every later caller.
"""

from __future__ import annotations

from collections.abc import Callable

from zoo_rank._validation import ZooRankError
from zoo_rank.data.builtin import _load_builtin
from zoo_rank.data.hub import _load_hub
from zoo_rank.data.images import ImageSet
from zoo_rank.data.local import _load_local
from zoo_rank.data.registry import DatasetSpec, resolve

# One loader per DatasetSpec.kind: the registry is data, no if-chain over names.
_LOADERS: dict[str, Callable[[DatasetSpec, str], ImageSet]] = {
    "local": _load_local,
    "hub": _load_hub,
    "builtin": _load_builtin,
}


def load_images(spec: str, split: str | None = None) -> ImageSet:
    """Load a labelled image set from a spec (syntax in `zoo_rank.data`'s docstring).

    Raises ZooRankError for unknown names (listing the known ones), absent files, unknown splits and Hub
    sets that cannot be reached (fast when ``HF_DATASETS_OFFLINE=1``). The same (spec, split) asked again in
    this process gives the same ImageSet (a local source whose files changed is read again).
    """
    dataset_spec, suffix_split = resolve(spec)
    if split is not None and suffix_split is not None and split != suffix_split:
        raise ZooRankError(
            f"spec '{spec}' names split '{suffix_split}' but split='{split}' was passed; give one"
        )
    split = split or suffix_split or dataset_spec.default_split
    if dataset_spec.splits and split not in dataset_spec.splits:
        raise ZooRankError(
            f"{dataset_spec.name} has no split '{split}'; known splits: {', '.join(dataset_spec.splits)}; "
            f"e.g. {dataset_spec.name}:{next(iter(dataset_spec.splits))}"
        )
    return _LOADERS[dataset_spec.kind](dataset_spec, split)
