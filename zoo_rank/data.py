"""Labelled image sets through the ``datasets`` library; class-balanced subsets written down as manifests.

Spec syntax of ``load_images(spec, split=None)``; a ``:SPLIT`` suffix picks the split (``split=`` wins):

- ``fashion-mnist[:train|test]``: built-in, offline, Debian's ``dataset-fashion-mnist`` idx files.
- ``digits[:train|test]``: built-in, offline, scikit-learn's 8x8 digits with a fixed stratified split.
- ``imagenet-sample``, ``cifar10-local[:train|test]``: ../shared/data beside the repository (or
  ``$ZOO_RANK_SHARED_DATA``): one ImageNet image per class; CIFAR-10 as JPEG.
- ``imagenet-1k[:train|val]``: ImageNet-1k on the Hub (gated: accept its terms, log in), ``PRETRAINING``.
- ``pets``, ``flowers102``, ``aircraft``, ... ``[:train|val|test]``: the paper's ten downstream sets
  (``DOWNSTREAM``) on the Hugging Face Hub; they need network or a copy in the datasets cache.
- ``path/to/file.parquet``: a parquet file in the datasets image layout (image struct + int label).
- ``path/to/folder[:SPLIT]``: a folder of parquet files (splits from file names as datasets infers them:
  train*, test*, validation*) or an image folder (one sub-folder per class, optionally under train/, test/).
- ``hf:org/name[:SPLIT]`` or ``org/name[:SPLIT]``: any Hub image dataset with image and label columns.

Every set comes back as an ``ImageSet`` whose ``dataset`` has exactly two columns: ``image`` (datasets
``Image(mode="RGB")``: grayscale, palette and RGBA images decode to RGB PIL images) and ``label`` (int64, an
index into ``classes``). Its ``fingerprint`` names the source and the split's content without the file
modification times, so a changed file changes it and a copied one does not.

Subsets: ``balanced_subset(images, n_per_class, seed)`` draws n images per class (all of a class that has
fewer, recorded in the manifest) reproducibly on any machine; ``Manifest.save``/``Manifest.load`` write it
down as JSON, and its ``digest()`` goes into cache keys. Add your own offline set to ``BUILTIN`` or
``DOWNSTREAM`` as a ``DatasetSpec`` (data, not code), e.g. with ``kind="local"`` and a parquet path.
"""

from __future__ import annotations

import contextlib
import difflib
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo_rank._console import warn
from zoo_rank._paths import cache_root, file_sha256, write_text_atomic
from zoo_rank._validation import ZooRankError

# Bump when the way a source becomes an ImageSet changes (column handling, decoding): fingerprints change.
DATA_FORMAT = 1
MANIFEST_FORMAT = "zoo_rank.manifest/1"
_IMAGE_COLUMNS = ("image", "img")
_LABEL_COLUMNS = ("label", "labels", "fine_label", "target", "y")
_SAMPLE_BYTES = 1 << 20  # local files are fingerprinted by name, size and their first and last MiB


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

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def known_datasets() -> dict[str, DatasetSpec]:
    """Every named set: the built-in offline ones, ImageNet-1k, then the paper's downstream sets."""
    return {**BUILTIN, **PRETRAINING, **DOWNSTREAM}


