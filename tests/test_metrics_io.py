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
    from zoo_rank.scoring import score_parquet

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
