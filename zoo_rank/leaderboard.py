"""Leaderboards: per-run results -> one ranked board as markdown, CSV, JSON and a PNG scatter.

Two file kinds, both JSON, both versioned by a `schema` field:

* a **result file** (`zoo_rank.result/1`), one per (model, dataset) run, written by `zoo_rank.jobs.rank`
  (through `zoo_rank.publish`, into NAME.runs/). It carries everything a board needs about that run: the
  metric values, the probe results, the conditions (data, manifest, transform, precision, device,
  versions, date) and an error when the run failed. Result files from several machines combine with `merge`.
* a **board** (`zoo_rank.leaderboard/1`): `NAME.json` holds the board options (mode, metrics, sort
  key), the full results, the rank correlations, the recommendation and `rows`, the flat table whose
  columns are exactly those of `NAME.csv` (one schema for both). `NAME.md` is the human view,
  `NAME.png` the paper's Figure 7 layout (each metric against the probe check, correlation in the
  legend). `INDEX.zoo-rank.md` indexes the boards of a folder and is regenerated on every write (never
  a file the tool did not write: `zoo_rank.publish` locks, merges and refuses foreign files).

The direction of every score depends on the mode (`METRICS[name].source_sign` / `.target_sign`: the
sign with which a higher value predicts better transfer), so every output states its mode, and boards
sort by `sign * value`, descending.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo_rank import __version__, regime
from zoo_rank._paths import write_bytes_atomic, write_text_atomic
from zoo_rank._validation import ZooRankError
from zoo_rank.metrics import check_mode, metric_sign
from zoo_rank.significance import PERMUTATION_BELOW

RESULT_SCHEMA = "zoo_rank.result/1"
BOARD_SCHEMA = "zoo_rank.leaderboard/1"
#: The board's sort key when none is chosen: the paper's score.
DEFAULT_PRIMARY = "vci"

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

# Column titles for the human views; the machine views use the registry names.
_TITLES = {
    "vci": "VCI",
    "fuzziness": "Fuzziness",
    "squared_distance": "Sq. distance",
    "cosine_distance": "Cosine dist.",
    "cosine_similarity": "Cosine dist.",  # the old registry name, in result files written before the rename
    "class_separation": "Class sep.",
    "h_score": "H-score",
    "vci_lw": "VCI-LW",
    "h_score_lw": "H-score-LW",
    "logme": "LogME",
    "knn_accuracy": "kNN acc.",
}

# Keys of the statistics returned by validate.rank_correlations, in display order with short titles.
_CORR_KEYS = (
    ("spearman", "ρ"),
    ("kendall", "τ"),
    ("weighted_tau", "τw"),
    ("pearson", "r"),
    ("regret", "regret"),
)
_PROBE_TEXT = {
    "logistic": "multinomial logistic regression with L-BFGS, the paper's protocol",
    "ridge": "closed-form ridge regression on one-hot targets, a quick stand-in for the paper's logistic probe",
}
#: Bootstrap resamples (over models) for the correlation intervals on a board: ~0.5 s per metric on 2
#: cores; with a handful of models the interval is coarse anyway (4 models have only 256 resamples).
N_BOOT = 200


def metric_title(metric: str) -> str:
    return _TITLES.get(metric, metric)


def _tied(a: float, b: float) -> bool:
    """Equal up to numerical noise: such scores cannot order two models.

    The absolute tolerance covers metrics that degenerate to exactly 0 (VCI at N <= p + 1) and come out
    as 0 or 1e-8 depending on rounding; every registered metric is O(1e-2) or larger when informative.
    """
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def target_title(target: str | None) -> str:
    """'probe_top1:cifar10' -> 'probe top-1 (cifar10)'; 'mlog' -> 'MLOG'; None -> ''."""
    if target is None:
        return ""
    if target == "mlog":
        return "MLOG"
    return f"probe top-1 ({target.partition(':')[2]})"


def arrow(sign: int) -> str:
    """↑ when higher is better for the ranking, ↓ when lower is."""
    return "↑" if sign > 0 else "↓"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _clean(x: Any) -> Any:
    """JSON-safe copy: NaN/Inf become None, numpy scalars become Python numbers, tuples become lists."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 1) == 0:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# ---- one run -------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """The outcome of one (model, dataset) run; the unit that `rank` writes and `merge` reads.

    `metrics` maps registry names to values (NaN when a metric could not be computed; `undefined` says why). `probes` holds
    one dict per probe dataset: {"dataset", "split", "top1", "mean_per_class", "l2", "n_train", "n_test"},
    accuracies as fractions. `conditions` holds what the numbers depend on (data, split, manifest digest,
    n_per_class, n_images, n_classes, seed, transform, precision, device, versions, date, notes).
    A failed run has `error` set (one line) and whatever was known before the failure.
    """

    model: str
    dataset: str
    mode: str
    label: str = ""
    control: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    n_params: int | None = None
    feature_dim: int | None = None
    probes: list[dict[str, Any]] = field(default_factory=list)
    mlog: float | None = None
    conditions: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    #: {metric: reason} for each metric without a value on these features (shown as N/A).
    undefined: dict[str, str] = field(default_factory=dict)
    #: {metric: how Sigma_T was estimated} for the covariance-based scores (zoo_rank.regime).
    estimators: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if not self.label:
            self.label = self.model

    def to_dict(self) -> dict[str, Any]:
        return {"schema": RESULT_SCHEMA, **_clean(dataclasses.asdict(self))}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        schema = d.get("schema")
        if schema != RESULT_SCHEMA:
            raise ZooRankError(
                f"expected a result file with schema {RESULT_SCHEMA!r}, got {schema!r}; pass the per-run JSON files "
                "that `zoo-rank rank` writes into NAME.runs/ (not a board's NAME.json)."
            )
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        kwargs["metrics"] = {
            k: (math.nan if v is None else float(v)) for k, v in (kwargs.get("metrics") or {}).items()
        }
        return cls(**kwargs)

    def probe_value(self, column: str) -> float:
        """The value of a probe column ('probe_top1:DATASET', 'probe_mean_per_class:DATASET', 'mlog'); NaN if absent."""
        if column == "mlog":
            return math.nan if self.mlog is None else float(self.mlog)
        key, _, dataset = column.partition(":")
        key = key.removeprefix("probe_")
        for p in self.probes:
            if p.get("dataset") == dataset and _finite(p.get(key)):
                return float(p[key])
        return math.nan

    def probe_errors(self) -> dict[str, str]:
        """{probe dataset: error} of the checks that failed (the scores of the run still stand)."""
        return {str(p.get("dataset")): str(p["error"]) for p in self.probes if p.get("error")}

    def save(self, folder: str | Path) -> Path:
        """Write FOLDER/rank-MODE__LABEL__DATASET.json (results.RESULT_TEMPLATE: one file per grid cell)."""
        from zoo_rank import results

        return results.write_result(
            results.result_path(folder, f"rank-{self.mode}", self.label, self.dataset), self.to_dict()
        )


def load_result(path: str | Path) -> RunResult:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ZooRankError(
            f"result file {path} does not exist; pass files written by `zoo-rank rank` (NAME.runs/*.json)."
        ) from None
    except json.JSONDecodeError as err:
        raise ZooRankError(
            f"result file {path} is not valid JSON ({err}); rerun the model that wrote it."
        ) from None
    return RunResult.from_dict(data)


# ---- the board -----------------------------------------------------------------------------------


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
    #: Why the board is not sorted by the requested / default metric (zoo_rank.regime.choose_primary).
    sort_note: str = ""
    _corr_cache: dict[str, dict[str, Any]] = field(
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
            self.created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

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
            if not _finite(v):
                return (1, 0.0, r.label)
            return (0, -s * v, r.label)

        return sorted(self.results, key=key)

    def ranks(self) -> dict[int, int | None]:
        """id(result) -> 1-based rank; tied values share the best rank ("1, 1, 3"); None without a value."""
        out: dict[int, int | None] = {}
        n, prev, prev_rank = 0, None, 0
        for r in self.ranked():
            v = r.metrics.get(self.primary, math.nan)
            if r.error is None and _finite(v):
                n += 1
                prev_rank = prev_rank if prev is not None and _tied(v, prev) else n
                out[id(r)], prev = prev_rank, v
            else:
                out[id(r)] = None
        return out

    def correlations(self, *, include_controls: bool = True) -> dict[str, Any]:
        """Per metric: validate.rank_correlations of the oriented score (sign * value) with the target.

        Returns {"target", "n_models", "include_controls", "metrics": {name: {statistic: value} | {"absent": reason}}},
        or {"absent": reason} when the board has no target. Orientation makes +1 mean "the arrow's direction
        orders the models exactly as the check does" in either mode, and makes the top-1 regret refer to the
        model the board would recommend.
        """
        target = self.target
        if target is None:
            return {"absent": "no probe or MLOG result to check the scores against (run with --probe)"}
        # Board order, not input order: the same numbers in the same order give bit-identical statistics.
        rows = [r for r in self.ranked() if r.error is None and (include_controls or not r.control)]
        out: dict[str, Any] = {"target": target, "include_controls": include_controls, "metrics": {}}
        n_target = sum(_finite(r.probe_value(target)) for r in rows)
        out["n_models"] = n_target
        for m in self.metrics:
            pairs = [
                (float(r.metrics[m]), r.probe_value(target))
                for r in rows
                if _finite(r.metrics.get(m, math.nan)) and _finite(r.probe_value(target))
            ]
            if len(pairs) < 3:
                out["metrics"][m] = {
                    "absent": f"only {len(pairs)} model(s) with both {m} and {self.target_title()}; "
                    "a rank correlation needs at least 3"
                }
                continue
            # The bootstrap costs ~0.1 s per metric; boards render the same numbers several times.
            key = json.dumps([m, self.mode, self.n_boot, pairs])
            if key not in self._corr_cache:
                self._corr_cache[key] = _correlate(
                    [p[0] for p in pairs], [p[1] for p in pairs], self.sign(m), self.n_boot
                )
            out["metrics"][m] = self._corr_cache[key]
        return out

    def recommendation(self) -> str:
        """One line: the model to pick, and whether the check agrees."""
        ranked = [
            r for r in self.ranked() if r.error is None and _finite(r.metrics.get(self.primary, math.nan))
        ]
        candidates = [r for r in ranked if not r.control]
        verb = "fine-tune" if self.mode == "target" else "transfer from"
        title = f"{metric_title(self.primary)} {arrow(self.sign(self.primary))}"
        if not candidates:
            if ranked:
                return "No recommendation: every scored model is a control (random init); add candidate backbones."
            return "No recommendation: no candidate model has a score (see the errors above)."
        best = candidates[0]
        tied = [r for r in candidates if _tied(r.metrics[self.primary], best.metrics[self.primary])]
        if len(tied) > 1:
            line = (
                f"Recommendation: none by {title} alone: {', '.join(r.label for r in tied)} tie at "
                f"{format_value(best.metrics[self.primary])} (see the notes; break the tie with another column)"
            )
        else:
            line = f"Recommendation: {verb} **{best.label}**, first by {title} in {self.mode} mode"
        target = self.target
        if target is not None:
            checked = [r for r in candidates if _finite(r.probe_value(target))]
            if checked:
                top = max(checked, key=lambda r: r.probe_value(target))
                name = self.target_title()
                if len(tied) > 1:
                    line += (
                        f"; the check prefers {top.label} ({name} {format_value(top.probe_value(target))})"
                    )
                elif top is best:
                    line += (
                        f"; the check agrees ({name} {format_value(best.probe_value(target))} is the best)"
                    )
                else:
                    line += (
                        f"; the check prefers {top.label} ({name} {format_value(top.probe_value(target))} vs "
                        f"{format_value(best.probe_value(target))})"
                    )
        controls = [r for r in ranked if r.control]
        if (
            controls
            and ranked.index(controls[0]) < ranked.index(best)
            and not _tied(controls[0].metrics[self.primary], best.metrics[self.primary])
        ):
            line += f"; warning: the control {controls[0].label} ranks above it, so {metric_title(self.primary)} is not informative here"
        return line + "."

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
                row[m] = float(v) if _finite(v) else None
            for d in self.probe_datasets:
                for key in ("top1", "mean_per_class", "l2"):
                    v = r.probe_value(f"probe_{key}:{d}")
                    row[f"probe_{key}:{d}"] = v if _finite(v) else None
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
            distinct = {json.dumps(_clean(v), sort_keys=True) for v in per.values()}
            merged[k] = next(iter(per.values())) if len(distinct) == 1 else per
        return merged

    def notes(self) -> list[str]:
        """Every run's notes (data fallback, sample-size warnings), once each; a note that only some runs
        carry names them."""
        holders: dict[str, list[str]] = {}
        for r in self.ranked():
            notes = r.conditions.get("notes") or []
            for n in [notes] if isinstance(notes, str) else notes:
                holders.setdefault(str(n), []).append(r.label)
        n_runs = len(self.results)
        notes = [n if len(who) == n_runs else f"{n} ({', '.join(who)})" for n, who in holders.items()]
        return notes + regime.comparison_notes(self.ranked(), self.metrics) + self.equivalence_notes()

    def equivalence_notes(self) -> list[str]:
        """Columns that are one piece of evidence, not two: with min(p, K-1) = K-1 for every model,
        VCI = 1 - H-score / (K-1) (both are Tr[pinv(Sigma_T) Sigma_B], eq. 3 of the paper), so the two
        order the models identically (in opposite directions)."""
        if not {"vci", "h_score"} <= set(self.metrics):
            return []
        scored = [r for r in self.results if r.error is None]
        classes = {r.conditions.get("classes") for r in scored}
        if not scored or len(classes) != 1 or not isinstance(next(iter(classes)), int):
            return []
        k = next(iter(classes))
        if not all(isinstance(r.feature_dim, int) and r.feature_dim >= k - 1 for r in scored):
            return []
        # The identity as computed, not only as defined (a metric left undefined, NaN, is no exception).
        pairs = [(r.metrics.get("vci"), r.metrics.get("h_score")) for r in scored]
        if not all(
            math.isclose(v, 1 - h / (k - 1), abs_tol=1e-6) for v, h in pairs if _finite(v) and _finite(h)
        ):
            return []
        return [
            f"VCI = 1 − H-score/(K − 1) on this board: every model has at least K − 1 = {k - 1} feature "
            f"dimensions, so rank(Σ_B) = K − 1 for all and VCI and H-score order the models identically; they "
            "are one piece of evidence, not two."
        ]

    def to_dict(self) -> dict[str, Any]:
        return _clean(
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


def build_board(
    results: Sequence[RunResult],
    *,
    name: str,
    metrics: Sequence[str] | None = None,
    primary: str | None = None,
    command: str = "",
    created: str = "",
    n_boot: int = N_BOOT,
) -> Leaderboard:
    """Assemble a board from run results of one mode and one dataset.

    metrics: columns in order (default: every metric found in the results, in order of appearance).
    primary: the sort key (default: VCI when present, else the first metric; see regime.choose_primary for
        the shrinkage variant in target mode below N = 5p and the fallback from a column undefined everywhere).
    """
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
    seen: dict[str, RunResult] = {}
    for r in results:
        if r.label in seen:
            raise ZooRankError(
                f"two results for model {r.label!r} on {r.dataset}; pass one result file per (model, dataset) to merge."
            )
        seen[r.label] = r
    if metrics is None:
        found: dict[str, None] = {}
        for r in results:
            for m in r.metrics:
                found.setdefault(m, None)
        metrics = list(found)
    if not metrics:
        raise ZooRankError(
            "none of the results has a metric value (all runs failed?); see the error column of each result file."
        )
    primary, sort_note = regime.choose_primary(results, list(metrics), next(iter(modes)), primary, DEFAULT_PRIMARY)
    return Leaderboard(
        name=name,
        mode=next(iter(modes)),
        metrics=list(metrics),
        primary=primary,
        results=list(results),
        command=command,
        created=created,
        n_boot=n_boot,
        sort_note=sort_note,
    )


def _correlate(scores: Sequence[float], targets: Sequence[float], sign: int, n_boot: int) -> dict[str, Any]:
    """validate.rank_correlations of sign * scores with targets, as a JSON-ready dict (with bootstrap CIs)."""
    from zoo_rank.validate import rank_correlations

    return rank_correlations(list(scores), list(targets), sign=sign, n_boot=n_boot, seed=0).to_dict()


# ---- human views ---------------------------------------------------------------------------------


def format_value(v: Any, digits: int = 4) -> str:
    """A table cell: floats to `digits` significant digits (0.09368, 11.22), so close scores stay apart."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:#.{digits}g}".rstrip(".")
        return f"{v:.{digits - 1}e}"
    return str(v)


