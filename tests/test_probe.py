"""Linear probes: accuracy where the answer is known, agreement with scikit-learn, the L2 path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from zoo_rank import results
from zoo_rank._validation import ZooRankError
from zoo_rank.jobs.probe import DatasetPlan
from zoo_rank.options import ProbeOptions
from zoo_rank.probe import (
    LogisticPath,
    RidgePath,
    accuracies,
    linear_probe,
    ridge_probe,
    sklearn_C,
)


def blobs(n, p, K, spread, seed, *, correlated=False, n_test=1500):
    """Gaussian classes around random means; `correlated` noise makes the best direction differ from
    the mean difference, so regularisation matters (with isotropic noise the W -> 0 limit is optimal)."""
    rng = np.random.default_rng(seed)
    mix = np.eye(p) + (2.0 * rng.normal(size=(p, p)) / np.sqrt(p) if correlated else 0.0)
    means = rng.normal(size=(K, p)) * spread

    def draw(m):
        y = np.arange(m) % K
        return means[y] + rng.normal(size=(m, p)) @ mix.T, y

    return (*draw(n), *draw(n_test))


@pytest.mark.parametrize("fit", [linear_probe, ridge_probe])
def test_separable_data_is_probed_perfectly(fit):
    X, y, Xt, yt = blobs(400, 16, 4, spread=3.0, seed=1)
    res = fit(X, y, Xt, yt)
    assert res.top1 > 0.99 and res.mean_per_class > 0.99
    assert res.n_train + res.n_val == 400 and res.n_test == len(yt)


@pytest.mark.parametrize("fit", [linear_probe, ridge_probe])
def test_noise_gives_chance(fit):
    rng = np.random.default_rng(2)
    X, Xt = rng.normal(size=(600, 30)), rng.normal(size=(3000, 30))
    y, yt = rng.integers(0, 4, 600), rng.integers(0, 4, 3000)
    res = fit(X, y, Xt, yt)
    assert abs(res.top1 - 0.25) < 0.04


def test_selected_l2_follows_signal_to_noise():
    # Plenty of data, a real signal and correlated noise: weak regularisation wins (the probe must undo
    # the noise correlations). Few samples in many isotropic noise dimensions: the W -> 0 limit (the
    # class-mean direction, Bayes-optimal here) wins and the strongest tied value is chosen.
    strong = linear_probe(*blobs(1000, 10, 3, spread=0.5, seed=0, correlated=True))
    weak = linear_probe(*blobs(300, 150, 3, spread=0.1, seed=0))
    assert strong.top1 > 0.85
    assert strong.l2 < 1e-2 and weak.l2 > 1.0


def test_agrees_with_sklearn_logistic_regression_at_fixed_c():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X, y, Xt, yt = blobs(500, 12, 4, spread=0.4, seed=3, correlated=True)
    l2 = 3e-3
    # One-value grid: the probe fits train (400 rows), then refits train + val (all 500) at that l2.
    res = linear_probe(
        X[:400], y[:400], Xt, yt, X[400:], y[400:], options=ProbeOptions(l2_grid=(l2,), tol=1e-8)
    )
    scaler = StandardScaler().fit(X)
    clf = LogisticRegression(C=sklearn_C(l2, len(X)), tol=1e-10, max_iter=10_000).fit(scaler.transform(X), y)
    sk_acc = clf.score(scaler.transform(Xt), yt)
    assert abs(res.top1 - sk_acc) <= 0.01
    np.testing.assert_allclose(res.coef, clf.coef_.T, atol=1e-4 * np.abs(clf.coef_).max())
    np.testing.assert_allclose(res.intercept, clf.intercept_, atol=1e-3)
    assert np.mean(res.predict(Xt) == clf.predict(scaler.transform(Xt))) > 0.995


def test_early_stopping_keeps_the_selection():
    data = blobs(300, 150, 3, spread=0.1, seed=0)  # validation accuracy peaks at the strong end
    early = linear_probe(*data)
    full = linear_probe(*data, options=ProbeOptions(early_stop=False))
    assert len(full.l2_path) == 97
    assert len(early.l2_path) < 97 and early.early_stopped
    np.testing.assert_array_equal(early.val_acc_path, full.val_acc_path[: len(early.val_acc_path)])
    assert early.l2 == full.l2 and early.top1 == full.top1


def test_path_runs_strong_to_weak_and_ties_pick_the_stronger():
    X, y, Xt, yt = blobs(300, 8, 3, spread=4.0, seed=5)
    full = linear_probe(X, y, Xt, yt, options=ProbeOptions(l2_grid=(1e-3, 1e3, 1.0), early_stop=False))
    assert list(full.l2_path) == [1e3, 1.0, 1e-3]
    assert list(full.val_acc_path) == [1.0, 1.0, 1.0]  # separable: W -> 0 keeps the mean direction
    assert full.l2 == 1e3
    early = linear_probe(X, y, Xt, yt, options=ProbeOptions(l2_grid=(1e-3, 1e3, 1.0)))
    assert list(early.l2_path) == [1e3] and early.early_stopped  # a perfect score cannot be beaten
    assert early.top1 == full.top1


def test_given_validation_set_and_string_labels():
    X, y, Xt, yt = blobs(300, 10, 3, spread=3.0, seed=6)
    names = np.array(["cat", "dog", "eel"])
    res = linear_probe(X[:200], names[y[:200]], Xt, names[yt], X[200:], names[y[200:]])
    assert res.val_source == "given" and res.n_val == 100 and res.n_train == 200
    assert set(res.predict(Xt[:20])) <= set(names)
    assert np.mean(res.predict(Xt) == names[yt]) == pytest.approx(res.top1)


@pytest.mark.parametrize("n", [80, 30])  # primal (N >= p) and dual (N < p) eigendecompositions
def test_ridge_path_equals_sklearn_ridge_and_solve(n):
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(7)
    X = rng.normal(size=(n, 50)) * rng.uniform(0.1, 3, 50)
    Y = np.eye(4)[rng.integers(0, 4, n)]
    path = RidgePath(X, Y)
    Xt = rng.normal(size=(9, 50))
    l2s = np.array([1e-4, 1e-2, 0.3, 10.0])
    decisions = path.decision(Xt, l2s)
    for a, l2 in enumerate(l2s):
        W, b = path.coef(l2)
        ref = Ridge(alpha=l2 * n).fit(X, Y)
        np.testing.assert_allclose(W, ref.coef_.T, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(b, ref.intercept_, rtol=1e-6, atol=1e-9)
        xc, yc = X - X.mean(0), Y - Y.mean(0)
        W_solve = np.linalg.solve(xc.T @ xc + n * l2 * np.eye(50), xc.T @ yc)
        np.testing.assert_allclose(W, W_solve, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(decisions[a], ref.predict(Xt), rtol=1e-6, atol=1e-9)


def test_ridge_probe_selects_the_argmax_of_brute_force_validation():
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    X, y, Xt, yt = blobs(240, 40, 3, spread=0.3, seed=8, correlated=True)
    grid = np.logspace(-4, 3, 15)
    res = ridge_probe(X[:160], y[:160], Xt, yt, X[160:], y[160:], options=ProbeOptions(l2_grid=tuple(grid)))
    sc = StandardScaler().fit(X[:160])
    accs = [
        np.mean(Ridge(alpha=l2 * 160).fit(sc.transform(X[:160]), np.eye(3)[y[:160]]).predict(sc.transform(X[160:])).argmax(1) == y[160:])
        for l2 in grid[::-1]
    ]  # fmt: skip
    np.testing.assert_allclose(res.val_acc_path, accs)
    assert res.l2 == grid[::-1][int(np.argmax(accs))]


def test_accuracies_top1_and_mean_per_class():
    pred = np.array([0, 0, 0, 0, 1, 1])
    target = np.array([0, 0, 0, 0, 0, 1])  # class 0: 4/5 right, class 1: 1/1
    top1, mpc = accuracies(pred, target, 3)  # class 2 absent from target: not averaged
    assert top1 == pytest.approx(5 / 6) and mpc == pytest.approx((0.8 + 1.0) / 2)


def test_accuracies_equal_sklearn_and_ignore_predicted_classes_absent_from_target(recwarn):
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(17)
    target = rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.6, target, rng.integers(0, 6, 300))  # classes 4, 5 only predicted
    top1, mpc = accuracies(pred, target, 6)
    recalls = [np.mean(pred[target == c] == c) for c in range(4)]
    assert top1 == pytest.approx(np.mean(pred == target)) and mpc == pytest.approx(np.mean(recalls))
    assert not [w for w in recwarn if "y_pred contains classes" in str(w.message)]
    assert mpc == pytest.approx(balanced_accuracy_score(target, pred))


def test_linear_probe_needs_no_torch_optimizer(monkeypatch):
    # Issue 13: the path's warm starts use our own solver state, never torch.optim.LBFGS internals.
    def forbidden(*a, **k):
        raise AssertionError("linear_probe must not build a torch optimizer")

    monkeypatch.setattr(torch.optim, "LBFGS", forbidden)
    res = linear_probe(*blobs(300, 10, 3, spread=1.0, seed=18))
    assert res.top1 > 0.9 and res.n_iter > 0


def test_sklearn_c_mapping():
    assert sklearn_C(1e-3, 500) == pytest.approx(2.0)
    with pytest.raises(ZooRankError):
        sklearn_C(0.0, 10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"test_y": np.full(50, 9)}, "never occurs in train"),
        ({"val_x": np.zeros((5, 6))}, "only one of val_x"),
        ({"l2_grid": [1.0, -1.0]}, "positive finite"),
        ({"train_y": np.zeros(60)}, "at least 2"),
        ({"test_x": np.zeros((50, 7))}, "7 features"),
        ({"train_x": np.full((60, 6), np.nan)}, "NaN"),
        ({"val_fraction": 1.5}, "val_fraction"),
    ],
)
def test_bad_inputs_raise_one_line_errors(kwargs, match):
    rng = np.random.default_rng(9)
    args = {
        "train_x": rng.normal(size=(60, 6)),
        "train_y": np.arange(60) % 3,
        "test_x": rng.normal(size=(50, 6)),
    }
    args["test_y"] = np.arange(50) % 3
    args.update(kwargs)
    settings = {k: args.pop(k) for k in ("l2_grid", "val_fraction") if k in args}
    with pytest.raises(ZooRankError, match=match):
        linear_probe(**args, options=ProbeOptions(**settings))


# ---- the model x dataset grid ----------------------------------------------------------------


class _Features:
    def __init__(self, x, y, key):
        self.features, self.labels, self.meta = x.astype(np.float32), y, {"key": key}


def test_run_probes_writes_one_file_per_cell_merges_and_resumes(tmp_path, monkeypatch):
    import zoo_rank.jobs.probe as probe_mod

    calls = []

    def fake_features(model, plan, split, n_per_class, seed, device, cache_dir, quiet):
        calls.append((model, plan.name, split))
        spread = 3.0 if model == "good" else 0.05
        X, y, Xt, yt = blobs(120, 8, 3, spread=spread, seed=10, n_test=90)
        return (
            _Features(X, y, f"{model}-{split}") if split == "train" else _Features(Xt, yt, f"{model}-{split}")
        )

    def fake_resolve(names):
        return [
            DatasetPlan(n, n, "train", "test", None, "mean_per_class" if n == "b" else "top1", False)
            for n in names
        ]

    monkeypatch.setattr(probe_mod, "_features", fake_features)
    monkeypatch.setattr(probe_mod, "resolve_datasets", fake_resolve)
    table = probe_mod.run_probes(["good", "bad"], ["a", "b"], probe="ridge", results_dir=tmp_path, quiet=True)
    assert table.height == 4 and len(calls) == 8
    run = probe_mod.probe_settings("ridge", None, 0, "auto")
    plans = {p.name: p for p in fake_resolve(["a", "b"])}

    def cell(model, dataset):
        return probe_mod.cell_settings(run, model, plans[dataset])

    files = sorted(p.name for p in tmp_path.glob("probe-ridge__*.json"))
    assert files == sorted(
        results.result_path(tmp_path, "probe-ridge", m, d, cell(m, d)).name
        for m in ("bad", "good")
        for d in "ab"
    )
    rec = results.find_result(tmp_path, "probe-ridge", "good", "b", cell("good", "b"))
    assert rec["metric"] == "mean_per_class" and rec["score"] == rec["mean_per_class"] > 0.95
    assert rec["feature_keys"] == {"train": "good-train", "test": "good-test"} and "torch" in rec["versions"]
    assert rec["settings"]["probe"] == "ridge" and rec["settings"]["l2_grid"].startswith(
        "97 values in [1e-06, 1e+06]"
    )
    bad = results.find_result(tmp_path, "probe-ridge", "bad", "a", cell("bad", "a"))
    assert bad["top1"] < 0.7
    assert (tmp_path / "probe_ridge.csv").is_file() and "| model" in (tmp_path / "probe_ridge.md").read_text()

    calls.clear()
    probe_mod.run_probes(["good", "bad", "new"], ["a", "b"], probe="ridge", results_dir=tmp_path, quiet=True)
    assert {c[0] for c in calls} == {"new"}  # skip_existing: only the new model's cells ran


def test_probe_results_are_keyed_on_every_setting_that_changes_the_number(tmp_path, monkeypatch):
    """A second probe with another --n-per-class (or seed, grid, method) recomputes instead of returning
    the first one's result; both stay on disk; --skip-existing skips only a true match."""
    import zoo_rank.jobs.probe as probe_mod

    calls = []

    def fake_features(model, plan, split, n_per_class, seed, device, cache_dir, quiet):
        calls.append((split, n_per_class, seed))
        X, y, Xt, yt = blobs(600, 8, 3, spread=0.4, seed=10, n_test=90)
        if split != "train":
            return _Features(Xt, yt, f"{split}")
        keep = (
            np.concatenate([np.flatnonzero(y == k)[:n_per_class] for k in range(3)])
            if n_per_class
            else slice(None)
        )
        return _Features(X[keep], y[keep], f"train-{n_per_class}-{seed}")

    plan = DatasetPlan("a", "a", "train", "test", None, "top1", False)
    monkeypatch.setattr(probe_mod, "_features", fake_features)
    monkeypatch.setattr(probe_mod, "resolve_datasets", lambda names: [plan])

    def probe(**kw):
        calls.clear()
        table = probe_mod.run_probes(
            ["m"], ["a"], results_dir=tmp_path, quiet=True, **{"probe": "ridge", **kw}
        )
        return table.row(0, named=True), len(calls)

    n20, ran = probe(n_per_class=20)
    assert ran == 2 and n20["n_train"] + n20["n_val"] == 60
    n40, ran = probe(n_per_class=40)
    assert ran == 2 and n40["n_train"] + n40["n_val"] == 120  # today: the n=20 result came back
    again, ran = probe(n_per_class=20)
    assert ran == 0 and again == n20  # a true match is skipped
    _, ran = probe(n_per_class=20, seed=1)
    assert ran == 2 and calls[0] == ("train", 20, 1)
    _, ran = probe(n_per_class=20, l2_grid=np.logspace(-3, 3, 13))
    assert ran == 2
    _, ran = probe(n_per_class=20, probe="logistic")
    assert ran == 2
    _, ran = probe(n_per_class=20, skip_existing=False)
    assert ran == 2
    assert len(list(tmp_path.glob("probe-ridge__m__a__*.json"))) == 4  # n=20, n=40, seed 1, the small grid
    # A file whose stored settings differ from its name's (copied, edited) is not a match either.
    cell = probe_mod.cell_settings(probe_mod.probe_settings("ridge", 20, 0, "auto"), "m", plan)
    path = results.result_path(tmp_path, "probe-ridge", "m", "a", cell)
    record = json.loads(path.read_text())
    record["settings"]["n_per_class"] = 40
    path.write_text(json.dumps(record))
    assert results.find_result(tmp_path, "probe-ridge", "m", "a", cell) is None
    _, ran = probe(n_per_class=20)
    assert ran == 2


