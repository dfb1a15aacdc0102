"""Boards from run results: order by mode, arrows, correlations, file round-trips, merge, failures."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from zoo_rank import ZooRankError
from zoo_rank.board import (
    BOARD_SCHEMA,
    INDEX_MARKER,
    INDEX_NAME,
    RunResult,
    build_board,
    load_result,
    merge,
    publish,
    read_board,
    read_csv,
    render_markdown,
    update_index,
    write_board,
)
from zoo_rank.metrics import METRICS
from zoo_rank.options import BoardOptions

METRIC_NAMES = ["vci", "logme", "knn_accuracy"]


def make_result(label, vci, acc, *, mode="target", control=False, dataset="digits", transform="224 px"):
    """A run result whose logme/knn numbers are deliberately NOT monotone in vci, so sort keys differ."""
    return RunResult(
        model=label,
        dataset=dataset,
        mode=mode,
        control=control,
        metrics={
            "vci": vci,
            "logme": -1.0 + 0.3 * np.sin(7 * vci),
            "knn_accuracy": 0.5 + 0.4 * np.cos(5 * vci),
        },
        n_params=4_652_008,
        feature_dim=1280,
        probes=[
            {
                "dataset": dataset,
                "train_split": "train",
                "split": "test",
                "top1": acc,
                "mean_per_class": acc - 0.01,
                "l2": 1e-3,
                "n_train": 100,
                "n_test": 50,
            }
        ],
        conditions={"data": dataset, "precision": "bf16", "transform": transform, "date": "2025-01-01"},
        timings={"extract_s": 1.5},
    )


def make_board(results, **kw):
    """build_board with a short bootstrap (the default 200 resamples cost ~0.5 s per metric here)."""
    return build_board(results, BoardOptions(**{"n_boot": 50, **kw}))


def four_results(mode="target"):
    return [
        make_result("m-a", 0.30, 0.80, mode=mode),
        make_result("m-b", 0.20, 0.85, mode=mode, transform="260 px"),
        make_result("m-c", 0.50, 0.60, mode=mode),
        make_result("random-init:m", 0.90, 0.30, mode=mode, control=True),
    ]


def test_order_and_arrows_flip_with_mode():
    target = make_board(four_results("target"), name="t")
    source = make_board(four_results("source"), name="s")
    assert target.primary == "vci"
    # Target mode: lower VCI ranks first; source mode (the paper's): higher VCI first.
    assert [r.label for r in target.ranked()] == ["m-b", "m-a", "m-c", "random-init:m"]
    assert [r.label for r in source.ranked()] == ["random-init:m", "m-c", "m-a", "m-b"]
    md_t, md_s = render_markdown(target), render_markdown(source)
    assert "**Mode: target**" in md_t and "**Mode: source**" in md_s
    assert f"**VCI {'↑' if METRICS['vci'].target_sign > 0 else '↓'}**" in md_t
    assert f"**VCI {'↑' if METRICS['vci'].source_sign > 0 else '↓'}**" in md_s
    assert "LogME ↑" in md_t and "LogME ↓" in md_s
    # Table rows appear in rank order.
    assert md_t.index("| 1 | `m-b`") < md_t.index("| 2 | `m-a`") < md_t.index("| 4 | `random-init:m`")
    # The recommendation names the best non-control model and ends the page.
    assert md_t.rstrip().splitlines()[-1].startswith("Recommendation: fine-tune **m-b**")
    # In source mode the control ranks first by VCI: the board must not recommend it and must warn.
    rec = source.recommendation()
    assert "**m-c**" in rec and "control random-init:m ranks above it" in rec


def test_sort_by_another_metric():
    board = make_board(four_results(), name="t", primary="knn_accuracy")
    knn = {r.label: r.metrics["knn_accuracy"] for r in board.results}
    assert [r.label for r in board.ranked()] == sorted(knn, key=knn.get, reverse=True)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=2, max_size=8, unique=True))
def test_ranked_is_monotone_and_reverses_between_modes(ints):
    values = [i / 10_000 for i in ints]  # distinct beyond the board's tie tolerance
    results = {
        mode: [
            RunResult(model=f"m{i}", dataset="d", mode=mode, metrics={"vci": v, "logme": v})
            for i, v in enumerate(values)
        ]
        for mode in ("source", "target")
    }
    orders = {}
    for mode, res in results.items():
        board = make_board(res, name="p")
        sign = METRICS["vci"].source_sign if mode == "source" else METRICS["vci"].target_sign
        ranked = [sign * r.metrics["vci"] for r in board.ranked()]
        assert ranked == sorted(ranked, reverse=True)
        assert [board.ranks()[id(r)] for r in board.ranked()] == list(range(1, len(values) + 1))
        orders[mode] = [r.label for r in board.ranked()]
    assert orders["source"] == orders["target"][::-1]


def test_correlation_line_matches_scipy():
    board = make_board(four_results(), name="t")
    corr = board.correlations()
    vals = [(r.metrics["knn_accuracy"], r.probes[0]["top1"]) for r in board.results]
    sign = METRICS["knn_accuracy"].target_sign
    expected = stats.spearmanr([sign * v for v, _ in vals], [a for _, a in vals])[0]
    assert corr["metrics"]["knn_accuracy"]["spearman"] == pytest.approx(expected)
    assert corr["n_models"] == 4
    # VCI (oriented) orders the four models exactly as the probe does.
    assert corr["metrics"]["vci"]["spearman"] == pytest.approx(1.0)
    assert corr["metrics"]["vci"]["regret"] == pytest.approx(0.0)
    md = render_markdown(board)
    assert "**Spearman ρ with probe top-1 (digits)** (all models, n = 4): VCI ↓ +1.00" in md
    # The control-free view has three models left.
    assert "(controls left out, n = 3)" in md


def test_correlations_absent_with_two_models():
    board = make_board(four_results()[:2], name="t")
    assert "absent" in board.correlations()["metrics"]["vci"]
    md = render_markdown(board)
    assert "VCI ↓ absent" in md
    assert "needs at least 3" in md


def test_failing_model_is_a_row():
    results = [
        *four_results(),
        RunResult(model="nope", dataset="digits", mode="target", error="ZooRankError: unknown model 'nope'"),
    ]
    board = make_board(results, name="t")
    assert board.ranked()[-1].label == "nope"
    assert board.ranks()[id(board.ranked()[-1])] is None
    md = render_markdown(board)
    assert "| ✗ | `nope` |" in md
    assert "error: ZooRankError: unknown model 'nope'" in md
    assert board.rows()[-1]["error"].startswith("ZooRankError")
    assert board.correlations()["n_models"] == 4  # the failed run does not enter the correlations


def test_files_round_trip(tmp_path):
    results = [
        *four_results(),
        RunResult(model="nope", dataset="digits", mode="target", error="OutOfMemoryError: CUDA"),
    ]
    board = make_board(results, name="rt", command="zoo-rank rank m-a m-b")
    paths = write_board(board, tmp_path / "boards" / "rt")
    assert {p.name for p in paths.values()} == {"rt.md", "rt.csv", "rt.json", "rt.png", INDEX_NAME}
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(paths["json"].read_text())
    assert data["schema"] == BOARD_SCHEMA and data["mode"] == "target" and data["primary"] == "vci"
    # One schema: the CSV reads back as exactly the JSON rows, with the same columns.
    rows = read_csv(paths["csv"])
    assert list(rows[0]) == data["columns"]
    assert rows == data["rows"]
    assert [r["label"] for r in rows] == [r.label for r in board.ranked()]
    # The JSON rebuilds the same board.
    back = read_board(paths["md"])
    assert back.to_dict() == board.to_dict()
    assert render_markdown(back) == paths["md"].read_text()


def test_merge_equals_original(tmp_path):
    board = make_board(four_results(), name="orig", command="zoo-rank rank", created="2025-01-01 00:00 UTC")
    files = [r.save(tmp_path / "orig.runs") for r in board.results]
    assert load_result(files[0]).to_dict() == board.results[0].to_dict()
    random.Random(0).shuffle(files)  # order of the files (e.g. from several machines) must not matter
    merged = merge(files, BoardOptions(name="orig", command="zoo-rank rank", created="2025-01-01 00:00 UTC", n_boot=50))
    assert merged.to_dict() == board.to_dict()
    assert render_markdown(merged) == render_markdown(board)
    # A folder stands for its files.
    assert merge([tmp_path / "orig.runs"], BoardOptions(name="orig", n_boot=0)).rows() == board.rows()


def test_merge_refuses_mixed_modes_and_duplicates(tmp_path):
    a = make_result("m-a", 0.3, 0.8, mode="target").save(tmp_path / "t")
    b = make_result("m-b", 0.3, 0.8, mode="source").save(tmp_path / "s")
    with pytest.raises(ZooRankError, match="mix modes"):
        merge([a, b], BoardOptions(name="x"))
    with pytest.raises(ZooRankError, match="two results for model"):
        make_board([make_result("m-a", 0.3, 0.8), make_result("m-a", 0.2, 0.8)], name="x")
    (tmp_path / "board.json").write_text(json.dumps({"schema": BOARD_SCHEMA}))
    with pytest.raises(ZooRankError, match="expected a result file"):
        merge([tmp_path / "board.json"], BoardOptions(name="x"))


def test_conditions_shared_and_per_model():
    board = make_board(four_results(), name="t")
    cond = board.conditions()
    assert cond["precision"] == "bf16"
    assert cond["transform"] == {"m-a": "224 px", "m-b": "260 px", "m-c": "224 px", "random-init:m": "224 px"}
    md = render_markdown(board)
    assert "| precision | bf16 |" in md
    assert "| transform | per model, see below the ranking |" in md
    assert "| model | transform |" in md and "| `m-b` | 260 px |" in md


def test_index_lists_boards_and_commands(tmp_path):
    write_board(make_board(four_results(), name="one", command="zoo-rank rank --out x/one"), tmp_path / "one")
    write_board(
        make_board(four_results("source"), name="two", command="zoo-rank rank --mode source"),
        tmp_path / "two",
    )
    (tmp_path / "notes.md").write_text("# A page from another tool\n\ntext\n")
    index = update_index(tmp_path).read_text()
    assert "- [notes](notes.md): A page from another tool" in index
    assert "[one](one.md) | target" in index and "[two](two.md) | source" in index
    assert "zoo-rank rank --mode source" in index
    # Recommended = first non-control row; the source board's first row is the control.
    assert "| `m-b` |" in index.split("[one]")[1].splitlines()[0]
    assert "| `m-c` |" in index.split("[two]")[1].splitlines()[0]


def test_ties_share_a_rank_and_block_the_recommendation():
    # VCI degenerates to 0 for every model when N <= p + 1: the board must not pick by tie-break.
    results = [make_result("m-a", 0.0, 0.80), make_result("m-b", 0.0, 0.85), make_result("m-c", 0.2, 0.6)]
    board = make_board(results, name="t")
    assert [board.ranks()[id(r)] for r in board.ranked()] == [1, 1, 3]
    rec = board.recommendation()
    assert rec.startswith("Recommendation: none by VCI ↓ alone: m-a, m-b tie at 0")
    assert "the check prefers m-b" in rec


def test_notes_once_each_naming_partial_holders():
    results = four_results()
    for r in results:
        r.conditions["notes"] = ["fell back to digits"]
    results[0].conditions["notes"].append("VCI with N=50 samples of p=1280 features is biased towards 0")
    board = make_board(results, name="t")
    assert board.notes() == [
        "fell back to digits",
        "VCI with N=50 samples of p=1280 features is biased towards 0 (m-a)",
    ]
    md = render_markdown(board)
    assert md.count("fell back to digits") == 1 and "biased towards 0 (m-a)" in md


# ---- publishing: lock, consistent files, foreign files ---------------------------------------------

HERE = Path(__file__).resolve().parent


def _png_labels(path):
    from PIL import Image

    with Image.open(path) as image:
        return json.loads(image.text["Description"])


def test_concurrent_writers_of_one_board_are_serialised_and_its_files_agree(tmp_path):
    """Three processes publish into one board at once (each drawing its PNG slowly): every model ends up
    on it, in NAME.runs/ and in each of md/csv/json/png, all from one set of results."""
    out = tmp_path / "b"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    workers = [
        subprocess.Popen(
            [sys.executable, str(HERE / "_board_worker.py"), str(out), f"m-{i}", str(0.1 * (i + 1))], env=env
        )
        for i in range(3)
    ]
    assert [w.wait(timeout=300) for w in workers] == [0, 0, 0]
    labels = ["m-0", "m-1", "m-2"]  # target mode: lower VCI first
    assert sorted(p.name for p in (tmp_path / "b.runs").iterdir()) == [
        f"rank-target__{m}__digits.json" for m in labels
    ]
    data = json.loads((tmp_path / "b.json").read_text())
    assert [r["label"] for r in data["rows"]] == labels
    assert [r["label"] for r in read_csv(tmp_path / "b.csv")] == labels
    md = (tmp_path / "b.md").read_text()
    assert [line.split("`")[1] for line in md.splitlines() if line.startswith("| ") and "`m-" in line][
        :3
    ] == labels
    assert _png_labels(tmp_path / "b.png") == labels
    assert "[b](b.md)" in (tmp_path / INDEX_NAME).read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_publish_never_overwrites_files_it_did_not_write(tmp_path):
    board = make_board(four_results(), name="x", command="zoo-rank leaderboard merge")
    (tmp_path / "README.md").write_text("# hand-written\n")
    paths = publish.write(board, tmp_path / "x")
    assert (tmp_path / "README.md").read_text() == "# hand-written\n"
    assert paths["index"].name == INDEX_NAME and paths["index"].read_text().splitlines()[1] == INDEX_MARKER
    assert _png_labels(paths["png"]) == [r.label for r in board.ranked() if r.error is None]
    publish.write(board, tmp_path / "x")  # its own files: rewritten
    for name, text in [
        ("y.md", "# a page\n"),
        ("y.csv", "a,b\n1,2\n"),
        ("y.json", "{}"),
        ("y.png", "not a png"),
    ]:
        (tmp_path / name).write_text(text)
        with pytest.raises(ZooRankError, match=rf"{name} exists and was not written by zoo-rank"):
            publish.write(board, tmp_path / "y")
        assert (tmp_path / name).read_text() == text
        (tmp_path / name).unlink()
    other = tmp_path / "other"
    other.mkdir()
    (other / INDEX_NAME).write_text("# my own index\n")
    with pytest.raises(ZooRankError, match=r"INDEX\.zoo-rank\.md exists and was not written by zoo-rank"):
        publish.write(board, other / "x")
    assert not (other / "x.md").exists() and (other / INDEX_NAME).read_text() == "# my own index\n"
    with pytest.raises(ZooRankError, match="not written by zoo-rank"):
        update_index(other)


def test_a_small_board_reports_exact_p_values_not_a_degenerate_interval():
    board = make_board(four_results(), name="t", n_boot=200)
    md = render_markdown(board)
    # VCI orders the four models exactly as the probe: rho = +1, whose exact one-sided p is 1/4! = 0.042.
    assert "**Spearman ρ with probe top-1 (digits)** (all models, n = 4): VCI ↓ +1.00 (p = 0.042)" in md
    assert "[+1.00, +1.00]" not in md and "95% CI" not in md and "bootstrap over models" not in md
    assert "| score | Spearman ρ (one-sided exact p) |" in md and "smallest possible p here is 0.042" in md
    assert board.to_dict()["correlations"]["metrics"]["vci"]["p_value"]["spearman"] == pytest.approx(1 / 24)


def test_a_board_of_twelve_models_shows_bootstrap_intervals():
    rng = np.random.default_rng(2)
    results = [make_result(f"m{i}", float(v), float(0.9 - v / 2 + rng.normal(0, 0.05))) for i, v in
               enumerate(rng.uniform(0.1, 0.9, 12))]  # fmt: skip
    md = render_markdown(make_board(results, name="t"))
    assert "| score | Spearman ρ [95% BCa CI] |" in md and "(p = " not in md
    assert "95% BCa bootstrap over models (scipy.stats.bootstrap, 50 resamples)" in md


def _vci_h_results(dim):
    out = []
    for label, vci, acc in (("m-a", 0.3, 0.8), ("m-b", 0.2, 0.85), ("m-c", 0.5, 0.6)):
        r = make_result(label, vci, acc)
        r.metrics["h_score"] = (1 - vci) * 9  # 10 classes: H-score = (1 - VCI)(K - 1) when p >= K - 1
        r.feature_dim = dim
        r.conditions["classes"] = 10
        out.append(r)
    return out


def test_the_board_says_when_vci_and_h_score_are_one_piece_of_evidence():
    board = make_board(_vci_h_results(1280), name="t", metrics=["vci", "h_score", "logme"])
    md = render_markdown(board)
    assert "VCI = 1 − H-score/(K − 1) on this board: every model has at least K − 1 = 9 feature dimensions" in md
    assert "| H-score ↑ (= VCI, see the note) |" in md
    narrow = make_board(_vci_h_results(5), name="t", metrics=["vci", "h_score"])  # p < K - 1: not the same
    assert not any("H-score/(K − 1)" in n for n in narrow.notes())
    other = _vci_h_results(1280)
    other[0].metrics["h_score"] += 0.5  # an H-score that is not the VCI identity: say nothing
    assert not make_board(other, name="t", metrics=["vci", "h_score"]).equivalence_notes()
