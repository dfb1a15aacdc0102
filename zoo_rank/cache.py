"""The feature cache: one parquet file per key, written in shards as extraction goes, committed atomically.

Layout under the cache root (``$ZOO_RANK_CACHE``, else ``platformdirs.user_cache_dir("zoo_rank")``)::

    features/<key>.parquet   a committed entry; columns row (int64, the image's row in the dataset),
                             label (int64) and features (Array(Float32, p)); the entry's metadata (model,
                             dataset, classes, dims, timings, versions, key fields) is the JSON under
                             ``zoo_rank`` in the parquet file metadata
    features/<key>.parts/    shards of an entry in progress, ``part-<first>-<end>.parquet`` for manifest
                             positions [first, end); each is written to a temporary name, then os.replace'd
    features/<key>.lock      flock'ed by the one process that extracts the entry; others wait, then reuse

The key hashes every field that changes the numbers and nothing else (like timm's pretrained configs carry
the preprocessing): model name + weights digest, the eval data config (the transform is built from it),
dataset fingerprint + split + manifest digest, precision and the zoo_rank version. A committed entry is
read only after its key, row count, width, row indices and a CRC-32 of its columns check out; anything
else (a stale, truncated or foreign file) is reported and recomputed, never read.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fnmatch
import hashlib
import json
import os
import shutil
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from zoo_rank import __version__
from zoo_rank._console import err_console, warn
from zoo_rank._paths import cache_root
from zoo_rank._validation import ZooRankError

try:  # POSIX advisory locks; elsewhere write-to-temp + os.replace still keeps every file whole.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

META_FIELD = "zoo_rank"
SHARD_FIELD = "zoo_rank_shard"
# zstd: bf16-extracted features keep 8 mantissa bits, so their float32 bytes compress about 2x; the
# read-back rows of scripts/bench_extract.py measure the cost against numpy.load.
COMPRESSION = "zstd"


class StaleEntryError(Exception):
    """A cache file that must not be read: why is in the message."""


@dataclass(frozen=True)
class CacheKey:
    """Every field that changes the extracted numbers; `digest()` names the entry."""

    model: str
    weights_id: str
    data_config: str  # canonical JSON of timm's resolved data config (the eval transform is built from it)
    fingerprint: str  # dataset source + revision + split content
    split: str
    manifest: str  # Manifest.digest(), or "all:<n rows>"
    precision: str  # "bf16" | "fp32" (resolved, never "auto")
    version: str = __version__
    # How the pixels were made: "pil" (each model decodes and transforms with PIL, timm's own path) or
    # zoo_rank.decode.decode_spec(...) (decoded once per run: decoder, square side, resampling).
    decode: str = "pil"

    def digest(self) -> str:
        fields = asdict(self)
        if fields["decode"] == "pil":  # the PIL path's keys predate the field: its entries stay valid
            del fields["decode"]
        blob = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return _sha256(blob.encode())[:24]


def canonical_json(obj: Any) -> str:
    """Key-stable JSON: sorted keys, tuples as lists, numpy scalars as Python numbers."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        return str(o)

    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=default)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class FeatureSet:
    """Extracted features of one (model, dataset, manifest, precision).

    features: (N, p) float32, C-contiguous, writeable.  labels: (N,) int64 class codes.
    rows: (N,) int64, the row of each image in its dataset (sorted ascending; equals the manifest indices).
    meta: model, weights, dataset, split, classes, dims, manifest, precision, device, timings, versions, key.
    """

    features: np.ndarray
    labels: np.ndarray
    meta: dict
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @property
    def key(self) -> str:
        return str(self.meta.get("key", ""))

    def __repr__(self) -> str:
        n, p = self.features.shape
        return f"FeatureSet({self.meta.get('model')!r} on {self.meta.get('dataset')!r}: {n} x {p}, key={self.key})"


def checksum(rows: np.ndarray, labels: np.ndarray, features: np.ndarray) -> str:
    """CRC-32 over the three columns' bytes (several GB/s: cheap next to parquet decoding)."""
    crc = 0
    for arr in (rows, labels, features):
        crc = zlib.crc32(memoryview(np.ascontiguousarray(arr)).cast("B"), crc)
    return f"{crc:08x}"


def _frame(rows: np.ndarray, labels: np.ndarray, features: np.ndarray) -> pl.DataFrame:
    # A 2D numpy float32 matrix becomes a fixed-size Array(Float32, p) column without a per-row loop.
    return pl.DataFrame(
        [
            pl.Series("row", rows, dtype=pl.Int64),
            pl.Series("label", labels, dtype=pl.Int64),
            pl.Series("features", features),
        ]
    )


