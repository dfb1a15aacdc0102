"""Image sets through `datasets`: every source kind, RGB images, fingerprints, balanced subsets, manifests."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from zoo_rank import data
from zoo_rank._validation import ZooRankError
from zoo_rank.data import (
    BUILTIN,
    DOWNSTREAM,
    Manifest,
    balanced_indices,
    balanced_subset,
    known_datasets,
    load_images,
)
from zoo_rank.options import Subset

FASHION = Path(BUILTIN["fashion-mnist"].location)


@pytest.fixture(autouse=True)
def _isolated_cache(cache_dir):
    """Fingerprint memos and converted built-in sets go to a fresh cache per test."""
    return cache_dir


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _write_image_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Class sub-folders of PNGs in several modes (RGB, L, RGBA, P); returns the RGB pixels written."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[np.ndarray]] = {}
    modes = ["RGB", "L", "RGBA", "P"]
    for name, count in per_class.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
            blob = _png(pixels, modes[i % len(modes)])
            (root / name / f"{i}.png").write_bytes(blob)
            written.setdefault(name, []).append(np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")))
    return written


# ---- local parquet (../shared/data) ------------------------------------------------------------------


@pytest.mark.shared_data
def test_parquet_file_in_datasets_layout(shared_data):
    path = shared_data / "imagenet-sample" / "sample.parquet"
    images = load_images(str(path))
    expected_names = json.loads((path.parent / "classes.json").read_text())["names"]
    assert (len(images), images.split) == (pq.ParquetFile(path).metadata.num_rows, "sample")
    assert images.classes == expected_names  # ImageNet's repeated names (crane, maillot) survive
    assert images.dataset.column_names == ["image", "label"]
    assert str(images.dataset.features["label"].dtype) == "int64"
    raw_labels = pq.read_table(path, columns=["label"])["label"].to_numpy()
    np.testing.assert_array_equal(images.labels, raw_labels)
    first = images.dataset[0]["image"]
    assert first.mode == "RGB"
    raw = pq.read_table(path, columns=["image"]).slice(0, 1)["image"][0]["bytes"].as_py()
    np.testing.assert_array_equal(np.asarray(first), np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")))
    # The registry name reads the same file: same content, same fingerprint.
    assert load_images("imagenet-sample").fingerprint == images.fingerprint


@pytest.mark.shared_data
def test_parquet_folder_splits_follow_file_names(shared_data):
    folder = shared_data / "cifar10"
    test = load_images(f"{folder}:test")
    assert (len(test), test.split, test.classes[:2]) == (10000, "test", ["airplane", "automobile"])
    assert test.fingerprint == load_images(str(folder / "test.parquet")).fingerprint
    assert test.fingerprint == load_images("cifar10-local", split="test").fingerprint
    with pytest.raises(ZooRankError, match=r"no split 'validation'.*train, test"):
        load_images(f"{folder}:validation")


def test_parquet_without_metadata_and_fingerprint_follows_content(tmp_path):
    rng = np.random.default_rng(0)
    blobs = [_png(rng.integers(0, 256, (6, 6), dtype=np.uint8)) for _ in range(6)]  # grayscale PNGs
    image = pa.StructArray.from_arrays(
        [pa.array(blobs, pa.binary()), pa.nulls(6, pa.string())], names=["bytes", "path"]
    )
    table = pa.table({"img": image, "target": pa.array([0, 2, 1, 2, 0, 1], pa.int32())})
    path = tmp_path / "a" / "mine.parquet"
    path.parent.mkdir()
    pq.write_table(table, path)
    images = load_images(str(path))
    assert images.classes == ["0", "1", "2"] and images.labels.tolist() == [0, 2, 1, 2, 0, 1]
    assert images.dataset[3]["image"].mode == "RGB"
    # A copy elsewhere with another mtime has the same fingerprint; other content gets another one.
    copy = tmp_path / "b" / "mine.parquet"
    copy.parent.mkdir()
    shutil.copy(path, copy)
    os.utime(copy, ns=(10**9, 10**9))
    assert load_images(str(copy)).fingerprint == images.fingerprint
    pq.write_table(table.set_column(1, "target", pa.array([1, 2, 1, 2, 0, 1], pa.int32())), copy)
    assert load_images(str(copy)).fingerprint != images.fingerprint
    assert load_images(f"{path}:mine").fingerprint == images.fingerprint
    with pytest.raises(ZooRankError, match="no split 'test'"):
        load_images(f"{path}:test")


# ---- image folders -----------------------------------------------------------------------------------


def test_image_folder_gives_rgb_images_and_sorted_classes(tmp_path):
    written = _write_image_folder(tmp_path / "pets", {"dog": 5, "cat": 4, "bird": 3})
    images = load_images(str(tmp_path / "pets"))
    assert images.classes == ["bird", "cat", "dog"]
    assert np.bincount(images.labels).tolist() == [3, 4, 5]
    decoded: dict[str, list[np.ndarray]] = {}
    for row in images.dataset:
        assert row["image"].mode == "RGB"  # L, RGBA and P files all decode to RGB
        decoded.setdefault(images.classes[row["label"]], []).append(np.asarray(row["image"]))
    for name, arrays in written.items():
        assert sorted(a.tobytes() for a in arrays) == sorted(a.tobytes() for a in decoded[name])


def test_image_folder_with_split_folders(tmp_path):
    _write_image_folder(tmp_path / "set" / "train", {"a": 3, "b": 3}, seed=1)
    _write_image_folder(tmp_path / "set" / "test", {"a": 2, "b": 1}, seed=2)
    train = load_images(str(tmp_path / "set"))
    test = load_images(str(tmp_path / "set"), split="test")
    assert (len(train), len(test), train.classes, test.classes) == (6, 3, ["a", "b"], ["a", "b"])
    assert test.labels.tolist() == sorted(test.labels.tolist()) and test.split == "test"
    assert train.fingerprint != test.fingerprint
    # Changing one image's pixels changes the fingerprint; touching it does not.
    victim = tmp_path / "set" / "test" / "b" / "0.png"
    os.utime(victim, ns=(10**9, 10**9))
    assert load_images(str(tmp_path / "set"), split="test").fingerprint == test.fingerprint
    victim.write_bytes(_png(np.zeros((12, 10, 3), np.uint8)))
    assert load_images(str(tmp_path / "set"), split="test").fingerprint != test.fingerprint


def test_folder_without_class_folders_is_refused(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.png").write_bytes(_png(np.zeros((4, 4, 3), np.uint8)))
    with pytest.raises(ZooRankError, match="no class sub-folders"):
        load_images(str(tmp_path / "flat"))


# ---- built-in offline sets ---------------------------------------------------------------------------


def test_digits_split_is_stratified_fixed_and_lossless(cache_dir):
    from sklearn.datasets import load_digits

    train, test = load_images("digits"), load_images("digits:test")
    digits = load_digits()
    assert len(train) + len(test) == len(digits.target)
    assert len(test) == math.ceil(0.25 * len(digits.target))  # scikit-learn rounds the test share up
    # Stratified: each class's share of the test split is its share of the whole set (within one image).
    np.testing.assert_allclose(np.bincount(test.labels), 0.25 * np.bincount(digits.target), atol=1)
    # Every image is an 8x8 RGB copy of a scikit-learn digit (0..16 -> 0..255), no image in both splits.
    scaled = {
        np.rint(img * 255 / 16).astype(np.uint8).tobytes(): int(y)
        for img, y in zip(digits.images, digits.target, strict=True)
    }
    seen = []
    for split in (train, test):
        for row in split.dataset:
            pixels = np.asarray(row["image"])
            assert pixels.shape == (8, 8, 3) and (pixels[..., 0] == pixels[..., 2]).all()
            assert scaled[pixels[..., 0].tobytes()] == row["label"]
            seen.append(pixels[..., 0].tobytes())
    assert len(set(seen)) == len(set(scaled))
    assert load_images("digits").fingerprint == train.fingerprint != test.fingerprint


@pytest.mark.skipif(
    not (FASHION / "t10k-images-idx3-ubyte.gz").is_file(), reason="Debian dataset-fashion-mnist absent"
)
def test_fashion_mnist_from_debian_files(cache_dir):
    start = time.perf_counter()
    test = load_images("fashion-mnist:test")
    first_build = time.perf_counter() - start
    with gzip.open(FASHION / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    with gzip.open(FASHION / "t10k-images-idx3-ubyte.gz") as f:
        pixels = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    np.testing.assert_array_equal(test.labels, labels)
    for row in (0, 1234, len(labels) - 1):
        image = test.dataset[row]["image"]
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), np.repeat(pixels[row][..., None], 3, axis=2))
    assert test.classes[9] == "Ankle boot" and len(test.classes) == 10
    assert first_build < 20, first_build  # arrays -> datasets once, under the cache dir
    start = time.perf_counter()
    again = load_images("fashion-mnist:test")
    assert time.perf_counter() - start < 2 and again.fingerprint == test.fingerprint
    assert any((cache_dir / "datasets").iterdir())


def test_fashion_mnist_absent_names_the_debian_package(monkeypatch, tmp_path, cache_dir):
    monkeypatch.setitem(
        BUILTIN, "fashion-mnist", dataclasses.replace(BUILTIN["fashion-mnist"], location=str(tmp_path))
    )
    with pytest.raises(ZooRankError, match="apt-get install dataset-fashion-mnist") as info:
        load_images("fashion-mnist")
    assert "\n" not in str(info.value)


# ---- registry and errors -----------------------------------------------------------------------------


def test_downstream_registry_is_the_papers_ten_sets():
    assert len(DOWNSTREAM) == 10
    per_class = {name for name, spec in DOWNSTREAM.items() if spec.metric == "mean_per_class"}
    assert per_class == {"aircraft", "pets", "caltech101", "flowers102"}
    assert {spec.metric for spec in DOWNSTREAM.values()} == {"mean_per_class", "top1"}
    for spec in DOWNSTREAM.values():
        assert spec.kind == "hub" and spec.needs_network and "/" in spec.location
        assert {"train", "test"} <= set(spec.splits) and spec.num_classes
    assert set(known_datasets()) == set(BUILTIN) | set(DOWNSTREAM) | {"imagenet-1k"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("fashion-mnst", "did you mean fashion-mnist"),
        ("imagenet", "known names: .*digits"),
        ("digits:validation", "digits has no split 'validation'; known splits: train, test"),
        ("./no/such/folder", "no file or folder"),
    ],
)
def test_unknown_names_and_splits(spec, expected):
    with pytest.raises(ZooRankError, match=expected) as info:
        load_images(spec)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "spec", ["pets", "cifar100:test", "hf:someone/some-images:train", "someone/some-images"]
)
def test_offline_hub_sets_fail_fast_in_one_line(spec, monkeypatch):
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(ZooRankError, match="needs network or a copy") as info:
        load_images(spec)
    assert time.perf_counter() - start < 2 and "\n" not in str(info.value)


def test_split_given_twice_must_agree():
    with pytest.raises(ZooRankError, match="give one"):
        load_images("digits:test", split="train")


# ---- balanced subsets and manifests ------------------------------------------------------------------


def test_balanced_subset_of_digits(cache_dir, tmp_path):
    train = load_images("digits")
    manifest = balanced_subset(train, Subset(n_per_class=20, seed=0))
    labels = train.labels
    assert np.bincount(labels[manifest.indices]).tolist() == [20] * 10
    assert (np.diff(manifest.indices) > 0).all() and manifest.indices.dtype == np.int64
    assert manifest.short_classes == {}
    assert balanced_subset(train, Subset(20, 0)).digest() == manifest.digest()
    other = balanced_subset(train, Subset(20, 1))
    assert not np.array_equal(other.indices, manifest.indices)
    # Round trip through JSON; the subset's rows are the manifest's rows.
    loaded = Manifest.load(manifest.save(tmp_path / "m.json"))
    np.testing.assert_array_equal(loaded.indices, manifest.indices)
    assert loaded.digest() == manifest.digest() and loaded.source_fingerprint == train.fingerprint
    subset = train.subset(loaded)
    np.testing.assert_array_equal(subset.labels, labels[manifest.indices])
    assert subset.fingerprint != train.fingerprint
    with pytest.raises(ZooRankError, match="data changed"):
        load_images("digits:test").subset(loaded)


def test_classes_smaller_than_n_give_all_rows_and_say_so(tmp_path):
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7 + [5] * 1)
    indices, short = balanced_indices(labels, 5, seed=4)
    assert np.bincount(labels[indices]).tolist() == [5, 3, 5, 0, 0, 1]
    assert short == {1: 3, 5: 1}
    assert set(np.flatnonzero(labels == 1)) <= set(indices.tolist())


def test_edited_manifest_is_refused(tmp_path):
    manifest = Manifest(np.array([1, 4, 9]), 1, 0, "abc", "x", "train")
    path = manifest.save(tmp_path / "m.json")
    record = json.loads(path.read_text())
    record["indices"][0] = 2
    path.write_text(json.dumps(record))
    with pytest.raises(ZooRankError, match="does not match its digest"):
        Manifest.load(path)


def test_subset_draw_is_pinned_across_machines():
    # PCG64's raw stream is a numpy guarantee; this pins the whole draw so a change of algorithm shows.
    labels = np.repeat(np.arange(3), 10)
    indices, _ = balanced_indices(labels, 3, seed=0)
    expected = []
    for cls in range(3):
        keys = np.random.PCG64(np.random.SeedSequence([0, cls])).random_raw(10)
        expected.extend(10 * cls + np.argsort(keys, kind="stable")[:3])
    np.testing.assert_array_equal(indices, np.sort(expected))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 6), min_size=1, max_size=80),
    st.integers(1, 8),
    st.integers(0, 2**32),
)
def test_balanced_indices_properties(label_list, n_per_class, seed):
    labels = np.array(label_list)
    indices, short = balanced_indices(labels, n_per_class, seed)
    counts = np.bincount(labels, minlength=7)
    chosen = np.bincount(labels[indices], minlength=7)
    np.testing.assert_array_equal(chosen, np.minimum(counts, n_per_class))
    assert len(np.unique(indices)) == len(indices) and (np.diff(indices) > 0).all()
    assert short == {c: int(counts[c]) for c in range(7) if 0 < counts[c] < n_per_class}
    # A class's draw does not depend on the other classes: drop class 0's rows and the rest stays put.
    keep = np.flatnonzero(labels != 0)
    if len(keep):
        sub_indices, _ = balanced_indices(labels[keep], n_per_class, seed)
        np.testing.assert_array_equal(keep[sub_indices], indices[labels[indices] != 0])


def test_bad_subset_arguments():
    with pytest.raises(ZooRankError, match="n_per_class >= 1"):
        balanced_indices(np.array([0, 1]), 0)
    with pytest.raises(ZooRankError, match="labels must be >= 0"):
        balanced_indices(np.array([0, -1]), 1)


def test_data_module_has_no_if_chain_over_names():
    # The registry is data: every known name resolves through the dicts, each kind through one loader.
    assert set(data._LOADERS) >= {spec.kind for spec in known_datasets().values()}


def test_cli_datasets_lists_every_known_name():
    from typer.testing import CliRunner

    from zoo_rank.cli import app

    result = CliRunner().invoke(app, ["datasets"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name, spec in known_datasets().items():
        assert name in result.output and spec.location in result.output


def test_a_one_class_image_folder_says_so(tmp_path):
    _write_image_folder(tmp_path / "only", {"cat": 3})
    with pytest.raises(ZooRankError, match=r"one class sub-folder only \('cat', 3 images\)"):
        load_images(str(tmp_path / "only"))
    _write_image_folder(tmp_path / "split" / "train", {"dog": 2})
    with pytest.raises(ZooRankError, match=r"one class sub-folder only \('dog', 2 images\)"):
        load_images(str(tmp_path / "split"))


def test_classes_with_fewer_images_than_n_per_class_are_warned_about_with_the_numbers(tmp_path, capsys):
    _write_image_folder(tmp_path / "pets", {"dog": 5, "cat": 2, "bird": 3})
    images = load_images(str(tmp_path / "pets"))
    manifest = balanced_subset(images, Subset(4, 0))
    assert manifest.short_classes == {0: 3, 1: 2}  # bird, cat
    said = " ".join(capsys.readouterr().err.split())
    assert (
        "2 of 3 classes of " in said
        and ":train have fewer than --n-per-class 4 images (bird 3, cat 2)" in said
        and "the subset holds 9 images, not 12" in said
    )
    balanced_subset(images, Subset(4, 0))  # the same subset again (the next model): said once is enough
    assert "fewer than" not in capsys.readouterr().err
    balanced_subset(images, Subset(2, 0))  # every class has 2: nothing to say
    assert "fewer than" not in capsys.readouterr().err