@dataclass
class ImageSet:
    """A labelled image set: ``dataset`` has columns image (RGB PIL on access) and label (int64 in [0, K)).

    The label feature is ``Value("int64")`` or a ``ClassLabel`` (int64 codes; its dtype reads "int64");
    ``classes[label]`` is the class name either way.
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


def load_images(spec: str, split: str | None = None) -> ImageSet:
    """Load a labelled image set from a spec (syntax in the module docstring).

    Raises ZooRankError for unknown names (listing the known ones), absent files, unknown splits and Hub
    sets that cannot be reached (fast when ``HF_DATASETS_OFFLINE=1``).
    """
    dataset_spec, suffix_split = _resolve(spec)
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


# ---- spec resolution ---------------------------------------------------------------------------------


def _resolve(spec: str) -> tuple[DatasetSpec, str | None]:
    """Registry names first (``./name`` reaches a local folder of the same name), then paths, then Hub ids."""
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


# ---- loaders: one per kind ---------------------------------------------------------------------------


def _load_local(spec: DatasetSpec, split: str) -> ImageSet:
    import datasets
    from datasets.data_files import DataFilesDict, get_data_patterns
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    path = Path(spec.location)
    if not path.is_absolute():
        path = shared_data_dir() / path
        if not path.exists():
            raise ZooRankError(
                f"{spec.name} reads {path}, which is absent; it ships beside the repository in ../shared/data "
                "(set ZOO_RANK_SHARED_DATA to its folder) or load the parquet file by path"
            )
    if path.is_file():
        root, files_by_split, builder = path.parent, {spec.default_split: [str(path)]}, "parquet"
    else:
        root = path
        builder = "parquet" if any(path.rglob("*.parquet")) else "imagefolder"
        extensions = [".parquet"] if builder == "parquet" else list(ImageFolder.EXTENSIONS)
        try:
            found = DataFilesDict.from_patterns(
                get_data_patterns(str(path)), str(path), allowed_extensions=extensions
            )
        except Exception as err:  # datasets raises EmptyDatasetError / FileNotFoundError for empty folders
            raise ZooRankError(
                f"found no {builder} data in {path} ({type(err).__name__}); expected parquet files or one "
                "sub-folder of images per class"
            ) from err
        files_by_split = {str(s): list(files) for s, files in found.items() if files}
        # A folder's own split names pass through, except a plain spec's default "train" for a lone split.
        if (
            split not in files_by_split
            and len(files_by_split) == 1
            and split == spec.default_split
            and not spec.splits
        ):
            split = next(iter(files_by_split))
    source_split = spec.splits.get(split, split)
    if source_split not in files_by_split:
        raise ZooRankError(
            f"{spec.name} has no split '{split}'; found splits: {', '.join(files_by_split)}; "
            f"pick one with {spec.name}:{next(iter(files_by_split))}"
        )
    files = sorted(files_by_split[source_split])
    classes: list[str] | None = None
    if builder == "parquet":
        image_col, label_col, classes = _parquet_columns(Path(files[0]), spec)
        features = datasets.Features({image_col: datasets.Image(), label_col: datasets.Value("int64")})
        ds = _call_datasets(
            f"read {path}",
            lambda: datasets.load_dataset(
                "parquet",
                data_files={"data": files},
                split="data",
                columns=[image_col, label_col],
                features=features,
            ),
        )
    else:
        ds = _call_datasets(
            f"read the image folder {path}",
            lambda: datasets.load_dataset("imagefolder", data_files={"data": files}, split="data"),
        )
        if "label" not in ds.column_names:
            raise ZooRankError(_no_labels_message(path, [Path(f) for f in files], split))
        image_col, label_col = "image", "label"
    provenance = {
        "kind": "local",
        "format": DATA_FORMAT,
        "builder": builder,
        "split": split,
        "columns": [image_col, label_col],
        "files": _files_digest([Path(f) for f in files], root),
    }
    return _image_set(ds, image_col, label_col, classes, spec=spec, split=split, provenance=provenance)


def _no_labels_message(path: Path, files: list[Path], split: str) -> str:
    """Why datasets found no labels in an image folder: one class sub-folder only, or none at all."""
    folders = {f.parent for f in files}
    if len(folders) == 1:
        (folder,) = folders
        if folder != path and folder.name != split:  # folder/cat/*.jpg (or folder/train/cat/*.jpg)
            return (
                f"{path} has one class sub-folder only ('{folder.name}', {len(files)} images); collapse metrics and "
                "probes compare classes, so add a sub-folder per class (folder/cat/1.jpg, folder/dog/2.jpg)"
            )
    return (
        f"{path} has images but no class sub-folders; put each class's images in its own sub-folder "
        "(folder/cat/1.jpg, folder/dog/2.jpg)"
    )


def _load_hub(spec: DatasetSpec, split: str) -> ImageSet:
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


def _load_builtin(spec: DatasetSpec, split: str) -> ImageSet:
    ds, classes, sources = _BUILTIN_BUILDERS[spec.name](spec, spec.splits.get(split, split))
    provenance = {
        "kind": "builtin",
        "format": DATA_FORMAT,
        "name": spec.name,
        "split": split,
        "files": [[Path(f).name, file_sha256(f)] for f in sources],
    }
    return _image_set(ds, "image", "label", classes, spec=spec, split=split, provenance=provenance)


_LOADERS: dict[str, Callable[[DatasetSpec, str], ImageSet]] = {
    "local": _load_local,
    "hub": _load_hub,
    "builtin": _load_builtin,
}


def _image_set(
    ds, image_col: str, label_col: str, classes: list[str] | None, *, spec, split, provenance
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


# ---- local files -------------------------------------------------------------------------------------


def shared_data_dir() -> Path:
    """``$ZOO_RANK_SHARED_DATA``, else ../shared/data beside the repository checkout."""
    env = os.environ.get("ZOO_RANK_SHARED_DATA")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def _parquet_columns(path: Path, spec: DatasetSpec) -> tuple[str, str, list[str] | None]:
    """Image column, label column and class names of a parquet file in the datasets image layout."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    image_like = [
        f.name
        for f in schema
        if pa.types.is_struct(f.type)
        and {f.type.field(i).name for i in range(f.type.num_fields)} >= {"bytes"}
    ]
    image_col = spec.image_column or next((c for c in _IMAGE_COLUMNS if c in schema.names), None)
    image_col = image_col or (image_like[0] if len(image_like) == 1 else None)
    label_col = spec.label_column or next((c for c in _LABEL_COLUMNS if c in schema.names), None)
    if image_col is None or label_col is None:
        raise ZooRankError(
            f"{path} has columns {schema.names}; expected an image column (struct of bytes and path, as datasets "
            f"writes it) named one of {_IMAGE_COLUMNS} and an integer label column named one of {_LABEL_COLUMNS}"
        )
    # Class names: the datasets metadata (a ClassLabel; ImageNet's names repeat, which datasets' ClassLabel
    # refuses, hence read here), else classes.json beside the file, else the label values themselves.
    classes = None
    meta = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))
    label_meta = meta.get("info", {}).get("features", {}).get(label_col, {})
    if label_meta.get("_type") == "ClassLabel" and label_meta.get("names"):
        classes = list(label_meta["names"])
    elif (path.parent / "classes.json").is_file():
        classes = list(json.loads((path.parent / "classes.json").read_text())["names"])
    return image_col, label_col, classes


