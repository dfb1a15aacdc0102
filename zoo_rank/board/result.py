"""One run's outcome: the result file (`zoo_rank.result/1`) that `zoo-rank rank` writes per (model, dataset).

A result file carries everything a board needs about that run: the metric values, the probe results, the
conditions (data, manifest, transform, precision, device, versions, date) and an error when the run
failed. It is written into NAME.runs/ (through `zoo_rank.board.publish`); result files from several
machines combine into one board with `zoo_rank.board.merge`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo_rank import results
from zoo_rank._validation import ZooRankError
from zoo_rank.metrics import check_mode

RESULT_SCHEMA = "zoo_rank.result/1"


def tied(a: float, b: float) -> bool:
    """Equal up to numerical noise: such scores cannot order two models.

    The absolute tolerance covers metrics that degenerate to exactly 0 (VCI at N <= p + 1) and come out
    as 0 or 1e-8 depending on rounding; every registered metric is O(1e-2) or larger when informative.
    """
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def is_finite(x: Any) -> bool:
    """A real number that is not NaN or infinite (bools and None are not numbers here)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def clean(x: Any) -> Any:
    """JSON-safe copy: NaN/Inf become None, numpy scalars become Python numbers, tuples become lists."""
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
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
    #: {metric: how Sigma_T was estimated} for the covariance-based scores (zoo_rank.board.regime).
    estimators: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if not self.label:
            self.label = self.model

    def to_dict(self) -> dict[str, Any]:
        return {"schema": RESULT_SCHEMA, **clean(dataclasses.asdict(self))}

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
            if p.get("dataset") == dataset and is_finite(p.get(key)):
                return float(p[key])
        return math.nan

    def probe_errors(self) -> dict[str, str]:
        """{probe dataset: error} of the checks that failed (the scores of the run still stand)."""
        return {str(p.get("dataset")): str(p["error"]) for p in self.probes if p.get("error")}

    def save(self, folder: str | Path) -> Path:
        """Write FOLDER/rank-MODE__LABEL__DATASET.json (results.RESULT_TEMPLATE: one file per grid cell)."""
        return results.write_result(
            results.result_path(folder, f"rank-{self.mode}", self.label, self.dataset), self.to_dict()
        )


def load_result(path: str | Path) -> RunResult:
    """A RunResult back from its result file; a ZooRankError naming the file when it is absent or broken."""
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
