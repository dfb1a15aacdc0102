"""`zoo-rank probe`: the model x dataset grid of linear probes; features from the cache, one result file per cell.

Each cell (model, dataset) probes the dataset's train split (subsampled to `n_per_class`) against its test
split (and its own validation split where it has one), with the probe solvers of zoo_rank.probe; its result
file is keyed on `cell_settings`, every setting that changes the number (jobs.grid runs the cells).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo_rank import __version__, data, extract
from zoo_rank import probe as solvers
from zoo_rank._device import pick_device, resolve_precision
from zoo_rank._validation import ZooRankError
from zoo_rank.board import write_table
from zoo_rank.jobs.grid import Cell, Grid
from zoo_rank.options import ExtractOptions, ProbeOptions, Subset

#: The merged table's columns, in this order.
COLUMNS = [
    "model", "dataset", "probe", "metric", "score", "top1", "mean_per_class", "l2", "val_acc",
    "n_train", "n_val", "n_test",
]  # fmt: skip


@dataclass
class DatasetPlan:
    """Where a probe's features come from: a data spec, its splits, and the metric it reports."""

    name: str
    spec: str
    train_split: str
    test_split: str
    val_split: str | None
    metric: str  # "top1" | "mean_per_class"
    hub: bool  # needs the Hugging Face Hub (the paper's ten)


def resolve_datasets(names: list[str]) -> list[DatasetPlan]:
    """'ten' -> the paper's ten downstream sets (`zoo_rank.data.DOWNSTREAM`); other names are the data
    module's specs: built-in names (fashion-mnist, digits, cifar10-local), parquet files or folders, image
    folders, or hf:org/name. Unknown names raise with the list of known ones.

    Splits: "train" and "test" ("val" too when the set has one; otherwise the probe splits train).
    """
    if list(names) == ["ten"]:
        names = list(data.DOWNSTREAM)
    known = data.known_datasets()
    plans = []
    for name in names:
        base = name.split(":", 1)[0] if not Path(name).exists() else name
        spec = known.get(base.lower())
        if spec is None and not (Path(base).expanduser().exists() or name.lower().startswith("hf:")):
            raise ZooRankError(
                f"unknown dataset {name!r}; known: ten (= {', '.join(data.DOWNSTREAM)}), "
                f"{', '.join(data.BUILTIN)}; or a parquet file, a folder of them, an image folder, hf:org/name."
            )
        if spec is not None and spec.splits and not {"train", "test"} <= set(spec.splits):
            raise ZooRankError(
                f"dataset {name!r} has splits {', '.join(spec.splits)}, a probe needs 'train' and 'test'; "
                "pick a set with both (e.g. cifar10-local, fashion-mnist, digits)."
            )
        plans.append(
            DatasetPlan(
                name=name,
                spec=name,
                train_split="train",
                test_split="test",
                val_split="val" if spec is not None and "val" in spec.splits else None,
                metric=spec.metric if spec is not None else "top1",
                hub=bool(spec.needs_network) if spec is not None else name.lower().startswith("hf:"),
            )
        )
    return plans


def _preflight_hub(plans: list[DatasetPlan]) -> None:
    """Open every Hub dataset's splits before any model loads, and fail once, listing all that cannot be
    reached (offline, `datasets` answers from its cache or fails at once)."""
    failed: dict[str, str] = {}
    for plan in plans:
        if not plan.hub or plan.name in failed:
            continue
        for split in filter(None, (plan.train_split, plan.val_split, plan.test_split)):
            try:
                data.load_images(plan.spec, split=split)
            except ZooRankError as err:
                failed[plan.name] = str(err)
                break
    if failed:
        first = next(iter(failed.values())).split("; ")[0][:200]
        raise ZooRankError(
            f"datasets {', '.join(failed)} need the Hugging Face Hub, which cannot be reached from here "
            f"(offline or not cached; first error: {first}); run once with network so they are cached, "
            "or probe local specs (cifar10-local, fashion-mnist, digits, a parquet folder)."
        )


def _features(
    model: str, plan: DatasetPlan, split: str, n_per_class, seed: int, device: str, cache_dir, quiet: bool
):
    """One split's features (N, p) and labels (N,) from the cache (extracted on a miss)."""
    return extract.extract_features(
        model,
        plan.spec,
        split=split,
        subset=Subset(n_per_class, seed),
        options=ExtractOptions(device=device, cache_dir=cache_dir, quiet=quiet),
    )


def grid_id(l2_grid: Any) -> str:
    """'97 values in [1e-06, 1e+06], sha256:...' naming an L2 grid in result keys.

    The digest is of the grid as the probe walks it (unique values, strongest first, float64)."""
    grid = solvers.strongest_first(l2_grid)
    digest = hashlib.sha256(grid.tobytes()).hexdigest()[:12]
    return f"{grid.size} values in [{grid.min():.0e}, {grid.max():.0e}], sha256:{digest}"


