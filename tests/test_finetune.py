"""Fine-tuning check, the zoo statistics and the zoo benchmark's smoke setting."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from zoo_rank._validation import ZooRankError
from zoo_rank.finetune import SCALE_FLOOR, FinetuneOptions, cell_key, probe_head, stratified_split
from zoo_rank.models import create_backbone
from zoo_rank.options import ProbeOptions
from zoo_rank.probe import linear_probe
from zoo_rank.stats import rank_agreement, same_order, seed_spread, tie_band

ROOT = Path(__file__).resolve().parents[1]


def test_stratified_split_every_class_validated_disjoint_and_seeded():
    labels = np.repeat(np.arange(5), [1, 2, 4, 10, 7])
    fit, val = stratified_split(labels, 0.2, seed=3)
    assert len(np.intersect1d(fit, val)) == 0
    assert np.array_equal(np.sort(np.concatenate([fit, val])), np.arange(len(labels)))
    # ceil(0.2 n_k), at least one, none for a single-row class, never the whole class
    assert [int((labels[val] == k).sum()) for k in range(5)] == [0, 1, 1, 2, 2]
    fit2, val2 = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(val, val2) and np.array_equal(fit, fit2)
    _, val3 = stratified_split(labels, 0.2, seed=4)
    assert not np.array_equal(val, val3)


def test_options_reject_bad_settings_and_key_changes_with_every_setting():
    with pytest.raises(ZooRankError, match="learning rates"):
        FinetuneOptions(lrs=())
    with pytest.raises(ZooRankError, match="head_init"):
        FinetuneOptions(head_init="zeros")
    base = cell_key("m", "sha256:x", "a", "b", "top1", FinetuneOptions(), "cpu", "fp32", 1)
    for change in ({"epochs": 5}, {"lrs": (1e-2,)}, {"seed": 1}, {"img_size": 96}, {"head_init": "random"}, {"bn_frozen_stats": False}):
        other = cell_key("m", "sha256:x", "a", "b", "top1", FinetuneOptions().replace(**change), "cpu", "fp32", 1)
        assert other != base, change
    assert cell_key("m", "sha256:y", "a", "b", "top1", FinetuneOptions(), "cpu", "fp32", 1) != base


def test_probe_head_reproduces_the_probe_on_raw_features():
    """LP-FT: the new linear layer on raw features gives the probe's logits on standardised features."""
    backbone = create_backbone("resnet10t", pretrained=False, seed=0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, 32, 32, generator=gen)
    y = torch.arange(48) % 4
    x[y == 1] += 0.5  # some signal, so the probe is not flat
    fit = torch.utils.data.TensorDataset(x[:36], y[:36])
    options = FinetuneOptions(batch_size=8)
    with torch.no_grad():
        feats = backbone.features(x).double().numpy()
    l2 = probe_head(backbone, fit, torch.device("cpu"), False, 5, options)
    # fitted on the 36 fit rows alone (its L2 on its own split of them): rows 36.. never reach the head
    grid = tuple(np.logspace(-6, 6, 25))
    ref = linear_probe(feats[:36], y[:36].numpy(), feats[:36], y[:36].numpy(),
                       options=ProbeOptions(l2_grid=grid, seed=0, device="cpu"))  # fmt: skip
    assert l2 == ref.l2
    scale = np.maximum(ref.feature_scale, SCALE_FLOOR * np.median(ref.feature_scale))  # damped near-constant dims
    expected = ((feats - ref.feature_mean) / scale) @ ref.coef + ref.intercept  # (48, 4)
    with torch.no_grad():
        head = backbone.model.get_classifier()
        got = head(torch.as_tensor(feats, dtype=torch.float32)).double().numpy()
    assert got.shape == (48, 5)
    np.testing.assert_allclose(got[:, :4], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert np.all(got[:, 4] == 0)  # class 4 never seen: a zero row, zero bias


def test_rank_agreement_against_hand_and_naive_permutations():
    s = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    a = np.array([0.10, 0.20, 0.40, 0.30, 0.35])
    r = rank_agreement(s, a, tie_band=0.06)
    assert r.regret == pytest.approx(0.05)  # pick = model 5 (0.35), best = 0.40
    assert not r.pick_is_best and r.pick_within_ties
    assert r.pearson == pytest.approx(np.corrcoef(s, a)[0, 1])
    assert r.spearman == pytest.approx(0.7)  # rank differences 0 0 2 -1 -1: 1 - 6 * 6 / (5 * 24)
    assert r.weighted_tau == pytest.approx(scipy.stats.weightedtau(s, a).statistic)
    # exact one-sided p-value: the share of the 5! pairings whose weighted tau reaches the observed one
    taus = [scipy.stats.weightedtau(s, a[list(p)]).statistic for p in itertools.permutations(range(5))]
    assert r.exact and r.p_value == pytest.approx(np.mean(np.array(taus) >= r.weighted_tau - 1e-12))
    flipped = rank_agreement(-s, a, sign=-1)
    assert flipped.weighted_tau == pytest.approx(r.weighted_tau) and flipped.regret == r.regret
    assert math.isnan(rank_agreement(s[:2], a[:2]).weighted_tau)  # too few models


def test_seed_spread_is_the_pooled_within_cell_sd():
    reps = {("m1", "t"): [0.70, 0.73, 0.75], ("m2", "t"): [0.5, 0.6], ("m3", "t"): [0.9]}
    out = seed_spread(reps)
    devs = [v - np.mean(v) for v in ([0.70, 0.73, 0.75], [0.5, 0.6])]
    assert out["sd"] == pytest.approx(math.sqrt(sum((d**2).sum() for d in devs) / 3))
    assert out["cells"] == 2 and out["runs"] == 5 and out["max_range"] == pytest.approx(0.1)
    assert tie_band(out) == pytest.approx(2 * out["sd"])
    assert tie_band(seed_spread({})) == 0.0


def test_same_order():
    k = 10
    h = np.array([3.0, 5.0, 4.0])
    assert same_order(1 - h / (k - 1), -h) and not same_order(h, np.array([1.0, 3.0, 2.5])[::-1])


@pytest.mark.slow
def test_zoo_benchmark_tiny_runs_and_reruns_from_cache(shared_data, cache_dir, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import zoo_benchmark

    out, work = tmp_path / "board", tmp_path / "work"
    argv = ["--tiny", "--out", str(out), "--work", str(work), "--quiet"]
    assert zoo_benchmark.main(argv) == 0
    board = json.loads((out / "zoo-benchmark-tiny.json").read_text())
    assert (out / "zoo-benchmark-tiny.png").stat().st_size > 0
    models = {c["model"] for c in board["cells"]}
    assert len(models) == 3 and sum(c["control"] for c in board["cells"]) == 1  # mnv3-small, trained, control
    for c in board["cells"]:
        assert 0 <= c["finetune"] <= 1 and 0 <= c["probe"] <= 1
        # The plain VCI is undefined at N <= p + 1 (N/A with its reason); the Ledoit-Wolf VCI always has a value.
        defined = c["n_train"] > c["feature_dim"] + 1
        assert math.isfinite(c["scores"]["vci"]) == defined and math.isfinite(c["scores"]["vci_lw"])
        assert defined or any(note.startswith("vci:") for note in c["notes"])
        assert len(c["finetune_runs"]) == 2  # seed 0 and the spread seed
    assert board["spread"]["cells"] == 3
    files = sorted(work.rglob("*.json"))
    stamps = {f: f.stat().st_mtime_ns for f in files}
    assert zoo_benchmark.main(argv) == 0  # the rerun reads every cell
    assert {f: f.stat().st_mtime_ns for f in sorted(work.rglob("*.json"))} == stamps
    again = json.loads((out / "zoo-benchmark-tiny.json").read_text())
    assert [c["finetune"] for c in again["cells"]] == [c["finetune"] for c in board["cells"]]
    assert "TINY" in (out / "zoo-benchmark-tiny.md").read_text()
    # From empty cells (the trained member copied, not retrained) every number comes out the same: the
    # fine-tuning's augmentation draws are seeded (torch and Python's `random`, which timm's crop uses).
    work2 = tmp_path / "work2"
    shutil.copytree(work / "zoo", work2 / "zoo")
    assert zoo_benchmark.main(["--tiny", "--out", str(tmp_path / "board2"), "--work", str(work2), "--quiet"]) == 0
    fresh = json.loads((tmp_path / "board2" / "zoo-benchmark-tiny.json").read_text())
    accuracies = [[(r["accuracy"], r["lr"], r["epoch"]) for r in c["finetune_runs"]] for c in board["cells"]]
    assert [[(r["accuracy"], r["lr"], r["epoch"]) for r in c["finetune_runs"]] for c in fresh["cells"]] == accuracies
    del sys.modules["zoo_benchmark"]


def test_rank_rejects_an_unknown_check():
    from zoo_rank.jobs.rank import RankOptions, rank

    with pytest.raises(ZooRankError, match="--check 'linear'"):
        rank(["pip:efficientnet-lite0"], data="digits", options=RankOptions(check="linear"))


def _synthetic_cells(rng: np.random.Generator) -> list[dict]:
    """6 models x 3 targets; logme tracks fine-tuned accuracy exactly, knn_accuracy is noise."""
    cells = []
    for t, k in (("a", 10), ("b", 10), ("c", 43)):
        acc = rng.permutation(np.linspace(0.5, 0.9, 6))
        for m in range(6):
            scores = {n: float(rng.normal()) for n in ("vci", "h_score", "knn_accuracy")}
            scores["logme"] = float(acc[m])
            scores["h_score"] = float(acc[m] * 3)
            scores["vci"] = 1 - scores["h_score"] / (k - 1)
            runs = [{"seed": s, "accuracy": float(acc[m] + 0.01 * s), "lr": 0.01} for s in (0, 1, 2)] if t == "a" else [{"seed": 0, "accuracy": float(acc[m]), "lr": 0.01}]
            cells.append({"model": f"m{m}", "target": t, "control": m == 0, "scores": scores, "probe": float(acc[m]) - 0.1,
                          "finetune": float(acc[m]), "finetune_runs": runs, "n_classes": k, "feature_dim": 64, "n_train": 100, "n_test": 50})  # fmt: skip
    return cells


def test_regimes_put_plain_and_shrunk_scores_side_by_side_with_n_and_p():
    """Issue 16 on the zoo board: where plain VCI / H-score are undefined (N <= p + 1) the row says N/A and
    no pick, while the shrunk variants still rank; N, p and the binomial test SE are the cells' own."""
    from zoo_rank.board.zoo import analyse, regimes

    acc = np.array([0.5, 0.6, 0.7, 0.8, 0.9])
    cells = []
    for m, a in enumerate(acc):
        scores = {"vci": math.nan, "h_score": math.nan, "vci_lw": 1.0 - a, "h_score_lw": 9 * a}
        cells.append({"model": f"m{m}", "target": "t", "control": False, "scores": scores, "probe": a, "finetune": a,
                      "finetune_runs": [{"seed": 0, "accuracy": a, "lr": 0.01}], "n_classes": 10,
                      "feature_dim": 1280 if m else 576, "n_train": 150, "n_test": 100})  # fmt: skip
    row = regimes(analyse(cells), cells).row(0, named=True)
    assert (row["N"], row["K"], row["p"], row["N <= p+1"], row["N < 5p"]) == (150, 10, "576-1280", 5, 5)
    assert row["test SE (points)"] == pytest.approx(round(100 * math.sqrt(np.mean(acc * (1 - acc) / 100)), 1))
    assert row["vci pick"] == "N/A" and row["h_score pick"] == "N/A" and math.isnan(row["vci tau"])
    assert row["vci_lw pick"] == "m4" and row["h_score_lw pick"] == "m4"  # lower vci_lw = better, higher H = better
    assert row["vci_lw tau"] == pytest.approx(1.0) and row["h_score_lw tau"] == pytest.approx(1.0)


def test_board_analysis_and_files_from_synthetic_cells(tmp_path):
    from zoo_rank.board.zoo import analyse, verdict, write_board
    from zoo_rank.jobs.benchmark import Model

    cells = _synthetic_cells(np.random.default_rng(0))
    a = analyse(cells)
    mean = a["mean"].filter((a["mean"]["truth"] == "finetune") & (a["mean"]["subset"] == "no-controls"))
    top = mean.row(0, named=True)
    assert top["score"] in ("logme", "h_score", "vci") and top["mean_weighted_tau"] == pytest.approx(1.0)
    assert top["best_pick_rate"] == 1.0 and top["mean_regret"] == 0.0
    assert all(v["same_order"] for v in a["vci_vs_h_score"].values())
    assert a["spread"]["cells"] == 6 and a["spread"]["sd"] == pytest.approx(0.01)
    assert any("seed spread" in line for line in verdict(a))
    zoo = [Model(f"m{m}", f"x{m}", m != 0, m == 0, "imagenet") for m in range(6)]
    paths = write_board(a, zoo, cells, {"command": "x", "tiny": True}, tmp_path / "zb")
    assert all(p.stat().st_size > 0 for p in paths.values())
    assert "weighted_tau" in paths["csv"].read_text().splitlines()[0]
    assert "## Plain vs shrunk covariance scores per target" in paths["md"].read_text()
