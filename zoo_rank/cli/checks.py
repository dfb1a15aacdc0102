"""The checks a ranking is judged by: `zoo-rank probe` (linear probes), `zoo-rank validate` (metric vs
probe accuracy over models) and `zoo-rank finetune` (full fine-tuning)."""

from pathlib import Path
from typing import Optional

from zoo_rank import finetune as ft
from zoo_rank import stats as val
from zoo_rank._console import console
from zoo_rank._validation import ZooRankError
from zoo_rank.board import print_table
from zoo_rank.cli import options as opt
from zoo_rank.data import load_images
from zoo_rank.jobs import probe as probe_mod
from zoo_rank.jobs import rank as rank_mod
from zoo_rank.jobs.validate import run_validation
from zoo_rank.options import ProbeOptions, Subset

# The columns of the printed tables (the files hold every column).
PROBE_COLUMNS = ("model", "dataset", "metric", "score", "top1", "mean_per_class", "l2")
VALIDATION_COLUMNS = (
    "dataset", "metric", "n_models", "sign", "spearman", "spearman_p", "kendall", "weighted_tau", "regret", "note",
)  # fmt: skip


def _dataset_names(datasets: str) -> list[str]:
    """'ten' (the paper's ten downstream sets) or comma-separated specs."""
    return ["ten"] if datasets.strip() == "ten" else opt.split_csv(datasets) or []


def _print_columns(table, columns: tuple[str, ...], title: str) -> None:
    print_table(table.select([c for c in columns if c in table.columns]), title)


# fmt: off
def probe_cmd(
    models: opt.models("Model specs (timm name, hf-hub:, local-dir:, pip:)."),
    datasets: opt.datasets("'ten' (the paper's downstream sets) or comma-separated specs (cifar10-local, digits, a parquet folder)."),
    probe: opt.probe("logistic (the paper's L-BFGS protocol) or ridge (closed form, quick).") = "logistic",
    n_per_class: opt.n_per_class("Subsample the training split to n images per class.") = None,
    seed: opt.seed("Seed of the subsample and of the validation split.") = 0,
    device: opt.device("auto, cpu, cuda, cuda:1, ...") = "auto",
    results_dir: opt.results_dir("One JSON file per (model, dataset) and the merged table go here.") = Path("results"),
    skip_existing: opt.SkipExisting = True,
    quiet: opt.Quiet = False,
) -> None:
    """Linear-probe accuracy of each model on each dataset (Kornblith et al. 2019 protocol)."""
    subset = Subset(n_per_class=n_per_class, seed=seed)
    options = ProbeOptions(method=probe, device=device, seed=seed)
    table = _run_probes(models, _dataset_names(datasets), subset, options, results_dir, skip_existing, quiet)
    _print_columns(table, PROBE_COLUMNS, f"{probe} probe ({results_dir}/probe_{probe}.csv)")


def _run_probes(models, datasets, subset: Subset, options: ProbeOptions, results_dir: Path, skip_existing: bool,
                quiet: bool):
    """The library call of `probe` (one place to change at merge)."""
    return probe_mod.run_probes(
        models, datasets, probe=options.method, results_dir=results_dir, skip_existing=skip_existing,
        n_per_class=subset.n_per_class, seed=subset.seed, device=options.device, quiet=quiet,
    )


def validate_cmd(
    models: opt.models("Models already probed with `zoo-rank probe`.") = None,
    datasets: opt.datasets("'ten' or comma-separated specs, as for probe.") = None,
    metric: opt.option(Optional[str], "--metric", "-m", help="Comma-separated metric names (default: all).") = None,
    probe: opt.probe("Which probe's accuracy is the target.") = "logistic",
    paper: opt.option(bool, "--paper", help="Recompute MLOG and metric-vs-MLOG correlations from the paper's Tables 1-2.") = False,
    tables: opt.option(Optional[Path], "--tables", help="Paper-tables JSON file (schema: zoo_rank/stats/paper.py).") = None,
    n_per_class: opt.n_per_class("Score on n training images per class (reads the probe run with the same --n-per-class and --seed).") = None,
    seed: opt.seed("Seed of the subsample and of the bootstrap.") = 0,
    n_boot: opt.option(int, "--n-boot", help="BCa bootstrap resamples over models, for 10+ models (0: no intervals); fewer models get exact permutation p-values.") = 1000,
    device: opt.device("auto, cpu, cuda, ...") = "auto",
    results_dir: opt.results_dir("Where probe results are and validation results go.") = Path("results"),
    skip_existing: opt.SkipExisting = True,
    quiet: opt.Quiet = False,
) -> None:
    """How well each metric predicts probe accuracy over models (Pearson, Spearman, Kendall, weighted tau, regret)."""
    if paper:
        val.print_paper_report(_paper_report(tables, n_boot, seed))
        return
    if not models or not datasets:
        raise ZooRankError("validate needs MODELS and --datasets (or --paper); e.g. zoo-rank validate m1 m2 m3 --datasets digits.")
    subset = Subset(n_per_class=n_per_class, seed=seed)
    options = ProbeOptions(method=probe, device=device, seed=seed)
    table = _run_validation(models, _dataset_names(datasets), opt.split_csv(metric), subset, options, n_boot,
                            results_dir, skip_existing, quiet)
    _print_columns(table, VALIDATION_COLUMNS, f"metric vs {probe} probe accuracy ({results_dir}/validation.md: all statistics, CIs)")


