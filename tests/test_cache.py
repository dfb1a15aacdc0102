"""The feature cache: kill -9 and resume, two processes on one key, damaged files, load_features, the CLI."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from _extract_helpers import tiny_backbone, tiny_images, tiny_specs
from typer.testing import CliRunner

from zoo_rank import cache
from zoo_rank._validation import ZooRankError
from zoo_rank.cli import app
from zoo_rank.extract import extract_features


def _extract_in_child(cache_dir: Path, delay_s: float, shard_size: int, out: Path) -> None:
    """One extraction in a forked process (kill -9 and concurrency tests); writes what happened to `out`."""
    # Forked children inherit the imports (no 5 s of CPU for torch + timm each) but must not enter the
    # parent's OpenMP pool: one thread keeps libgomp fork-safe.
    torch.set_num_threads(1)
    backbone = tiny_backbone(delay_s=delay_s)
    fs = extract_features(
        backbone, tiny_images(), precision="fp32", device="cpu", batch_size=2, num_workers=0,
        cache_dir=cache_dir, shard_size=shard_size, quiet=True,
    )  # fmt: skip
    out.write_text(json.dumps({"calls": backbone.calls, "key": fs.key, "timings": fs.meta["timings"]}))


@pytest.fixture(scope="module")
def images():
    return tiny_images()


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """An uninterrupted fp32 extraction (batch 2, as the workers run) in a cache of its own."""
    return extract_features(
        tiny_backbone(), images, precision="fp32", batch_size=2, num_workers=0, quiet=True,
        cache_dir=tmp_path_factory.mktemp("reference-cache"),
    )  # fmt: skip


def _worker(cache_dir: Path, delay_s: float, shard_size: int) -> tuple[multiprocessing.Process, Path]:
    out = cache_dir.parent / f"result-{time.monotonic_ns()}.json"
    proc = multiprocessing.get_context("fork").Process(
        target=_extract_in_child, args=(cache_dir, delay_s, shard_size, out)
    )
    proc.start()
    return proc, out


def _result(worker: tuple[multiprocessing.Process, Path]) -> dict:
    proc, out = worker
    proc.join(timeout=120)
    assert proc.exitcode == 0, f"worker exit code {proc.exitcode}"
    return json.loads(out.read_text())


def _assert_same_entry(fs: cache.FeatureSet, reference: cache.FeatureSet) -> None:
    np.testing.assert_array_equal(fs.rows, reference.rows)  # no duplicate, no missing row, same order
    np.testing.assert_array_equal(fs.labels, reference.labels)
    np.testing.assert_allclose(fs.features, reference.features, rtol=1e-5, atol=1e-6)


def test_kill_9_mid_run_then_rerun_resumes_without_duplicates_or_gaps(tmp_path, reference):
    proc, _ = _worker(tmp_path / "c", delay_s=0.25, shard_size=4)  # 12 batches of 2, a shard every 2
    parts = tmp_path / "c" / "features" / f"{reference.key}.parts"
    deadline = time.monotonic() + 90
    while not list(parts.glob("part-*.parquet")):
        assert proc.is_alive(), f"worker exited early ({proc.exitcode})"
        assert time.monotonic() < deadline, "no shard appeared"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert proc.exitcode == -signal.SIGKILL
    assert not (tmp_path / "c" / "features" / f"{reference.key}.parquet").exists()  # nothing committed
    shards = sorted(parts.glob("part-*.parquet"))
    done = sum(pl.read_parquet(p).height for p in shards)
    assert 4 <= done < 24

    rerun = _result(_worker(tmp_path / "c", delay_s=0.0, shard_size=4))
    assert rerun["timings"]["n_resumed"] == done
    assert rerun["timings"]["n_computed"] == 24 - done
    assert rerun["calls"] == (24 - done + 1) // 2  # only the missing rows went through the model
    fs = cache.Entry(tmp_path / "c", reference.key).read(reference.rows)
    _assert_same_entry(fs, reference)
    assert not parts.exists()  # shards are dropped once committed


def test_two_processes_on_one_key_compute_it_once_and_both_get_it(tmp_path, reference):
    first, second = _worker(tmp_path / "c", 0.1, 4), _worker(tmp_path / "c", 0.1, 4)
    a, b = _result(first), _result(second)
    calls = sorted([a["calls"], b["calls"]])
    assert calls == [0, 12], calls  # the loser waited on the lock, then reused the committed entry
    assert a["key"] == b["key"] == reference.key
    files = list((tmp_path / "c" / "features").glob("*.parquet"))
    assert [f.name for f in files] == [f"{reference.key}.parquet"]
    _assert_same_entry(cache.Entry(tmp_path / "c", reference.key).read(), reference)


def _entry_file(cache_dir: Path, key: str) -> Path:
    return cache_dir / "features" / f"{key}.parquet"


@pytest.mark.parametrize("damage", ["truncate", "flip_bytes", "foreign_key"])
def test_a_damaged_or_foreign_entry_is_detected_and_recomputed_never_read(
    damage, images, cache_dir, reference
):
    backbone = tiny_backbone()
    kw = dict(precision="fp32", batch_size=2, num_workers=0, quiet=True)
    fs = extract_features(backbone, images, **kw)
    path = _entry_file(cache_dir, fs.key)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip_bytes":  # inside the feature data: parquet may still decode, the checksum may not
        middle = bytearray(raw)
        for i in range(len(raw) // 3, len(raw) // 3 + 64):
            middle[i] ^= 0xFF
        path.write_bytes(bytes(middle))
    else:  # a whole, valid entry of another key copied over this one
        other = cache.Entry(cache_dir, "f" * 24)
        other.commit(fs.rows, fs.labels, fs.features, fs.meta)
        shutil.copy(other.path, path)
    with pytest.raises(cache.StaleEntryError):
        cache.Entry(cache_dir, fs.key).read()
    calls = backbone.calls
    again = extract_features(backbone, images, **kw)
    assert backbone.calls == calls + 12, "the damaged entry must be recomputed"
    _assert_same_entry(again, reference)
    _assert_same_entry(cache.Entry(cache_dir, fs.key).read(), reference)


def test_a_corrupt_shard_is_dropped_and_its_rows_recomputed(images, cache_dir, reference):
    entry = cache.Entry(cache_dir, reference.key)
    good = slice(0, 6)
    entry.write_shard(0, 6, reference.rows[good], reference.labels[good], reference.features[good])
    bad = entry.write_shard(6, 12, reference.rows[6:12], reference.labels[6:12], reference.features[6:12])
    bad.write_bytes(bad.read_bytes()[:100])
    # an overlapping duplicate shard (as two rank layouts might leave) must not duplicate rows
    entry.write_shard(3, 9, reference.rows[3:9], reference.labels[3:9], reference.features[3:9])
    backbone = tiny_backbone()
    fs = extract_features(backbone, images, precision="fp32", batch_size=2, num_workers=0, quiet=True)
    assert fs.meta["timings"]["n_resumed"] == 9 and fs.meta["timings"]["n_computed"] == 15
    _assert_same_entry(fs, reference)


def test_load_features_reads_what_the_cli_extracted_and_names_the_command_when_absent(tmp_path, cache_dir):
    model, data = tiny_specs(tmp_path)
    with pytest.raises(ZooRankError, match=r"zoo-rank extract local-dir:.* --data .*tiny\.parquet"):
        cache.load_features(model, data, n_per_class=5)
    runner = CliRunner()
    result = runner.invoke(
        app, ["extract", model, "--data", data, "--n-per-class", "5", "--quiet", "--batch-size", "8"]
    )
    assert result.exit_code == 0, result.output
    fs = cache.load_features(model, data, n_per_class=5)
    assert fs.features.shape == (15, 256) and np.bincount(fs.labels).tolist() == [5, 5, 5]
    assert fs.key in result.output and fs.meta["manifest"]["n_per_class"] == 5
    with pytest.raises(ZooRankError, match="no cached features"):
        cache.load_features(model, data, n_per_class=6)

    # The source cannot be opened (moved away, or a Hub set while offline): the entry extracted under
    # the same names is still returned, with a warning.
    (tmp_path / "tiny.parquet").rename(tmp_path / "moved.parquet")
    offline = cache.load_features(model, data, n_per_class=5)
    np.testing.assert_array_equal(offline.features, fs.features)

    listed = runner.invoke(app, ["cache", "ls"])
    assert listed.exit_code == 0 and fs.key[:12] in listed.output and "15" in listed.output
    assert runner.invoke(app, ["cache", "rm", "zzzz"]).output.startswith("removed 0 entries")
    removed = runner.invoke(app, ["cache", "rm", fs.key[:8]])
    assert "removed 1 entries" in removed.output
    assert cache.list_entries() == []


def test_list_and_remove_entries_by_model_and_all(images, cache_dir):
    backbone = tiny_backbone()
    kw = dict(batch_size=12, num_workers=0, quiet=True)
    a = extract_features(backbone, images, precision="fp32", **kw)
    b = extract_features(backbone, tiny_images(per_class=4), precision="fp32", **kw)
    entries = {e.key: e for e in cache.list_entries()}
    assert set(entries) == {a.key, b.key}
    assert entries[a.key].meta["n"] == 24 and entries[b.key].meta["n"] == 12
    assert all(e.status == "ok" and e.size > 0 for e in entries.values())
    with pytest.raises(ZooRankError, match="no selector"):
        cache.remove_entries()
    assert cache.remove_entries(model="resnet*") == []
    assert {e.key for e in cache.remove_entries(model="test_efficientnet*")} == {a.key, b.key}
    extract_features(backbone, images, precision="fp32", **kw)
    assert len(cache.remove_entries(all=True)) == 1 and not list((cache_dir / "features").iterdir())


def test_polars_array_column_and_metadata_round_trip(cache_dir, reference):
    """The file is plain parquet: any reader sees row/label/features and the JSON metadata."""
    path = next(Path(reference.meta["key"] and cache.cache_root()).glob("**/*.parquet"), None)
    assert path is None  # the isolated cache is empty; the reference lives elsewhere
    entry = cache.Entry(cache_dir, "k" * 24)
    fs = entry.commit(reference.rows, reference.labels, reference.features, {"model": "m"})
    frame = pl.read_parquet(entry.path)
    assert frame.schema == pl.Schema(
        {"row": pl.Int64, "label": pl.Int64, "features": pl.Array(pl.Float32, reference.features.shape[1])}
    )
    meta = json.loads(pl.read_parquet_metadata(entry.path)["zoo_rank"])
    assert meta["n"] == 24 and meta["key"] == "k" * 24 and meta["checksum"] == fs.meta["checksum"]
    back = entry.read()
    assert back.features.flags.writeable and back.features.flags.c_contiguous
    np.testing.assert_array_equal(back.features, reference.features)
