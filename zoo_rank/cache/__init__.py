"""The feature cache, a pure store of feature tables: key -> parquet entry (store.py), ls / rm (admin.py).

It builds no backbone and loads no data: zoo_rank.extract resolves a request to a key and fills the entry.
"""

from zoo_rank._paths import cache_root
from zoo_rank.cache.admin import EntryInfo, entries_table, list_entries, list_weights, remove_entries
from zoo_rank.cache.store import (
    COMPRESSION,
    META_FIELD,
    SHARD_FIELD,
    CacheKey,
    Entry,
    FeatureSet,
    StaleEntryError,
    checksum,
    read_meta,
)

__all__ = [
    "COMPRESSION",
    "META_FIELD",
    "SHARD_FIELD",
    "CacheKey",
    "Entry",
    "EntryInfo",
    "FeatureSet",
    "StaleEntryError",
    "cache_root",
    "checksum",
    "entries_table",
    "list_entries",
    "list_weights",
    "read_meta",
    "remove_entries",
]
