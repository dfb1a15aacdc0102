"""One model of a `zoo-rank rank` run: features -> scores -> checks -> its row (`board.RunResult`).

Scores and probe results are remembered across runs (jobs.memo): a warm rerun, with every feature
cached, reads them instead of computing them again.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch

from zoo_rank import _console
from zoo_rank import metrics as metrics_package
from zoo_rank import probe as probe_module
from zoo_rank._device import pick_device
from zoo_rank.board import RunResult
from zoo_rank.extract import skipped_note
from zoo_rank.finetune import FinetuneOptions, as_check, finetune
from zoo_rank.jobs.grid import error_line
from zoo_rank.jobs.memo import remembered, source_digest
from zoo_rank.jobs.rank_plan import ModelEntry, RankRun, zoo_model
from zoo_rank.results import versions


def _transform_text(data_config: dict[str, Any]) -> str:
    """timm data config -> '224 px, bicubic, crop 0.875, mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5)'."""
    size = data_config.get("input_size", (3, 0, 0))
    mean = tuple(round(float(v), 4) for v in data_config.get("mean", ()))
    std = tuple(round(float(v), 4) for v in data_config.get("std", ()))
    return (
        f"{size[-1]} px, {data_config.get('interpolation', '?')}, crop {data_config.get('crop_pct', '?')}"
        f" ({data_config.get('crop_mode', 'center')}), mean {mean}, std {std}"
    )


def _device_text(meta: dict[str, Any]) -> str:
    """'cpu (x86_64, 2 threads)' / 'cuda:0 (NVIDIA H100 80GB HBM3)' from extraction metadata."""
    dev, name = meta.get("device", "?"), meta.get("device_name")
    extra = [name] if name else []
    if str(dev).startswith("cpu"):
        extra.append(f"{torch.get_num_threads()} threads")
    return f"{dev} ({', '.join(extra)})" if extra else str(dev)


def _manifest_text(manifest: dict[str, Any] | None) -> str | None:
    if not manifest:
        return None
    n = manifest.get("n_per_class")
    subset = "all images" if n is None else f"{n} per class, seed {manifest.get('seed')}"
    return f"{manifest.get('digest')} ({subset})"


def score(feats, metric_names: list[str], cache_dir) -> dict[str, Any]:
    """{"scores", "reasons", "estimators", "warnings"} of the metrics on one feature table (N, p).

    A function of the cached entry (named by its key), the metric names and the metrics' code: a warm
    rerun reads it."""

    def compute() -> dict[str, Any]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values = metrics_package.compute_metrics(feats.features, feats.labels, names=metric_names)
        return {
            "scores": {k: float(v) for k, v in values.items()},
            "reasons": dict(values.reasons),
            "estimators": dict(values.estimators),
            "warnings": [str(w.message) for w in caught],
        }

    record = {"features": feats.key, "metrics": list(metric_names), "code": source_digest(metrics_package)}
    return remembered("scores", record, compute, cache_dir)


def probe_check(zoo, model, feats, name: str, train_set, test_set, run: RankRun, timings: dict) -> dict:
    """One check: a linear probe trained on `train_set` (None: the scored features) and tested on `test_set`."""
    options, subset = run.options.probe, run.probe_subset
    t0 = time.perf_counter()
    train = feats if train_set is None else zoo.features(model, train_set, subset)
    test = zoo.features(model, test_set, subset)
    timings[f"probe_extract_s:{name}"] = time.perf_counter() - t0
    t0 = time.perf_counter()

    def solve() -> dict[str, Any]:
        fit = probe_module.linear_probe if options.method == "logistic" else probe_module.ridge_probe
        res = fit(train.features, train.labels, test.features, test.labels, options=options)
        return {
            "top1": float(res.top1),
            "mean_per_class": float(res.mean_per_class),
            "l2": float(res.l2),
            "n_train": int(res.n_train + res.n_val),
            "n_test": int(res.n_test),
        }

    # A warm rerun reads the probe's result: it is a function of the two cached entries (named by their
    # keys), the settings, the device kind and the probe's source code.
    record = {
        "train": train.key,
        "test": test.key,
        "method": options.method,
        "seed": options.seed,
        "device": pick_device(options.device, allow_mps=False).type,
        "code": source_digest(probe_module),
    }
    res = remembered("probe", record, solve, run.options.extract.cache_dir)
    timings[f"probe_s:{name}"] = time.perf_counter() - t0
    return {
        "dataset": name,
        "method": options.method,
        "train_split": train.meta.get("split", "train"),
        "split": test.meta.get("split", "test"),
        **res,
        "train_manifest": _manifest_text(train.meta.get("manifest")),
        "test_manifest": _manifest_text(test.meta.get("manifest")),
    }


def finetune_check(entry: ModelEntry, name: str, train_set, test_set, run: RankRun) -> dict:
    """--check finetune: the fine-tuned accuracy (zoo_rank.finetune) instead of the linear probe."""
    n_train = run.subset.n_per_class if train_set is None else run.probe_subset.n_per_class
    options = FinetuneOptions(
        n_per_class=n_train, test_per_class=run.probe_subset.n_per_class, seed=run.options.probe.seed
    )
    record = finetune(
        entry.arch, run.images if train_set is None else train_set, test_set, options=options,
        pretrained=entry.pretrained, dataset=name, device=run.options.extract.device,
        quiet=run.options.extract.quiet,
    )  # fmt: skip
    return as_check(record, name)


def checks(zoo, entry: ModelEntry, model, feats, run: RankRun, timings: dict) -> list[dict]:
    """Every check of one model; a failed check is kept as its error (the scores stand without it)."""
    out = []
    for name, train_set, test_set in run.checks:
        try:
            if run.options.check == "finetune":
                out.append(finetune_check(entry, name, train_set, test_set, run))
            else:
                out.append(probe_check(zoo, model, feats, name, train_set, test_set, run, timings))
        except (
            Exception
        ) as err:  # the scores stand without their check: keep them, report the check's failure
            _console.warn(f"{entry.spec}: probe on {name} failed: {error_line(err)}")
            out.append({"dataset": name, "method": run.options.probe.method, "error": error_line(err)})
    return out


def row_conditions(run: RankRun, feats, warnings_seen: list[str]) -> dict[str, Any]:
    """The run's shared conditions plus what this model's features were computed with."""
    notes = list(run.conditions.get("notes", []))
    if feats.meta.get("skipped_images"):
        notes.append(skipped_note(feats.meta["skipped_images"]))
    for message in warnings_seen:
        msg = message.splitlines()[0]
        if msg not in notes:
            notes.append(msg)
    meta = feats.meta
    conditions = {
        **run.conditions,
        "images": int(feats.features.shape[0]),
        "manifest": _manifest_text(meta.get("manifest")),
        "transform": _transform_text(meta.get("data_config", {})),
        "weights": meta.get("weights_id"),
        "precision": meta.get("precision"),
        "device": _device_text(meta),
        # Extraction's versions (torch, timm, datasets, ...) plus those of the scoring and probe stack.
        "versions": {**versions(), **meta.get("versions", {})},
    }
    if notes:
        conditions["notes"] = notes
    return conditions


def run_model(zoo, entry: ModelEntry, run: RankRun) -> RunResult:
    """Extract, score and check one model; raises on failure (the caller turns it into an error row)."""
    timings: dict[str, float] = {}
    # The first model's call extracts the image set for the whole zoo (decoded once); the others read it.
    model = zoo_model(entry)
    t0 = time.perf_counter()
    feats = zoo.features(model, run.images, run.subset)
    timings["extract_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scored = score(feats, run.metric_names, run.options.extract.cache_dir)
    timings["score_s"] = time.perf_counter() - t0
    probes = checks(zoo, entry, model, feats, run, timings)
    return RunResult(
        model=entry.spec,
        dataset=run.images.name,
        mode=run.options.mode,
        label=entry.spec,
        control=entry.control,
        metrics={k: float(v) for k, v in scored["scores"].items()},
        undefined=dict(scored.get("reasons", {})),
        estimators=dict(scored.get("estimators", {})),
        n_params=int(feats.meta.get("model_meta", {}).get("n_params") or 0),
        feature_dim=int(feats.features.shape[1]),
        probes=probes,
        conditions=row_conditions(run, feats, scored["warnings"]),
        timings={k: round(v, 3) for k, v in timings.items()},
    )
