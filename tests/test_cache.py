"""The feature cache: kill -9 and resume, two processes on one key, damaged files, load_features, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from _extract_helpers import tiny_backbone, tiny_images, tiny_specs
from typer.testing import CliRunner

from zoo_rank import cache
from zoo_rank._validation import ZooRankError
from zoo_rank.cli import app
from zoo_rank.extract import extract_features, load_features
from zoo_rank.options import ExtractOptions, Subset

HERE = Path(__file__).resolve().parent
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "PYTHONPATH": os.pathsep.join([str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])]),
}


@pytest.fixture(scope="module")
def images():
    return tiny_images()


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """An uninterrupted fp32 extraction in a cache of its own (other batch sizes: equal to 1e-5)."""
    return extract_features(
        tiny_backbone(),
        images,
        options=ExtractOptions(
            precision="fp32", batch_size=12, num_workers=0, quiet=True,
            cache_dir=tmp_path_factory.mktemp("reference-cache"),
        ),
    )  # fmt: skip


def _worker(cache_dir: Path, delay_s: float, shard_size: int) -> subprocess.Popen:
    args = [sys.executable, str(HERE / "_cache_worker.py"), str(cache_dir), str(delay_s), str(shard_size)]
    return subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()  # no-op once it exited; never leave a worker behind a failed test
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _assert_same_entry(fs: cache.FeatureSet, reference: cache.FeatureSet) -> None:
    np.testing.assert_array_equal(fs.rows, reference.rows)  # no duplicate, no missing row, same order
    np.testing.assert_array_equal(fs.labels, reference.labels)
    np.testing.assert_allclose(fs.features, reference.features, rtol=1e-5, atol=1e-6)


def test_kill_9_mid_run_then_two_concurrent_reruns_resume_once_without_duplicates_or_gaps(
    tmp_path, reference
):
    """kill -9 after the first shard; then two processes on the same key: one resumes, the other reuses."""
    killed = _worker(tmp_path, delay_s=0.25, shard_size=4)  # 12 batches of 2, a shard every 2 batches
    parts = tmp_path / "features" / f"{reference.key}.parts"
    deadline = time.monotonic() + 90
    try:
        while not list(parts.glob("part-*.parquet")):
            assert killed.poll() is None, killed.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no shard appeared"
            time.sleep(0.02)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "features" / f"{reference.key}.parquet").exists()  # nothing committed yet
    done = sum(pl.read_parquet(p).height for p in parts.glob("part-*.parquet"))
    assert 4 <= done < 24

    a, b = (_result(w) for w in [_worker(tmp_path, 0.05, 4), _worker(tmp_path, 0.05, 4)])
    resumer, reuser = (a, b) if a["calls"] else (b, a)
    assert reuser["calls"] == 0, "the second process must wait on the lock, then reuse the committed entry"
    assert resumer["timings"]["n_resumed"] == done and resumer["timings"]["n_computed"] == 24 - done
    assert resumer["calls"] == (24 - done + 1) // 2  # only the missing rows went through the model
    assert a["key"] == b["key"] == reference.key
    assert [f.name for f in (tmp_path / "features").glob("*.parquet")] == [f"{reference.key}.parquet"]
    _assert_same_entry(cache.Entry(tmp_path, reference.key).read(reference.rows), reference)
    assert not parts.exists()  # shards are dropped once committed


def _entry_file(cache_dir: Path, key: str) -> Path:
    return cache_dir / "features" / f"{key}.parquet"


@pytest.mark.parametrize("damage", ["truncate", "flip_bytes", "foreign_key"])
def test_a_damaged_or_foreign_entry_is_detected_and_recomputed_never_read(
    damage, images, cache_dir, reference
):
    backbone = tiny_backbone()
    kw = dict(precision="fp32", batch_size=12, num_workers=0, quiet=True)
    fs = extract_features(backbone, images, options=ExtractOptions(**kw))
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
    again = extract_features(backbone, images, options=ExtractOptions(**kw))
    assert backbone.calls == calls + 2, "the damaged entry must be recomputed"
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
    fs = extract_features(
        backbone,
        images,
        options=ExtractOptions(precision="fp32", batch_size=8, num_workers=0, quiet=True),
    )
    assert fs.meta["timings"]["n_resumed"] == 9 and fs.meta["timings"]["n_computed"] == 15
    _assert_same_entry(fs, reference)


def test_load_features_reads_what_the_cli_extracted_and_names_the_command_when_absent(tmp_path, cache_dir):
    model, data = tiny_specs(tmp_path)
    with pytest.raises(ZooRankError, match=r"zoo-rank extract local-dir:.* --data .*tiny\.parquet"):
        load_features(model, data, subset=Subset(5))
    runner = CliRunner()
    result = runner.invoke(
        app, ["extract", model, "--data", data, "--n-per-class", "5", "--quiet", "--batch-size", "8"]
    )
    assert result.exit_code == 0, result.output
    fs = load_features(model, data, subset=Subset(5))
    assert fs.features.shape == (15, 256) and np.bincount(fs.labels).tolist() == [5, 5, 5]
    assert fs.key in result.output and fs.meta["manifest"]["n_per_class"] == 5
    with pytest.raises(ZooRankError, match="no cached features"):
        load_features(model, data, subset=Subset(6))

    # The source cannot be opened (moved away, or a Hub set while offline): the entry extracted under
    # the same names is still returned, with a warning.
    (tmp_path / "tiny.parquet").rename(tmp_path / "moved.parquet")
    offline = load_features(model, data, subset=Subset(5))
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
    a = extract_features(backbone, images, options=ExtractOptions(precision="fp32", **kw))
    b = extract_features(backbone, tiny_images(per_class=4), options=ExtractOptions(precision="fp32", **kw))
    entries = {e.key: e for e in cache.list_entries()}
    assert set(entries) == {a.key, b.key}
    assert entries[a.key].meta["n"] == 24 and entries[b.key].meta["n"] == 12
    assert all(e.status == "ok" and e.size > 0 for e in entries.values())
    with pytest.raises(ZooRankError, match="no selector"):
        cache.remove_entries()
    assert cache.remove_entries(model="resnet*") == []
    assert {e.key for e in cache.remove_entries(model="test_efficientnet*")} == {a.key, b.key}
    extract_features(backbone, images, options=ExtractOptions(precision="fp32", **kw))
    assert len(cache.remove_entries(all=True)) == 1 and not list((cache_dir / "features").iterdir())


def test_cache_rm_refuses_an_empty_prefix_and_covers_converted_weights(images, cache_dir):
    """`cache rm ""` used to remove every entry (every key starts with ""); converted pip: weights are
    cache contents too and go with --model and --all."""
    fs = extract_features(
        tiny_backbone(),
        images,
        options=ExtractOptions(precision="fp32", batch_size=12, num_workers=0, quiet=True),
    )
    runner = CliRunner()
    for prefixes in ([""], ["  "], [fs.key[:6], ""]):
        with pytest.raises(ZooRankError, match="empty key prefix"):
            cache.remove_entries(prefixes)
        res = runner.invoke(app, ["cache", "rm", *prefixes])
        assert res.exit_code != 0 and "empty key prefix" in str(res.exception)
    assert [e.key for e in cache.list_entries()] == [fs.key]

    weights = cache_dir / "weights"
    for name in ("pip-efficientnet-lite0-0123456789abcdef", "pip-efficientnet-lite1-fedcba9876543210"):
        (weights / name).mkdir(parents=True)
        (weights / name / "model.safetensors").write_bytes(b"x" * 1000)
    listed = runner.invoke(app, ["cache", "ls"])
    assert "3 entries" in listed.output and listed.output.count("1000 B") == 2
    (gone,) = cache.remove_entries(model="pip:efficientnet-lite0")
    assert gone.key == "pip-efficientnet-lite0-0123456789abcdef" and gone.size == 1000
    assert sorted(p.name for p in weights.iterdir()) == ["pip-efficientnet-lite1-fedcba9876543210"]
    assert {e.key for e in cache.remove_entries(all=True)} == {
        fs.key,
        "pip-efficientnet-lite1-fedcba9876543210",
    }
    assert not list(weights.iterdir()) and cache.list_entries() == []


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
