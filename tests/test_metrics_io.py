"""ClassStats across processes (gloo) and the `zoo-rank score` command on parquet files."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import polars as pl
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from typer.testing import CliRunner

from zoo_rank.cli import app
from zoo_rank.metrics import METRICS, ClassStats, compute_metrics


def _features(seed=0, n=400, p=8, k=5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.normal(scale=3, size=(k, p))[y] + rng.normal(size=(n, p)) + 50.0
    return x.astype(np.float32), y


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x, y = _features()
    # rank 1 sees only labels >= 2 and rank 0 everything else: the class sets differ between ranks
    mine = (y >= 2) if rank == 1 else (y < 2)
    stats = ClassStats(dim=x.shape[1]).update(torch.from_numpy(x[mine]), y[mine])
    stats.all_reduce()
    scores = {n: METRICS[n].fn(stats) for n in METRICS if not METRICS[n].needs_raw}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(scores, f)
    dist.destroy_process_group()


def test_all_reduce_under_gloo_equals_single_process(tmp_path):
    mp.spawn(_rank_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    x, y = _features()
    want = compute_metrics(x, y, [n for n in METRICS if not METRICS[n].needs_raw])
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name, value in want.items():
            assert got[name] == pytest.approx(value, rel=1e-5), (rank, name)  # float32 products


def _write(path, x, y, array=True):
    dtype = pl.Array(pl.Float32, x.shape[1]) if array else pl.List(pl.Float32)
    pl.DataFrame({"label": y, "features": pl.Series(list(x), dtype=dtype)}).write_parquet(path)


def test_score_cli_json_and_csv(tmp_path):
    x, y = _features()
    _write(tmp_path / "f.parquet", x, y)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "score",
            str(tmp_path / "f.parquet"),
            "--metrics",
            "vci,fuzziness",
            "--out",
            str(tmp_path / "s.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "s.json").read_text())
    want = compute_metrics(x, y, ["vci", "fuzziness"])
    assert saved["scores"]["vci"] == pytest.approx(want["vci"], rel=1e-9)
    assert saved["n_samples"] == 400 and saved["n_features"] == 8 and saved["n_classes"] == 5
    result = runner.invoke(app, ["score", str(tmp_path / "f.parquet"), "--out", str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    table = pl.read_csv(tmp_path / "s.csv")
    # The default is every metric the features alone give (LEEP / NCE also need the source head), less the
    # slow model-selection scores, which run when named.
    assert set(table["metric"]) == {
        m for m in METRICS if METRICS[m].needs != "source_probs" and METRICS[m].in_default
    }
    assert {"vci", "vci_lw", "logme", "knn_accuracy"} <= set(table["metric"])
    assert not {"sfda", "nleep", "leep"} & set(table["metric"])


def test_score_reads_a_directory_of_list_shards(tmp_path):
    x, y = _features(seed=3)
    (tmp_path / "shards").mkdir()
    _write(tmp_path / "shards" / "part-000.parquet", x[:150], y[:150], array=False)
    _write(tmp_path / "shards" / "part-001.parquet", x[150:], y[150:], array=False)
    from zoo_rank.jobs.scoring import score_parquet

    result = score_parquet(tmp_path / "shards", metrics=["vci", "logme"])
    want = compute_metrics(x, y, ["vci", "logme"])
    assert result["scores"]["vci"] == pytest.approx(want["vci"], rel=1e-9)
    assert result["scores"]["logme"] == pytest.approx(want["logme"], rel=1e-9)


def test_score_cli_bad_input_is_one_line(tmp_path):
    x, y = _features()
    x[5, 2] = np.nan
    _write(tmp_path / "nan.parquet", x, y)
    import subprocess
    import sys

    from zoo_rank.cli import main

    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from zoo_rank.cli import main; main()",
            "score",
            str(tmp_path / "nan.parquet"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "NaN or Inf in 1 of 400 rows (first at row 5)" in out.stderr
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from zoo_rank.cli import main; main()",
            "score",
            str(tmp_path / "missing.parquet"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "no such file" in out.stderr
    assert callable(main)


def _naive_vci(x, y):
    """1 - Tr[pinv(S_T) S_B] / min(p, K-1) on float64 covariances (the paper's definition, no streaming)."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(0)
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(0) for c in classes])
    weights = np.array([(y == c).mean() for c in classes])
    sigma_b = (means.T * weights) @ means
    sigma_t = x.T @ x / len(x)
    return 1 - np.trace(np.linalg.pinv(sigma_t) @ sigma_b) / min(x.shape[1], len(classes) - 1)


@pytest.mark.parametrize("layout", ["array", "list", "wide"])
def test_score_keeps_float64_features_float64(tmp_path, layout):
    # Within-class spread of 1 around an offset of 1e8: float32 keeps ~8 of those 27 bits, float64 all.
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 100)
    x = rng.normal(scale=1.0, size=(4, 6))[y] + rng.normal(size=(400, 6)) + 1e8
    want = _naive_vci(x - 1e8, y)  # exact in float64: the offset is a power-of-two-free shift
    path = tmp_path / "f64.parquet"
    if layout == "wide":
        pl.DataFrame({"label": y, **{f"f{i}": x[:, i] for i in range(6)}}).write_parquet(path)
    else:
        dtype = pl.Array(pl.Float64, 6) if layout == "array" else pl.List(pl.Float64)
        pl.DataFrame({"label": y, "features": pl.Series(list(x), dtype=dtype)}).write_parquet(path)
    from zoo_rank.jobs.scoring import read_feature_table, score_parquet

    assert read_feature_table(path)[0].dtype == np.float64
    assert score_parquet(path, metrics=["vci"])["scores"]["vci"] == pytest.approx(want, rel=1e-6)
    # float32 files stay float32 (half the memory; the metrics shift them in float64 themselves)
    x32, y32 = _features()
    _write(tmp_path / "f32.parquet", x32, y32, array=layout == "array")
    assert read_feature_table(tmp_path / "f32.parquet")[0].dtype == np.float32


@pytest.mark.parametrize("kind", ["int", "str", "float"])
def test_null_or_nan_labels_are_an_error_naming_the_rows(tmp_path, kind):
    x, y = _features()
    labels = {"int": y.tolist(), "str": [f"c{v}" for v in y], "float": y.astype(float).tolist()}[kind]
    labels[7] = labels[300] = None
    if kind == "float":
        labels[300] = float("nan")
    pl.DataFrame({"label": labels, "features": pl.Series(list(x), dtype=pl.Array(pl.Float32, 8))}).write_parquet(
        tmp_path / "nulls.parquet"
    )
    from zoo_rank._validation import ZooRankError
    from zoo_rank.jobs.scoring import score_parquet

    with pytest.raises(ZooRankError, match=r"labels are null or NaN in 2 of 400 rows \(rows 7, 300\)"):
        score_parquet(tmp_path / "nulls.parquet", metrics=["vci"])
    with pytest.raises(ZooRankError, match=r"in 1 of 400 rows \(rows 300\)"):
        compute_metrics(x, np.where(np.arange(400) == 300, np.nan, y.astype(float)), ["vci"])
