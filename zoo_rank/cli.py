"""`zoo-rank`: a thin typer layer over the Python API. Parse, call the library, print; no math here."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from zoo_rank._validation import ZooRankError

app = typer.Typer(
    help="Rank pretrained image backbones by how well they will transfer (Xu & Liu, ICML 2023).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _split(csv: Optional[str]) -> Optional[list[str]]:
    return [s.strip() for s in csv.split(",") if s.strip()] if csv else None


# ---- score (issue 2) -------------------------------------------------------------------------


@app.command()
def score(
    features: Path = typer.Argument(
        ...,
        help="Parquet file or directory of parquet shards: a label column plus a list/array feature column.",
    ),
    metrics: Optional[str] = typer.Option(
        None, "--metrics", "-m", help="Comma-separated metric names (default: all). See `zoo-rank metrics`."
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write scores to this .json or .csv file."),
    label_column: Optional[str] = typer.Option(
        None, help="Label column (default: 'label', 'labels' or 'y')."
    ),
    feature_column: Optional[str] = typer.Option(
        None, help="Feature column (default: the one list/array column)."
    ),
) -> None:
    """Score bring-your-own features: VCI and the baselines from one parquet file."""
    from zoo_rank.jobs import scoring

    result = scoring.score_parquet(
        features, metrics=_split(metrics), label_column=label_column, feature_column=feature_column
    )
    scoring.print_scores(result)
    if out is not None:
        scoring.write_scores(result, out)


@app.command("metrics")
def list_metrics() -> None:
    """List the registered metrics: direction, description, citation."""
    from zoo_rank.jobs import scoring

    scoring.print_registry()


# ---- commands of later stages are registered below ------------------------------------------


# ---- rank and leaderboard (issue 5) ----------------------------------------------------------


def _say_on_interrupt(message: str) -> Callable:
    """Print `message` when the command is interrupted (typer turns Ctrl-C into exit code 130 silently)."""

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return command(*args, **kwargs)
            except KeyboardInterrupt:
                print(f"zoo-rank: interrupted; {message}", file=sys.stderr)
                raise

        return run

    return decorate


@app.command("rank")
@_say_on_interrupt(
    "the result file of every finished model is kept in the board's .runs/ folder and extracted features "
    "in the cache (extraction said how many): the same command reuses them."
)
def rank_cmd(
    models: Optional[list[str]] = typer.Argument(
        None,
        help="Model specs (timm name, hf-hub:, local-dir:, pip:, random-init:ARCH for a control). None: the embedded default.",
    ),
    models_file: Optional[Path] = typer.Option(
        None, "--models-file", help="Text file with one model spec per line ('#' comments)."
    ),
    data: Optional[str] = typer.Option(
        None,
        "--data",
        "-d",
        help="Images to score (dataset spec; default: fashion-mnist, digits when absent).",
    ),
    split: Optional[str] = typer.Option(
        None, "--split", help="Split of --data to score (default: the dataset's train split)."
    ),
    mode: str = typer.Option(
        "target",
        "--mode",
        help="target: --data is your labelled target set (lower VCI better); source: the pretraining distribution (higher VCI better).",
    ),
    metrics: Optional[str] = typer.Option(
        None, "--metrics", "-m", help="Comma-separated metrics (default: all). See `zoo-rank metrics`."
    ),
    sort_by: Optional[str] = typer.Option(
        None, "--sort-by", help="Metric that orders the board (default: vci; vci_lw in target mode below N = 5p)."
    ),
    probe: Optional[str] = typer.Option(
        None,
        "--probe",
        help="Check: 'same' (test split of --data; target-mode default), 'none', or comma-separated dataset specs (train -> test).",
    ),
    n_per_class: Optional[int] = typer.Option(
        None, "--n-per-class", help="Class-balanced images per class to score (default run: 100; else all)."
    ),
    probe_n_per_class: Optional[int] = typer.Option(
        None, "--probe-n-per-class", help="Images per class of each probe split (default run: 50; else all)."
    ),
    probe_method: Optional[str] = typer.Option(
        None,
        "--probe-method",
        help="logistic (the paper's L-BFGS protocol; default) or ridge (closed form, quick).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the class-balanced subsets."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 where faster), bf16 or fp32."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N, mps."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="Extraction batch size (halves on out-of-memory)."
    ),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", help="Feature cache (default: $ZOO_RANK_CACHE, else the user cache folder)."
    ),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="Board path without suffix: writes OUT.md/.csv/.json/.png and OUT.runs/ (default: leaderboards/default "
        "for the bare default run, else leaderboards/<data>-<mode>). Rows of models not rerun are kept.",
    ),
    replace: bool = typer.Option(
        False,
        "--replace",
        help="Start the board over: drop the rows (and result files) of models not in this run.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    on_bad_image: str = typer.Option(
        "error",
        "--on-bad-image",
        help="error: stop at an image that does not decode; skip: leave it out (counted on the board).",
    ),
    check: str = typer.Option(
        "probe", "--check", help="probe (linear probe) or finetune (full fine-tuning, CPU budget; zoo_rank.finetune)."
    ),
) -> None:
    """Rank backbones: extract (cached) -> score -> probe check -> leaderboard. No arguments: the offline default."""
    from zoo_rank.jobs import rank as rank_mod
    from zoo_rank.options import BoardOptions, ExtractOptions, ProbeOptions, Subset

    options = rank_mod.RankOptions(
        mode=mode, target=probe, check=check, out=out, replace=replace,
        subset=Subset(n_per_class, seed), probe_subset=Subset(probe_n_per_class, seed),
        extract=ExtractOptions(precision=precision, device=device, batch_size=batch_size, cache_dir=cache_dir,
                               quiet=quiet, on_bad_image=on_bad_image),
        probe=ProbeOptions(method=probe_method or rank_mod.DEFAULT_PROBE_METHOD, device=device, seed=seed),
        board=BoardOptions(metrics=tuple(_split(metrics) or ()) or None, primary=sort_by),
    )  # fmt: skip
    specs = list(models or []) + (rank_mod.read_models_file(models_file) if models_file is not None else [])
    board, paths = rank_mod.rank(specs, data=data, split=split, options=options)
    rank_mod.print_summary(board, paths)


leaderboard_app = typer.Typer(help="Build leaderboards from per-run result files.", no_args_is_help=True)
app.add_typer(leaderboard_app, name="leaderboard")


@leaderboard_app.command("merge")
def leaderboard_merge(
    result_files: list[Path] = typer.Argument(
        ..., help="Per-run result files (NAME.runs/*.json) or NAME.runs folders, from any machines."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Board path without suffix: writes OUT.md/.csv/.json/.png."
    ),
    metrics: Optional[str] = typer.Option(
        None, "--metrics", "-m", help="Comma-separated metric columns (default: all found)."
    ),
    sort_by: Optional[str] = typer.Option(
        None, "--sort-by", help="Metric that orders the board (default: vci; vci_lw in target mode below N = 5p)."
    ),
) -> None:
    """Rebuild one board from result files of one mode and dataset (e.g. runs from several machines)."""
    import shlex

    from zoo_rank import leaderboard, publish
    from zoo_rank.jobs import rank as rank_mod

    board = leaderboard.merge(
        result_files,
        name=out.name,
        metrics=_split(metrics),
        primary=sort_by,
        command=shlex.join(["zoo-rank", *sys.argv[1:]]),
    )
    rank_mod.print_summary(board, publish.write(board, out))


# ---- train (issue 6) -----------------------------------------------------------------------------


@app.command("train")
def train_cmd(
    family: str = typer.Option(
        ...,
        "--family",
        help="Family knob: 'tau' (softmax temperature) or 'lambda' (within-class cosine weight).",
    ),
    values: str = typer.Option(
        ...,
        "--values",
        help="Comma-separated knob values, e.g. 0.1,0.2,0.4,0.6,0.8,1.0 or 2.5,3.75,5,7.5,10.",
    ),
    recipe: str = typer.Option(
        "small-fmnist",
        "--recipe",
        help="imagenet-resnet50, imagenet-resnet50-step, cifar10-resnet18, small-fmnist or small-cifar (see zoo_rank.train.RECIPES).",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Output folder (default runs/<recipe>); one sub-folder per value."
    ),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override the recipe's number of epochs."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue interrupted runs from their resume.pt; finished ones are skipped."
    ),
    stop_after_epoch: Optional[int] = typer.Option(
        None,
        "--stop-after-epoch",
        help="Stop (checkpointed) after this epoch, e.g. to fit a job's time limit.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or per-epoch lines."),
) -> None:
    """Train a tau or lambda model family (paper Sec. 6.3), tracking collapse; works under torchrun (DDP)."""
    from zoo_rank.train import loop

    try:
        knobs = [float(v) for v in _split(values) or []]
    except ValueError as err:
        raise ZooRankError(
            f"--values must be comma-separated numbers, got {values!r}; e.g. --values 0.1,0.5,1.0."
        ) from err
    try:
        results = loop.train_family(
            recipe,
            family,
            knobs,
            out or Path("runs") / recipe,
            epochs=epochs,
            resume=resume,
            stop_after_epoch=stop_after_epoch,
            device=device,
            quiet=quiet,
        )
        loop.print_results(results)
    finally:
        loop.shutdown_distributed()


# ---- probe and validate (issue 4) -----------------------------------------------------------------


# fmt: off
@app.command("probe")
def probe_cmd(
    models: list[str] = typer.Argument(..., help="Model specs (timm name, hf-hub:, local-dir:, pip:)."),
    datasets: str = typer.Option(
        ..., "--datasets", "-d", help="'ten' (the paper's downstream sets) or comma-separated specs (cifar10-local, digits, a parquet folder)."
    ),
    probe: str = typer.Option("logistic", "--probe", help="logistic (the paper's L-BFGS protocol) or ridge (closed form, quick)."),
    n_per_class: Optional[int] = typer.Option(None, "--n-per-class", help="Subsample the training split to n images per class."),
    seed: int = typer.Option(0, "--seed", help="Seed of the subsample and of the validation split."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    results_dir: Path = typer.Option(Path("results"), "--results-dir", help="One JSON file per (model, dataset) and the merged table go here."),
    skip_existing: bool = typer.Option(True, "--skip-existing/--no-skip-existing", help="Skip cells already computed with exactly these settings (resume); other settings are computed anew."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Linear-probe accuracy of each model on each dataset (Kornblith et al. 2019 protocol)."""
    from zoo_rank import results
    from zoo_rank.jobs import probe as probe_mod

    names = ["ten"] if datasets.strip() == "ten" else _split(datasets) or []
    table = probe_mod.run_probes(
        models, names, probe=probe, results_dir=results_dir, skip_existing=skip_existing,
        n_per_class=n_per_class, seed=seed, device=device, quiet=quiet,
    )  # fmt: skip
    shown = [c for c in ("model", "dataset", "metric", "score", "top1", "mean_per_class", "l2") if c in table.columns]
    results.print_table(table.select(shown), f"{probe} probe ({results_dir}/probe_{probe}.csv)")


