"""`zoo-rank validate`: the model x dataset grid of metric scores beside probe accuracy, correlated per dataset.

Each cell scores one model's training features of one dataset (target mode) and stores them beside the
accuracy of the probe trained on that very subset (`zoo-rank probe`, same n_per_class and seed); its
result file is keyed on the probe run's settings, the metric names and the target probe's own key
(jobs.grid runs the cells). The merge correlates `METRICS[m].target_sign * score` with the probe metric over
the models, per dataset and metric (zoo_rank.stats.rank_correlations).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

from zoo_rank import extract, results
from zoo_rank._validation import ZooRankError
from zoo_rank.board import write_table
from zoo_rank.jobs.grid import Cell, Grid
from zoo_rank.jobs.probe import DatasetPlan, cell_settings, probe_settings, resolve_datasets
from zoo_rank.metrics import compute_metrics, metric_sign, resolve_metric_names
from zoo_rank.options import ExtractOptions, Subset
from zoo_rank.stats import STATISTICS, rank_correlations


def _targets(
    grid: Grid, models: list[str], plans: list[DatasetPlan], probe: str, probe_run: dict[str, Any]
) -> dict[tuple[str, str], dict[str, Any]]:
    """The probe record of every (model, dataset name); raises with the command that makes the missing ones."""
    targets = {
        (m, p.name): results.find_result(
            grid.results_dir, f"probe-{probe}", m, p.name, cell_settings(probe_run, m, p)
        )
        for m in models
        for p in plans
    }
    missing = [cell for cell, record in targets.items() if record is None]
    if missing:
        m, d = missing[0]
        n_per_class, seed = probe_run["n_per_class"], probe_run["seed"]
        size = "" if n_per_class is None else f" --n-per-class {n_per_class}"
        raise ZooRankError(
            f"no {probe} probe result with these settings (n_per_class {n_per_class}, seed {seed}, "
            f"precision {probe_run['precision']}) for {len(missing)} (model, dataset) cell(s) in {grid.results_dir}, "
            f"e.g. {m} on {d}; run `zoo-rank probe {' '.join(sorted({c[0] for c in missing}))} --datasets "
            f"{','.join(sorted({c[1] for c in missing}))} --probe {probe}{size} --seed {seed} --results-dir {grid.results_dir}` first."
        )
    return targets


def _score_cell(cell: Cell, target: dict[str, Any], names: list[str], probe: str, n_per_class, seed: int,
                device: str, cache_dir, quiet: bool) -> dict[str, Any]:  # fmt: skip
    """One cell's record: every metric on the scored subset, beside the target probe's score."""
    plan = cell.item
    fs = extract.extract_features(
        cell.model, plan.spec, split=plan.train_split, subset=Subset(n_per_class, seed),
        options=ExtractOptions(device=device, cache_dir=cache_dir, quiet=quiet),
    )  # fmt: skip
    scores = compute_metrics(fs.features, fs.labels, names)
    return {
        "kind": "validate",
        "model": cell.model,
        "dataset": plan.name,
        "probe": probe,
        "target_metric": target["metric"],
        "target": target["score"],
        **{f"score_{k}": float(v) for k, v in scores.items()},
        "n_per_class": n_per_class,
        "seed": seed,
        "n_samples": len(fs.labels),
        "feature_key": fs.meta.get("key"),
    }


def _correlation_row(sub: pl.DataFrame, dataset: str, name: str, n_boot: int, seed: int) -> dict[str, Any]:
    """One (dataset, metric) row of the table: the statistics over models, or a note saying why none."""
    column = f"score_{name}"
    sub = sub.drop_nulls(column)
    row: dict[str, Any] = {"dataset": dataset, "metric": name, "n_models": sub.height}
    try:
        corr = rank_correlations(
            sub[column].to_numpy(), sub["target"].to_numpy(), sign=metric_sign(name, "target"),
            n_boot=n_boot, seed=seed,
        )  # fmt: skip
    except ZooRankError as err:
        return {**row, "note": str(err)}
    row["sign"] = corr.sign
    row.update({stat: getattr(corr, stat) for stat in STATISTICS})
    row["regret"] = corr.regret
    # Below PERMUTATION_BELOW models: p-values and no intervals; from there on the reverse.
    for stat in ("pearson", "spearman", "kendall"):
        row[f"{stat}_p"] = corr.p_value.get(stat, math.nan)
    for stat in (*STATISTICS, "regret"):
        lo, hi = corr.ci.get(stat, (math.nan, math.nan))
        row[f"{stat}_ci"] = f"[{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) else ""
    row["note"] = corr.uncertainty
    return row


def run_validation(
    models: list[str],
    datasets: list[str],
    *,
    metrics: list[str] | None = None,
    probe: str = "logistic",
    results_dir: str | Path | None = None,
    skip_existing: bool = True,
    n_per_class: int | None = None,
    seed: int = 0,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    n_boot: int = 1000,
    quiet: bool = False,
):
    """Score every model on every dataset's training features (target mode) and correlate the scores with
    the probe accuracy of `zoo-rank probe` (one result file per cell, like the probes).

    Needs the probe result of each (model, dataset) in `results_dir`. Returns the merged correlation
    table (one row per dataset x metric; written as validation.csv / .md in `results_dir`), correlating
    `METRICS[m].target_sign * score` with the dataset's probe metric over the models.
    """
    grid = Grid.at("validate", results_dir)
    names = resolve_metric_names(metrics)
    plans = resolve_datasets(datasets)
    # The target is the probe trained on the very subset that is scored (same n_per_class and seed).
    probe_run = probe_settings(probe, n_per_class, seed, device)
    targets = _targets(grid, models, plans, probe, probe_run)
    # Scores also depend on which metrics are computed and on the target probe's own key.
    run = {**probe_run, "probe": probe, "metrics": names}
    cells = [
        Cell(m, p.name, {**cell_settings(run, m, p), "target_key": targets[(m, p.name)]["settings_key"]}, p)
        for m in models
        for p in plans
    ]
    grid.run(
        grid.pending(cells, skip_existing=skip_existing),
        lambda c: _score_cell(
            c, targets[(c.model, c.dataset)], names, probe, n_per_class, seed, device, cache_dir, quiet
        ),
        label="validate",
        quiet=quiet,
    )
    scored = grid.merge(where=run)
    rows = []
    for plan in plans:
        sub = scored.filter(pl.col("dataset") == plan.name, pl.col("model").is_in(models))
        rows += [
            _correlation_row(sub, plan.name, n, n_boot, seed) for n in names if f"score_{n}" in sub.columns
        ]
    table = pl.DataFrame(rows) if rows else pl.DataFrame()
    if table.width:
        write_table(table, grid.results_dir / "validation")
    return table


__all__ = ["run_validation"]