def test_offline_hub_datasets_fail_before_any_model_loads(tmp_path, monkeypatch):
    import zoo_rank.jobs.probe as probe_mod

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")

    def boom(*a, **k):
        raise AssertionError("no features may be extracted when a Hub set cannot be reached")

    monkeypatch.setattr(probe_mod, "_features", boom)
    with pytest.raises(ZooRankError, match="datasets sun397, pets need the Hugging Face Hub"):
        probe_mod.run_probes(["resnet18"], ["sun397", "pets"], results_dir=tmp_path, quiet=True)


def test_dataset_names_resolve_to_the_registry():
    from zoo_rank.jobs.probe import resolve_datasets

    with pytest.raises(ZooRankError, match="unknown dataset 'no-such-set'; known: ten"):
        resolve_datasets(["no-such-set"])
    with pytest.raises(ZooRankError, match="needs 'train' and 'test'"):
        resolve_datasets(["imagenet-sample"])
    plans = {p.name: p for p in resolve_datasets(["ten"])}
    assert len(plans) == 10 and all(p.hub for p in plans.values())
    mean_per_class = sorted(k for k, p in plans.items() if p.metric == "mean_per_class")
    assert mean_per_class == ["aircraft", "caltech101", "flowers102", "pets"]
    assert plans["flowers102"].val_split == "val" and plans["pets"].val_split is None
    (local,) = resolve_datasets(["digits"])
    assert not local.hub and (local.train_split, local.test_split) == ("train", "test")