def _fmt_params(n: int | None) -> str:
    if not n:
        return "—"
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


def _fmt_condition(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_fmt_condition(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt_condition(v) for v in value)
    return format_value(value)


def correlation_line(board: Leaderboard, corr: dict[str, Any] | None = None) -> str:
    """One markdown line: per metric, Spearman's ρ with the check, or why it is absent."""
    corr = board.correlations() if corr is None else corr
    if "absent" in corr:
        return f"**Rank correlation with the check:** absent — {corr['absent']}."
    who = "all models" if corr["include_controls"] else "controls left out"
    parts = []
    for m in board.metrics:
        stats = corr["metrics"][m]
        v = stats.get("spearman")
        p = (stats.get("p_value") or {}).get("spearman")
        parts.append(
            f"{metric_title(m)} {arrow(board.sign(m))} "
            + ("absent" if "absent" in stats else f"{v:+.2f}" if _finite(v) else "undefined (ties)")
            + (f" (p = {_fmt_p(p)})" if _finite(p) else "")
        )
    return f"**Spearman ρ with {board.target_title()}** ({who}, n = {corr['n_models']}): " + " · ".join(parts)


def _fmt_p(p: float) -> str:
    """A p-value to two significant digits (0.042, 0.0014): small boards have few possible values."""
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def correlation_table(board: Leaderboard, corr: dict[str, Any]) -> list[str]:
    """Markdown table: per metric, every statistic of validate.rank_correlations (or why it is absent).

    Small boards (exact permutation p-values) show "ρ (p = ...)" for the tested statistics; larger ones
    the 95% bootstrap interval beside Spearman's ρ.
    """
    if "absent" in corr:
        return []
    tested = corr["n_models"] < PERMUTATION_BELOW
    rho_head = "Spearman ρ (one-sided exact p)" if tested else "Spearman ρ [95% BCa CI]"
    lines = [
        f"| score | {rho_head} | Kendall τ{' (p)' if tested else ''} | weighted τ | Pearson r{' (p)' if tested else ''} | top-1 regret |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    same = bool(board.equivalence_notes())
    for m in board.metrics:
        stats = corr["metrics"][m]
        head = f"{metric_title(m)} {arrow(board.sign(m))}" + (
            " (= VCI, see the note)" if same and m == "h_score" else ""
        )
        if "absent" in stats:
            lines.append(f"| {head} | absent: {stats['absent']} | | | | |")
            continue
        cells = []
        for k, _ in _CORR_KEYS:
            v = stats.get(k)
            if k == "regret":
                cells.append(f"{v:.3f}" if _finite(v) else "—")
                continue
            text = f"{v:+.2f}" if _finite(v) else "undefined (ties)"
            ci = (stats.get("ci") or {}).get(k)
            p = (stats.get("p_value") or {}).get(k)
            if k == "spearman" and ci and all(map(_finite, ci)):
                text += f" [{ci[0]:+.2f}, {ci[1]:+.2f}]"
            if _finite(p):
                text += f" (p = {_fmt_p(p)})"
            cells.append(text)
        lines.append(f"| {head} | " + " | ".join(cells) + " |")
    return lines


def statistics_text(board: Leaderboard, n_models: int) -> str:
    """The paragraph under the correlation tables: what the numbers are and how sure they can be."""
    head = (
        "Rank correlation of each score with the check, by validate.rank_correlations on the oriented score "
        "(sign × value, so +1 means the arrow orders the models exactly as the check does); top-1 regret is the "
        "check of the best model minus that of the model the score ranks first. "
    )
    if n_models < PERMUTATION_BELOW:
        smallest = 1 / math.factorial(n_models)
        return head + (
            f"With {n_models} models there are no intervals (a bootstrap over so few models only repeats them); p is "
            f"the exact one-sided permutation p-value (scipy.stats.permutation_test over all {math.factorial(n_models)} "
            f"orders): how often a random order of the models agrees with the check at least as well. The smallest "
            f"possible p here is {_fmt_p(smallest)}, even for a perfect order."
        )
    return head + (
        f"The interval is a 95% BCa bootstrap over models (scipy.stats.bootstrap, {board.n_boot} resamples)."
    )


def render_markdown(board: Leaderboard) -> str:
    """The board as a markdown page: mode, conditions, ranked table, column legend, correlations, recommendation."""
    from zoo_rank.metrics import METRICS

    s = board.sign(board.primary)
    lines = [
        f"# zoo_rank leaderboard: {board.name}",
        "",
        f"**Mode: {board.mode}** — {MODE_TEXT[board.mode]}.",
        f"Sorted by **{metric_title(board.primary)}** ({'higher' if s > 0 else 'lower'} first, {arrow(s)})"
        + (f": {board.sort_note}." if board.sort_note else "."),
        "",
        "| condition | value |",
        "|---|---|",
        f"| mode | {board.mode} |",
    ]
    cond = board.conditions()
    per_model = [k for k, v in cond.items() if isinstance(v, dict) and k not in {"notes", "versions"}]
    for k, v in cond.items():
        if k == "notes":
            continue
        text = "per model, see below the ranking" if k in per_model else _fmt_condition(v)
        lines.append(f"| {k.replace('_', ' ')} | {text} |")
    if board.command:
        lines.append(f"| command | `{board.command}` |")
    lines.append(f"| built | {board.created} |")
    notes = board.notes()
    if notes:
        lines += [""] + [f"> **Note:** {n}  " for n in notes]

    probe_cols = []
    for d in board.probe_datasets:
        probe_cols += [
            (f"probe_top1:{d}", f"probe top-1 {d} ↑"),
            (f"probe_mean_per_class:{d}", f"probe mean/class {d} ↑"),
        ]
    if "mlog" in board.columns():
        probe_cols.append(("mlog", "MLOG ↑"))
    any_note = any(r.control or r.error or r.probe_errors() or r.undefined for r in board.results)
    metric_heads = [
        f"**{metric_title(m)} {arrow(board.sign(m))}**"
        if m == board.primary
        else f"{metric_title(m)} {arrow(board.sign(m))}"
        for m in board.metrics
    ]
    header = ["rank", "model", "params", "dim", *metric_heads, *(t for _, t in probe_cols)] + (
        ["note"] if any_note else []
    )
    lines += [
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2 - any_note) + ["---"] * any_note) + "|",
    ]
    ranks = board.ranks()
    for r in board.ranked():
        cells = [
            format_value(ranks[id(r)]) if ranks[id(r)] is not None else "✗" if r.error else "—",
            f"`{r.label}`",
            _fmt_params(r.n_params),
            format_value(r.feature_dim),
            *(regime.cell(r, m, format_value) for m in board.metrics),
            *(format_value(r.probe_value(c)) for c, _ in probe_cols),
        ]
        if any_note:
            note = []
            if r.control:
                note.append("control (random init)")
            if r.error:
                note.append("error: " + r.error)
            note += [f"probe on {d} failed: {e}" for d, e in r.probe_errors().items()]
            note += regime.undefined_notes(r, metric_title)
            note = [n.replace("|", "\\|").replace("\n", " ") for n in note]
            cells.append("; ".join(note))
        lines.append("| " + " | ".join(cells) + " |")

    if per_model:
        lines += [
            "",
            "Per-model conditions:",
            "",
            "| model | " + " | ".join(k.replace("_", " ") for k in per_model) + " |",
        ]
        lines.append("|---" * (len(per_model) + 1) + "|")
        for r in board.ranked():
            cells = [_fmt_condition(cond[k].get(r.label, "—")) for k in per_model]
            lines.append(f"| `{r.label}` | " + " | ".join(cells) + " |")
    lines += ["", "Columns:", ""]
    lines.append("- **rank**: position by the sort metric in this mode (✗: the run failed, see note).")
    lines.append(
        "- **params**: parameters of the backbone; **dim**: width of the penultimate (pre-logits) features that are scored."
    )
    for m in board.metrics:
        info = METRICS[m]
        lines.append(
            f"- **{metric_title(m)} {arrow(board.sign(m))}** (`{m}`): {info.description.rstrip('.')}. Higher means {info.higher_means}; "
            f"in {board.mode} mode a {'higher' if board.sign(m) > 0 else 'lower'} value predicts better transfer. "
            f"{info.citation.rstrip('.')}."
        )
    lines += regime.legend_lines(board.ranked(), board.metrics)
    for d in board.probe_datasets:
        p = next(
            (p for r in board.results for p in r.probes if p.get("dataset") == d and not p.get("error")), {}
        )
        lines.append(
            f"- **probe top-1 / mean/class {d}**: top-1 and mean per-class accuracy of a linear probe on the frozen "
            f"features ({_PROBE_TEXT.get(p.get('method', 'logistic'), p.get('method'))}; L2 strength chosen from 97 "
            f"values on a validation split of train), trained on {d} {p.get('train_split', 'train')} "
            f"({format_value(p.get('n_train'))} images), tested on {d} {p.get('split', 'test')} ({format_value(p.get('n_test'))} images). "
            "This is the check the scores are judged against."
        )
    if "mlog" in board.columns():
        lines.append(
            "- **MLOG**: mean log-odds of downstream accuracy relative to pretraining accuracy (paper eq. 6)."
        )

    views = [board.correlations()]
    if any(r.control for r in board.results):
        views.append(board.correlations(include_controls=False))
    lines += [""] + [correlation_line(board, c) + "  " for c in views]
    if "absent" not in views[0]:
        lines += ["", statistics_text(board, views[0]["n_models"])]
        for c in views:
            title = "All models" if c["include_controls"] else "Controls left out"
            lines += ["", f"{title} (n = {c['n_models']}):", "", *correlation_table(board, c)]
    lines += ["", board.recommendation(), ""]
    return "\n".join(lines)


