"""Features and what they come from: `zoo-rank extract`, `zoo-rank cache ls|rm`, and the listings
`zoo-rank models` / `zoo-rank datasets`."""

import os
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from zoo_rank import cache
from zoo_rank._console import console
from zoo_rank.cli import options as opt
from zoo_rank.data import known_datasets
from zoo_rank.extract import extract_features
from zoo_rank.models import PIP_EXTRA_HINT, offline_zoo
from zoo_rank.options import ExtractOptions, Subset


def _print_line(text: str) -> None:
    console().print(text, markup=False, highlight=False)


def _table(columns: tuple[str, ...], title: Optional[str] = None) -> Table:
    """A listing whose first column (the name to type) never wraps."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column == "name")
    return table


def models_cmd() -> None:
    """List the offline zoo (pip: entries) and the model spec syntax."""
    table = _table(("name", "architecture", "package", "installed"), title="offline zoo")
    for row in offline_zoo():
        table.add_row(row["name"], row["architecture"], row["distribution"], row["version"] or "no")
    console().print(table)
    _print_line(
        f"install: {PIP_EXTRA_HINT}; also timm names (resnet50.a1_in1k), hf-hub:org/name, local-dir:PATH"
    )


def datasets_cmd() -> None:
    """List the named image sets: built-in offline ones and the paper's ten downstream sets."""
    table = _table(("name", "source", "splits", "classes", "metric", "network"))
    for spec in known_datasets().values():
        table.add_row(spec.name, spec.location, ", ".join(spec.splits), str(spec.num_classes or "?"), spec.metric,
                      "yes" if spec.needs_network else "no")  # fmt: skip
    console().print(table)
    _print_line("also: a .parquet file, an image folder (one sub-folder per class), hf:org/name:split")


def extract_cmd(
    models: opt.models(
        "Model specs: timm name[.tag], hf-hub:org/name, local-dir:PATH, pip:efficientnet-lite0."
    ),
    data: opt.data("Dataset spec (see `zoo-rank datasets`), a .parquet file or an image folder."),
    split: opt.split("Split of --data (default: the dataset's default split).") = None,
    n_per_class: opt.n_per_class(
        "Class-balanced subset, e.g. 50 as in the paper (default: every image)."
    ) = None,
    seed: opt.seed("Seed of the class-balanced subset.") = 0,
    manifest: opt.option(
        Optional[Path], "--manifest", help="Manifest JSON fixing the rows (instead of --n-per-class)."
    ) = None,
    cache_dir: opt.CacheRoot = None,
    skip_existing: opt.skip_existing("Reuse cached entries (default) or recompute them.") = True,
    precision: opt.precision("auto (bf16 + channels_last where native), bf16 or fp32.") = "auto",
    device: opt.device("auto (CUDA, MPS, CPU), cpu, cuda, cuda:N, mps.") = "auto",
    batch_size: opt.batch_size(
        "Images per batch (default: 256 CUDA; 32 CPU, run in micro-batches of 8-32 chosen by timing; "
        "halves on out-of-memory)."
    ) = None,
    num_workers: opt.option(
        Optional[int], "--num-workers", help="DataLoader decode workers (default: from the CPU count)."
    ) = None,
    quiet: opt.quiet("No progress bar.") = False,
    on_bad_image: opt.on_bad_image(
        "error: stop at an image that does not decode; skip: leave it out and count it."
    ) = "error",
) -> None:
    """Extract penultimate features into the cache (resumable; run under torchrun to shard across GPUs)."""
    subset = Subset(n_per_class=n_per_class, seed=seed)
    options = ExtractOptions(
        precision=precision,
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        cache_dir=cache_dir,
        skip_existing=skip_existing,
        on_bad_image=on_bad_image,
        quiet=quiet,
    )
    for spec in models:
        fs = _extract(spec, data, split, subset, manifest, options)
        n, p = fs.features.shape
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank returns the entry; one line
            meta = fs.meta
            _print_line(
                f"{fs.key}  {meta['model']}  {meta['dataset']}:{meta['split']}  {n} x {p}  {meta['precision']}"
            )


def _extract(spec: str, data: str, split: Optional[str], subset: Subset, manifest: Optional[Path],
             options: ExtractOptions):  # fmt: skip
    """The library call of `extract` (one place to change at merge): one model's cache entry."""
    return extract_features(spec, data, split=split, subset=subset, options=options, manifest=manifest)


cache_app = typer.Typer(help="Inspect and clean the feature cache.", no_args_is_help=True)


@cache_app.command("ls")
def cache_ls(cache_dir: opt.CacheRoot = None) -> None:
    """List cache entries: key, model, dataset, split, n, dim, precision, size, date."""
    console().print(cache.entries_table([*cache.list_entries(cache_dir), *cache.list_weights(cache_dir)]))


@cache_app.command("rm")
def cache_rm(
    keys: opt.argument(Optional[list[str]], "Key prefixes (as `zoo-rank cache ls` shows them).") = None,
    model: opt.option(
        Optional[str], "--model", help="Remove every entry of this model (glob allowed)."
    ) = None,
    all_: opt.option(bool, "--all", help="Remove every entry.") = False,
    cache_dir: opt.CacheRoot = None,
) -> None:
    """Remove cache entries (features and converted pip: weights) by key prefix, by model, or all of them."""
    removed = cache.remove_entries(keys, model=model, all=all_, cache_dir=cache_dir)
    freed = sum(e.size for e in removed) / 2**20
    _print_line(f"removed {len(removed)} entries ({freed:.1f} MB)")