def test_path_warm_starts_reach_the_same_optimum_as_a_cold_fit():
    # Carrying W and the corrected L-BFGS memory along the path must not change where a fit ends.
    X, y, _, _ = blobs(300, 12, 4, spread=0.4, seed=11, correlated=True)
    path = LogisticPath(X, y, 4, "cpu", torch.float64, tol=1e-10, max_iter=2000)
    for l2 in np.logspace(1, -3, 13):
        path.fit(float(l2))
    cold = LogisticPath(X, y, 4, "cpu", torch.float64, tol=1e-10, max_iter=2000)
    cold.fit(1e-3)
    W, W_cold = path.W.numpy(), cold.W.numpy()
    np.testing.assert_allclose(W, W_cold, atol=1e-4 * np.abs(W_cold).max())
    assert path.n_iter > 0 and cold.n_iter > 0


def test_strong_penalty_expansion_matches_the_exact_fit():
    X, y, _, _ = blobs(400, 10, 3, spread=0.5, seed=12, correlated=True)
    y[:40] = 0  # unequal priors: the intercept starts at the log priors
    c = LogisticPath(X, y, 3, "cpu", torch.float64, tol=1e-12, max_iter=2000).curvature
    for factor in (10.0, 100.0):
        approx = LogisticPath(X, y, 3, "cpu", torch.float64, tol=1e-12, max_iter=2000)
        approx.set_expansion(factor * c)
        exact = LogisticPath(X, y, 3, "cpu", torch.float64, tol=1e-12, max_iter=2000)
        exact.fit(factor * c)
        W, W_exact = approx.W.numpy(), exact.W.numpy()
        assert np.linalg.norm(W - W_exact) / np.linalg.norm(W_exact) < (2.0 / factor) ** 2