def plot_board(board: Leaderboard, path: str | Path) -> Path:
    """PNG in the paper's Figure 7 layout: one panel per metric, the metric (x) against the check (y).

    Each panel's legend gives the rank correlations of that metric. Without a check, one bar panel per
    metric instead. matplotlib's Agg backend: no display needed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in board.ranked() if r.error is None]
    metrics = [
        m for m in board.metrics if any(_finite(r.metrics.get(m, math.nan)) for r in rows)
    ] or board.metrics
    ncols = min(4, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows + 0.9), squeeze=False)
    target = board.target
    corr = board.correlations() if target else {}
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # One colour per model across all panels, named once in the figure legend.
    color = {r.label: palette[i % len(palette)] for i, r in enumerate(rows)}
    for ax, m in zip(axes.flat, metrics, strict=False):
        pts = [(r, float(r.metrics[m])) for r in rows if _finite(r.metrics.get(m, math.nan))]
        head = f"{metric_title(m)} {arrow(board.sign(m))}"
        if target is None:
            ax.bar(range(len(pts)), [v for _, v in pts], color=[color[r.label] for r, _ in pts])
            ax.set_xticks(range(len(pts)), [r.label for r, _ in pts], rotation=30, ha="right", fontsize=7)
            ax.set_title(head, fontsize=10)
            continue
        for r, v in pts:
            y = r.probe_value(target)
            if _finite(y):
                ax.scatter([v], [y], color=color[r.label], marker="x" if r.control else "o", s=45, zorder=3)
        stats = corr.get("metrics", {}).get(m, {})
        if "absent" in stats or not stats:
            label = "correlation absent (< 3 models)"
        else:
            label = (
                ", ".join(f"{sym}={stats[k]:+.2f}" for k, sym in _CORR_KEYS[:3] if _finite(stats.get(k)))
                or "ties"
            )
        ax.plot([], [], " ", label=label)
        ax.legend(loc="best", fontsize=7, handlelength=0, frameon=False)
        ax.set_xlabel(head, fontsize=9)
        ax.set_ylabel(board.target_title(), fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    handles = [
        plt.Line2D([], [], color=color[r.label], marker="x" if r.control else "o", linestyle="", markersize=6)
        for r in rows
    ]
    labels = [r.label + (" (control)" if r.control else "") for r in rows]
    fig.legend(handles, labels, loc="upper center", ncol=min(4, len(rows)) or 1, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1.0 - 0.35 / fig.get_figheight()))  # fmt: skip
    fig.suptitle(f"{board.name}: {board.mode} mode on {board.dataset}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.65 / fig.get_figheight()))
    path = Path(path)
    buffer = io.BytesIO()
    # The models in the PNG's own text chunks: the tool's mark, and a check that it shows the board's rows.
    meta = {
        "Software": f"zoo_rank {__version__}",
        "Title": board.name,
        "Description": json.dumps([r.label for r in rows]),
    }
    fig.savefig(buffer, format="png", dpi=110, metadata=meta)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
    return path


# ---- files ---------------------------------------------------------------------------------------


def board_paths(out: str | Path) -> dict[str, Path]:
    """out = 'leaderboards/NAME' (a suffix is ignored) -> the paths of NAME.md/.csv/.json/.png and NAME.runs/."""
    out = Path(out)
    if out.suffix in {".md", ".csv", ".json", ".png"}:
        out = out.with_suffix("")
    return {
        "md": out.with_suffix(".md"),
        "csv": out.with_suffix(".csv"),
        "json": out.with_suffix(".json"),
        "png": out.with_suffix(".png"),
        "runs": out.parent / f"{out.name}.runs",
    }


def _column_type(column: str) -> Any:
    """The polars dtype of a board column (shared by the CSV writer and reader, so types round-trip)."""
    import polars as pl

    if column in {"rank", "n_params", "feature_dim"}:
        return pl.Int64
    if column == "control":
        return pl.Boolean
    if column in {"model", "label", "dataset", "mode", "error"} or column.startswith("probe_error:"):
        return pl.String
    return pl.Float64  # metrics and probe columns


def write_csv(board: Leaderboard, path: str | Path) -> Path:
    import polars as pl

    schema = {c: _column_type(c) for c in board.columns()}
    df = pl.DataFrame(board.rows(), schema=schema, orient="row")
    path = Path(path)
    write_text_atomic(path, df.write_csv())
    return path


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a board's CSV with the board's column types (the same dicts as `rows` in NAME.json)."""
    import polars as pl

    columns = pl.read_csv(Path(path), n_rows=0).columns
    return pl.read_csv(Path(path), schema={c: _column_type(c) for c in columns}).to_dicts()


