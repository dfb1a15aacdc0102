"""Bring-your-own features: read a parquet feature table, score it, print and write the scores.

Parquet layout read by `zoo-rank score` (what `polars` writes naturally):

    label      any scalar type (int, str, ...)        one class label per row
    features   list[f32] / array[f32, p]              one feature vector per row, all of length p

Column names are found automatically (`label`, `labels`, `y`, `target`; the single list/array
column), or given with --label-column / --feature-column. A "wide" table with one numeric column
per feature is accepted too. A directory is read as all its `*.parquet` shards, in name order.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.table import Table

from zoo_rank._console import console, warn
from zoo_rank._paths import atomic_path, write_text_atomic
from zoo_rank._validation import ZooRankError
from zoo_rank.metrics import METRICS, SampleSizeWarning, compute_metrics, resolve_metric_names

LABEL_COLUMNS = ("label", "labels", "y", "target", "class")


def read_feature_table(
    path: str | Path, *, label_column: str | None = None, feature_column: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, p) and labels (N,) from a parquet file or a directory of parquet shards.

    Features stay float32 only when the file stores float32 (or float16); float64 and integer columns
    come back float64, so a large common offset does not eat the within-class differences.
    """
    path = Path(path)
    frame = _read_frame(path)
    columns = frame.columns
    if label_column is None:
        label_column = next((c for c in LABEL_COLUMNS if c in columns), None)
        if label_column is None:
            raise ZooRankError(
                f"no label column in {path} (columns: {', '.join(columns)}); name it with --label-column."
            )
    elif label_column not in columns:
        raise ZooRankError(f"label column {label_column!r} not in {path} (columns: {', '.join(columns)}).")
    labels = frame[label_column].to_numpy()
    return np.ascontiguousarray(_feature_matrix(frame, path, label_column, feature_column)), labels


def _read_frame(path: Path) -> pl.DataFrame:
    """A parquet file, or the `*.parquet` shards of a folder in name order, as one table."""
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise ZooRankError(
                f"directory {path} holds no *.parquet files; point at a parquet file or a folder of shards."
            )
    elif path.is_file():
        files = [path]
    else:
        raise ZooRankError(
            f"no such file or directory: {path}; pass a parquet file or a folder of parquet shards."
        )
    try:
        frame = pl.concat([pl.read_parquet(f) for f in files], how="vertical")
    except Exception as err:  # polars raises several types for unreadable/mismatched files
        raise ZooRankError(
            f"could not read {path} as parquet ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "write it with polars/pyarrow `write_parquet`."
        ) from err
    return frame


def _feature_matrix(
    frame: pl.DataFrame, path: Path, label_column: str, feature_column: str | None
) -> np.ndarray:
    """(N, p) features: the one list/array column (or `feature_column`), else every other numeric column."""
    columns = frame.columns
    if feature_column is None:
        nested = [
            c for c in columns if c != label_column and isinstance(frame.schema[c], (pl.List, pl.Array))
        ]
        if len(nested) > 1:
            raise ZooRankError(
                f"several list columns in {path} ({', '.join(nested)}); choose one with --feature-column."
            )
        if nested:
            feature_column = nested[0]
    if feature_column is not None:
        if feature_column not in columns:
            raise ZooRankError(
                f"feature column {feature_column!r} not in {path} (columns: {', '.join(columns)})."
            )
        series = frame[feature_column]
        if isinstance(series.dtype, pl.List):
            lengths = series.list.len().unique().to_list()
            if len(lengths) != 1:
                raise ZooRankError(
                    f"feature vectors in {feature_column!r} have different lengths {sorted(x for x in lengths if x is not None)[:5]}; "
                    "every row needs the same number of features."
                )
            series = series.cast(pl.Array(_float_type([series.dtype.inner]), lengths[0]))
        else:
            series = series.cast(pl.Array(_float_type([series.dtype.inner]), series.dtype.size))
        return series.to_numpy()
    else:
        numeric = [c for c in columns if c != label_column and frame.schema[c].is_numeric()]
        if not numeric:
            raise ZooRankError(
                f"no feature column in {path}: expected a list/array column or numeric columns besides {label_column!r}."
            )
        dtype = _float_type([frame.schema[c] for c in numeric])
        return frame.select(pl.col(numeric).cast(dtype)).to_numpy()


def _float_type(dtypes: list[pl.DataType]) -> pl.DataType:
    """Float32 when every stored column is float32 or narrower, else Float64 (never lose precision)."""
    return pl.Float32 if all(d in (pl.Float32, pl.Float16) for d in dtypes) else pl.Float64


def score_parquet(
    path: str | Path,
    *,
    metrics: list[str] | None = None,
    label_column: str | None = None,
    feature_column: str | None = None,
) -> dict[str, Any]:
    """Read a feature table and compute the requested metrics. Returns a JSON-ready dict."""
    names = resolve_metric_names(metrics)
    features, labels = read_feature_table(path, label_column=label_column, feature_column=feature_column)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = compute_metrics(features, labels, names)
    return {
        "source": str(path),
        "n_samples": int(features.shape[0]),
        "n_features": int(features.shape[1]),
        "n_classes": len(np.unique(labels)),
        "seconds": round(time.perf_counter() - started, 4),
        # JSON has no NaN: an undefined score is null, with its reason under "undefined".
        "scores": {k: (None if math.isnan(v) else v) for k, v in scores.items()},
        "undefined": scores.reasons,
        "estimators": scores.estimators,
        "warnings": sorted({str(w.message) for w in caught if issubclass(w.category, SampleSizeWarning)}),
    }


def print_scores(result: dict[str, Any]) -> None:
    for message in result.get("warnings", []):
        warn(message)
    table = Table(
        title=f"{result['source']}: N={result['n_samples']}, p={result['n_features']}, K={result['n_classes']}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("higher means")
    for name, value in result["scores"].items():
        info = METRICS[name]
        reason = result.get("undefined", {}).get(name)
        estimator = result.get("estimators", {}).get(name)
        extra = f" ({estimator})" if estimator and info.shrinkage else ""
        table.add_row(name, "N/A" if value is None else f"{value:.6g}", info.higher_means + extra)
        if reason:
            warn(f"{name} N/A: {reason}")
    console().print(table)


def write_scores(result: dict[str, Any], out: str | Path) -> Path:
    """Write the scores as JSON (default) or CSV (one row per metric) by the file suffix, atomically."""
    out = Path(out)
    if out.suffix.lower() != ".csv":
        write_text_atomic(out, json.dumps(result, indent=2) + "\n")
        return out
    with atomic_path(out) as tmp:
        pl.DataFrame(
            {
                "metric": list(result["scores"]),
                "value": pl.Series(list(result["scores"].values()), dtype=pl.Float64),
                "undefined": [result.get("undefined", {}).get(k) for k in result["scores"]],
                "n_samples": result["n_samples"],
                "n_features": result["n_features"],
                "n_classes": result["n_classes"],
                "source": result["source"],
            }
        ).write_csv(tmp)
    return out


def print_registry() -> None:
    table = Table(title="zoo_rank metrics (sign: +1 = higher predicts better transfer)")
    for col in ("name", "higher means", "source", "target", "needs", "description", "citation"):
        table.add_column(col)
    for m in METRICS.values():
        table.add_row(
            m.name,
            m.higher_means,
            f"{m.source_sign:+d}",
            f"{m.target_sign:+d}",
            m.needs,
            m.description,
            m.citation,
        )
    console().print(table)
