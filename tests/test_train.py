"""zoo_rank.train: family losses, recipes, collapse tracking math, the loop (resume, DDP, export), CLI."""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo_rank._validation import ZooRankError
from zoo_rank.train import (
    RECIPES,
    get_recipe,
    make_loss,
    read_record,
    spectra,
    train,
    within_class_cosine,
    within_class_split,
)
from zoo_rank.train.model import build_optimizer, build_scheduler

# ---- losses --------------------------------------------------------------------------------------


def _naive_within_class_cosine(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Loop over classes and all ordered pairs (self-pairs included), as the docstring's formula reads."""
    per_class = []
    for c in labels.unique().tolist():
        h = features[labels == c]
        n = len(h)
        total = sum(F.cosine_similarity(h[m], h[k], dim=0) for m in range(n) for k in range(n))
        per_class.append(total / n**2)
    return torch.stack(per_class).mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_within_class_cosine_equals_pairwise_loop(seed):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(23, 7, generator=g, dtype=torch.float64) + 0.5
    labels = torch.randint(0, 5, (23,), generator=g)
    labels[0] = 9  # a class seen once contributes s_c = 1
    features.requires_grad_(True)
    fast = within_class_cosine(features, labels)
    naive = _naive_within_class_cosine(features, labels)
    assert fast.item() == pytest.approx(naive.item(), abs=1e-6)
    grad_fast = torch.autograd.grad(fast, features)[0]
    grad_naive = torch.autograd.grad(naive, features)[0]
    torch.testing.assert_close(grad_fast.double(), grad_naive, atol=1e-6, rtol=1e-5)


def test_within_class_cosine_extremes():
    labels = torch.tensor([0, 0, 1, 1])
    aligned = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 1.0]])
    assert within_class_cosine(aligned, labels).item() == pytest.approx(1.0)
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    # ||(u1 + u2) / 2||^2 = 0 for opposite directions.
    assert within_class_cosine(opposite, labels).item() == pytest.approx(0.0, abs=1e-7)


def test_tau_loss_is_cross_entropy_of_scaled_logits():
    g = torch.Generator().manual_seed(0)
    logits, features, labels = (
        torch.randn(8, 4, generator=g),
        torch.randn(8, 6, generator=g),
        torch.randint(0, 4, (8,), generator=g),
    )
    parts = make_loss("tau", 0.25)(logits, features, labels)
    assert parts.loss.item() == pytest.approx(F.cross_entropy(logits * 4, labels).item(), rel=1e-6)
    assert parts.cosine_distance.item() == pytest.approx(
        1 - within_class_cosine(features, labels).item(), rel=1e-6
    )


def test_lambda_loss_formula_and_sign():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(12, 3, generator=g), torch.arange(12) % 3
    features = torch.randn(12, 5, generator=g).abs()
    parts = make_loss("lambda", 2.5)(logits, features, labels)
    # L = CE + lambda * S (the paper's sign): the similarity itself is added, not the distance.
    expected = F.cross_entropy(logits, labels) + 2.5 * within_class_cosine(features, labels)
    assert parts.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts.cosine_distance.item() == pytest.approx(1 - within_class_cosine(features, labels).item())

    # Gradient descent on free features: the larger lambda, the larger the within-class cosine distance.
    def distance_after(lam: float) -> float:
        h = features.clone().requires_grad_(True)
        head = torch.nn.Linear(5, 3)
        torch.manual_seed(1)
        head.reset_parameters()
        opt = torch.optim.SGD([h, *head.parameters()], lr=0.1)
        loss_fn = make_loss("lambda", lam)
        for _ in range(30):
            opt.zero_grad()
            loss_fn(head(h), h, labels).loss.backward()
            opt.step()
        return 1 - within_class_cosine(h.detach(), labels).item()

    d0, d5, d10 = distance_after(0.0), distance_after(5.0), distance_after(10.0)
    assert d0 < d5 < d10


def test_bad_family_values():
    with pytest.raises(ZooRankError, match="tau must be > 0"):
        make_loss("tau", 0.0)
    with pytest.raises(ZooRankError, match="lambda must be >= 0"):
        make_loss("lambda", -1.0)
    with pytest.raises(ZooRankError, match="unknown family"):
        make_loss("temperature", 1.0)


