"""ImageSet, the one shape every source becomes, and what the loaders share to build one.

- ``ImageSet``: a ``datasets.Dataset`` with exactly two columns, ``image`` (``Image(mode="RGB")``) and
  ``label`` (int64 in [0, K)), its class names and a content ``fingerprint``.
- ``ImageRows``: rows of an ImageSet as (transformed image, label) pairs, a map-style data set for torch's
  DataLoader (training and fine-tuning read images this way).
- ``_image_set``: the normalisation each loader ends with; ``_call_datasets``: datasets' many errors as one
  line; ``_open_once``: each source is opened once per process (issue 13: rank, its probe split and the
  extraction asked for the same split three times).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo_rank._paths import cache_root, json_digest
from zoo_rank._validation import ZooRankError
from zoo_rank.data.registry import DatasetSpec

if TYPE_CHECKING:  # an annotation only: manifest.py builds on ImageSet, so it imports this module
    from zoo_rank.data.manifest import Manifest

# Bump when the way a source becomes an ImageSet changes (column handling, decoding): fingerprints change.
DATA_FORMAT = 1
_IMAGE_COLUMNS = ("image", "img")
_LABEL_COLUMNS = ("label", "labels", "fine_label", "target", "y")


def _digest(record: dict) -> str:
    """32 hex characters of sha256 over compact sorted JSON: fingerprints and manifest digests (cache keys)."""
    return json_digest(record, 32, separators=(",", ":"))


@dataclass
class ImageSet:
    """A labelled image set: ``dataset`` has columns image (RGB PIL on access) and label (int64 in [0, K)).

    The label feature is ``Value("int64")`` or a ``ClassLabel`` (int64 codes; its dtype reads "int64");
    ``classes[label]`` is the class name either way. ``load_images`` hands the same object to every caller
    of one (spec, split) in a process: treat it as read-only.
    """

    dataset: Any  # datasets.Dataset
    name: str
    split: str
    classes: list[str]
    fingerprint: str
    metric: str = "top1"
    provenance: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 labels, in row order (reads only the label column)."""
        return _label_column(self.dataset)

    def subset(self, manifest: Manifest) -> ImageSet:
        """The rows a manifest names, as a new ImageSet (checks the manifest was drawn from this set)."""
        if manifest.source_fingerprint != self.fingerprint:
            raise ZooRankError(
                f"manifest was drawn from data with fingerprint {manifest.source_fingerprint}, but {self.name}:"
                f"{self.split} has fingerprint {self.fingerprint}; the data changed: draw a new subset"
            )
        provenance = {**self.provenance, "manifest": manifest.digest()}
        subset = self.dataset.select(manifest.indices)
        return ImageSet(
            subset, self.name, self.split, self.classes, _digest(provenance), self.metric, provenance
        )


class ImageRows:
    """Rows `indices` of an ImageSet as (transform(RGB image), int label) pairs: a map-style data set
    (``__len__`` + ``__getitem__``) for torch's DataLoader, samplers and ``Subset``.

    `images` needs only ``.dataset[row]["image"]`` (a PIL image); `labels` (N,) is indexed by the same rows.
    """

    def __init__(self, images: Any, indices: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.dataset = images.dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        row = int(self.indices[i])
        image = self.dataset[row]["image"]
        return self.transform(image.convert("RGB")), int(self.labels[row])


# ---- what every loader shares -------------------------------------------------------------------------

# (cache root, loader key...) -> the ImageSet opened for it; keys say what makes two opens the same data.
_OPENED: dict[tuple, ImageSet] = {}


def _open_once(key: tuple, open_set: Callable[[], ImageSet]) -> ImageSet:
    """`open_set()` the first time `key` is asked for in this process (and cache root), the same ImageSet after.

    A loader's key holds the resolved spec, the split and whatever tells a changed source apart (a local
    file's size and mtime), so an edited file is read again; errors are not remembered.
    """
    key = (str(cache_root()), *key)
    if key not in _OPENED:
        _OPENED[key] = open_set()
    return _OPENED[key]


def _image_set(
    ds, image_col: str, label_col: str, classes: list[str] | None, *, spec: DatasetSpec, split, provenance
) -> ImageSet:
    """Two columns, image decoded to RGB and label int64 in [0, len(classes)): the same for every source."""
    import datasets

    missing = [c for c in (image_col, label_col) if c not in ds.column_names]
    if missing:
        raise ZooRankError(
            f"{spec.name} has no column {missing[0]!r}; its columns are {ds.column_names}; "
            "set image_column/label_column in its DatasetSpec"
        )
    ds = ds.select_columns([image_col, label_col])
    label_feature = ds.features[label_col]
    with _datasets_quiet():  # the label rewrites below are seconds of work, not worth a progress bar
        if isinstance(label_feature, datasets.ClassLabel):
            classes = classes or list(label_feature.names)
        elif getattr(label_feature, "dtype", "") in ("string", "large_string"):
            ds = ds.class_encode_column(label_col)  # sorted names -> codes
            classes = list(ds.features[label_col].names)
        if image_col != "image" or label_col != "label":
            ds = ds.rename_columns({image_col: "image", label_col: "label"})
        # Image -> Image(mode="RGB") changes the schema only. A label cast would rewrite the whole dataset
        # (datasets casts non-decodable features with a map), so ClassLabel (int64 codes) and int64 stay.
        ds = ds.cast_column("image", datasets.Image(mode="RGB"))
        if getattr(ds.features["label"], "dtype", None) != "int64":
            ds = ds.cast_column("label", datasets.Value("int64"))
    labels = _label_column(ds)
    if len(labels) == 0:
        raise ZooRankError(f"{spec.name}:{split} has no rows; pick another split or check the files")
    if labels.min() < 0:
        raise ZooRankError(
            f"{spec.name}:{split} has {int((labels < 0).sum())} rows with negative labels (unlabelled); "
            "use a labelled split"
        )
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1)]
    if labels.max() >= len(classes):
        raise ZooRankError(
            f"{spec.name}:{split} has label {int(labels.max())} but only {len(classes)} class names; "
            "fix the class names (parquet metadata or classes.json) or the labels"
        )
    return ImageSet(ds, spec.name, split, list(classes), _digest(provenance), spec.metric, provenance)


def _label_column(ds) -> np.ndarray:
    """(N,) int64 labels through arrow (datasets' numpy formatter takes seconds on 60k rows)."""
    return (
        ds.select_columns(["label"]).with_format("arrow")[:]["label"].to_numpy().astype(np.int64, copy=False)
    )


def _call_datasets(what: str, load: Callable, *, hub: bool = False):
    """`load()`, with any error of datasets / huggingface_hub turned into a one-line ZooRankError."""
    try:
        # Reading local files takes seconds, and their "Generating data split" bars only clutter the
        # extraction's own progress; a Hub download keeps its bars.
        with contextlib.nullcontext() if hub else _datasets_quiet():
            return load()
    except ZooRankError:
        raise
    # datasets and huggingface_hub raise ConnectionError, FileNotFoundError, ValueError, ...: all mean "cannot".
    except Exception as err:
        first_line = (str(err).strip().splitlines() or [""])[0][:250]
        fix = (
            "it needs network or a copy in the Hugging Face datasets cache; offline, save it once with "
            "ds.to_parquet('x.parquet') and pass the path, or use a built-in set (fashion-mnist, digits)"
            if hub
            else "check the files"
        )
        raise ZooRankError(f"could not {what} ({type(err).__name__}: {first_line}); {fix}") from err


@contextlib.contextmanager
def _datasets_quiet() -> Iterator[None]:
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
