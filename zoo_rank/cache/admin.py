"""Listing and removing what the cache holds: `zoo-rank cache ls` and `zoo-rank cache rm`."""

from __future__ import annotations

import datetime as _dt
import fnmatch
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from zoo_rank._paths import cache_root
from zoo_rank._validation import ZooRankError
from zoo_rank.cache.store import Entry, StaleEntryError, read_meta


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


def _entry_info(entry: Entry) -> EntryInfo:
    size = _dir_size(entry.parts) + (entry.path.stat().st_size if entry.path.exists() else 0)
    if entry.path.exists():
        try:
            meta, status = read_meta(entry.path), "ok"
        except StaleEntryError as err:
            meta, status = {}, f"unreadable: {err}"
    else:
        n_shards = len(list(entry.parts.glob("part-*.parquet"))) if entry.parts.is_dir() else 0
        meta, status = {}, f"partial ({n_shards} shards)"
    return EntryInfo(key=entry.key, path=entry.path, size=size, meta=meta, status=status)


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
    infos = [_entry_info(Entry(folder.parent, key)) for key in keys]
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
        created = _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.UTC).isoformat()
        meta = {"model": f"pip:{name}", "dataset": "(converted weights)", "created": created}
        infos.append(EntryInfo(key=path.name, path=path, size=_dir_size(path), meta=meta, status="ok"))
    return infos


def _check_selectors(keys: list[str], model: str | None, all: bool) -> None:
    if not keys and model is None and not all:
        raise ZooRankError(
            "cache rm got no selector; pass key prefixes (see `zoo-rank cache ls`), --model NAME or --all."
        )
    if any(not k.strip() for k in keys):
        raise ZooRankError(
            f"cache rm got an empty key prefix ({keys!r}), which would match every entry; pass a prefix of a "
            "key that `zoo-rank cache ls` shows, or --all to remove everything."
        )
    if model is not None and not model.strip():
        raise ZooRankError("cache rm got an empty --model pattern; pass a model name or glob, e.g. 'pip:*'.")


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
    keys = list(keys or [])
    _check_selectors(keys, model, all)
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
    """Binary sizes as `cache ls` has always printed them ("1000 B", "1.5 MB"): rich.filesize writes
    "1000 bytes" / "1.0 kB" (decimal units), which the tests of this output and its readers do not expect."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"  # pragma: no cover


_COLUMNS = [
    ("key", "left"),
    ("model", "left"),
    ("dataset", "left"),
    ("split", "left"),
    ("n", "right"),
    ("dim", "right"),
    ("precision", "left"),
    ("size", "right"),
    ("date", "left"),
]


def entries_table(entries: list[EntryInfo]) -> Table:
    """A rich Table of entries: key, model, dataset, split, n, dim, precision, size, date."""
    table = Table(title=f"zoo_rank feature cache: {len(entries)} entries")
    for col, justify in _COLUMNS:
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


__all__ = ["EntryInfo", "entries_table", "list_entries", "list_weights", "remove_entries"]