def _write_atomic(path: Path, frame: pl.DataFrame, metadata: dict[str, str]) -> None:
    """Write to a unique temporary name in the same folder, fsync, then os.replace: readers see all or nothing."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        frame.write_parquet(tmp, compression=COMPRESSION, metadata=metadata, statistics=False)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_meta(path: Path, field_name: str) -> dict:
    try:
        raw = pl.read_parquet_metadata(path)
    except Exception as err:  # truncated or not parquet at all: the footer is unreadable
        raise StaleEntryError(
            f"unreadable parquet footer ({type(err).__name__}); truncated or not a cache file"
        ) from err
    if field_name not in raw:
        raise StaleEntryError(f"no '{field_name}' metadata; not written by zoo_rank")
    try:
        return json.loads(raw[field_name])
    except json.JSONDecodeError as err:
        raise StaleEntryError("corrupt metadata JSON") from err


def _read_columns(path: Path, meta: dict, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read and verify one file: (rows (N,), labels (N,), features (N, p)); raises StaleEntryError."""
    if meta.get("key") != key:
        raise StaleEntryError(
            f"key in metadata is {meta.get('key')!r}, expected {key!r} (stale or foreign file)"
        )
    try:
        frame = pl.read_parquet(path, columns=["row", "label", "features"])
    except Exception as err:
        raise StaleEntryError(f"unreadable data ({type(err).__name__}: {err}); truncated") from err
    n, dim = int(meta.get("n", -1)), int(meta.get("dim", -1))
    if frame.height != n:
        raise StaleEntryError(f"{frame.height} rows, metadata says {n}; truncated")
    if frame.schema["features"] != pl.Array(pl.Float32, dim):
        raise StaleEntryError(
            f"features column is {frame.schema['features']}, expected Array(Float32, {dim})"
        )
    rows = frame["row"].to_numpy()
    labels = frame["label"].to_numpy()
    # to_numpy on a null-free Array column is a zero-copy (N, p) view of the arrow buffer; copy once so
    # callers get an ordinary writeable array that owns its memory (torch.from_numpy warns on read-only).
    features = np.array(frame["features"].to_numpy(), dtype=np.float32, order="C", copy=True)
    if features.shape != (n, dim):
        raise StaleEntryError(f"features have shape {features.shape}, expected ({n}, {dim})")
    got = checksum(rows, labels, features)
    if got != meta.get("checksum"):
        raise StaleEntryError(f"checksum {got} differs from metadata {meta.get('checksum')}; corrupt")
    return np.array(rows, dtype=np.int64), np.array(labels, dtype=np.int64), features


