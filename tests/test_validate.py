"""MLOG, rank correlations against scipy, regret, bootstrap intervals, the paper-tables route."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from zoo_rank._validation import ZooRankError
from zoo_rank.stats import (
    load_paper_tables,
    mlog,
    paper_report,
    rank_correlations,
    selection_regret,
)

# ---- MLOG --------------------------------------------------------------------------------------


def test_mlog_hand_computed():
    # logit(0.8) = ln 4, logit(0.9) = ln 9, logit(0.75) = ln 3: mean(ln 4, ln 9) - ln 3 = ln 6 - ln 3 = ln 2.
    assert mlog([0.8, 0.9], 0.75) == pytest.approx(math.log(2.0), rel=1e-12)
    assert mlog({"pets": 0.5, "dtd": 0.5}, 0.5) == pytest.approx(0.0, abs=1e-15)
    # logit(0.2) = -ln 4: a model worse downstream than upstream gets a negative MLOG.
    assert mlog([0.2], 0.8) == pytest.approx(-2 * math.log(4.0))


def test_mlog_rows_are_models():
    down = np.array([[0.8, 0.9], [0.6, 0.7], [0.3, 0.95]])
    pre = np.array([0.75, 0.7, 0.5])
    np.testing.assert_allclose(mlog(down, pre), [mlog(r, p) for r, p in zip(down, pre, strict=True)])


@pytest.mark.parametrize("bad", [[0.9, 1.0], [0.0, 0.5]])
def test_mlog_refuses_infinite_log_odds(bad):
    with pytest.raises(ZooRankError, match=r"exactly 0 or 1.*clip"):
        mlog(bad, 0.7)


def test_mlog_clip_is_explicit_and_finite():
    eps = 1e-3
    value = mlog([1.0, 0.5], 0.7, clip=eps)
    assert math.isfinite(value)
    assert value == pytest.approx((math.log((1 - eps) / eps) + 0.0) / 2 - math.log(0.7 / 0.3))


def test_mlog_percentages_are_caught():
    with pytest.raises(ZooRankError, match="divide by 100"):
        mlog([91.0, 85.5], 76.1)
    with pytest.raises(ZooRankError, match=r"\(M, D\)"):
        mlog(np.full((3, 2), 0.5), [0.5, 0.5])


# ---- rank correlations -------------------------------------------------------------------------


@pytest.fixture
def models():
    rng = np.random.default_rng(0)
    targets = rng.uniform(0.5, 0.9, 12)
    scores = targets + rng.normal(0, 0.08, 12)
    return scores, targets


def test_each_statistic_equals_scipy(models):
    s, t = models
    c = rank_correlations(s, t, n_boot=0)
    assert c.pearson == pytest.approx(stats.pearsonr(s, t)[0], rel=1e-12)
    assert c.spearman == pytest.approx(stats.spearmanr(s, t)[0], rel=1e-12)
    assert c.kendall == pytest.approx(stats.kendalltau(s, t)[0], rel=1e-12)
    assert c.weighted_tau == pytest.approx(stats.weightedtau(s, t)[0], rel=1e-12)
    assert c.n_models == 12 and c.ci == {}


def test_sign_orients_a_lower_is_better_score(models):
    s, t = models
    up = rank_correlations(s, t, n_boot=0)
    down = rank_correlations(-s, t, sign=-1, n_boot=0)
    for k in ("pearson", "spearman", "kendall", "weighted_tau", "regret"):
        assert getattr(down, k) == pytest.approx(getattr(up, k), rel=1e-12)
    # weightedtau is not symmetric under negation: the sign must be applied before the call.
    raw = rank_correlations(-s, t, n_boot=0)
    assert raw.spearman == pytest.approx(-up.spearman)
    assert raw.weighted_tau == pytest.approx(stats.weightedtau(-s, t)[0])


def test_regret_hand_computed():
    targets = [0.70, 0.90, 0.80, 0.60]
    assert selection_regret([3.0, 1.0, 2.0, 0.0], targets) == pytest.approx(0.20)  # picks 0.70, best 0.90
    assert selection_regret([0.1, 0.9, 0.5, 0.0], targets) == 0.0
    assert selection_regret([3.0, 1.0, 2.0, 0.0], targets, sign=-1) == pytest.approx(0.30)  # picks 0.60
    # Ties at the top are broken pessimistically: the worst of 0.9 and 0.6.
    assert selection_regret([1.0, 2.0, 0.0, 2.0], targets) == pytest.approx(0.30)


def test_bootstrap_intervals_contain_the_estimate_and_are_seeded(models):
    s, t = models
    c = rank_correlations(s, t, n_boot=500, seed=3)
    for k in ("pearson", "spearman", "kendall", "weighted_tau", "regret"):
        lo, hi = c.ci[k]
        assert lo <= getattr(c, k) <= hi, k
        assert lo < hi or k == "regret"
    assert rank_correlations(s, t, n_boot=500, seed=3).ci == c.ci
    assert rank_correlations(s, t, n_boot=500, seed=4).ci != c.ci
    wide = rank_correlations(s, t, n_boot=500, seed=3, ci_level=0.99)
    assert wide.ci["spearman"][0] <= c.ci["spearman"][0] and wide.ci["spearman"][1] >= c.ci["spearman"][1]


@pytest.mark.parametrize(
    "scores, targets, kwargs, match",
    [
        ([0.1, 0.2], [0.5, 0.6], {}, "at least 3"),
        ([0.1, 0.2, 0.3], [0.5, 0.6], {}, "3 scores but 2 targets"),
        ([0.1, np.nan, 0.3], [0.5, 0.6, 0.7], {}, "NaN"),
        ([0.1, 0.2, 0.3], [0.5, 0.6, 0.7], {"sign": 2}, "sign must be"),
    ],
)
def test_bad_correlation_inputs(scores, targets, kwargs, match):
    with pytest.raises(ZooRankError, match=match):
        rank_correlations(scores, targets, **kwargs)


def test_constant_scores_give_nan_not_a_crash():
    c = rank_correlations([1.0, 1.0, 1.0, 1.0], [0.5, 0.6, 0.7, 0.8], n_boot=50)
    assert math.isnan(c.spearman) and c.regret == pytest.approx(0.3)  # all tied: pessimistic pick


# ---- the paper's tables ------------------------------------------------------------------------


SHARED_PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper" / "xu-liu-2023-tables.json"


def test_shipped_tables_equal_the_shared_transcription():
    from zoo_rank.paper import TABLES_FILE

    shipped = load_paper_tables()
    assert shipped == json.loads(TABLES_FILE.read_text()) and "ICML 2023" in shipped["source"]
    assert [m["name"] for m in shipped["models"]][:2] == ["tau=0.1", "tau=0.2"] and len(shipped["models"]) == 11
    if not SHARED_PAPER.is_file():
        pytest.skip(f"{SHARED_PAPER} is absent")
    assert shipped == json.loads(SHARED_PAPER.read_text())


def test_paper_report_on_shipped_tables_matches_published_mlog_and_figure7():
    tables = load_paper_tables()
    report = paper_report(tables, n_boot=0)
    for row, m in zip(report["mlog"], tables["models"], strict=True):
        # eq. 6 by hand, with the table's percentages: mean_d logit(acc_d) - logit(pretraining acc).
        down = np.array([m["downstream_acc"][d] for d in tables["datasets"]]) / 100
        by_hand = np.mean(np.log(down / (1 - down))) - math.log(m["pretrain_acc"] / (100 - m["pretrain_acc"]))
        assert row["mlog"] == pytest.approx(by_hand, abs=1e-12)
        assert abs(row["mlog"] - m["mlog"]) < 6e-4  # rounding of the printed accuracies
    by = {(c["group"], c["metric"]): c for c in report["correlations"]}
    # Pearson r of each raw metric with the published MLOG (../shared/paper/README.md, the paper's Fig. 7).
    expected = {
        "tau": {"vci": 0.995, "fuzziness": 0.986, "squared_distance": 1.000, "cos_sim": -0.989},
        "lambda": {"vci": 0.975, "fuzziness": -0.415, "squared_distance": -0.996, "cos_sim": 0.978},
    }
    for group, values in expected.items():
        for metric, r in values.items():
            c = by[(group, metric)]
            assert c["sign"] == 1 and c["vs_published"]["pearson"] == pytest.approx(r, abs=5e-4)
            assert c["pearson"] == pytest.approx(r, abs=1.5e-3)  # recomputed MLOG: third decimal may move
            x = [m["metrics"][metric] for m in tables["models"] if m["group"] == group]
            published = [m["mlog"] for m in tables["models"] if m["group"] == group]
            assert c["vs_published"]["spearman"] == pytest.approx(stats.spearmanr(x, published)[0])
    assert by[("lambda", "fuzziness")]["vs_published"]["spearman"] == pytest.approx(-0.4)
    assert by[("tau", "cos_sim")]["spearman"] == pytest.approx(-1.0)


def test_validate_paper_cli_prints_both_groups():
    from typer.testing import CliRunner

    from zoo_rank.cli import app

    result = CliRunner().invoke(app, ["validate", "--paper"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    for text in ("group tau", "group lambda", "+0.3251", "+0.3250", "-0.2373", "-0.2375", "+0.995", "-0.415"):
        assert text in result.output, text


def _tables(tmp_path, **extra):
    """A tables file in the documented schema, with made-up numbers."""
    rng = np.random.default_rng(1)
    datasets = ["a", "b", "c"]
    models = []
    for group, n in (("tau", 5), ("lambda", 4), ("pair", 2)):
        for i in range(n):
            down = {d: float(rng.uniform(40, 95)) for d in datasets}
            models.append(
                {
                    "name": f"{group}{i}",
                    "group": group,
                    "pretrain_acc": float(rng.uniform(70, 80)),
                    "downstream_acc": down,
                    "metrics": {"vci": float(rng.uniform(0.2, 0.8)), "fuzziness": float(rng.uniform(1, 5))},
                    "mlog": 0.123,
                }
            )
    doc = {
        "schema": "zoo_rank.paper_tables/1",
        "accuracy_unit": "percent",
        "datasets": datasets,
        "models": models,
    }
    doc.update(extra)
    path = tmp_path / "tables.json"
    path.write_text(json.dumps(doc))
    return path, doc


def test_paper_report_recomputes_mlog_and_correlates_per_group(tmp_path):
    path, doc = _tables(
        tmp_path, signs={"fuzziness": -1}, published_correlations={"tau": {"vci": {"spearman": 0.9}}}
    )
    report = paper_report(load_paper_tables(path), n_boot=50)
    for row, m in zip(report["mlog"], doc["models"], strict=True):
        expected = mlog(
            np.array([m["downstream_acc"][d] for d in doc["datasets"]]) / 100, m["pretrain_acc"] / 100
        )
        assert row["mlog"] == pytest.approx(expected) and row["published"] == 0.123
    by = {(c["group"], c["metric"]): c for c in report["correlations"]}
    assert set(by) == {("tau", "vci"), ("tau", "fuzziness"), ("lambda", "vci"), ("lambda", "fuzziness")}
    tau = [i for i, m in enumerate(doc["models"]) if m["group"] == "tau"]
    s = np.array([doc["models"][i]["metrics"]["fuzziness"] for i in tau])
    t = np.array([report["mlog"][i]["mlog"] for i in tau])
    assert by[("tau", "fuzziness")]["spearman"] == pytest.approx(stats.spearmanr(-s, t)[0])
    assert (
        by[("tau", "fuzziness")]["sign"] == -1 and by[("tau", "vci")]["sign"] == 1
    )  # vci: registry's source sign
    assert by[("tau", "vci")]["published"] == {"spearman": 0.9}
    assert {r["group"] for r in report["refused"]} == {"pair"}  # two models: refused with a reason
    assert "at least 3" in report["refused"][0]["reason"]


@pytest.mark.parametrize(
    "change, match",
    [
        ({"schema": "other"}, "expected 'zoo_rank.paper_tables/1'"),
        ({"accuracy_unit": "permille"}, "accuracy_unit"),
        ({"datasets": ["a", "b", "zzz"]}, "no downstream accuracy for \\['zzz'\\]"),
    ],
)
def test_bad_tables_files(tmp_path, change, match):
    path, _ = _tables(tmp_path, **change)
    with pytest.raises(ZooRankError, match=match):
        load_paper_tables(path)
    with pytest.raises(ZooRankError, match="does not exist"):
        load_paper_tables(tmp_path / "missing.json")


# ---- the model x dataset grid --------------------------------------------------------------------


def test_run_validation_scores_models_and_correlates_with_probe_accuracy(tmp_path, monkeypatch):
    import zoo_rank.extract as extract_mod
    import zoo_rank.jobs.probe as probe_mod
    from zoo_rank import results
    from zoo_rank.jobs.validate import run_validation

    # Four models whose features separate the classes more and more: probe accuracy rises with spread.
    spreads = {"m0": 0.05, "m1": 0.2, "m2": 0.5, "m3": 2.0}

    class Features:
        def __init__(self, model, split):
            rng = np.random.default_rng(0 if split == "train" else 1)
            means = np.random.default_rng(42).normal(size=(4, 6))
            self.labels = np.arange(160) % 4
            self.features = (means[self.labels] * spreads[model] + rng.normal(size=(160, 6))).astype(
                np.float32
            )
            self.meta = {"key": f"{model}-{split}"}

    monkeypatch.setattr(probe_mod, "_features", lambda model, plan, split, *a: Features(model, split))
    monkeypatch.setattr(
        extract_mod, "extract_features", lambda model, spec, split=None, **k: Features(model, split)
    )

    with pytest.raises(ZooRankError, match="run `zoo-rank probe m0 m1 m2 m3 --datasets digits"):
        run_validation(list(spreads), ["digits"], results_dir=tmp_path, quiet=True)
    probe_mod.run_probes(list(spreads), ["digits"], probe="ridge", results_dir=tmp_path, quiet=True)
    table = run_validation(
        list(spreads),
        ["digits"],
        metrics=["vci", "h_score"],
        probe="ridge",
        results_dir=tmp_path,
        n_boot=20,
        quiet=True,
    )
    assert table["metric"].to_list() == ["vci", "h_score"] and table["n_models"].to_list() == [4, 4]
    cells = results.merge_results(tmp_path, "validate")
    assert cells.height == 4 and {"score_vci", "score_h_score", "target"} <= set(cells.columns)
    # The targets are the probe scores; the statistics are scipy's on the oriented scores.
    ordered = cells.sort("model")
    acc = ordered["target"].to_numpy()
    assert acc[-1] > acc[0]
    vci_row = table.filter(table["metric"] == "vci").row(0, named=True)
    assert vci_row["sign"] == -1  # target mode: lower VCI (more collapse on the target data) is better
    assert vci_row["spearman"] == pytest.approx(stats.spearmanr(-ordered["score_vci"].to_numpy(), acc)[0])
    assert (tmp_path / "validation.csv").is_file()


def test_small_boards_get_exact_permutation_p_values_and_no_intervals():
    import itertools

    # Any monotone 4-model board: a bootstrap said "+1.00 [+1.00, +1.00]"; the honest number is p = 1/4!.
    c = rank_correlations([0.1, 0.2, 0.5, 0.9], [0.3, 0.6, 0.8, 0.85], n_boot=1000)
    assert c.spearman == pytest.approx(1.0) and c.ci == {}
    assert c.p_value["spearman"] == pytest.approx(1 / 24) and c.p_value["kendall"] == pytest.approx(1 / 24)
    assert c.uncertainty.startswith("exact permutation")
    # Against a naive enumeration of all 7! orders, ties included.
    rng = np.random.default_rng(5)
    t = rng.uniform(0.5, 0.9, 7)
    s = np.round(t + rng.normal(0, 0.1, 7), 1)  # rounded: tied scores
    c = rank_correlations(s, t)
    naive = {"pearson": stats.pearsonr, "spearman": stats.spearmanr, "kendall": stats.kendalltau}
    for name, fn in naive.items():
        observed = fn(s, t)[0]
        null = [fn(s[list(order)], t)[0] for order in itertools.permutations(range(7))]
        want = np.mean(np.asarray(null) >= observed - 1e-12)
        assert c.p_value[name] == pytest.approx(want, abs=1e-12), name
    assert rank_correlations([1.0, 1.0, 1.0], [0.2, 0.5, 0.7]).p_value == {}  # undefined: nothing to test


def test_ten_or_more_models_get_scipy_bca_bootstrap_intervals(models):
    s, t = models
    c = rank_correlations(s, t, n_boot=300, seed=7)
    assert c.p_value == {} and c.uncertainty == "BCa bootstrap intervals"
    want = stats.bootstrap(
        (s, t), lambda a, b: stats.spearmanr(a, b)[0], paired=True, vectorized=False, n_resamples=300,
        method="BCa", rng=np.random.default_rng(7),
    ).confidence_interval  # fmt: skip
    assert c.ci["spearman"] == pytest.approx((want.low, want.high), abs=1e-9)
