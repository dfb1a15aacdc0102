"""Where zoo_rank keeps files, and content digests of large files that are not recomputed on every call.

The lowest room of the house: models, data and cache all import it, it imports nothing of the project.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zoo_rank import __version__

# In-process memo: (resolved path, size, mtime_ns) -> sha256 hex.
_DIGESTS: dict[tuple[str, int, int], str] = {}


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root: `cache_dir`, else ``$ZOO_RANK_CACHE``, else ``platformdirs.user_cache_dir("zoo_rank")``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("ZOO_RANK_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("zoo_rank"))


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, remembered by (path, size, mtime) so a large file is hashed once.

    The memo lives in memory and under ``<cache root>/digests/`` (not beside the file: weight files often
    sit in read-only places such as site-packages or a shared data folder). A file that changes size or
    mtime is hashed again; the digest itself never depends on the mtime.
    """
    resolved = Path(path).resolve()
    st = resolved.stat()
    key = (str(resolved), st.st_size, st.st_mtime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    record = cache_root() / "digests" / (hashlib.sha1(str(resolved).encode()).hexdigest() + ".json")
    try:
        saved = json.loads(record.read_text())
        if (saved["path"], saved["size"], saved["mtime_ns"]) == key:
            _DIGESTS[key] = saved["sha256"]
            return saved["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or unreadable record: hash the file
    with open(resolved, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    _DIGESTS[key] = digest
    try:
        write_text_atomic(
            record, json.dumps({"path": key[0], "size": key[1], "mtime_ns": key[2], "sha256": digest})
        )
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return digest


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path` (readers see old or new)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path` (readers see old or new)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer that needs a file name (parquet, torch.save, a
    folder); on success it is renamed over `path`, on any error it is removed: readers see old or new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # the writer creates it (a file or a folder)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def canonical_json(obj: Any, *, separators: tuple[str, str] | None = (",", ":")) -> str:
    """Key-stable JSON: sorted keys, tuples as lists, numpy scalars as Python numbers, sets sorted.

    `separators` is part of the bytes, hence of every digest made from them: existing keys pass what they
    were written with (None: json's default ", " / ": ").
    """

    def default(o: Any) -> Any:
        if hasattr(o, "item") and callable(o.item):  # numpy scalars
            return o.item()
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        return str(o)

    return json.dumps(obj, sort_keys=True, separators=separators, default=default)


def json_digest(obj: Any, length: int | None = None, *, separators: tuple[str, str] | None = (",", ":")) -> str:
    """Hex sha256 of ``canonical_json(obj)``, cut to `length` characters (None: all 64)."""
    digest = hashlib.sha256(canonical_json(obj, separators=separators).encode()).hexdigest()
    return digest if length is None else digest[:length]


def versions(*packages: str) -> dict[str, str]:
    """zoo_rank's and Python's versions plus those of `packages` (import names, e.g. "torch", "sklearn")
    that could change a number; recorded beside results so a figure can be reproduced."""
    out = {"zoo_rank": __version__}
    for name in packages:
        module = importlib.import_module(name)
        out["scikit-learn" if name == "sklearn" else name] = getattr(module, "__version__", "unknown")
    out["python"] = platform.python_version()
    return out