# ---- recipes -------------------------------------------------------------------------------------


def test_imagenet_recipe_schedule_matches_paper():
    recipe = RECIPES["imagenet-resnet50"]
    assert (recipe.opt, recipe.momentum, recipe.weight_decay, recipe.augment) == (
        "nesterov",
        0.9,
        8e-5,
        "autoaugment",
    )
    assert (recipe.batch_size, recipe.epochs, recipe.warmup_epochs, recipe.warmup_lr) == (256, 300, 10, 1e-5)
    assert recipe.lr(world_size=8) == pytest.approx(0.8)  # 0.1 x 2048 / 256

    model = torch.nn.Linear(4, 2)
    opt = build_optimizer(recipe, model, world_size=1)
    assert opt.param_groups[0]["nesterov"] is True
    steps = 5
    sched = build_scheduler(recipe, opt, steps_per_epoch=steps)
    sched.step_update(0)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)
    sched.step_update(5 * steps)  # half-way up the linear warm-up
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5 + (0.1 - 1e-5) / 2)
    sched.step_update(10 * steps)  # end of warm-up: the cosine over all 300 epochs takes over
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05 * (1 + math.cos(math.pi * 10 / 300)))
    sched.step_update(300 * steps)
    assert opt.param_groups[0]["lr"] < 1e-3

    step = RECIPES["imagenet-resnet50-step"]
    opt = build_optimizer(step, model)
    sched = build_scheduler(step, opt, steps_per_epoch=steps)
    sched.step_update(40 * steps)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.975**40, rel=1e-6)


def test_recipe_overrides_and_errors():
    recipe = get_recipe("small-fmnist", epochs=2, batch_size=None)
    assert recipe.epochs == 2 and recipe.batch_size == RECIPES["small-fmnist"].batch_size
    assert json.loads(json.dumps(recipe.to_dict()))["model_args"]["channels"] == [32, 64, 128, 256]
    with pytest.raises(ZooRankError, match="unknown recipe"):
        get_recipe("imagenet")
    with pytest.raises(ZooRankError, match="unknown recipe field"):
        get_recipe("small-fmnist", learning_rate=1.0)
    with pytest.raises(ZooRankError, match="augment"):
        get_recipe("small-fmnist", augment="mixup")


# ---- tracking math -------------------------------------------------------------------------------


def _class_data(rng, n_per_class=40, k=4, p=12):
    means = rng.normal(scale=3.0, size=(k, p))
    labels = np.repeat(np.arange(k), n_per_class)
    return means, labels


def test_within_class_split_against_direct_projection():
    rng = np.random.default_rng(0)
    means, labels = _class_data(rng)
    x = means[labels] + rng.normal(size=(len(labels), means.shape[1])) * rng.uniform(
        0.2, 2.0, size=means.shape[1]
    )
    split = within_class_split(x, labels)
    mu = np.stack([x[labels == k].mean(0) for k in range(4)])
    centred = x - mu[labels]
    sigma_w = centred.T @ centred / len(x)
    q, _ = np.linalg.qr((mu - x.mean(0)).T)  # (p, K) spans the K - 1 dim space (one column is redundant)
    q = q[:, :3]
    assert split.span_dim == 3
    assert split.within_trace == pytest.approx(np.trace(sigma_w), rel=1e-9)
    assert split.in_span == pytest.approx(np.trace(q.T @ sigma_w @ q), rel=1e-9)
    assert 0 < split.fraction_in_span < 1


def test_within_class_split_extremes():
    rng = np.random.default_rng(1)
    means, labels = _class_data(rng, p=10)
    means[:, 3:] = 0.0  # class means live in the first 3 coordinates
    noise = rng.normal(size=(len(labels), 10))
    inside = noise.copy()
    inside[:, 3:] = 0.0
    outside = noise.copy()
    outside[:, :3] = 0.0
    # Centre the noise per class so the class means stay exactly where they are.
    for n in (inside, outside):
        for k in range(4):
            n[labels == k] -= n[labels == k].mean(0)
    assert within_class_split(means[labels] + inside, labels).fraction_in_span == pytest.approx(1.0, abs=1e-9)
    assert within_class_split(means[labels] + outside, labels).fraction_in_span == pytest.approx(
        0.0, abs=1e-9
    )


