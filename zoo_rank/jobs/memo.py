"""Small JSON results remembered across runs, keyed on everything that produced them (warm reruns).

A result (a probe's accuracies, ...) is a pure function of cached feature entries (named by their cache
keys), its settings and the code that computes it; `remembered(kind, record, compute)` stores
``compute()`` under ``<cache root>/memo/<kind>/<sha256 of record>.json`` and returns the stored copy when
the same record comes again. Records name the code by the sha256 of its source files (`source_digest`),
so an edited solver never serves an old number. Files are written atomically; an unreadable one is
recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType

from zoo_rank import __version__
from zoo_rank._paths import cache_root, canonical_json, json_digest, write_text_atomic


@cache
def source_digest(*modules: ModuleType) -> str:
    """sha256 over the source files of `modules` (a package counts with every .py file under it)."""
    h = hashlib.sha256()
    for module in modules:
        origin = Path(module.__file__)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        for f in files:
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def remembered(
    kind: str, record: dict, compute: Callable[[], dict], cache_dir: str | os.PathLike | None = None
) -> dict:
    """compute() the first time `record` is seen, the stored JSON result afterwards."""
    payload = {**record, "zoo_rank": __version__}
    blob = canonical_json(payload)  # compact separators: the bytes stored (and hashed) since the first memo
    path = cache_root(cache_dir) / "memo" / kind / f"{json_digest(payload, 32)}.json"
    try:
        stored = json.loads(path.read_text())
        if stored.get("record") == blob:
            return stored["result"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass  # absent or damaged: compute
    result = compute()
    try:
        write_text_atomic(path, json.dumps({"record": blob, "result": result}))
    except OSError:
        pass  # a read-only cache only costs a recomputation next time
    return result


__all__ = ["remembered", "source_digest"]
