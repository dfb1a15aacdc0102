"""Boards built from real scores in each sample-size regime: N/A cells with reasons, marks, estimators,
N / p, the notes on what biases a comparison, and the sort key (zoo_rank/board/regime.py)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import polars as pl
import pytest

from zoo_rank.board import RunResult, build_board, read_board, read_csv, render_markdown, write_board
from zoo_rank.jobs.scoring import score_parquet, write_scores
from zoo_rank.metrics import SampleSizeWarning, compute_metrics
from zoo_rank.options import BoardOptions

NAMES = ["vci", "h_score", "vci_lw", "h_score_lw", "logme"]


def scored(label, n, p, *, k=4, sep=1.0, seed=0, mode="target", dead=False):
    """A RunResult of real scores on synthetic features: n samples, p features, k classes."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    x = sep * rng.normal(size=(k, p))[y] + rng.normal(size=(n, p))
    if dead:
        x = np.zeros_like(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = compute_metrics(x, y, NAMES)
    notes = sorted({str(w.message) for w in caught if issubclass(w.category, SampleSizeWarning)})
    return RunResult(
        model=label,
        dataset="synth",
        mode=mode,
        metrics=dict(scores),
        undefined=scores.reasons,
        estimators=scores.estimators,
        feature_dim=p,
        conditions={"images": n, "notes": notes},
    )


def test_target_mode_below_5p_sorts_by_shrinkage_and_shows_na(tmp_path):
    # N = 60 <= p + 1 = 65: plain VCI / H-score have no value; the separations differ, so VCI-LW orders them.
    results = [scored(f"m{s}", 60, 64, sep=s, seed=int(s * 10)) for s in (0.5, 1.0, 2.0)]
    board = build_board(results, BoardOptions(name="b", metrics=NAMES, n_boot=20))
    assert board.primary == "vci_lw"
    assert (
        "target mode uses the Ledoit-Wolf shrinkage estimator when N < 5p (N / p = 0.94)" in board.sort_note
    )
    # Target mode: lower VCI-LW first = better separated first.
    assert [r.label for r in board.ranked()] == ["m2.0", "m1.0", "m0.5"]
    assert all(r.undefined.keys() == {"vci", "h_score"} for r in results)
    md = render_markdown(board)
    assert "Sorted by **VCI-LW** (lower first, ↓): sorted by vci_lw, not vci" in md
    row = next(line for line in md.splitlines() if line.startswith("| 1 | `m2.0`"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[5:7] == ["N/A", "N/A"]  # VCI, H-score
    assert "VCI N/A: undefined at N=60 samples of p=64 features" in row
    assert "- estimator of `vci_lw`: Ledoit-Wolf shrinkage, a from " in md
    assert "- **N / p** (scored samples per feature dimension): 0.938 (N = 60, p = 64)." in md
    # Nothing is ranked by a plain cell: the CSV / JSON carry null there, and the round trip keeps the reasons.
    paths = write_board(board, tmp_path / "b", index=False)
    rows = read_csv(paths["csv"])
    assert all(r["vci"] is None and r["h_score"] is None for r in rows)
    again = read_board(paths["json"])
    assert again.sort_note == board.sort_note and again.ranked()[0].undefined == results[2].undefined


def test_sort_by_a_column_undefined_everywhere_falls_back_and_says_so():
    results = [scored(f"m{s}", 60, 64, sep=s, mode="source") for s in (0.5, 2.0)]
    board = build_board(results, BoardOptions(name="b", metrics=NAMES, primary="vci", n_boot=20))
    assert board.primary == "vci_lw"
    assert board.sort_note.startswith(
        "not sorted by vci, undefined for every model (VCI is undefined at N=60"
    )
    # Only the plain column: nothing to fall back to, so no model gets a rank and no one is recommended.
    only = build_board(results, BoardOptions(name="b", metrics=["vci"], n_boot=20))
    assert only.primary == "vci" and set(only.ranks().values()) == {None}
    assert only.recommendation().startswith("No recommendation")


def test_plain_cells_between_p_plus_1_and_5p_are_marked_and_width_differences_named():
    # N = 60: p + 1 < N < 5p for both widths.
    results = [scored("narrow", 60, 16, seed=1), scored("wide", 60, 48, seed=2)]
    board = build_board(results, BoardOptions(name="b", metrics=NAMES, primary="vci", n_boot=20))
    assert board.sort_note == ""
    md = render_markdown(board)
    for label in ("narrow", "wide"):
        row = next(line for line in md.splitlines() if f"`{label}`" in line and line.startswith("| "))
        cells = [c.strip() for c in row.split("|")]
        assert cells[5].endswith("*") and cells[6].endswith("*")  # VCI, H-score
        assert not cells[7].endswith("*")  # VCI-LW: the estimator for this regime
    note = next(n for n in board.notes() if n.startswith("vci, h_score compare models of"))
    assert "different width p (16, 48)" in note and "vci_lw, h_score_lw" in note
    assert "`wide` 1.25 (N = 60, p = 48); `narrow` 3.75 (N = 60, p = 16)" in md
    # At N >= 5p nothing is marked and no comparison note appears.
    big = build_board(
        [scored("a", 400, 16), scored("b", 400, 40, seed=3)], BoardOptions(name="c", metrics=NAMES, n_boot=20)
    )
    assert not any("different width" in n for n in big.notes())
    assert big.primary == "vci"  # 400 >= 5 * 40: target mode keeps the plain score


def test_dead_backbone_is_flagged_and_never_first():
    results = [scored("alive", 200, 16, sep=2.0), scored("alive2", 200, 16, sep=0.5, seed=4)]
    results.append(scored("dead", 200, 16, dead=True))
    board = build_board(results, BoardOptions(name="b", metrics=NAMES, primary="vci", n_boot=20))
    assert board.ranked()[-1].label == "dead" and board.ranks()[id(board.ranked()[-1])] is None
    dead = board.ranked()[-1]
    assert all(math.isnan(dead.metrics[m]) for m in ("vci", "h_score", "vci_lw", "h_score_lw"))
    md = render_markdown(board)
    row = next(line for line in md.splitlines() if "`dead`" in line and line.startswith("| "))
    # One note for the five N/A cells of the dead row, with the reason once.
    assert row.count("the features are constant across all 200 samples") == 1
    assert "VCI, H-score, VCI-LW, H-score-LW, LogME N/A: undefined: the features are constant" in row
    assert "fine-tune **alive**" in board.recommendation()


@pytest.mark.parametrize("mode", ["source", "target"])
def test_source_mode_keeps_plain_sort_when_defined(mode):
    results = [scored("a", 200, 16, sep=2.0, mode=mode), scored("b", 200, 16, sep=0.5, seed=4, mode=mode)]
    board = build_board(results, BoardOptions(name="b", metrics=NAMES, n_boot=20))
    # N = 200 >= 5p = 80: the plain VCI is the default sort in both modes.
    assert board.primary == "vci" and board.sort_note == ""


def test_score_command_reports_na_with_reason_and_valid_json(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 64)).astype(np.float32), np.arange(40) % 4
    pl.DataFrame({"label": y, "features": x.tolist()}).write_parquet(tmp_path / "f.parquet")
    result = score_parquet(tmp_path / "f.parquet", metrics=["vci", "vci_lw"])
    assert result["scores"]["vci"] is None and 0.0 < result["scores"]["vci_lw"] < 1.0
    assert "N=40 samples of p=64" in result["undefined"]["vci"]
    assert result["estimators"]["vci_lw"].startswith("Ledoit-Wolf shrinkage, a = ")
    saved = json.loads(write_scores(result, tmp_path / "s.json").read_text())  # strict JSON: no NaN
    assert saved["scores"]["vci"] is None
    table = pl.read_csv(write_scores(result, tmp_path / "s.csv"))
    assert table["value"].to_list()[0] is None and "shrinkage" in table["undefined"].to_list()[0]