def _files_digest(files: list[Path], root: Path) -> str:
    """sha256 over each file's name (relative to root), size and first and last MiB; no mtimes in it.

    A folder of a million images would be read whole on every load, so the result is remembered under
    ``<cache root>/fingerprints/`` keyed by the files' names, sizes and mtimes: a touched file costs a
    re-read (with the same result), an unchanged folder only a stat per file.
    """
    stats = [(str(f.relative_to(root)), f.stat()) for f in files]
    stat_key = _digest(
        {"root": str(root), "files": [[name, st.st_size, st.st_mtime_ns] for name, st in stats]}
    )
    record = cache_root() / "fingerprints" / f"{stat_key}.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        return json.loads(record.read_text())["digest"]
    h = hashlib.sha256()
    for (name, st), path in zip(stats, files, strict=True):
        h.update(f"{name}\0{st.st_size}\0".encode())
        with open(path, "rb") as f:
            h.update(f.read(_SAMPLE_BYTES))
            if st.st_size > 2 * _SAMPLE_BYTES:
                f.seek(st.st_size - _SAMPLE_BYTES)
            h.update(f.read(_SAMPLE_BYTES))
    digest = h.hexdigest()
    with contextlib.suppress(OSError):  # a read-only cache only costs a re-read next time
        write_text_atomic(record, json.dumps({"root": str(root), "n_files": len(files), "digest": digest}))
    return digest


# ---- the Hub -----------------------------------------------------------------------------------------


def _call_datasets(what: str, load: Callable, *, hub: bool = False):
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


# ---- built-in offline sets ---------------------------------------------------------------------------


def _fashion_mnist(spec: DatasetSpec, prefix: str):
    folder = Path(spec.location)
    images_file = folder / f"{prefix}-images-idx3-ubyte.gz"
    labels_file = folder / f"{prefix}-labels-idx1-ubyte.gz"
    if not (images_file.is_file() and labels_file.is_file()):
        raise ZooRankError(
            f"Fashion-MNIST files are absent from {folder} (looked for {images_file.name}); install them with "
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or load another copy as a parquet file"
        )

    def build():
        images = _read_idx(images_file, magic=2051)
        labels = _read_idx(labels_file, magic=2049)
        return _arrow_dataset(images, labels)

    key = f"fashion-mnist-{prefix}-v{DATA_FORMAT}-{file_sha256(images_file)[:12]}-{file_sha256(labels_file)[:12]}"
    return _disk_cached(key, build), list(FASHION_MNIST_CLASSES), [images_file, labels_file]