@app.command("validate")
def validate_cmd(
    models: Optional[list[str]] = typer.Argument(None, help="Models already probed with `zoo-rank probe`."),
    datasets: Optional[str] = typer.Option(None, "--datasets", "-d", help="'ten' or comma-separated specs, as for probe."),
    metric: Optional[str] = typer.Option(None, "--metric", "-m", help="Comma-separated metric names (default: all)."),
    probe: str = typer.Option("logistic", "--probe", help="Which probe's accuracy is the target."),
    paper: bool = typer.Option(False, "--paper", help="Recompute MLOG and metric-vs-MLOG correlations from the paper's Tables 1-2."),
    tables: Optional[Path] = typer.Option(None, "--tables", help="Paper-tables JSON file (schema: zoo_rank/validate.py)."),
    n_per_class: Optional[int] = typer.Option(None, "--n-per-class", help="Score on n training images per class (reads the probe run with the same --n-per-class and --seed)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the subsample and of the bootstrap."),
    n_boot: int = typer.Option(1000, "--n-boot", help="BCa bootstrap resamples over models, for 10+ models (0: no intervals); fewer models get exact permutation p-values."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
    results_dir: Path = typer.Option(Path("results"), "--results-dir", help="Where probe results are and validation results go."),
    skip_existing: bool = typer.Option(True, "--skip-existing/--no-skip-existing", help="Skip cells already computed with exactly these settings (resume); other settings are computed anew."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """How well each metric predicts probe accuracy over models (Pearson, Spearman, Kendall, weighted tau, regret)."""
    from zoo_rank import results
    from zoo_rank import validate as val
    from zoo_rank.jobs.validate import run_validation

    if paper:
        report = val.paper_report(val.load_paper_tables(tables), n_boot=n_boot, seed=seed)
        val.print_paper_report(report)
        return
    if not models or not datasets:
        raise ZooRankError("validate needs MODELS and --datasets (or --paper); e.g. zoo-rank validate m1 m2 m3 --datasets digits.")
    names = ["ten"] if datasets.strip() == "ten" else _split(datasets) or []
    table = run_validation(
        models, names, metrics=_split(metric), probe=probe, results_dir=results_dir, skip_existing=skip_existing,
        n_per_class=n_per_class, seed=seed, device=device, n_boot=n_boot, quiet=quiet,
    )  # fmt: skip
    shown = [c for c in ("dataset", "metric", "n_models", "sign", "spearman", "spearman_p", "kendall", "weighted_tau", "regret", "note") if c in table.columns]
    results.print_table(table.select(shown), f"metric vs {probe} probe accuracy ({results_dir}/validation.md: all statistics, CIs)")
# fmt: on


# ---- model and dataset listings (issue 3) -------------------------------------------------------


@app.command("models")
def models_cmd() -> None:
    """List the offline zoo (pip: entries) and the model spec syntax."""
    from rich.table import Table

    from zoo_rank._console import console
    from zoo_rank.models import PIP_EXTRA_HINT, offline_zoo

    table = Table(title="offline zoo")
    for column in ("name", "architecture", "package", "installed"):
        table.add_column(column, overflow="fold", no_wrap=column == "name")
    for row in offline_zoo():
        table.add_row(row["name"], row["architecture"], row["distribution"], row["version"] or "no")
    console().print(table)
    hint = f"install: {PIP_EXTRA_HINT}; also timm names (resnet50.a1_in1k), hf-hub:org/name, local-dir:PATH"
    console().print(hint, markup=False, highlight=False)


@app.command("datasets")
def datasets_cmd() -> None:
    """List the named image sets: built-in offline ones and the paper's ten downstream sets."""
    from rich.table import Table

    from zoo_rank._console import console
    from zoo_rank.data import known_datasets

    table = Table()
    for column in ("name", "source", "splits", "classes", "metric", "network"):
        table.add_column(column, overflow="fold", no_wrap=column == "name")
    for spec in known_datasets().values():
        table.add_row(spec.name, spec.location, ", ".join(spec.splits), str(spec.num_classes or "?"), spec.metric,
                      "yes" if spec.needs_network else "no")  # fmt: skip
    console().print(table)
    hint = "also: a .parquet file, an image folder (one sub-folder per class), hf:org/name:split"
    console().print(hint, markup=False, highlight=False)


# ---- extract and cache (issue 3) ---------------------------------------------------------------


@app.command("extract")
def extract_cmd(
    models: list[str] = typer.Argument(
        ..., help="Model specs: timm name[.tag], hf-hub:org/name, local-dir:PATH, pip:efficientnet-lite0."
    ),
    data: str = typer.Option(
        ...,
        "--data",
        "-d",
        help="Dataset spec (see `zoo-rank datasets`), a .parquet file or an image folder.",
    ),
    split: Optional[str] = typer.Option(
        None, "--split", help="Split of --data (default: the dataset's default split)."
    ),
    n_per_class: Optional[int] = typer.Option(
        None, "--n-per-class", help="Class-balanced subset, e.g. 50 as in the paper (default: every image)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the class-balanced subset."),
    manifest: Optional[Path] = typer.Option(
        None, "--manifest", help="Manifest JSON fixing the rows (instead of --n-per-class)."
    ),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", help="Cache root (default: $ZOO_RANK_CACHE, else the user cache folder)."
    ),
    skip_existing: bool = typer.Option(
        True, "--skip-existing/--no-skip-existing", help="Reuse cached entries (default) or recompute them."
    ),
    precision: str = typer.Option(
        "auto", "--precision", help="auto (bf16 + channels_last where native), bf16 or fp32."
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:N, mps."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="Images per batch (default: 256 CUDA, 32 CPU; halves on out-of-memory)."
    ),
    num_workers: Optional[int] = typer.Option(
        None, "--num-workers", help="DataLoader decode workers (default: from the CPU count)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    on_bad_image: str = typer.Option(
        "error",
        "--on-bad-image",
        help="error: stop at an image that does not decode; skip: leave it out and count it.",
    ),
) -> None:
    """Extract penultimate features into the cache (resumable; run under torchrun to shard across GPUs)."""
    import os

    from zoo_rank._console import console
    from zoo_rank.extract import extract_features

    for spec in models:
        fs = extract_features(
            spec, data, split=split, n_per_class=n_per_class, seed=seed, manifest=manifest, precision=precision,
            device=device, batch_size=batch_size, num_workers=num_workers, cache_dir=cache_dir,
            skip_existing=skip_existing, quiet=quiet, on_bad_image=on_bad_image,
        )  # fmt: skip
        n, p = fs.features.shape
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank returns the entry; one line
            console().print(
                f"{fs.key}  {fs.meta['model']}  {fs.meta['dataset']}:{fs.meta['split']}  {n} x {p}  {fs.meta['precision']}",
                markup=False,
                highlight=False,
            )


cache_app = typer.Typer(help="Inspect and clean the feature cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("ls")
def cache_ls(
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", help="Cache root (default: $ZOO_RANK_CACHE, else the user cache folder)."
    ),
) -> None:
    """List cache entries: key, model, dataset, split, n, dim, precision, size, date."""
    from zoo_rank import cache
    from zoo_rank._console import console

    console().print(cache.entries_table([*cache.list_entries(cache_dir), *cache.list_weights(cache_dir)]))


@cache_app.command("rm")
def cache_rm(
    keys: Optional[list[str]] = typer.Argument(
        None, help="Key prefixes (as `zoo-rank cache ls` shows them)."
    ),
    model: Optional[str] = typer.Option(
        None, "--model", help="Remove every entry of this model (glob allowed)."
    ),
    all_: bool = typer.Option(False, "--all", help="Remove every entry."),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", help="Cache root (default: $ZOO_RANK_CACHE, else the user cache folder)."
    ),
) -> None:
    """Remove cache entries (features and converted pip: weights) by key prefix, by model, or all of them."""
    from zoo_rank import cache
    from zoo_rank._console import console

    removed = cache.remove_entries(keys, model=model, all=all_, cache_dir=cache_dir)
    freed = sum(e.size for e in removed) / 2**20
    console().print(f"removed {len(removed)} entries ({freed:.1f} MB)", markup=False, highlight=False)


@app.command("finetune")
def finetune_cmd(
    models: list[str] = typer.Argument(..., help="Model specs; random-init:ARCH for a randomly initialised control."),
    data: str = typer.Option(..., "--data", "-d", help="Dataset spec with train and test splits (e.g. ../shared/data/food101-10)."),
    full: bool = typer.Option(False, "--full", help="The GPU protocol (20 epochs, 4 learning rates, every image, own resolution)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs per learning rate (default 3; --full 20)."),
    lrs: Optional[str] = typer.Option(None, "--lrs", help="Comma-separated learning-rate grid, picked on a validation split."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help="Cap on the input side (default 112; --full: the model's own)."),
    n_per_class: Optional[int] = typer.Option(None, "--n-per-class", help="Train images per class (default 16; --full: all)."),
    test_per_class: Optional[int] = typer.Option(None, "--test-per-class", help="Test images per class (default 30; --full: all)."),
    metric: Optional[str] = typer.Option(None, "--metric", help="top1 or mean_per_class (default: the dataset's rule)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the subset, the validation split, the head and the data order."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N (torchrun: DDP)."),
    results_dir: Path = typer.Option(Path("results"), "--results-dir", help="One result file per (model, data, settings)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Fine-tune each model with a new head (timm optimizer + scheduler, LR grid on a validation split); test accuracy."""
    from zoo_rank import finetune as ft
    from zoo_rank._console import console
    from zoo_rank.data import load_images
    from zoo_rank.jobs.rank import parse_model

    base = ft.FULL if full else ft.FinetuneOptions()
    options = base.replace(epochs=epochs, lrs=tuple(float(v) for v in _split(lrs)) if lrs else None, img_size=img_size,
                           n_per_class=n_per_class, test_per_class=test_per_class, seed=seed)  # fmt: skip
    train, test = load_images(data, split="train"), load_images(data, split="test")
    for spec in models:
        entry = parse_model(spec)
        r = ft.finetune(entry.arch, train, test, options=options, metric=metric, pretrained=entry.pretrained,
                        results_dir=results_dir, device=device, quiet=quiet)  # fmt: skip
        console().print(f"{r['model']}\t{r['dataset']}\t{r['metric']} {r['accuracy']:.4f}\tlr {r['lr']:g}\tepoch {r['epoch']}", highlight=False)


def main() -> None:
    try:
        app()
    except ZooRankError as err:
        print(f"zoo-rank: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