def write_board(board: Leaderboard, out: str | Path, *, index: bool = True) -> dict[str, Path]:
    """Write NAME.md, NAME.csv, NAME.json and NAME.png (each atomically); regenerate the folder's index.

    A plain writer: `zoo_rank.publish` adds the board lock, the result files and the foreign-file checks."""
    paths = board_paths(out)
    write_text_atomic(
        paths["json"], json.dumps(board.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    )
    write_csv(board, paths["csv"])
    write_text_atomic(paths["md"], render_markdown(board))
    plot_board(board, paths["png"])
    written = {k: v for k, v in paths.items() if k != "runs"}
    if index:
        written["index"] = update_index(paths["md"].parent)
    return written


def read_board(path: str | Path) -> Leaderboard:
    """A board back from NAME.json (or NAME, NAME.md: the sibling JSON is read)."""
    p = board_paths(path)["json"]
    if not p.is_file():
        raise ZooRankError(
            f"board {p} does not exist; write it with `zoo-rank rank ... --out {p.with_suffix('')}`."
        )
    return Leaderboard.from_dict(json.loads(p.read_text(encoding="utf-8")))


def merge(result_files: Iterable[str | Path], *, name: str, **options: Any) -> Leaderboard:
    """Rebuild a board from per-run result files (e.g. NAME.runs/*.json from several machines).

    A directory in `result_files` stands for every *.json in it. `options` are those of `build_board`
    (metrics, primary, command, created, n_boot). The board order does not depend on the file order,
    so merging one run's files reproduces its board.
    """
    files: list[Path] = []
    for f in result_files:
        f = Path(f)
        files += sorted(f.glob("*.json")) if f.is_dir() else [f]
    if not files:
        raise ZooRankError("no result files given; pass NAME.runs/*.json files or a NAME.runs folder.")
    return build_board([load_result(f) for f in files], name=name, **options)


INDEX_NAME = "INDEX.zoo-rank.md"
INDEX_MARKER = "<!-- zoo_rank board index: regenerated whenever a board in this folder is written; edits are overwritten -->"


def foreign_index(folder: str | Path) -> Path | None:
    """FOLDER's index path when a file by that name exists that zoo_rank did not write (it is never overwritten)."""
    path = Path(folder) / INDEX_NAME
    if not path.exists():
        return None
    try:
        head = path.read_text(encoding="utf-8").splitlines()[:3]
    except (OSError, UnicodeDecodeError):
        return path
    return None if INDEX_MARKER in head else path


def update_index(folder: str | Path) -> Path:
    """Regenerate FOLDER/INDEX.zoo-rank.md: one line per board (NAME.json) in the folder and the commands
    that made them. Refuses (ZooRankError) to overwrite a file of that name without the tool's marker line."""
    folder = Path(folder)
    foreign = foreign_index(folder)
    if foreign is not None:
        raise ZooRankError(
            f"{foreign} exists and was not written by zoo-rank (no index marker line); refusing to overwrite it. "
            "Move it, or write boards to another folder with --out."
        )
    boards = []
    for p in sorted(folder.glob("*.json")):
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(d, dict) and d.get("schema") == BOARD_SCHEMA:
            boards.append((p, d))
    lines = [
        "# Leaderboards in this folder",
        INDEX_MARKER,
        "",
        "Each board has four siblings: `NAME.md` (read this), `NAME.csv` and `NAME.json` (one schema, machine readable),",
        "`NAME.png` (each metric against the check, the paper's Figure 7 layout); `NAME.runs/` holds one result file",
        "per (model, dataset) run, from which `zoo-rank leaderboard merge NAME.runs/*.json --out NAME` rebuilds the board.",
        "",
        "| board | mode | data | models | sorted by | recommended | check | Spearman ρ of sort metric | built |",
        "|---|---|---|---:|---|---|---|---:|---|",
    ]
    for p, d in boards:
        board = d.get("name", p.stem)
        data = (
            d.get("conditions", {}).get("data", d.get("rows", [{}])[0].get("dataset", ""))
            if d.get("rows")
            else ""
        )
        primary = d.get("primary", "")
        sign = next((m["arrow"] for m in d.get("metrics", []) if m["name"] == primary), "")
        first = next((r["label"] for r in d.get("rows", []) if r.get("rank") and not r.get("control")), "—")
        corr = d.get("correlations", {})
        rho = corr.get("metrics", {}).get(primary, {}).get("spearman") if isinstance(corr, dict) else None
        target = target_title(d.get("target")) or "—"
        lines.append(
            f"| [{board}]({p.stem}.md) | {d.get('mode', '')} | {_fmt_condition(data)} | {len(d.get('rows', []))} | "
            f"{metric_title(primary)} {sign} | `{first}` | {target} | {'—' if rho is None else f'{rho:+.2f}'} | {d.get('created', '')} |"
        )
    board_pages = {p.with_suffix(".md").name for p, _ in boards}
    others = [
        p
        for p in sorted(folder.glob("*.md"))
        if p.name not in {"README.md", INDEX_NAME} and p.name not in board_pages
    ]
    if others:
        # Pages written by other tools (e.g. the paper reproduction) are listed, not parsed.
        lines += ["", "Other pages in this folder:", ""]
        for p in others:
            first = p.read_text(encoding="utf-8").lstrip().splitlines()[:1]
            title = first[0].lstrip("# ").strip() if first else p.stem
            lines.append(f"- [{p.stem}]({p.name}): {title}")
    lines += ["", "## How each board was made", ""]
    for p, d in boards:
        lines += [f"`{p.stem}`:", "", "```bash", d.get("command") or "(command not recorded)", "```", ""]
    path = folder / INDEX_NAME
    write_text_atomic(path, "\n".join(lines))
    return path