class Entry:
    """One cache entry: the committed file, its in-progress shards and its lock.

    `key` is CacheKey.digest(); `expected_rows` (N,) the sorted dataset rows the entry must hold.
    """

    def __init__(self, root: Path, key: str):
        self.root = root
        self.key = key
        folder = root / "features"
        self.path = folder / f"{key}.parquet"
        self.parts = folder / f"{key}.parts"
        self.lock_path = folder / f"{key}.lock"

    # -- committed entry ------------------------------------------------------------------------

    def read(self, expected_rows: np.ndarray | None = None) -> FeatureSet:
        """The committed entry, verified; raises FileNotFoundError when absent, StaleEntryError when bad."""
        if not self.path.exists():
            raise FileNotFoundError(self.path)
        meta = _read_meta(self.path, META_FIELD)
        rows, labels, features = _read_columns(self.path, meta, self.key)
        if expected_rows is not None and meta.get("skipped_images"):  # unreadable images left out on purpose
            expected_rows = np.setdiff1d(expected_rows, [s["row"] for s in meta["skipped_images"]])
        if expected_rows is not None and not np.array_equal(rows, expected_rows):
            raise StaleEntryError(f"rows differ from the manifest's {len(expected_rows)} rows")
        return FeatureSet(features=features, labels=labels, meta=meta, rows=rows)

    def read_valid(self, expected_rows: np.ndarray | None = None) -> FeatureSet | None:
        """The committed entry, or None when absent; a bad file is reported, deleted and treated as absent."""
        try:
            return self.read(expected_rows)
        except FileNotFoundError:
            return None
        except StaleEntryError as err:
            warn(f"cache entry {self.path} is not usable ({err}); removing it and recomputing.")
            self.path.unlink(missing_ok=True)
            return None

    def commit(self, rows: np.ndarray, labels: np.ndarray, features: np.ndarray, meta: dict) -> FeatureSet:
        """Write the whole entry atomically and drop its shards.

        rows (N,) int64 sorted unique, labels (N,) int64, features (N, p) float32. `meta` gains n, dim,
        checksum, key and created.
        """
        features = np.ascontiguousarray(features, dtype=np.float32)
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        meta = {
            **meta,
            "key": self.key,
            "n": len(rows),
            "dim": features.shape[1],
            "checksum": checksum(rows, labels, features),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.path, _frame(rows, labels, features), {META_FIELD: canonical_json(meta)})
        shutil.rmtree(self.parts, ignore_errors=True)
        return FeatureSet(features=features, labels=labels, meta=meta, rows=rows)

    # -- shards of an entry in progress ---------------------------------------------------------

    def write_shard(
        self, first: int, end: int, rows: np.ndarray, labels: np.ndarray, features: np.ndarray
    ) -> Path:
        """Persist manifest positions [first, end) (their rows, labels, (n, p) features) as one atomic shard."""
        self.parts.mkdir(parents=True, exist_ok=True)
        path = self.parts / f"part-{first:010d}-{end:010d}.parquet"
        shard_meta = {
            "key": self.key,
            "n": len(rows),
            "dim": features.shape[1],
            "checksum": checksum(rows, labels, features),
        }
        _write_atomic(path, _frame(rows, labels, features), {SHARD_FIELD: canonical_json(shard_meta)})
        return path

    def read_shards(
        self, first: int = 0, end: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Rows, labels and features of every valid shard overlapping manifest positions [first, end).

        Bad shards (truncated, foreign key, wrong checksum) are deleted with a warning. Rows may repeat
        across shards; callers deduplicate. Returns None when there is nothing usable.
        """
        if not self.parts.is_dir():
            return None
        found = []
        for path in sorted(self.parts.glob("part-*-*.parquet")):
            try:
                lo, hi = (int(s) for s in path.stem.split("-")[1:3])
            except ValueError:
                continue
            if hi <= first or (end is not None and lo >= end):
                continue
            try:
                found.append(_read_columns(path, _read_meta(path, SHARD_FIELD), self.key))
            except StaleEntryError as err:
                warn(f"cache shard {path} is not usable ({err}); removing it, its rows will be recomputed.")
                path.unlink(missing_ok=True)
            except FileNotFoundError:  # another rank's commit removed it meanwhile
                continue
        if not found:
            return None
        rows, labels, feats = zip(*found, strict=True)
        return np.concatenate(rows), np.concatenate(labels), np.concatenate(feats)

    def clear(self) -> None:
        """Remove the committed file and all shards (not the lock file, which other processes may hold)."""
        self.path.unlink(missing_ok=True)
        shutil.rmtree(self.parts, ignore_errors=True)

    def drop_lock_file(self) -> None:
        """Delete the lock file unless a process holds it (unlinking a held lock would let a third one in)."""
        if fcntl is None or not self.lock_path.exists():  # pragma: no cover
            return
        with open(self.lock_path, "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            self.lock_path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self, *, quiet: bool = False) -> Iterator[None]:
        """Hold an exclusive advisory lock on the entry; wait (saying so) while another process holds it.

        The kernel drops an flock when its holder dies, so a killed run never leaves a stale lock.
        """
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(self.lock_path, "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not quiet:
                    err_console().print(
                        f"waiting for another process extracting this entry ({self.lock_path}) ..."
                    )
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# ---- what an entry holds --------------------------------------------------------------------------


@dataclass
class Request:
    """A resolved extraction request.

    rows: (N,) int64 sorted dataset rows to extract (the manifest's indices, or all rows).
    manifest: {"digest", "n_per_class", "seed"}; asked: the model/data/split as the caller named them.
    """

    backbone: Any
    images: Any
    rows: np.ndarray
    manifest: dict
    asked: dict

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


def resolve_request(
    model: Any,
    data: Any,
    *,
    split: str | None = None,
    n_per_class: int | None = None,
    seed: int = 0,
    manifest: Any = None,
) -> Request:
    """Build the backbone and open the images when given as specs; choose the rows (a balanced subset or all).

    `manifest` (a zoo_rank.data.Manifest or a path to one) pins the rows exactly, e.g. from another machine.
    """
    if isinstance(model, str):
        from zoo_rank.models import create_backbone

        backbone = create_backbone(model)
    else:
        backbone = model
    if isinstance(data, str):
        from zoo_rank.data import load_images

        images = load_images(data, split)
    else:
        images = data
        if split is not None and split != images.split:
            raise ZooRankError(
                f"split={split!r} was passed with an ImageSet of split {images.split!r}; drop split or load that split."
            )
    n_rows = len(images.dataset)
    if manifest is not None:
        from zoo_rank.data import Manifest

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
    elif n_per_class is not None:
        from zoo_rank.data import balanced_subset

        m = balanced_subset(images, n_per_class, seed)
        rows = np.asarray(m.indices, dtype=np.int64)
        info = {"digest": m.digest(), "n_per_class": n_per_class, "seed": seed}
    else:
        rows = np.arange(n_rows, dtype=np.int64)
        info = {"digest": f"all:{n_rows}", "n_per_class": None, "seed": None}
    rows = np.unique(rows)  # sorted, unique: the order of every entry
    asked = {
        "model": model if isinstance(model, str) else backbone.name,
        "data": data if isinstance(data, str) else images.name,
        "split": split,
    }
    return Request(backbone=backbone, images=images, rows=rows, manifest=info, asked=asked)


# ---- listing and removing -------------------------------------------------------------------------


@dataclass
class EntryInfo:
    """One row of `zoo-rank cache ls`: a committed entry, or a partial one (shards only)."""

    key: str
    path: Path
    size: int  # bytes on disk, shards included
    meta: dict
    status: str  # "ok" | "partial" | "unreadable: ..."


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def list_entries(cache_dir: str | os.PathLike | None = None) -> list[EntryInfo]:
    """All entries under the cache root, newest first; reads only parquet footers."""
    folder = cache_root(cache_dir) / "features"
    if not folder.is_dir():
        return []
    keys = {
        p.name.split(".")[0]
        for p in folder.iterdir()
        if not p.name.startswith(".") and not p.name.endswith(".lock")
    }
    infos = []
    for key in keys:
        entry = Entry(folder.parent, key)
        size = _dir_size(entry.parts) + (entry.path.stat().st_size if entry.path.exists() else 0)
        if entry.path.exists():
            try:
                meta, status = _read_meta(entry.path, META_FIELD), "ok"
            except StaleEntryError as err:
                meta, status = {}, f"unreadable: {err}"
        else:
            n_shards = len(list(entry.parts.glob("part-*.parquet"))) if entry.parts.is_dir() else 0
            meta, status = {}, f"partial ({n_shards} shards)"
        infos.append(EntryInfo(key=key, path=entry.path, size=size, meta=meta, status=status))
    infos.sort(key=lambda e: e.meta.get("created", ""), reverse=True)
    return infos


def list_weights(cache_dir: str | os.PathLike | None = None) -> list[EntryInfo]:
    """Converted weights under the cache root (``weights/pip-NAME-DIGEST/``, written by `models`), as entries
    whose key is the folder name and whose model is the ``pip:NAME`` spec they serve."""
    folder = cache_root(cache_dir) / "weights"
    if not folder.is_dir():
        return []
    infos = []
    for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        name = path.name.removeprefix("pip-").rpartition("-")[0] or path.name
        created = _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).isoformat()
        meta = {"model": f"pip:{name}", "dataset": "(converted weights)", "created": created}
        infos.append(EntryInfo(key=path.name, path=path, size=_dir_size(path), meta=meta, status="ok"))
    return infos


def remove_entries(
    keys: list[str] | None = None,
    *,
    model: str | None = None,
    all: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> list[EntryInfo]:
    """Delete entries whose key starts with one of `keys`, or whose model matches `model` (a glob), or all.

    Converted weights (`list_weights`) count as entries too: `all` and a matching `model` remove them
    (they are converted again on next use). Returns the removed entries. Raises ZooRankError when no
    selector is given, or an empty key prefix (which would match every key).
    """
    if not keys and model is None and not all:
        raise ZooRankError(
            "cache rm got no selector; pass key prefixes (see `zoo-rank cache ls`), --model NAME or --all."
        )
    keys = list(keys or [])
    if any(not k.strip() for k in keys):
        raise ZooRankError(
            f"cache rm got an empty key prefix ({keys!r}), which would match every entry; pass a prefix of a "
            "key that `zoo-rank cache ls` shows, or --all to remove everything."
        )
    if model is not None and not model.strip():
        raise ZooRankError("cache rm got an empty --model pattern; pass a model name or glob, e.g. 'pip:*'.")
    removed = []
    for info in [*list_entries(cache_dir), *list_weights(cache_dir)]:
        hit = all or any(info.key.startswith(k.strip()) for k in keys)
        hit = hit or (model is not None and fnmatch.fnmatchcase(str(info.meta.get("model", "")), model))
        if not hit:
            continue
        if info.path.is_dir():  # converted weights: one folder
            shutil.rmtree(info.path, ignore_errors=True)
        else:
            entry = Entry(info.path.parent.parent, info.key)
            entry.clear()
            entry.drop_lock_file()
        removed.append(info)
    return removed


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"  # pragma: no cover


def entries_table(entries: list[EntryInfo]):
    """A rich Table of entries: key, model, dataset, split, n, dim, precision, size, date."""
    from rich.table import Table

    table = Table(title=f"zoo_rank feature cache: {len(entries)} entries")
    for col, justify in [
        ("key", "left"),
        ("model", "left"),
        ("dataset", "left"),
        ("split", "left"),
        ("n", "right"),
        ("dim", "right"),
        ("precision", "left"),
        ("size", "right"),
        ("date", "left"),
    ]:
        # Short columns never wrap; model and dataset names fold when the terminal is narrow.
        short = col not in ("model", "dataset")
        table.add_column(col, justify=justify, overflow="fold", no_wrap=short)  # type: ignore[arg-type]
    for e in entries:
        m = e.meta
        date = str(m.get("created", ""))[:16].replace("T", " ") if e.status == "ok" else e.status
        table.add_row(
            e.key[:12],
            str(m.get("model", "?")),
            str(m.get("dataset", "?")),
            str(m.get("split", "")),
            str(m.get("n", "")),
            str(m.get("dim", "")),
            str(m.get("precision", "")),
            _human_size(e.size),
            date,
        )
    return table


# ---- the plain read call --------------------------------------------------------------------------


def load_features(
    model: str,
    data: str,
    *,
    split: str | None = None,
    n_per_class: int | None = None,
    seed: int = 0,
    precision: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    manifest: Any = None,
) -> FeatureSet:
    """The cached features of `model` on `data`: (N, p) float32 matrix, (N,) int64 labels, metadata.

    Resolves the key `extract_features` writes: this builds the backbone (for its weights digest and
    transform) and opens the data (for its fingerprint and the manifest rows). precision="auto" is this
    machine's default; when only the other precision is cached, that entry is returned. When the model or
    data cannot be opened here (e.g. a Hub set while offline), the newest entry extracted under exactly
    these names is returned with a warning that it could not be checked against its source.
    Raises ZooRankError naming the `zoo-rank extract` command when nothing is cached.
    """
    from zoo_rank._device import pick_device, resolve_precision

    root = cache_root(cache_dir)
    wanted = resolve_precision(precision, pick_device("auto"))
    candidates = [wanted] + ([p for p in ("bf16", "fp32") if p != wanted] if precision == "auto" else [])
    try:
        request = resolve_request(
            model, data, split=split, n_per_class=n_per_class, seed=seed, manifest=manifest
        )
    except ZooRankError as err:
        fs = _newest_by_names(root, model, data, split, n_per_class, seed, candidates)
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
    cmd = f"zoo-rank extract {model} --data {data}"
    if split:
        cmd += f" --split {split}"
    if manifest is not None:
        cmd += " --manifest MANIFEST.json"
    elif n_per_class:
        cmd += f" --n-per-class {n_per_class} --seed {seed}"
    if precision != "auto":
        cmd += f" --precision {precision}"
    if cache_dir is not None:
        cmd += f" --cache-dir {cache_dir}"
    raise ZooRankError(
        f"no cached features for {model!r} on {data!r} ({'/'.join(candidates)}) in {root}; "
        f"extract them first: `{cmd}`."
    )


def _newest_by_names(
    root: Path,
    model: str,
    data: str,
    split: str | None,
    n_per_class: int | None,
    seed: int,
    precisions: list[str],
) -> FeatureSet | None:
    """The newest valid committed entry requested under exactly these names, or None."""
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


__all__ = [
    "CacheKey",
    "Entry",
    "EntryInfo",
    "FeatureSet",
    "Request",
    "StaleEntryError",
    "cache_root",
    "entries_table",
    "list_entries",
    "load_features",
    "remove_entries",
    "resolve_request",
]