def probe_settings(
    probe: str, n_per_class: int | None, seed: int, device: str, l2_grid: Any = solvers.DEFAULT_L2_GRID
) -> dict[str, Any]:
    """What a probe cell's number depends on besides its model and dataset (the run-level result key).

    The feature precision is the one extraction resolves on `device` ("auto" -> bf16 or fp32), and the
    zoo_rank version stands for the solver's code.
    """
    return {
        "probe": probe,
        "l2_grid": grid_id(l2_grid),
        "n_per_class": n_per_class,
        "seed": seed,
        "precision": resolve_precision("auto", pick_device(device)),
        "zoo_rank": __version__,
    }


def cell_settings(run: dict[str, Any], model: str, plan: DatasetPlan) -> dict[str, Any]:
    """A cell's full result key: the run's settings plus its model, dataset spec and splits."""
    splits = {"train": plan.train_split, "val": plan.val_split, "test": plan.test_split}
    return {**run, "model": model, "dataset": plan.spec, "splits": splits}


def cells(models: list[str], plans: list[DatasetPlan], run: dict[str, Any]) -> list[Cell]:
    """The grid's cells, model-major, each keyed on `cell_settings`."""
    return [Cell(m, p.name, cell_settings(run, m, p), p) for m in models for p in plans]


def _probe_cell(cell: Cell, options: ProbeOptions, n_per_class: int | None, cache_dir, quiet: bool):
    """The record of one cell: the probe's result (no weights) plus what it was computed from.

    The subset, the probe's validation split and the features' device share `options.seed` / `.device`."""
    model, plan, seed, device = cell.model, cell.item, options.seed, options.device
    train = _features(model, plan, plan.train_split, n_per_class, seed, device, cache_dir, quiet)
    test = _features(model, plan, plan.test_split, None, seed, device, cache_dir, quiet)
    val = (
        _features(model, plan, plan.val_split, None, seed, device, cache_dir, quiet)
        if plan.val_split
        else None
    )
    fit = solvers.linear_probe if options.method == "logistic" else solvers.ridge_probe
    res = fit(
        train.features, train.labels, test.features, test.labels,
        None if val is None else val.features, None if val is None else val.labels, options=options,
    )  # fmt: skip
    return {
        "kind": f"probe-{options.method}",
        "model": model,
        "dataset": plan.name,
        "dataset_spec": plan.spec,
        "splits": {"train": plan.train_split, "val": plan.val_split, "test": plan.test_split},
        "n_per_class": n_per_class,
        "seed": seed,
        "metric": plan.metric,
        "score": res.top1 if plan.metric == "top1" else res.mean_per_class,
        **res.to_dict(),
        "feature_keys": {"train": train.meta.get("key"), "test": test.meta.get("key")},
    }


def run_probes(
    models: list[str],
    datasets: list[str],
    *,
    probe: str = "logistic",
    results_dir: str | Path | None = None,
    skip_existing: bool = True,
    n_per_class: int | None = None,
    seed: int = 0,
    device: str = "auto",
    l2_grid: Any = solvers.DEFAULT_L2_GRID,
    cache_dir: str | Path | None = None,
    quiet: bool = False,
):
    """Probe every model on every dataset; one result file per cell, then the merged table.

    Features come from the extraction cache (`zoo_rank.extract.extract_features`, which extracts on a
    miss). `n_per_class` subsamples the training split only; test splits are used whole. Each cell is keyed
    on `cell_settings` (results.find_result): `skip_existing` skips only a cell computed with exactly these
    settings; any other is computed and written beside the old one. Returns the merged polars table of
    every probe result in `results_dir` with this run's settings (also written as probe_<probe>.csv / .md).
    """
    method = probe
    grid_values = tuple(float(v) for v in np.asarray(l2_grid, dtype=np.float64).reshape(-1))
    options = ProbeOptions(method=method, l2_grid=grid_values, device=device, seed=seed)  # checks the method
    grid = Grid.at(f"probe-{method}", results_dir)
    run = probe_settings(method, n_per_class, seed, device, l2_grid)
    todo = grid.pending(cells(models, resolve_datasets(datasets), run), skip_existing=skip_existing)
    _preflight_hub([c.item for c in todo])
    grid.run(
        todo,
        lambda c: _probe_cell(c, options, n_per_class, cache_dir, quiet),
        label="probe",
        unit="probe",
        quiet=quiet,
        done=lambda c, r: f"probe {c.model} on {c.dataset}: {r['metric']} = {r['score']:.4f}",
    )
    table = grid.merge(COLUMNS, where=run)
    if table.width:
        write_table(table.sort(["dataset", "model"]), grid.results_dir / f"probe_{method}")
    return table


__all__ = ["DatasetPlan", "cell_settings", "grid_id", "probe_settings", "resolve_datasets", "run_probes"]