def test_spectra_match_covariance_eigenvalues():
    rng = np.random.default_rng(2)
    means, labels = _class_data(rng, k=5, p=8)
    labels = labels[: len(labels) - 7]  # imbalanced classes: frequency-weighted Sigma_B
    x = means[labels] + rng.normal(size=(len(labels), 8))
    mu_g = x.mean(0)
    sigma_t = (x - mu_g).T @ (x - mu_g) / len(x)
    sigma_b = sum(
        (labels == k).mean() * np.outer(x[labels == k].mean(0) - mu_g, x[labels == k].mean(0) - mu_g)
        for k in range(5)
    )
    out = spectra(x, labels, top=6)
    np.testing.assert_allclose(out["total"], np.linalg.eigvalsh(sigma_t)[::-1][:6], rtol=1e-9)
    np.testing.assert_allclose(out["between"], np.linalg.eigvalsh(sigma_b)[::-1][:4], rtol=1e-8)
    assert out["between"].shape == (4,)  # rank(Sigma_B) <= K - 1


# ---- the loop ------------------------------------------------------------------------------------


def _toy_parquet(path: Path, n_per_class: int, seed: int, size: int = 16, n_classes: int = 3) -> Path:
    """A real image parquet in the `datasets` layout: each class is a bright patch in its own corner."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for k in range(n_classes):
        for _ in range(n_per_class):
            a = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
            r, c = divmod(k % 4, 2)
            h = size // 2
            a[r * h : (r + 1) * h, c * h : (c + 1) * h, k % 3] = 220
            images.append(Image.fromarray(a))
            labels.append(k)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[f"c{k}" for k in range(n_classes)])}
    )
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).to_parquet(str(path))
    return path


@pytest.fixture(scope="module")
def toy_recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-data")
    train_file = _toy_parquet(root / "train.parquet", 16, seed=0)
    test_file = _toy_parquet(root / "test.parquet", 8, seed=1)
    return get_recipe(
        "small-fmnist",
        name="toy",
        train_data=str(train_file),
        test_data=str(test_file),
        train_split=None,
        test_split=None,
        n_per_class=12,
        model_args={"channels": (8, 16, 32, 64), "stem_width": 8},
        img_size=16,
        mean=(0.2, 0.2, 0.2),
        std=(0.3, 0.3, 0.3),
        epochs=3,
        batch_size=8,
        warmup_epochs=1,
        track_every=2,
        track_train_per_class=6,
        track_test_per_class=None,
        spectrum_top=8,
    )


@pytest.fixture(scope="module")
def full_run(toy_recipe, tmp_path_factory):
    """One uninterrupted 3-epoch lambda run, shared by the tests that inspect a trained model."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return train(toy_recipe, "lambda", 2.5, tmp_path_factory.mktemp("full"), quiet=True)


