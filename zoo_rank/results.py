"""Result files of the model x dataset grid: one JSON file per cell, a merge step that builds the table.

Like CLIP_benchmark: every (kind, model, dataset) cell is written to its own file named from
`RESULT_TEMPLATE`, so an interrupted run resumes with `skip_existing=True` and several runs can fill
the same directory; `merge_results` reads every file of a kind into one polars table.

A cell of `zoo-rank probe` / `validate` is also keyed on its `settings`: every setting that changes the
number (subset size, seed, splits, probe method and L2 grid, feature precision, zoo_rank version). The key
(`settings_key`, a digest of them) is part of the file name and the settings are stored in the file, so a
run with other settings writes a new file beside the old one, and `find_result` returns a file only when
its stored settings are exactly the ones asked for (a true match; anything else is recomputed). The default
directory is ./results (relative to where the command runs): results are a user's experiment record,
not a cache to be evicted, so they do not go under the feature cache.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from zoo_rank import _paths
from zoo_rank._paths import write_text_atomic

DEFAULT_RESULTS_DIR = Path("results")
RESULT_TEMPLATE = "{kind}__{model}__{dataset}.json"
KEYED_TEMPLATE = "{kind}__{model}__{dataset}__{key}.json"


def slug(name: str) -> str:
    """A file-name-safe form of a model or dataset spec: 'hf-hub:org/m' -> 'hf-hub-org-m'."""
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", str(name)).strip("-") or "unnamed"


def settings_key(settings: dict[str, Any]) -> str:
    """12 hex digits naming `settings` (canonical JSON: key order does not matter).

    The digest is of the settings as they read back from a file, in json.dumps' default separators: the
    bytes every existing result file is named by."""
    return _paths.json_digest(_as_read_back(settings), 12, separators=None)


def result_path(
    results_dir: str | Path, kind: str, model: str, dataset: str, settings: dict[str, Any] | None = None
) -> Path:
    """RESULT_TEMPLATE, or KEYED_TEMPLATE when the cell is keyed on its `settings`."""
    names = {"kind": slug(kind), "model": slug(model), "dataset": slug(dataset)}
    if settings is None:
        return Path(results_dir) / RESULT_TEMPLATE.format(**names)
    return Path(results_dir) / KEYED_TEMPLATE.format(**names, key=settings_key(settings))


def find_result(
    results_dir: str | Path, kind: str, model: str, dataset: str, settings: dict[str, Any]
) -> dict[str, Any] | None:
    """The cell's record when a file with exactly these `settings` exists (and reads back), else None."""
    return matching_record(result_path(results_dir, kind, model, dataset, settings), settings)


def matching_record(
    path: str | Path, key: dict[str, Any], *, field: str = "settings"
) -> dict[str, Any] | None:
    """The record at `path` when it reads back and its stored `field` is exactly `key`, else None (recompute)."""
    try:
        record = read_result(path)
    except (OSError, ValueError):
        return None  # absent, or not JSON: recompute
    return record if isinstance(record, dict) and record.get(field) == _as_read_back(key) else None


_MISSING = object()


def _as_read_back(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` as they read back from a file (tuples become lists, numpy scalars numbers)."""
    return json.loads(json.dumps(settings, default=_jsonable))


def write_keyed_result(
    results_dir: str | Path, kind: str, model: str, dataset: str, settings: dict[str, Any], record: dict
) -> Path:
    """Write a cell keyed on `settings` (stored in the file, where `find_result` and `merge_results` read them)."""
    record = {**record, "settings": settings, "settings_key": settings_key(settings)}
    return write_result(result_path(results_dir, kind, model, dataset, settings), record)


def versions() -> dict[str, str]:
    """Versions of the packages whose numbers could change a result (zoo_rank, torch, numpy, scipy,
    scikit-learn, python)."""
    return _paths.versions("torch", "numpy", "scipy", "sklearn")


def write_result(path: str | Path, record: dict[str, Any]) -> Path:
    """Write one cell atomically (temp file + rename), stamping the time and versions."""
    path = Path(path)
    record = {
        **record,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
    }
    write_text_atomic(path, json.dumps(record, indent=2, default=_jsonable))
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to a result file")


def read_result(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def merge_results(
    results_dir: str | Path,
    kind: str,
    columns: list[str] | None = None,
    *,
    where: dict[str, Any] | None = None,
):
    """Every result file of `kind` in `results_dir` as one polars DataFrame (one row per file).

    Nested values (dicts, lists) are dropped; `columns` selects and orders the columns present. `where`:
    only cells whose stored settings have these values (one run's settings, never a mix of several).
    """
    files = sorted(Path(results_dir).glob(RESULT_TEMPLATE.format(kind=slug(kind), model="*", dataset="*")))
    wanted = _as_read_back(where or {})
    rows = []
    for f in files:
        rec = read_result(f)
        stored = rec.get("settings") or {}
        if any(stored.get(k, _MISSING) != v for k, v in wanted.items()):
            continue
        rows.append({k: v for k, v in rec.items() if not isinstance(v, dict | list)})
    df = pl.DataFrame(rows) if rows else pl.DataFrame()
    if columns is not None and df.width:
        df = df.select([c for c in columns if c in df.columns])
    return df