def test_validation_cells_are_keyed_and_read_the_probe_of_the_same_subset(tmp_path, monkeypatch):
    """`validate --n-per-class 40` after a run at 20 correlates with the probe trained on 40 per class, not
    with whichever probe file happens to exist; a repeat with the same settings computes nothing."""
    import zoo_rank.extract as extract_mod
    import zoo_rank.jobs.probe as probe_mod
    from zoo_rank.jobs.validate import run_validation

    spreads = {"m0": 0.05, "m1": 0.3, "m2": 1.0}
    scored = []

    def features(model, split, n_per_class):
        X, y, Xt, yt = blobs(600, 6, 3, spread=spreads[model], seed=3, n_test=60)
        if split != "train":
            return _Features(Xt, yt, "test")
        keep = np.concatenate([np.flatnonzero(y == k)[:n_per_class] for k in range(3)])
        return _Features(X[keep], y[keep], f"{model}-{n_per_class}")

    def fake_extract(model, spec, split=None, subset=None, **kw):  # extract_features(..., subset=Subset(n, seed))
        scored.append((model, subset.n_per_class))
        return features(model, split, subset.n_per_class)

    monkeypatch.setattr(probe_mod, "_features", lambda m, plan, split, n, *a: features(m, split, n))
    monkeypatch.setattr(extract_mod, "extract_features", fake_extract)
    kw = dict(probe="ridge", results_dir=tmp_path, quiet=True)
    probe_mod.run_probes(list(spreads), ["digits"], n_per_class=20, **kw)
    with pytest.raises(ZooRankError, match="--probe ridge --n-per-class 40 --seed 0"):
        run_validation(list(spreads), ["digits"], n_per_class=40, metrics=["vci"], n_boot=0, **kw)
    probe_mod.run_probes(list(spreads), ["digits"], n_per_class=40, **kw)
    for n in (20, 40):
        run_validation(list(spreads), ["digits"], n_per_class=n, metrics=["vci"], n_boot=0, **kw)
    assert scored == [(m, n) for n in (20, 40) for m in spreads]
    cells = results.merge_results(tmp_path, "validate")
    assert cells.height == 6 and sorted(cells["n_samples"].to_list()) == [60] * 3 + [120] * 3
    probes = results.merge_results(tmp_path, "probe-ridge")
    for row in cells.iter_rows(named=True):
        (target,) = [
            p["score"]
            for p in probes.iter_rows(named=True)
            if p["model"] == row["model"] and p["n_per_class"] == row["n_per_class"]
        ]
        assert row["target"] == target
    scored.clear()
    run_validation(list(spreads), ["digits"], n_per_class=40, metrics=["vci"], n_boot=0, **kw)
    assert scored == []  # a true match: nothing recomputed
    run_validation(list(spreads), ["digits"], n_per_class=40, metrics=["vci", "logme"], n_boot=0, **kw)
    assert len(scored) == 3  # other metrics: another key


