"""Local sources: a parquet file, a folder of parquet files, or an image folder (one sub-folder per class).

Splits come from file names as datasets infers them (train*, test*, validation*, or train/, test/
sub-folders). The fingerprint names the files by name, size and their first and last MiB, never their
modification times: a copied file keeps its fingerprint, a changed one gets another.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from zoo_rank._paths import cache_root, write_text_atomic
from zoo_rank._validation import ZooRankError
from zoo_rank.data.images import (
    _IMAGE_COLUMNS,
    _LABEL_COLUMNS,
    DATA_FORMAT,
    ImageSet,
    _call_datasets,
    _digest,
    _image_set,
    _open_once,
)
from zoo_rank.data.registry import DatasetSpec, shared_data_dir

_SAMPLE_BYTES = 1 << 20  # local files are fingerprinted by name, size and their first and last MiB


def _load_local(spec: DatasetSpec, split: str) -> ImageSet:
    """The split's files, opened once per process while their names, sizes and mtimes stay the same."""
    path = _local_path(spec)
    root, builder, files_by_split, split = _find_files(path, spec, split)
    source_split = spec.splits.get(split, split)
    if source_split not in files_by_split:
        raise ZooRankError(
            f"{spec.name} has no split '{split}'; found splits: {', '.join(files_by_split)}; "
            f"pick one with {spec.name}:{next(iter(files_by_split))}"
        )
    files = [Path(f) for f in sorted(files_by_split[source_split])]
    stats = [(str(f.relative_to(root)), f.stat()) for f in files]
    seen = tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats)
    return _open_once(
        ("local", repr(spec), split, str(root), seen),
        lambda: _read_local(spec, split, path, root, builder, files, stats),
    )


def _local_path(spec: DatasetSpec) -> Path:
    path = Path(spec.location)
    if not path.is_absolute():
        path = shared_data_dir() / path
        if not path.exists():
            raise ZooRankError(
                f"{spec.name} reads {path}, which is absent; it ships beside the repository in ../shared/data "
                "(set ZOO_RANK_SHARED_DATA to its folder) or load the parquet file by path"
            )
    return path


def _find_files(path: Path, spec: DatasetSpec, split: str) -> tuple[Path, str, dict[str, list[str]], str]:
    """(root, builder "parquet" | "imagefolder", split -> files, the split to read) of a file or folder."""
    from datasets.data_files import DataFilesDict, get_data_patterns
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    if path.is_file():
        return path.parent, "parquet", {spec.default_split: [str(path)]}, split
    builder = "parquet" if any(path.rglob("*.parquet")) else "imagefolder"
    extensions = [".parquet"] if builder == "parquet" else list(ImageFolder.EXTENSIONS)
    try:
        found = DataFilesDict.from_patterns(get_data_patterns(str(path)), str(path), allowed_extensions=extensions)
    except Exception as err:  # datasets raises EmptyDatasetError / FileNotFoundError for empty folders
        raise ZooRankError(
            f"found no {builder} data in {path} ({type(err).__name__}); expected parquet files or one "
            "sub-folder of images per class"
        ) from err
    files_by_split = {str(s): list(files) for s, files in found.items() if files}
    # A folder's own split names pass through, except a plain spec's default "train" for a lone split.
    if split not in files_by_split and len(files_by_split) == 1 and split == spec.default_split and not spec.splits:
        split = next(iter(files_by_split))
    return path, builder, files_by_split, split


def _read_local(
    spec: DatasetSpec, split: str, path: Path, root: Path, builder: str, files: list[Path], stats: list
) -> ImageSet:
    import datasets

    names = [str(f) for f in files]
    classes: list[str] | None = None
    if builder == "parquet":
        image_col, label_col, classes = _parquet_columns(files[0], spec)
        features = datasets.Features({image_col: datasets.Image(), label_col: datasets.Value("int64")})
        ds = _call_datasets(
            f"read {path}",
            lambda: datasets.load_dataset(
                "parquet", data_files={"data": names}, split="data", columns=[image_col, label_col], features=features
            ),
        )
    else:
        ds = _call_datasets(
            f"read the image folder {path}",
            lambda: datasets.load_dataset("imagefolder", data_files={"data": names}, split="data"),
        )
        if "label" not in ds.column_names:
            raise ZooRankError(_no_labels_message(path, files, split))
        image_col, label_col = "image", "label"
    provenance = {
        "kind": "local",
        "format": DATA_FORMAT,
        "builder": builder,
        "split": split,
        "columns": [image_col, label_col],
        "files": _files_digest(files, root, stats),
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


def _files_digest(files: list[Path], root: Path, stats: list[tuple[str, os.stat_result]] | None = None) -> str:
    """sha256 over each file's name (relative to root), size and first and last MiB; no mtimes in it.

    A folder of a million images would be read whole on every load, so the result is remembered under
    ``<cache root>/fingerprints/`` keyed by the files' names, sizes and mtimes: a touched file costs a
    re-read (with the same result), an unchanged folder only a stat per file. `stats`: the files'
    (name relative to root, os.stat) when the caller has them already.
    """
    stats = stats if stats is not None else [(str(f.relative_to(root)), f.stat()) for f in files]
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