def _paper_report(tables: Optional[Path], n_boot: int, seed: int):
    """The library call of `validate --paper` (one place to change at merge)."""
    return val.paper_report(val.load_paper_tables(tables), n_boot=n_boot, seed=seed)


def _run_validation(models, datasets, metrics, subset: Subset, options: ProbeOptions, n_boot: int,
                    results_dir: Path, skip_existing: bool, quiet: bool):
    """The library call of `validate` (one place to change at merge)."""
    return run_validation(
        models, datasets, metrics=metrics, probe=options.method, results_dir=results_dir,
        skip_existing=skip_existing, n_per_class=subset.n_per_class, seed=subset.seed, device=options.device,
        n_boot=n_boot, quiet=quiet,
    )


def finetune_cmd(
    models: opt.models("Model specs; random-init:ARCH for a randomly initialised control."),
    data: opt.data("Dataset spec with train and test splits (e.g. ../shared/data/food101-10)."),
    full: opt.option(bool, "--full", help="The GPU protocol (20 epochs, 4 learning rates, every image, own resolution).") = False,
    epochs: opt.epochs("Epochs per learning rate (default 3; --full 20).") = None,
    lrs: opt.option(Optional[str], "--lrs", help="Comma-separated learning-rate grid, picked on a validation split.") = None,
    img_size: opt.option(Optional[int], "--img-size", help="Cap on the input side (default 112; --full: the model's own).") = None,
    n_per_class: opt.n_per_class("Train images per class (default 16; --full: all).") = None,
    test_per_class: opt.option(Optional[int], "--test-per-class", help="Test images per class (default 30; --full: all).") = None,
    metric: opt.option(Optional[str], "--metric", help="top1 or mean_per_class (default: the dataset's rule).") = None,
    seed: opt.seed("Seed of the subset, the validation split, the head and the data order.") = 0,
    device: opt.device("auto, cpu, cuda, cuda:N (torchrun: DDP).") = "auto",
    results_dir: opt.results_dir("One result file per (model, data, settings).") = Path("results"),
    quiet: opt.Quiet = False,
) -> None:
    """Fine-tune each model with a new head (timm optimizer + scheduler, LR grid on a validation split); test accuracy."""
    base = ft.FULL if full else ft.FinetuneOptions()
    options = base.replace(epochs=epochs, lrs=tuple(float(v) for v in opt.split_csv(lrs)) if lrs else None, img_size=img_size,
                           n_per_class=n_per_class, test_per_class=test_per_class, seed=seed)
    train, test = load_images(data, split="train"), load_images(data, split="test")
    for spec in models:
        r = _finetune(spec, train, test, options, metric, results_dir, device, quiet)
        console().print(f"{r['model']}\t{r['dataset']}\t{r['metric']} {r['accuracy']:.4f}\tlr {r['lr']:g}\tepoch {r['epoch']}", highlight=False)


def _finetune(spec: str, train, test, options: "ft.FinetuneOptions", metric, results_dir: Path, device: str, quiet: bool):
    """The library call of `finetune` (one place to change at merge): one model, a result record."""
    entry = rank_mod.parse_model(spec)
    return ft.finetune(entry.arch, train, test, options=options, metric=metric, pretrained=entry.pretrained,
                       results_dir=results_dir, device=device, quiet=quiet)
# fmt: on
