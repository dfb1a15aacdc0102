"""Planning a `zoo-rank rank` run: its options, the models, the data opened once per split, the board.

`plan_run` resolves everything a run needs before any model runs (metric names, subsets with the default
data's measured sizes, the scored ImageSet and the check sets, the board's path and shared conditions);
`check_board` then refuses a board that cannot be written or whose kept rows were computed otherwise.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo_rank import _console
from zoo_rank import data as data_room
from zoo_rank import metrics as metrics_package
from zoo_rank._validation import ZooRankError
from zoo_rank.board import publish
from zoo_rank.extract.zoo import ZooModel
from zoo_rank.metrics import check_mode
from zoo_rank.options import BoardOptions, ExtractOptions, ProbeOptions, Subset
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
CHECKS = ("probe", "finetune")


@dataclass(frozen=True)
class RankOptions:
    """How a rank run checks and where it writes; the other rooms' settings travel in their own options.

    mode: 'target' (data = your labelled images; the check is a linear probe on its test split) or
        'source' (data = the pretraining distribution; checks only with `target`).
    target: the check's data (`--probe`): None (the mode's default: 'same' in target mode, none in source
        mode), 'none', 'same' (the scored dataset's test split), or comma-separated dataset specs (each
        probed train -> test split).
    check: 'probe' (linear probe, `probe.method`: 'logistic', the paper's protocol, or 'ridge') or
        'finetune' (zoo_rank.finetune's CPU protocol, result files in ./results).
    subset / probe_subset: class-balanced subsets of the scored split and of each check split;
        n_per_class None means every image, except on the default data (no `data`), where it means
        DEFAULT_N_PER_CLASS / DEFAULT_PROBE_N_PER_CLASS.
    out: the board path without suffix; None: `default_out` (leaderboards/default for the bare default
        run, else leaderboards/<data>-<mode>). An existing board keeps the rows of models not rerun here,
        which must have been computed with the same data, split, subset, seed and check (else an error);
        `replace=True` starts it over. Files at OUT that zoo_rank did not write are never overwritten.
    extract: how features are computed; its `quiet` silences this run's bars and lines too.
    probe: the check's probe (method, device, and the seed of its validation split and of fine-tuning).
    board: the board's metric columns (None: the registry's default), `primary` (--sort-by), command
        line and bootstrap size; its name is always the folder name of `out`.
    """

    mode: str = "target"
    target: str | None = None
    check: str = "probe"
    subset: Subset = field(default_factory=Subset)
    probe_subset: Subset = field(default_factory=Subset)
    out: str | Path | None = None
    replace: bool = False
    extract: ExtractOptions = field(default_factory=ExtractOptions)
    probe: ProbeOptions = field(default_factory=ProbeOptions)  # method: DEFAULT_PROBE_METHOD
    board: BoardOptions = field(default_factory=BoardOptions)

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if self.check not in CHECKS:
            raise ZooRankError(f"--check {self.check!r} is not known; use probe or finetune.")


@dataclass(frozen=True)
class ModelEntry:
    """One requested model: the spec as typed, what to build, and whether it is a control."""

    spec: str
    arch: str
    pretrained: bool

    @property
    def control(self) -> bool:
        return not self.pretrained


@dataclass(frozen=True)
class RankRun:
    """A rank run resolved once, before any model runs: what every step below reads."""

    entries: list[ModelEntry]
    images: Any  # the scored ImageSet, opened once
    # (dataset name, train ImageSet or None = the scored subset, test ImageSet) per check
    checks: list[tuple[str, Any, Any]]
    subset: Subset
    probe_subset: Subset
    metric_names: list[str]
    out: Path
    conditions: dict[str, Any]  # the board's conditions shared by every row
    notes: list[str]  # said while planning (the data fallback)
    options: RankOptions


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


def zoo_model(entry: ModelEntry) -> ZooModel:
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


def default_out(data_name: str, mode: str, *, bare: bool) -> Path:
    """Where a run writes without --out: the bare default run (no models, no data, target mode) its own
    board, any other run a board named after what it ranks, leaderboards/<data>-<mode>."""
    if bare and mode == "target":
        return DEFAULT_OUT
    return BOARDS_DIR / f"{slug(data_name).lstrip('.-') or 'data'}-{mode}"  # never a hidden file


def load_data(spec: str | None, split: str | None, notes: list[str]):
    """(scored ImageSet, the spec it came from); the default falls back to digits when Fashion-MNIST is absent."""
    if spec is not None:
        return data_room.load_images(spec, split=split), spec
    try:
        return data_room.load_images(DEFAULT_DATA, split=split or "train"), DEFAULT_DATA
    except ZooRankError as err:
        note = (
            f"Fashion-MNIST is not available here ({err}); this board uses scikit-learn digits instead "
            "(install Debian's dataset-fashion-mnist to get the default data)."
        )
        _console.warn(note)
        notes.append(note)
        return data_room.load_images(FALLBACK_DATA, split=split or "train"), FALLBACK_DATA


def check_sets(probe: str | None, mode: str, images, data_spec: str) -> list[tuple[str, Any, Any]]:
    """[(dataset name, train ImageSet or None (= the scored subset), test ImageSet)] for the checks.

    probe None: target mode checks on the scored dataset's test split, source mode has no check.
    'none' disables; 'same' is the scored dataset; otherwise a comma-separated list of dataset specs,
    each probed train split -> test split. The scored split is not opened again.
    """
    if probe is None:
        probe = SAME if mode == "target" else "none"
    specs = [s.strip() for s in probe.split(",") if s.strip()]
    if specs == ["none"]:
        return []

    def load(spec: str, split: str):
        same = spec == data_spec and split == images.split
        return images if same else data_room.load_images(spec, split=split)

    out = []
    for s in specs:
        if s != SAME:
            test = load(s, "test")
            out.append((test.name, load(s, "train"), test))
            continue
        if images.split == "test":
            raise ZooRankError(
                "the scored split is the test split, so it cannot also be the held-out check; score a train split "
                "(--split train) or pass --probe none."
            )
        try:
            out.append((images.name, None, load(data_spec, "test")))
        except ZooRankError as err:
            raise ZooRankError(
                f"the check needs a held-out 'test' split of {data_spec} ({err}); pass --probe none "
                "to rank without a check, or --probe DATASET to check on another labelled set."
            ) from err
    return out


def model_entries(models: Sequence[str] | None) -> list[ModelEntry]:
    """The requested models (none: DEFAULT_MODELS), each named once."""
    entries = [parse_model(s) for s in (list(models or []) or DEFAULT_MODELS)]
    dupes = sorted({e.spec for e in entries if [x.spec for x in entries].count(e.spec) > 1})
    if dupes:
        raise ZooRankError(f"model(s) {', '.join(dupes)} named twice; list each model once.")
    return entries


def shared_conditions(
    run_images, data_spec: str, subset: Subset, probe_subset: Subset, checks, options
) -> dict:
    """The board's conditions shared by every row (what `publish.check_compatible` compares across runs)."""
    spec_info = data_room.known_datasets().get(run_images.name)
    how = (
        "fine-tuning (zoo_rank.finetune)"
        if options.check == "finetune"
        else f"{options.probe.method} linear probe"
    )
    per_class = probe_subset.n_per_class if probe_subset.n_per_class is not None else "all"
    check = "; ".join(
        f"{how} trained on {'the scored subset' if train is None else f'{name} train'}, "
        f"tested on {name} {test.split} ({per_class} per class)"
        for name, train, test in checks
    )
    return {
        "data": f"{run_images.name} ({spec_info.description})"
        if spec_info and spec_info.description
        else data_spec,
        "data_fingerprint": run_images.fingerprint,
        "split": run_images.split,
        "classes": len(run_images.classes),
        "images_per_class": subset.n_per_class if subset.n_per_class is not None else "all",
        "seed": subset.seed,
        "check": check or "none",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }


def plan_run(
    models: Sequence[str] | None, data: str | None, split: str | None, options: RankOptions
) -> RankRun:
    """Resolve the run once: models, metric names, subsets, the data (each split opened once), the board."""
    metric_names = metrics_package.resolve_metric_names(options.board.metrics)
    sort_by = options.board.primary
    if sort_by is not None and sort_by not in metric_names:
        raise ZooRankError(
            f"--sort-by {sort_by!r} is not among the chosen metrics {metric_names}; add it to --metrics."
        )
    entries = model_entries(models)
    subset, probe_subset = options.subset, options.probe_subset
    if data is None:  # the default data comes with its measured sizes
        if subset.n_per_class is None:
            subset = dataclasses.replace(subset, n_per_class=DEFAULT_N_PER_CLASS)
        if probe_subset.n_per_class is None:
            probe_subset = dataclasses.replace(probe_subset, n_per_class=DEFAULT_PROBE_N_PER_CLASS)
    notes: list[str] = []
    images, data_spec = load_data(data, split, notes)
    checks = check_sets(options.target, options.mode, images, data_spec)
    bare = not models and data is None
    out = Path(options.out) if options.out is not None else default_out(images.name, options.mode, bare=bare)
    conditions = shared_conditions(images, data_spec, subset, probe_subset, checks, options)
    if notes:
        conditions["notes"] = notes
    return RankRun(
        entries, images, checks, subset, probe_subset, metric_names, out, conditions, notes, options
    )


def check_board(run: RankRun) -> dict[str, Any]:
    """Before any model runs: the board can be written, and its other rows can stand beside this run's.
    Returns the run's comparable settings."""
    publish.check_out(run.out)
    settings = publish.settings_of(run.options.mode, run.images.name, run.conditions)
    if not run.options.replace:
        rerun = {e.spec for e in run.entries}
        kept = [r for label, (_, r) in publish.read_runs(run.out).items() if label not in rerun]
        publish.check_compatible(kept, settings, run.metric_names, run.out)
    return settings