def _naive_objective(x, y, W, b, l2):
    """Float64 reference: mean softmax cross-entropy + l2/2 ||W||^2 and its gradient (W, b)."""
    logits = x @ W + b
    logits = logits - logits.max(1, keepdims=True)
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    n = len(y)
    loss = -np.mean(np.log(prob[np.arange(n), y])) + 0.5 * l2 * np.sum(W**2)
    prob[np.arange(n), y] -= 1.0
    return loss, x.T @ prob / n + l2 * W, prob.sum(0) / n


def test_objective_and_curvature_match_naive_float64():
    X, y, _, _ = blobs(200, 7, 3, spread=0.5, seed=13, correlated=True)
    path = LogisticPath(X, y, 3, "cpu", torch.float64, tol=1e-8, max_iter=100)
    xs = path.x.numpy()
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(7, 3)), rng.normal(size=3)
    path.l2 = 0.3
    theta = torch.as_tensor(np.concatenate([W.ravel(), b]))
    loss_data, grad_data = path._evaluate(theta)
    loss, gW, gb = _naive_objective(xs, y, W, b, 0.3)
    assert path._objective(loss_data, theta) == pytest.approx(loss, rel=1e-12)
    g = path._full_grad(grad_data, theta).numpy()
    np.testing.assert_allclose(g[:21].reshape(7, 3), gW, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(g[21:], gb, rtol=1e-10, atol=1e-14)
    # curvature: half the top eigenvalue of the standardised covariance, ddof=0 as StandardScaler
    from sklearn.preprocessing import StandardScaler

    z = StandardScaler().fit_transform(X)
    assert path.curvature == pytest.approx(0.5 * np.linalg.eigvalsh(z.T @ z / len(z)).max(), rel=1e-8)


def test_memory_and_gradient_carry_exactly_to_a_new_penalty():
    # After a fit at l2 = 0.1, moving to 0.05 must give the gradient a fresh evaluation gives, and every
    # stored pair must satisfy y = grad_new(theta + s) - grad_new(theta) for the new objective.
    X, y, _, _ = blobs(200, 8, 3, spread=0.5, seed=15, correlated=True)
    path = LogisticPath(X, y, 3, "cpu", torch.float64, tol=1e-9, max_iter=200)
    path.fit(1.0)
    path.fit(0.1)
    history = [p[0].clone() for p in path._pairs]
    assert history
    path._move_penalty(0.05)
    _, fresh_grad = path._evaluate(path.theta)
    np.testing.assert_allclose(
        path._full_grad(path._grad_data, path.theta).numpy(),
        path._full_grad(fresh_grad, path.theta).numpy(),
        atol=1e-14,
    )
    s, y_pair, rho = path._pairs[-1]
    start = path.theta - s  # the last pair's step ended at the current theta
    _, g_start = path._evaluate(start)
    diff = path._full_grad(fresh_grad, path.theta) - path._full_grad(g_start, start)
    np.testing.assert_allclose(y_pair.numpy(), diff.numpy(), rtol=1e-8, atol=1e-13)
    assert rho == pytest.approx(1.0 / float(s.dot(y_pair)))


def test_a_converged_fit_moves_to_a_close_penalty_without_a_pass_over_the_data():
    X, y, _, _ = blobs(200, 8, 3, spread=0.5, seed=16, correlated=True)
    path = LogisticPath(X, y, 3, "cpu", torch.float64, tol=1e-3, max_iter=200)
    path.fit(0.1)
    evals, W = path.n_evals, path.W.clone()
    grad_w = path._grad_data[: W.numel()].view_as(W) + 0.1 * W
    # The corrected gradient g + delta * W stays below tol for a small enough delta: nothing to do.
    delta = 0.5 * (1e-3 - float(grad_w.abs().max())) / float(W.abs().max())
    assert path.fit(0.1 - delta) == 0 and path.n_evals == evals and torch.equal(path.W, W)
    assert path.fit(1e-3) > 0 and path.n_evals > evals  # a real move needs passes over X


def test_few_images_per_class_validate_one_image_of_every_class():
    """Flowers-102 has 4 training images per class: a 20% stratified split (82 of 408) cannot hold all 102
    classes and sklearn refuses it; the probe then validates on exactly one image of every class."""
    rng = np.random.default_rng(0)
    k, per = 30, 4
    y = np.repeat(np.arange(k), per)
    centres = rng.normal(size=(k, 16)) * 3
    x = centres[y] + rng.normal(size=(len(y), 16))
    res = linear_probe(x, y, x, y, options=ProbeOptions(l2_grid=(1e-2, 1.0)))
    assert res.n_val == k and res.n_train == k * per - k
    # Enough rows per class for the fraction: the 20% split is unchanged (24 of 120 -> 10 classes x 12 rows).
    y2 = np.repeat(np.arange(10), 12)
    x2 = rng.normal(size=(120, 8)) + y2[:, None]
    assert linear_probe(x2, y2, x2, y2, options=ProbeOptions(l2_grid=(1.0,))).n_val == 24


def test_subspace_step_minimises_the_second_order_model_in_the_span():
    # At the minimiser of the model in span(d_1, d_2), the model's gradient g + H d is orthogonal to both
    # directions; H from autograd on the naive objective.
    from zoo_rank.probe._linalg import subspace_step

    X, y, _, _ = blobs(150, 5, 3, spread=0.5, seed=17, correlated=True)
    path = LogisticPath(X, y, 3, "cpu", torch.float64, tol=1e-8, max_iter=100)
    path.l2 = 0.05
    theta = torch.as_tensor(np.random.default_rng(1).normal(size=18) * 0.3)
    _, grad_data = path._evaluate(theta)
    g = path._full_grad(grad_data, theta)
    xs, yy = path.x, torch.as_tensor(y)

    def objective(t):
        logits = xs @ t[:15].view(5, 3) + t[15:]
        return torch.nn.functional.cross_entropy(logits, yy) + 0.025 * t[:15].pow(2).sum()

    hess = torch.autograd.functional.hessian(objective, theta)
    rng = np.random.default_rng(2)
    dirs = []
    for _ in range(2):
        d = torch.as_tensor(rng.normal(size=18))
        xd = xs @ d[:15].view(5, 3) + d[15:]
        dirs.append((d, xd, float(xd.norm())))
    d, xd = subspace_step(g, dirs, path._prob, 0.05, 15, max_amplification=1e6)
    model_grad = g + hess @ d
    for dj, _, _ in dirs:
        assert abs(float(dj @ model_grad)) < 1e-10 * float(dj.norm() * g.norm())
    np.testing.assert_allclose(xd.numpy(), (xs @ d[:15].view(5, 3) + d[15:]).numpy(), atol=1e-12)


def test_kept_logits_follow_the_path_in_float32():
    # The logits are updated by X d at each step rather than recomputed: after a whole path they must
    # still be X W + b of the current (W, b), up to float32 products.
    X, y, _, _ = blobs(2000, 64, 5, spread=0.3, seed=18, correlated=True)
    path = LogisticPath(X, y, 5, "cpu", torch.float32, tol=1e-4, max_iter=500)
    for l2 in np.logspace(1, -4, 41):
        path.fit(float(l2))
    fresh = path.x.double() @ path.W.double() + path.b.double()
    assert path.n_iter > 41
    assert float((path._logits - fresh).abs().max()) < 1e-4 * float(fresh.abs().max())
