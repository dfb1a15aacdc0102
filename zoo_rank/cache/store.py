"""The feature store: one parquet file per key, written in shards as extraction goes, committed atomically.

Layout under the cache root (``$ZOO_RANK_CACHE``, else ``platformdirs.user_cache_dir("zoo_rank")``)::

    features/<key>.parquet   a committed entry; columns row (int64, the image's row in the dataset),
                             label (int64) and features (Array(Float32, p)); the entry's metadata (model,
                             dataset, classes, dims, timings, versions, key fields) is the JSON under
                             ``zoo_rank`` in the parquet file metadata
    features/<key>.parts/    shards of an entry in progress, ``part-<first>-<end>.parquet`` for manifest
                             positions [first, end); each is written to a temporary name, then renamed
    features/<key>.lock      held (filelock.FileLock) by the one process that extracts the entry; others
                             wait, then reuse it

The key hashes every field that changes the numbers and nothing else (like timm's pretrained configs carry
the preprocessing): model name + weights digest, the eval data config (the transform is built from it),
dataset fingerprint + split + manifest digest, precision and the zoo_rank version. A committed entry is
read only after its key, row count, width, row indices and a CRC-32 of its columns check out; anything
else (a stale, truncated or foreign file) is reported and recomputed, never read.

This module stores and reads; it builds no backbone and opens no data (zoo_rank.extract does).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import filelock
import numpy as np
import polars as pl

from zoo_rank import __version__
from zoo_rank._console import err_console, warn
from zoo_rank._paths import atomic_path, canonical_json, json_digest

META_FIELD = "zoo_rank"
SHARD_FIELD = "zoo_rank_shard"
# zstd: bf16-extracted features keep 8 mantissa bits, so their float32 bytes compress about 2x; the
# read-back rows of scripts/bench_extract.py measure the cost against numpy.load.
COMPRESSION = "zstd"
_COLUMNS = ["row", "label", "features"]
_Columns = tuple[np.ndarray, np.ndarray, np.ndarray]  # rows (N,), labels (N,), features (N, p)


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
    # zoo_rank.extract.decode.decode_spec(...) (decoded once per run: decoder, square side, resampling).
    decode: str = "pil"

    def digest(self) -> str:
        fields = asdict(self)
        if fields["decode"] == "pil":  # the PIL path's keys predate the field: its entries stay valid
            del fields["decode"]
        return json_digest(fields, 24)


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


def _write(path: Path, columns: _Columns, meta_field: str, meta: dict) -> None:
    """Write to a temporary name beside `path`, fsync, then rename: readers see all or nothing."""
    with atomic_path(path) as tmp:
        _frame(*columns).write_parquet(
            tmp, compression=COMPRESSION, metadata={meta_field: canonical_json(meta)}, statistics=False
        )
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())


def read_meta(path: Path, field_name: str = META_FIELD) -> dict:
    """The zoo_rank JSON of a parquet footer; raises StaleEntryError when absent or unreadable."""
    try:
        raw = pl.read_parquet_metadata(path)
    except FileNotFoundError:
        raise
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


def _check_key(meta: dict, key: str) -> None:
    if meta.get("key") != key:
        raise StaleEntryError(
            f"key in metadata is {meta.get('key')!r}, expected {key!r} (stale or foreign file)"
        )


def _verified(frame: pl.DataFrame, meta: dict) -> _Columns:
    """The columns of one file's frame after its row count, width and checksum check out."""
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