def _cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The trained model (which stays on the device it trained on, e.g. CUDA) on the CPU, in eval mode."""
    return copy.deepcopy(model).cpu().eval()


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run_dir / "model.safetensors")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_lambda_training_spreads_classes_in_angle(tmp_path):
    """On one fixed tiny run, lambda > 0 lowers within-class cosine similarity and raises Squared Distance.

    The paper's Table 2 direction (lambda 2.5 -> 10: COS SIM 0.41 -> 0.17, Squared Distance 2.78 -> 9.96),
    measured on the fixed train subset after training: 4 classes, 16 images each, 32 SGD steps.
    """
    import polars as pl

    train_file = _toy_parquet(tmp_path / "train.parquet", 16, seed=0, n_classes=4)
    test_file = _toy_parquet(tmp_path / "test.parquet", 8, seed=1, n_classes=4)
    recipe = get_recipe(
        "small-fmnist", name="toy-lambda", train_data=str(train_file), test_data=str(test_file),
        train_split=None, test_split=None, n_per_class=16, model_args={"channels": (8, 16, 32, 64), "stem_width": 8},
        img_size=16, mean=(0.2, 0.2, 0.2), std=(0.3, 0.3, 0.3), epochs=4, batch_size=8, warmup_epochs=0,
        lr_per_256=1.0, track_every=4, track_train_per_class=16, track_test_per_class=None, spectrum_top=8,
    )  # fmt: skip

    def measured(lam: float) -> dict:
        run_dir = train(recipe, "lambda", lam, tmp_path / "runs", quiet=True).run_dir
        return pl.read_csv(run_dir / "tracking.csv").filter(pl.col("split") == "train").to_dicts()[-1]

    plain, spread = measured(0.0), measured(10.0)
    # cosine_distance = d_within = 1 - the mean within-class cosine similarity.
    assert 1 - spread["cosine_distance"] < 1 - plain["cosine_distance"]
    assert spread["squared_distance"] > plain["squared_distance"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_train_exports_zoo_entry_and_resumes_exactly(toy_recipe, full_run, tmp_path):
    import polars as pl
    import timm

    full = full_run
    assert full.completed and full.epochs_done == 3
    record = read_record(full.run_dir)
    assert (record["family"], record["value"], record["epoch"]) == ("lambda", 2.5, 3)
    assert record["recipe"] == toy_recipe.to_dict()
    assert 0.0 <= record["test_top1"] <= 1.0 and record["test_images"] == 24

    # Tracked at epochs 2 (every 2) and 3 (the last), on both splits; logs and plots exist.
    tracking = pl.read_parquet(full.run_dir / "tracking.parquet")
    assert sorted(zip(tracking["epoch"], tracking["split"], strict=True)) == [
        (2, "test"),
        (2, "train"),
        (3, "test"),
        (3, "train"),
    ]
    assert tracking["n"].to_list() == [18, 24, 18, 24]
    assert ((tracking["vci"] >= 0) & (tracking["vci"] <= 1)).all()
    assert ((tracking["within_fraction_in_span"] >= 0) & (tracking["within_fraction_in_span"] <= 1)).all()
    assert pl.read_csv(full.run_dir / "history.csv")["epoch"].to_list() == [1, 2, 3]
    assert set(pl.read_parquet(full.run_dir / "spectra.parquet")["matrix"]) == {"between", "total"}
    for png in ("collapse.png", "within_split.png", "spectra.png"):
        assert (full.run_dir / png).stat().st_size > 1000

    # timm's own local-dir loader rebuilds the same network with the recorded preprocessing.
    loaded = timm.create_model(f"local-dir:{full.run_dir}", pretrained=True).eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(loaded(x), _cpu_copy(full.model)(x))
    cfg = timm.data.resolve_model_data_config(loaded)
    assert cfg["input_size"] == (3, 16, 16) and tuple(cfg["mean"]) == pytest.approx((0.2, 0.2, 0.2))

    # Interrupted after epoch 1, resumed: bit-identical to the uninterrupted run.
    part = train(toy_recipe, "lambda", 2.5, tmp_path / "parts", stop_after_epoch=1, quiet=True)
    assert part.epochs_done == 1 and not part.completed and read_record(part.run_dir)["epoch"] == 1
    with pytest.raises(ZooRankError, match="--resume"):
        train(toy_recipe, "lambda", 2.5, tmp_path / "parts", quiet=True)
    with pytest.raises(ZooRankError, match="another recipe"):
        train(
            toy_recipe.replace(weight_decay=1e-3), "lambda", 2.5, tmp_path / "parts", resume=True, quiet=True
        )
    resumed = train(toy_recipe, "lambda", 2.5, tmp_path / "parts", resume=True, quiet=True)
    assert resumed.epochs_done == 3
    a, b = _weights(full.run_dir), _weights(resumed.run_dir)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert pl.read_csv(resumed.run_dir / "history.csv")["epoch"].to_list() == [1, 2, 3]
    # A finished run comes back as is.
    again = train(toy_recipe, "lambda", 2.5, tmp_path / "parts", resume=True, quiet=True)
    assert again.epochs_done == 3 and again.model is None


def _ddp_worker(rank: int, world: int, init_file: str, recipe, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = train(recipe, "tau", 0.5, out, device="cpu", quiet=True)
        torch.save(
            {k: v.detach().clone() for k, v in result.model.state_dict().items()},
            Path(out) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ddp_two_gloo_processes_end_identical(toy_recipe, tmp_path):
    import torch.multiprocessing as mp

    recipe = toy_recipe.replace(epochs=2, track_every=1)
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), recipe, str(tmp_path)), nprocs=2, join=True)
    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # parameters and batch-norm buffers
    exported = _weights(tmp_path / "tau-0.5")
    assert all(torch.equal(exported[k], w0[k]) for k in exported)
    record = read_record(tmp_path / "tau-0.5")
    assert record["world_size"] == 2
    # 36 training images over 2 ranks of batch 8: 2 full batches per rank per epoch (18 -> 16 each).
    import polars as pl

    assert pl.read_csv(tmp_path / "tau-0.5" / "history.csv")["images"].to_list() == [32, 32]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cli_train_family(toy_recipe, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from zoo_rank.cli import app

    monkeypatch.setitem(RECIPES, "toy", toy_recipe.replace(epochs=1, track_every=1))
    out = tmp_path / "runs"
    args = [
        "train",
        "--family",
        "tau",
        "--values",
        "0.5,1",
        "--recipe",
        "toy",
        "--out",
        str(out),
        "--epochs",
        "1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert read_record(out / "tau-0.5")["value"] == 0.5 and read_record(out / "tau-1")["value"] == 1.0
    assert (out / "tau.png").is_file()
    assert "tau-0.5" in result.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code != 0 and "--resume" in str(again.output) + str(again.exception)
    assert CliRunner().invoke(app, [*args, "--resume"]).exit_code == 0
    bad = CliRunner().invoke(
        app, ["train", "--family", "tau", "--values", "0.5,x", "--recipe", "toy", "--out", str(out)]
    )
    assert bad.exit_code != 0 and "comma-separated numbers" in str(bad.exception)


def test_create_backbone_accepts_trained_model(full_run):
    models = pytest.importorskip("zoo_rank.models")
    result = full_run
    backbone = models.create_backbone(f"local-dir:{result.run_dir}")
    assert backbone.num_features == 64
    x = torch.randn(3, 3, 16, 16)
    trained = _cpu_copy(result.model)
    expected = trained.forward_head(trained.forward_features(x), pre_logits=True)
    torch.testing.assert_close(backbone.features(x), expected)
    assert math.isclose(backbone.data_config["mean"][0], 0.2)
    assert os.fspath(result.run_dir) in backbone.name


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_reproduce_sec63_tiny(shared_data, cache_dir, tmp_path):
    import importlib.util
    import sys

    from scipy import stats
    from scipy.special import logit

    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    if not (shared_data / "tiny-imagenet").is_dir():
        pytest.skip("../shared/data/tiny-imagenet is absent")
    script = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_sec63.py"
    spec = importlib.util.spec_from_file_location("reproduce_sec63", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    board = tmp_path / "paper-reproduction.md"
    report = module.main(["--tiny", "--out", str(tmp_path / "out"), "--board", str(board), "--quiet"])

    text = board.read_text()
    tiny = module.SCALES["tiny"]
    rows = report["rows"]
    assert [(r["family"], r["value"], r["seed"]) for r in rows] == tiny.runs()
    assert [r["model"] for r in rows][-2:] == ["tau=1 (seed 1)", "lambda=10 (seed 1)"]
    sets = {"cifar10", "flowers102", "food101-10", "gtsrb", "clothing10", "sign-digits", "fashion-mnist", "digits"}
    for r in rows:
        assert set(r["downstream"]) == sets
        assert r["downstream"]["flowers102"]["metric"] == "mean_per_class"
        assert r["downstream"]["cifar10"]["metric"] == "top1"
        assert f"| {r['model']} | {r['pretrain_acc']:.4f} |" in text
        # MLOG is eq. 6 of the reported accuracies (clipped by half a test sample), and Cos. sim. = 1 - d_within.
        n_test = min(d["n_test"] for d in r["downstream"].values())
        clip = 1 / (2 * min(n_test, r["pretrain_images"]))
        down = np.clip([d["accuracy"] for d in r["downstream"].values()], clip, 1 - clip)
        assert r["mlog"] == pytest.approx(np.mean(logit(down)) - logit(np.clip(r["pretrain_acc"], clip, 1 - clip)))
        assert r["metrics"]["cos_sim"] == pytest.approx(1 - r["metrics"]["cosine_distance"])
        assert 0.0 <= r["metrics"]["vci"] <= 1.0 and r["source_images"] == 200 * tiny.source_per_class
    # Correlations are over the seed-0 run of each value, with exact permutation p-values (n = 3: 3! orderings).
    for family in ("tau", "lambda"):
        members = [r for r in rows if r["family"] == family and r["seed"] == 0]
        for name in ("vci", "squared_distance", "cos_sim"):
            x, y = [r["metrics"][name] for r in members], [r["mlog"] for r in members]
            got = report["families"][family]["with_mlog"][name]
            assert got["pearson"] == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-9)
            assert got["spearman"] == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-9)
            # With 3 points the exact two-sided p is a multiple of 1/6.
            assert got["pearson_p"] * 6 == pytest.approx(round(got["pearson_p"] * 6))
    assert report["verdict"]["vci_positive_in_both"] == (
        report["families"]["tau"]["with_mlog"]["vci"]["pearson"] > 0
        and report["families"]["lambda"]["with_mlog"]["vci"]["pearson"] > 0
    )
    assert "**Answer:" in text
    for suffix in (".png", ".json", ".csv"):
        assert board.with_suffix(suffix).is_file()
    # Trained models are zoo entries with their knob and seed recorded; a rerun resumes everything.
    record = read_record(tmp_path / "out" / "models" / "seed1" / "lambda-10")
    assert (record["value"], record["recipe"]["seed"]) == (10.0, 1)
    again = module.main(["--tiny", "--out", str(tmp_path / "out"), "--board", str(board), "--quiet"])
    assert [r["mlog"] for r in again["rows"]] == [r["mlog"] for r in rows]
    assert again["seconds"] < report["seconds"]


def test_exact_permutation_correlations_match_scipy():
    import importlib.util
    import sys

    from scipy import stats

    script = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_sec63.py"
    spec = importlib.util.spec_from_file_location("reproduce_sec63_stats", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    x = np.array([0.3, 0.1, 0.5, 0.2, 0.9, 0.4])
    y = np.array([1.0, 0.2, 0.8, 0.1, 2.0, 0.3])
    got = module.exact_correlations(x, y)
    assert got["pearson"] == pytest.approx(stats.pearsonr(x, y)[0])
    assert got["spearman"] == pytest.approx(stats.spearmanr(x, y)[0])
    # Exact p by brute force over all 720 orderings, two-sided as scipy defines it: 2 min(P(r <= r0), P(r >= r0)).
    import itertools

    r0 = stats.pearsonr(x, y)[0]
    null = np.array([stats.pearsonr(np.array(p), y)[0] for p in itertools.permutations(x)])
    expected = min(1.0, 2 * min(np.mean(null <= r0 + 1e-12), np.mean(null >= r0 - 1e-12)))
    assert got["pearson_p"] == pytest.approx(expected)
    assert math.isnan(module.exact_correlations([1, 1, 1], [1, 2, 3])["pearson"])


def test_tracking_a_network_whose_features_all_died_records_gaps_instead_of_stopping_the_training():
    from zoo_rank.metrics.stats import stats_of
    from zoo_rank.train.tracking import measure

    dead = np.zeros((60, 16))  # what tau = 0.1 leaves of resnet10t's pooled features: every ReLU died
    row = measure(stats_of(dead, np.repeat(np.arange(3), 20)))
    assert np.isnan(row["vci"]) and np.isnan(row["fuzziness"])  # undefined: no spread to compare
    assert row["total_trace"] == 0.0 and row["cosine_distance"] == 1.0
