"""A request, resolved: which backbone (or only its identity), which images, which rows, under which key.

`resolve_request` builds no backbone when a weightless skeleton names the weights
(zoo_rank.models.describe_backbone): the cache key needs only the weights digest and the resolved
pretrained config, so a fully cached request never loads a network. `load_features` reads what
`extract_features` wrote.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo_rank._console import warn
from zoo_rank._device import pick_device, resolve_precision
from zoo_rank._paths import cache_root, canonical_json
from zoo_rank._validation import ZooRankError
from zoo_rank.cache import CacheKey, Entry, FeatureSet, list_entries
from zoo_rank.data import Manifest, balanced_subset, load_images
from zoo_rank.models import Backbone, create_backbone, describe_backbone
from zoo_rank.options import ExtractOptions, Subset


@dataclass
class Request:
    """A resolved extraction request.

    backbone: a zoo_rank.models.Backbone, or its BackboneIdentity (name, weights_id, data_config,
    num_features) until the features must be computed; `spec` then builds it (`built()`).
    rows: (N,) int64 sorted dataset rows to extract (the manifest's indices, or all rows).
    manifest: {"digest", "n_per_class", "seed"}; asked: the model/data/split as the caller named them.
    """

    backbone: Any
    images: Any
    rows: np.ndarray
    manifest: dict
    asked: dict
    spec: str | None = None  # the create_backbone spec of an identity described from a string

    def key(self, precision: str) -> CacheKey:
        return CacheKey(
            model=self.backbone.name,
            weights_id=self.backbone.weights_id,
            data_config=canonical_json(self.backbone.data_config),
            fingerprint=self.images.fingerprint,
            split=str(self.images.split),
            manifest=self.manifest["digest"],
            precision=precision,
        )

    def built(self) -> Request:
        """This request with a real backbone (built now from `spec` when only its identity is known)."""
        if isinstance(self.backbone, Backbone) or self.spec is None:
            return self
        return dataclasses.replace(self, backbone=create_backbone(self.spec))


def _describe(spec: str) -> Any:
    """The backbone's identity from a weightless skeleton, or the built backbone when that cannot name it."""
    identity = describe_backbone(spec)
    return identity if identity is not None else create_backbone(spec)


def _open(data: Any, split: str | None) -> Any:
    if isinstance(data, str):
        return load_images(data, split)
    if split is not None and split != data.split:
        raise ZooRankError(
            f"split={split!r} was passed with an ImageSet of split {data.split!r}; drop split or load that split."
        )
    return data


def _rows(images: Any, subset: Subset | None, manifest: Any) -> tuple[np.ndarray, dict]:
    """(rows (N,) int64 sorted unique, {"digest", "n_per_class", "seed"}) of a manifest, a subset or all."""
    n_rows = len(images.dataset)
    if manifest is not None:
        m = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
        if m.source_fingerprint != images.fingerprint:
            raise ZooRankError(
                f"the manifest was drawn from data with fingerprint {m.source_fingerprint}, but {images.name} "
                f"has {images.fingerprint}; draw a new one with balanced_subset for this data."
            )
        rows = np.asarray(m.indices, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
            raise ZooRankError(
                f"manifest rows span [{rows.min()}, {rows.max()}] but the image set has {n_rows} rows; use the manifest of this dataset."
            )
        info = {"digest": m.digest(), "n_per_class": m.n_per_class, "seed": m.seed}
    elif subset is not None and subset.n_per_class is not None:
        m = balanced_subset(images, subset.n_per_class, subset.seed)
        rows = np.asarray(m.indices, dtype=np.int64)
        info = {"digest": m.digest(), "n_per_class": subset.n_per_class, "seed": subset.seed}
    else:
        rows = np.arange(n_rows, dtype=np.int64)
        info = {"digest": f"all:{n_rows}", "n_per_class": None, "seed": None}
    return np.unique(rows), info  # sorted, unique: the order of every entry


def resolve_request(
    model: Any, data: Any, *, split: str | None = None, subset: Subset | None = None, manifest: Any = None
) -> Request:
    """Name the backbone (building it only when its weights have no known file) and open the images when
    given as specs; choose the rows (a balanced `subset`, or all).

    `manifest` (a zoo_rank.data.Manifest or a path to one) pins the rows exactly, e.g. from another machine.
    """
    backbone = _describe(model) if isinstance(model, str) else model
    images = _open(data, split)
    rows, info = _rows(images, subset, manifest)
    asked = {
        "model": model if isinstance(model, str) else backbone.name,
        "data": data if isinstance(data, str) else images.name,
        "split": split,
    }
    spec = model if isinstance(model, str) else None
    return Request(backbone=backbone, images=images, rows=rows, manifest=info, asked=asked, spec=spec)


def load_features(
    model: str,
    data: str,
    *,
    split: str | None = None,
    subset: Subset | None = None,
    options: ExtractOptions | None = None,
    manifest: Any = None,
) -> FeatureSet:
    """The cached features of `model` on `data`: (N, p) float32 matrix, (N,) int64 labels, metadata.

    Resolves the key `extract_features` writes from the backbone's identity (its weights digest and
    transform; no network is loaded when the weights have a known file) and the data (its fingerprint and
    the manifest rows). Of `options`, precision and cache_dir count: precision="auto" is this machine's
    default, and when only the other precision is cached, that entry is returned. When the model or data
    cannot be opened here (e.g. a Hub set while offline), the newest entry extracted under exactly these
    names is returned with a warning that it could not be checked against its source.
    Raises ZooRankError naming the `zoo-rank extract` command when nothing is cached.
    """
    options = options or ExtractOptions()
    root = cache_root(options.cache_dir)
    wanted = resolve_precision(options.precision, pick_device(options.device))
    others = [p for p in ("bf16", "fp32") if p != wanted] if options.precision == "auto" else []
    candidates = [wanted, *others]
    try:
        request = resolve_request(model, data, split=split, subset=subset, manifest=manifest)
    except ZooRankError as err:
        fs = _newest_by_names(root, model, data, split, subset, candidates)
        if fs is None:
            raise
        warn(
            f"{err} Using the cached entry {fs.key} ({fs.meta.get('created')}) unverified against its source."
        )
        return fs
    for prec in candidates:
        fs = Entry(root, request.key(prec).digest()).read_valid(request.rows)
        if fs is not None:
            return fs
    raise ZooRankError(
        f"no cached features for {model!r} on {data!r} ({'/'.join(candidates)}) in {root}; "
        f"extract them first: `{_extract_command(model, data, split, subset, options, manifest)}`."
    )


def _extract_command(
    model: str, data: str, split: str | None, subset: Subset | None, options: ExtractOptions, manifest: Any
) -> str:
    """The `zoo-rank extract` line that writes the entry `load_features` looked for."""
    cmd = f"zoo-rank extract {model} --data {data}"
    if split:
        cmd += f" --split {split}"
    if manifest is not None:
        cmd += " --manifest MANIFEST.json"
    elif subset is not None and subset.n_per_class:
        cmd += f" --n-per-class {subset.n_per_class} --seed {subset.seed}"
    if options.precision != "auto":
        cmd += f" --precision {options.precision}"
    if options.cache_dir is not None:
        cmd += f" --cache-dir {options.cache_dir}"
    return cmd


def _newest_by_names(
    root: Path, model: str, data: str, split: str | None, subset: Subset | None, precisions: list[str]
) -> FeatureSet | None:
    """The newest valid committed entry requested under exactly these names, or None."""
    n_per_class, seed = (subset.n_per_class, subset.seed) if subset is not None else (None, 0)
    for info in list_entries(root):  # newest first
        m = info.meta
        asked, man = m.get("request", {}), m.get("manifest", {})
        if info.status != "ok" or asked.get("model") != model or asked.get("data") != data:
            continue
        if (split is not None and m.get("split") != split) or (
            split is None and asked.get("split") is not None
        ):
            continue
        if man.get("n_per_class") != n_per_class or (n_per_class is not None and man.get("seed") != seed):
            continue
        if m.get("precision") not in precisions:
            continue
        fs = Entry(root, info.key).read_valid()
        if fs is not None:
            return fs
    return None


__all__ = ["Request", "load_features", "resolve_request"]
