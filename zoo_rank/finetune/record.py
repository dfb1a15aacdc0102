"""A fine-tuning cell's result: its key (every input that changes the number), its file, its record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo_rank._paths import json_digest
from zoo_rank.finetune.options import KIND, RESULT_FORMAT, FinetuneOptions
from zoo_rank.results import result_path


def cell_key(model: str, weights_id: str, train_fp: str, test_fp: str, metric: str, options: FinetuneOptions,
             device_type: str, precision: str, world: int) -> dict[str, Any]:  # fmt: skip
    """Every input that changes a cell's number (the weights by digest, the data by fingerprint)."""
    return {
        "format": RESULT_FORMAT,
        "model": model,
        "weights": weights_id,
        "train": train_fp,
        "test": test_fp,
        "metric": metric,
        "options": options.to_dict(),
        "device": device_type,
        "precision": precision,
        "world_size": world,
    }


def cell_path(results_dir: str | Path, model: str, dataset: str, key: dict[str, Any]) -> Path:
    """The cell's result file: finetune__<model>__<dataset>__<12 hex of sha256(json.dumps(key))>.json."""
    # separators=None: json.dumps' default ", " / ": ", the bytes every existing result file was keyed on.
    digest = json_digest(key, 12, separators=None)
    return result_path(results_dir, KIND, model, f"{dataset}__{digest}")


def as_check(record: dict[str, Any], dataset: str) -> dict[str, Any]:
    """A fine-tuning result in the shape of a board's probe check (``board.RunResult.probes``)."""
    return {
        "dataset": f"{dataset} (fine-tuned)",
        "method": "finetune",
        "top1": float(record["top1"]),
        "mean_per_class": float(record["mean_per_class"]),
        "lr": float(record["lr"]),
        "n_train": int(record["n_fit"] + record["n_val"]),
        "n_test": int(record["n_test"]),
    }