def _read_columns(path: Path, meta: dict, key: str) -> _Columns:
    """Read and verify one file: (rows (N,), labels (N,), features (N, p)); raises StaleEntryError."""
    _check_key(meta, key)  # before reading the data: a foreign file is never decoded
    try:
        frame = pl.read_parquet(path, columns=_COLUMNS)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise StaleEntryError(f"unreadable data ({type(err).__name__}: {err}); truncated") from err
    return _verified(frame, meta)


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
        meta = read_meta(self.path)
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
            **self._stamp(rows, labels, features),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        _write(self.path, (rows, labels, features), META_FIELD, meta)
        shutil.rmtree(self.parts, ignore_errors=True)
        return FeatureSet(features=features, labels=labels, meta=meta, rows=rows)

    def _stamp(self, rows: np.ndarray, labels: np.ndarray, features: np.ndarray) -> dict:
        """What a reader checks a file against: key, row count, width, checksum."""
        n, dim = len(rows), features.shape[1]
        return {"key": self.key, "n": n, "dim": dim, "checksum": checksum(rows, labels, features)}

    # -- shards of an entry in progress ---------------------------------------------------------

    def write_shard(
        self, first: int, end: int, rows: np.ndarray, labels: np.ndarray, features: np.ndarray
    ) -> Path:
        """Persist manifest positions [first, end) (their rows, labels, (n, p) features) as one atomic shard."""
        path = self.parts / f"part-{first:010d}-{end:010d}.parquet"
        _write(path, (rows, labels, features), SHARD_FIELD, self._stamp(rows, labels, features))
        return path

    def _shard_paths(self, first: int, end: int | None) -> list[Path]:
        """Shard files overlapping manifest positions [first, end), in name order."""
        paths = []
        for path in sorted(self.parts.glob("part-*-*.parquet")):
            try:
                lo, hi = (int(s) for s in path.stem.split("-")[1:3])
            except ValueError:
                continue
            if hi > first and (end is None or lo < end):
                paths.append(path)
        return paths

    def read_shards(self, first: int = 0, end: int | None = None) -> _Columns | None:
        """Rows, labels and features of every valid shard overlapping manifest positions [first, end).

        Bad shards (truncated, foreign key, wrong checksum) are deleted with a warning. Rows may repeat
        across shards; callers deduplicate. Returns None when there is nothing usable.
        """
        if not self.parts.is_dir():
            return None
        metas: dict[str, dict] = {}
        for path in self._shard_paths(first, end):
            try:
                meta = read_meta(path, SHARD_FIELD)
                _check_key(meta, self.key)
                metas[str(path)] = meta
            except StaleEntryError as err:
                self._drop_shard(path, err)
            except FileNotFoundError:  # another rank's commit removed it meanwhile
                continue
        frames = _scan_shards(list(metas))
        found = []
        for name, meta in metas.items():
            try:
                if frames is not None and name in frames:
                    found.append(_verified(frames[name], meta))
                else:  # the one scan failed (or skipped the file): read it alone, naming a bad one
                    found.append(_read_columns(Path(name), meta, self.key))
            except StaleEntryError as err:
                self._drop_shard(Path(name), err)
            except FileNotFoundError:
                continue
        if not found:
            return None
        rows, labels, feats = zip(*found, strict=True)
        return np.concatenate(rows), np.concatenate(labels), np.concatenate(feats)

    @staticmethod
    def _drop_shard(path: Path, err: Exception) -> None:
        warn(f"cache shard {path} is not usable ({err}); removing it, its rows will be recomputed.")
        path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove the committed file and all shards (not the lock file, which other processes may hold)."""
        self.path.unlink(missing_ok=True)
        shutil.rmtree(self.parts, ignore_errors=True)

    # -- the lock -------------------------------------------------------------------------------

    def drop_lock_file(self) -> None:
        """Delete the lock file unless a process holds it (unlinking a held lock would let a third one in)."""
        if not self.lock_path.exists():
            return
        lock = filelock.FileLock(self.lock_path)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            return
        try:
            self.lock_path.unlink(missing_ok=True)
        finally:
            lock.release()

    @contextlib.contextmanager
    def lock(self, *, quiet: bool = False) -> Iterator[None]:
        """Hold an exclusive lock on the entry; wait (saying so) while another process holds it.

        filelock.FileLock is an flock on POSIX, which the kernel drops when its holder dies, so a killed
        run never leaves a stale lock; on Windows it is a msvcrt lock of the same kind.
        """
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(self.lock_path)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            if not quiet:
                err_console().print(
                    f"waiting for another process extracting this entry ({self.lock_path}) ..."
                )
            lock.acquire()
        try:
            yield
        finally:
            lock.release()


def _scan_shards(paths: list[str]) -> dict[str, pl.DataFrame] | None:
    """Every shard in one parallel polars scan, split back per file; None when a file fails to read."""
    if not paths:
        return {}
    try:
        frame = pl.scan_parquet(paths, include_file_paths="_file").select([*_COLUMNS, "_file"]).collect()
    except Exception:  # a truncated or vanished shard: the caller reads file by file and names it
        return None
    parts = frame.partition_by("_file", as_dict=True, maintain_order=True, include_key=False)
    return {str(k[0]): v for k, v in parts.items()}

