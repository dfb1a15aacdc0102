"""The board: run results of one mode on one dataset, ranked; built from results (`build_board`) or
from result files (`merge`).

A board (`zoo_rank.leaderboard/1`) is written as NAME.json: the board options (mode, metrics, sort key),
the full results, the rank correlations, the recommendation and `rows`, the flat table whose columns are
exactly those of NAME.csv (one schema for both); NAME.md is the human view (`board.markdown`), NAME.png
the paper's Figure 7 layout (`board.plot`). One run's result file is `board.result.RunResult`.

The direction of every score depends on the mode (`METRICS[name].source_sign` / `.target_sign`: the
sign with which a higher value predicts better transfer), so every output states its mode, and boards
sort by `sign * value`, descending.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo_rank._validation import ZooRankError
from zoo_rank.board import evidence, regime
from zoo_rank.board.result import RunResult, clean, is_finite, load_result, tied
from zoo_rank.board.table import arrow, metric_title, target_title
from zoo_rank.metrics import check_mode, metric_sign
from zoo_rank.options import BoardOptions

BOARD_SCHEMA = "zoo_rank.leaderboard/1"
#: The board's sort key when none is chosen: the paper's score.
DEFAULT_PRIMARY = "vci"
#: Bootstrap resamples (over models) for the correlation intervals on a board: ~0.5 s per metric on 2
#: cores; with a handful of models the interval is coarse anyway (4 models have only 256 resamples).
#: The number itself is chosen once, in BoardOptions.
N_BOOT: int = BoardOptions.n_boot

MODE_TEXT = {
    "source": (
        "scores on the pretraining distribution (the paper's setting): less variability collapse "
        "(higher VCI) predicts better transfer"
    ),
    "target": (
        "scores on your own labelled target images: features in which the target classes are already "
        "separated (lower VCI, higher H-score / LogME / kNN) predict better fine-tuning"
    ),
}


@dataclass
class Leaderboard:
    """Results of one mode on one dataset, ranked by `primary` oriented for the mode.

    `results` keep their input order; `ranked()` gives the display order. `command` and `created`
    record how and when the board was built.
    """

    name: str
    mode: str
    metrics: list[str]
    primary: str
    results: list[RunResult]
    command: str = ""
    created: str = ""
    n_boot: int = N_BOOT
    #: Why the board is not sorted by the requested / default metric (regime.choose_primary).
    sort_note: str = ""
    #: Correlations already computed for this board's numbers (evidence.correlations).
    correlation_cache: dict[str, dict[str, Any]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if self.primary not in self.metrics:
            raise ZooRankError(
                f"sort metric {self.primary!r} is not among the board's metrics {self.metrics}; "
                "choose one of them with --sort-by."
            )
        for m in self.metrics:
            metric_sign(m, self.mode)  # raises on unknown names
        if not self.created:
            self.created = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    # -- derived views --

    def sign(self, metric: str) -> int:
        return metric_sign(metric, self.mode)

    @property
    def dataset(self) -> str:
        return self.results[0].dataset if self.results else ""

    @property
    def probe_datasets(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.results:
            for p in r.probes:
                seen.setdefault(str(p.get("dataset")), None)
        return list(seen)

    @property
    def target(self) -> str | None:
        """The check the scores are judged against: 'mlog' when any row has MLOG, else the top-1 of the
        (first) probe dataset; None without probes."""
        if any(r.mlog is not None for r in self.results):
            return "mlog"
        ds = self.probe_datasets
        return f"probe_top1:{ds[0]}" if ds else None

    def target_title(self) -> str:
        return target_title(self.target)

    def ranked(self) -> list[RunResult]:
        """Results in board order: by sign * primary, descending; rows without a value, then failures, last.

        Ties go by label, so the order does not depend on the order of the inputs (a merge of result
        files in any order reproduces the board).
        """
        s = self.sign(self.primary)

        def key(r: RunResult) -> tuple[int, float, str]:
            v = r.metrics.get(self.primary, math.nan)
            if r.error is not None:
                return (2, 0.0, r.label)
            if not is_finite(v):
                return (1, 0.0, r.label)
            return (0, -s * v, r.label)

        return sorted(self.results, key=key)

    def ranks(self) -> dict[int, int | None]:
        """id(result) -> 1-based rank; tied values share the best rank ("1, 1, 3"); None without a value."""
        out: dict[int, int | None] = {}
        n, prev, prev_rank = 0, None, 0
        for r in self.ranked():
            v = r.metrics.get(self.primary, math.nan)
            if r.error is None and is_finite(v):
                n += 1
                prev_rank = prev_rank if prev is not None and tied(v, prev) else n
                out[id(r)], prev = prev_rank, v
            else:
                out[id(r)] = None
        return out

    def correlations(self, *, include_controls: bool = True) -> dict[str, Any]:
        """Per metric, the rank correlations of the oriented score with the check (evidence.correlations)."""
        return evidence.correlations(self, include_controls=include_controls)

    def recommendation(self) -> str:
        """One line: the model to pick, and whether the check agrees (evidence.recommendation)."""
        return evidence.recommendation(self)

    def notes(self) -> list[str]:
        """The board's notes, once each (evidence.notes)."""
        return evidence.notes(self)

    def equivalence_notes(self) -> list[str]:
        """The note that VCI and H-score are one piece of evidence here, if so (evidence.equivalence_notes)."""
        return evidence.equivalence_notes(self)

    # -- the flat table (CSV columns == JSON rows) --

    def columns(self) -> list[str]:
        cols = [
            "rank",
            "model",
            "label",
            "control",
            "dataset",
            "mode",
            "n_params",
            "feature_dim",
            *self.metrics,
        ]
        for d in self.probe_datasets:
            cols += [f"probe_top1:{d}", f"probe_mean_per_class:{d}", f"probe_l2:{d}", f"probe_error:{d}"]
        if any(r.mlog is not None for r in self.results):
            cols.append("mlog")
        return [*cols, "error"]

    def rows(self) -> list[dict[str, Any]]:
        ranks = self.ranks()
        out = []
        for r in self.ranked():
            row: dict[str, Any] = {
                "rank": ranks[id(r)],
                "model": r.model,
                "label": r.label,
                "control": r.control,
                "dataset": r.dataset,
                "mode": r.mode,
                "n_params": r.n_params,
                "feature_dim": r.feature_dim,
            }
            for m in self.metrics:
                v = r.metrics.get(m, math.nan)
                row[m] = float(v) if is_finite(v) else None
            for d in self.probe_datasets:
                for key in ("top1", "mean_per_class", "l2"):
                    v = r.probe_value(f"probe_{key}:{d}")
                    row[f"probe_{key}:{d}"] = v if is_finite(v) else None
                row[f"probe_error:{d}"] = r.probe_errors().get(d)
            if "mlog" in self.columns():
                row["mlog"] = r.mlog
            row["error"] = r.error
            out.append(row)
        return out

    def conditions(self) -> dict[str, Any]:
        """Conditions shared by all runs as plain values; a condition that differs becomes {label: value}."""
        ranked = self.ranked()  # board order, so that a merge in any file order renders the same
        keys: dict[str, None] = {}
        for r in ranked:
            for k in r.conditions:
                keys.setdefault(k, None)
        merged: dict[str, Any] = {}
        for k in keys:
            per = {r.label: r.conditions[k] for r in ranked if k in r.conditions}
            distinct = {json.dumps(clean(v), sort_keys=True) for v in per.values()}
            merged[k] = next(iter(per.values())) if len(distinct) == 1 else per
        return merged

    def to_dict(self) -> dict[str, Any]:
        return clean(
            {
                "schema": BOARD_SCHEMA,
                "name": self.name,
                "mode": self.mode,
                "mode_text": MODE_TEXT[self.mode],
                "metrics": [
                    {"name": m, "sign": self.sign(m), "arrow": arrow(self.sign(m)), "title": metric_title(m)}
                    for m in self.metrics
                ],
                "primary": self.primary,
                "sort_note": self.sort_note,
                "target": self.target,
                "command": self.command,
                "created": self.created,
                "n_boot": self.n_boot,
                "conditions": self.conditions(),
                "columns": self.columns(),
                "rows": self.rows(),
                "correlations": self.correlations(),
                "correlations_without_controls": self.correlations(include_controls=False),
                "notes": self.notes(),
                "recommendation": self.recommendation(),
                "results": [r.to_dict() for r in self.ranked()],
            }
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Leaderboard:
        if d.get("schema") != BOARD_SCHEMA:
            raise ZooRankError(
                f"expected a board with schema {BOARD_SCHEMA!r}, got {d.get('schema')!r}; pass a NAME.json board."
            )
        return cls(
            name=d["name"],
            mode=d["mode"],
            metrics=[m["name"] for m in d["metrics"]],
            primary=d["primary"],
            results=[RunResult.from_dict(r) for r in d["results"]],
            command=d.get("command", ""),
            created=d.get("created", ""),
            n_boot=int(d.get("n_boot", N_BOOT)),
            sort_note=d.get("sort_note", ""),
        )


def _check_one_board(results: Sequence[RunResult]) -> None:
    """Results that can share a board: at least one, one mode, one dataset, one result per model."""
    if not results:
        raise ZooRankError("no run results to build a board from; pass at least one result file.")
    modes = {r.mode for r in results}
    if len(modes) > 1:
        raise ZooRankError(
            f"results mix modes {sorted(modes)}; the direction of the scores differs between modes, so build one board per mode."
        )
    datasets = {r.dataset for r in results}
    if len(datasets) > 1:
        raise ZooRankError(
            f"results are on different datasets {sorted(datasets)}; a board ranks models on one dataset, merge them per dataset."
        )
    seen: set[str] = set()
    for r in results:
        if r.label in seen:
            raise ZooRankError(
                f"two results for model {r.label!r} on {r.dataset}; pass one result file per (model, dataset) to merge."
            )
        seen.add(r.label)


def build_board(results: Sequence[RunResult], options: BoardOptions) -> Leaderboard:
    """Assemble a board from run results of one mode and one dataset.

    options.metrics: columns in order (None: every metric found in the results, in order of appearance).
    options.primary: the sort key (None: VCI when present, else the first metric; see regime.choose_primary
        for the shrinkage variant in target mode below N = 5p and the fallback from a column undefined everywhere).
    """
    _check_one_board(results)
    metrics = options.metrics
    if metrics is None:
        metrics = list(dict.fromkeys(m for r in results for m in r.metrics))
    if not metrics:
        raise ZooRankError(
            "none of the results has a metric value (all runs failed?); see the error column of each result file."
        )
    mode = results[0].mode
    primary, sort_note = regime.choose_primary(results, list(metrics), mode, options.primary, DEFAULT_PRIMARY)
    return Leaderboard(
        name=options.name,
        mode=mode,
        metrics=list(metrics),
        primary=primary,
        results=list(results),
        command=options.command,
        created=options.created,
        n_boot=options.n_boot,
        sort_note=sort_note,
    )


def merge(result_files: Iterable[str | Path], options: BoardOptions) -> Leaderboard:
    """Rebuild a board from per-run result files (e.g. NAME.runs/*.json from several machines).

    A directory in `result_files` stands for every *.json in it. The board order does not depend on the
    file order, so merging one run's files reproduces its board.
    """
    files: list[Path] = []
    for f in result_files:
        f = Path(f)
        files += sorted(f.glob("*.json")) if f.is_dir() else [f]
    if not files:
        raise ZooRankError("no result files given; pass NAME.runs/*.json files or a NAME.runs folder.")
    return build_board([load_result(f) for f in files], options)