def _digits(spec: DatasetSpec, split: str):
    import importlib.resources

    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    source = Path(str(importlib.resources.files("sklearn.datasets.data") / "digits.csv.gz"))

    def build():
        digits = load_digits()
        # Values 0..16 -> 0..255 gray; the backbone's own transform upsamples 8x8 like any small image.
        images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
        rows = np.arange(len(images))
        train, test = train_test_split(rows, test_size=0.25, stratify=digits.target, random_state=0)
        keep = np.sort(train if split == "train" else test)
        return _arrow_dataset(images[keep], digits.target[keep])

    key = f"digits-{split}-v{DATA_FORMAT}-{file_sha256(source)[:12]}"
    return _disk_cached(key, build), [str(d) for d in range(10)], [source]


_BUILTIN_BUILDERS: dict[str, Callable] = {"fashion-mnist": _fashion_mnist, "digits": _digits}


def _read_idx(path: Path, *, magic: int) -> np.ndarray:
    """An idx file (MNIST format): big-endian int32 magic and dims, then uint8 data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    header = np.frombuffer(raw, dtype=">i4", count=1 + ndim)
    if int(header[0]) != magic:
        raise ZooRankError(
            f"{path} is not an idx file with magic {magic} (found {int(header[0])}); reinstall it"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=4 * (1 + ndim)).reshape(
        tuple(int(d) for d in header[1:])
    )


def _arrow_dataset(images: np.ndarray, labels: np.ndarray):
    """(N, H, W) uint8 grayscale + (N,) labels -> datasets.Dataset with an Image column.

    Each image is stored as a binary PGM (a 13-byte header + the raw pixels): lossless, decoded by PIL like
    any file, and ~50x faster to build than PNG (70k Fashion-MNIST images: well under a second).
    """
    import datasets
    import pyarrow as pa

    n, height, width = images.shape
    header = f"P5 {width} {height} 255\n".encode()
    blobs = [header + image.tobytes() for image in images]
    image_column = pa.StructArray.from_arrays(
        [pa.array(blobs, pa.binary()), pa.nulls(n, pa.string())], names=["bytes", "path"]
    )
    table = pa.table({"image": image_column, "label": pa.array(np.asarray(labels, dtype=np.int64))})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset(datasets.table.InMemoryTable(table), info=datasets.DatasetInfo(features=features))


def _disk_cached(key: str, build: Callable):
    """Build a dataset once into ``<cache root>/datasets/<key>`` (atomic rename), then memory-map it."""
    import datasets

    folder = cache_root() / "datasets" / key
    if (folder / "dataset_info.json").is_file():
        with contextlib.suppress(Exception):  # a damaged folder is rebuilt below
            return datasets.load_from_disk(str(folder))
        shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}."))
    try:
        with _datasets_quiet():
            build().save_to_disk(str(staging))
        try:
            os.rename(staging, folder)
        except OSError:
            if not (folder / "dataset_info.json").is_file():
                raise  # not a lost race with another process
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return datasets.load_from_disk(str(folder))


@contextlib.contextmanager
def _datasets_quiet():
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


# ---- subsets and manifests ---------------------------------------------------------------------------


@dataclass
class Manifest:
    """Which rows of an ImageSet a run uses: ``indices`` (sorted int64), how they were drawn, from what."""

    indices: np.ndarray
    n_per_class: int
    seed: int
    source_fingerprint: str
    dataset: str = ""
    split: str = ""
    short_classes: dict[int, int] = field(default_factory=dict)  # class -> rows available, when < n_per_class

    def __post_init__(self):
        self.indices = np.ascontiguousarray(self.indices, dtype=np.int64)

    def digest(self) -> str:
        """sha256 of what defines the selection: rows, n_per_class, seed and the source fingerprint."""
        return _digest(
            {
                "format": MANIFEST_FORMAT,
                "indices": hashlib.sha256(self.indices.astype("<i8").tobytes()).hexdigest(),
                "n_per_class": self.n_per_class,
                "seed": self.seed,
                "source_fingerprint": self.source_fingerprint,
            }
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the manifest as JSON (atomically); returns the path."""
        path = Path(path)
        record = {
            "format": MANIFEST_FORMAT,
            "digest": self.digest(),
            "dataset": self.dataset,
            "split": self.split,
            "source_fingerprint": self.source_fingerprint,
            "n_per_class": self.n_per_class,
            "seed": self.seed,
            "n_rows": len(self.indices),
            "short_classes": {str(k): v for k, v in sorted(self.short_classes.items())},
            "indices": self.indices.tolist(),
        }
        write_text_atomic(path, json.dumps(record, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Manifest:
        """Read a manifest written by ``save``; raises ZooRankError when it is damaged or edited."""
        try:
            record = json.loads(Path(path).read_text())
            manifest = cls(
                indices=np.asarray(record["indices"], dtype=np.int64),
                n_per_class=int(record["n_per_class"]),
                seed=int(record["seed"]),
                source_fingerprint=str(record["source_fingerprint"]),
                dataset=record.get("dataset", ""),
                split=record.get("split", ""),
                short_classes={int(k): int(v) for k, v in record.get("short_classes", {}).items()},
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ZooRankError(
                f"cannot read manifest {path} ({type(err).__name__}: {err}); write it again"
            ) from err
        if record.get("format") != MANIFEST_FORMAT or record.get("digest") != manifest.digest():
            raise ZooRankError(
                f"manifest {path} does not match its digest (edited or damaged); draw it again with balanced_subset"
            )
        return manifest


def balanced_indices(labels: Any, n_per_class: int, seed: int = 0) -> tuple[np.ndarray, dict[int, int]]:
    """Draw ``n_per_class`` rows of every class: ``(indices (M,) sorted int64, short_classes)``.

    Works on any (N,) non-negative integer labels. Each class draws from its own stream, PCG64 seeded by
    SeedSequence([seed, class]): a class's choice does not depend on the other classes, and the raw PCG64
    output (unlike Generator.choice/permutation algorithms) is guaranteed the same on every machine and
    numpy version. Rows of a class are ranked by one random 64-bit key each; the n smallest are taken.
    A class with fewer than n rows gives all of them and is listed in short_classes (class -> count).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ZooRankError(f"expected 1D integer labels, got shape {labels.shape} dtype {labels.dtype}")
    check_subset_args(n_per_class, seed)
    if len(labels) and labels.min() < 0:
        raise ZooRankError(f"labels must be >= 0 (found {int(labels.min())}); drop unlabelled rows first")
    order = np.argsort(labels, kind="stable")  # rows grouped by class, ascending within each class
    classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    chosen, short = [], {}
    for cls, start, count in zip(classes.tolist(), starts, counts, strict=True):
        rows = order[start : start + count]
        if count <= n_per_class:
            chosen.append(rows)
            if count < n_per_class:
                short[int(cls)] = int(count)
            continue
        keys = np.random.PCG64(np.random.SeedSequence([seed, int(cls)])).random_raw(int(count))
        chosen.append(rows[np.argsort(keys, kind="stable")[:n_per_class]])
    indices = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)
    return indices.astype(np.int64), short


def check_subset_args(n_per_class: int | None, seed: int) -> None:
    """Raise unless n_per_class (None = every image) is >= 1 and seed >= 0."""
    if (n_per_class is not None and n_per_class < 1) or seed < 0:
        raise ZooRankError(
            f"need n_per_class >= 1 and seed >= 0, got n_per_class={n_per_class}, seed={seed}; "
            "pass e.g. --n-per-class 50 --seed 0"
        )


def balanced_subset(images: ImageSet, n_per_class: int, seed: int = 0) -> Manifest:
    """A class-balanced subset of an ImageSet (the paper: 50 ImageNet images per class), as a Manifest.

    Classes with fewer than n_per_class images give all they have, with a warning (once per process and
    subset) that names them and their counts.
    """
    indices, short = balanced_indices(images.labels, n_per_class, seed)
    manifest = Manifest(indices, n_per_class, seed, images.fingerprint, images.name, images.split, short)
    if short and manifest.digest() not in _WARNED_SHORT:
        _WARNED_SHORT.add(manifest.digest())
        warn(short_classes_message(images, manifest))
    return manifest


_WARNED_SHORT: set[str] = set()


def short_classes_message(images: ImageSet, manifest: Manifest) -> str:
    """'3 of 10 classes of NAME:SPLIT have fewer than --n-per-class N images (cat 12, ...)': the numbers."""
    short = manifest.short_classes
    shown = ", ".join(f"{images.classes[k]} {n}" for k, n in sorted(short.items())[:8])
    more = ", ..." if len(short) > 8 else ""
    n_classes = len(np.unique(images.labels))
    return (
        f"{len(short)} of {n_classes} classes of {images.name}:{images.split} have fewer than --n-per-class "
        f"{manifest.n_per_class} images ({shown}{more}); they contribute all they have, so the subset holds "
        f"{len(manifest.indices)} images, not {n_classes * manifest.n_per_class}, and is not balanced"
    )


def _digest(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]
