"""How well does a transferability score predict real transfer? MLOG, rank correlations, bootstrap.

- `mlog`: the paper's transfer measure, eq. (6) of Xu & Liu (ICML 2023): the mean over downstream sets
  of the log-odds of downstream accuracy minus the log-odds of pretraining accuracy.
- `rank_correlations`: Pearson, Spearman, Kendall and weighted Kendall tau (exactly
  `scipy.stats.weightedtau` with its defaults, the call LogME, SFDA and most of the transferability
  literature report), top-1 selection regret, and how sure they are: exact permutation p-values below
  10 models, BCa bootstrap intervals over models from 10 on (zoo_rank.significance).
- `paper_report`: recompute MLOG and the metric-vs-MLOG correlations from the paper's Tables 1-2 given
  as a JSON file (schema below); the published tables ship with the package (`zoo_rank/paper/`).

Sign convention: every function correlates `sign * scores` with `targets`, where a higher target is
better transfer. Pass `sign=-1` for a score where lower predicts better transfer (e.g. VCI scored on
the target data), or take it from the metric registry: `METRICS[name].source_sign` / `.target_sign`.

Paper tables file (`zoo-rank validate --paper --tables FILE`), JSON::

    {
      "schema": "zoo_rank.paper_tables/1",
      "source": "Xu & Liu, ICML 2023, Tables 1 and 2",      # free text, printed
      "accuracy_unit": "percent",                           # or "fraction": applies to every accuracy
      "datasets": ["pets", "flowers", "..."],               # the downstream columns of Table 1
      "signs": {"vci": 1},                                  # optional: overrides METRICS[..].source_sign
      "models": [
        {"name": "tau=0.05", "group": "tau",                # group: the family it is correlated within
         "pretrain_acc": 77.1,                              # Table 2, pretraining (ImageNet) accuracy
         "downstream_acc": {"pets": 91.9, "flowers": 94.0},  # Table 1, one entry per dataset
         "metrics": {"vci": 0.61, "fuzziness": 2.3},        # Table 2, metric values
         "mlog": -0.21}                                     # Table 2, published MLOG (optional)
      ],
      "published_correlations": {"tau": {"vci": {"spearman": 0.9}}}   # optional, printed beside ours
    }
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import special
from scipy import stats as sps

from zoo_rank._validation import ZooRankError
from zoo_rank.metrics import metric_sign
from zoo_rank.paper import TABLES_FILE as PAPER_TABLES_FILE
from zoo_rank.significance import PERMUTATION_BELOW, bootstrap_intervals, permutation_p_values

STATISTICS = ("pearson", "spearman", "kendall", "weighted_tau")
PAPER_SCHEMA = "zoo_rank.paper_tables/1"


# ---- MLOG --------------------------------------------------------------------------------------


def _as_fraction_array(acc: Any, name: str, clip: float | None) -> np.ndarray:
    arr = np.asarray(list(acc.values()) if isinstance(acc, dict) else acc, dtype=np.float64)
    if arr.size == 0:
        raise ZooRankError(f"{name} is empty; pass at least one accuracy.")
    if not np.all(np.isfinite(arr)):
        raise ZooRankError(f"{name} contains NaN or Inf ({arr.ravel()[:5]}...); pass finite accuracies.")
    if np.any(arr < 0) or np.any(arr > 1):
        hint = " (they look like percentages: divide by 100)" if np.all((arr >= 0) & (arr <= 100)) else ""
        raise ZooRankError(
            f"{name} must be fractions in (0, 1), got values in [{arr.min()}, {arr.max()}]{hint}."
        )
    if clip is not None:
        if not 0 < clip < 0.5:
            raise ZooRankError(
                f"clip={clip} must lie in (0, 0.5); e.g. clip=1/(2 * n_test) is the usual choice."
            )
        return np.clip(arr, clip, 1.0 - clip)
    if np.any((arr == 0) | (arr == 1)):
        raise ZooRankError(
            f"{name} contains accuracies of exactly 0 or 1, whose log-odds are infinite; "
            "pass clip=eps (e.g. 1/(2 * n_test)) to clip them into [eps, 1 - eps]."
        )
    return arr


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), elementwise (scipy.special.logit)."""
    return special.logit(p)


def mlog(downstream_acc: Any, pretrain_acc: Any, *, clip: float | None = None) -> Any:
    """MLOG, eq. (6) of Xu & Liu (2023): mean_d [logit(acc_d) - logit(pretrain_acc)].

    downstream_acc: (D,) accuracies of one model on D downstream sets (array or {dataset: acc}), or
    (M, D) for M models; pretrain_acc: scalar, or (M,). Accuracies are fractions in (0, 1). Exactly 0 or 1
    raise, unless `clip` = eps is given: then every accuracy is clipped into [eps, 1 - eps] first.
    Returns a float, or (M,) array.
    """
    down = _as_fraction_array(downstream_acc, "downstream_acc", clip)
    pre = _as_fraction_array(pretrain_acc, "pretrain_acc", clip)
    if down.ndim == 1:
        if pre.size != 1:
            raise ZooRankError(f"one model's downstream_acc (D,) needs one pretrain_acc, got {pre.size}.")
        return float(np.mean(logit(down)) - logit(pre.reshape(())))
    if down.ndim != 2 or pre.shape != (down.shape[0],):
        raise ZooRankError(
            f"expected downstream_acc (M, D) with pretrain_acc (M,), got {down.shape} and {pre.shape}; "
            "one row of downstream accuracies per model."
        )
    return logit(down).mean(axis=1) - logit(pre)


# ---- rank correlations -------------------------------------------------------------------------


@dataclass
class Correlations:
    """Agreement between oriented scores (sign * scores) and targets over n_models models.

    Below `PERMUTATION_BELOW` models, `p_value[stat]` is the exact one-sided permutation p-value of
    pearson, spearman and kendall, and there are no intervals (a bootstrap over a handful of models
    only repeats them). From `PERMUTATION_BELOW` models on, `ci[stat]` is the BCa bootstrap interval at
    level `ci_level` (scipy.stats.bootstrap, resampling models; NaN where a resample is undefined).
    `uncertainty` says which of the two the numbers carry. `regret` is in the units of the targets.
    """

    pearson: float
    spearman: float
    kendall: float
    weighted_tau: float
    regret: float
    n_models: int
    sign: int
    ci_level: float
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    p_value: dict[str, float] = field(default_factory=dict)
    uncertainty: str = ""  # "exact permutation p-values (one-sided)" | "BCa bootstrap intervals" | ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = {k: [float(v[0]), float(v[1])] for k, v in self.ci.items()}
        return out


def _check_scores_targets(scores: Any, targets: Any, min_models: int) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    t = np.asarray(targets, dtype=np.float64).reshape(-1)
    if s.shape != t.shape:
        raise ZooRankError(
            f"got {s.size} scores but {t.size} targets; pass one score and one target per model."
        )
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(t))):
        raise ZooRankError("scores or targets contain NaN or Inf; drop those models or fix the inputs.")
    if s.size < min_models:
        raise ZooRankError(
            f"got {s.size} model(s); rank correlations need at least {min_models} "
            "(with two models every statistic is +1 or -1 and says nothing): add more models."
        )
    return s, t


def selection_regret(scores: Any, targets: Any, *, sign: int = 1) -> float:
    """Target of the best model minus target of the model that `sign * scores` ranks first.

    Ties among the top scores are broken pessimistically (the worst target among them): a score that
    cannot tell models apart gets no credit for a lucky order.
    """
    s, t = _check_scores_targets(scores, targets, 1)
    oriented = sign * s
    top = np.flatnonzero(oriented == oriented.max())
    return float(t.max() - t[top].min())


def _statistics(s: np.ndarray, t: np.ndarray) -> dict[str, float]:
    from scipy import stats

    if np.all(s == s[0]) or np.all(t == t[0]):
        return dict.fromkeys(STATISTICS, math.nan)
    return {
        "pearson": float(stats.pearsonr(s, t)[0]),
        "spearman": float(stats.spearmanr(s, t)[0]),
        "kendall": float(stats.kendalltau(s, t)[0]),
        # Exactly the literature's call: defaults (rank=True, hyperbolic weigher, additive).
        "weighted_tau": float(stats.weightedtau(s, t)[0]),
    }


def rank_correlations(
    scores: Any,
    targets: Any,
    *,
    sign: int = 1,
    n_boot: int = 1000,
    ci_level: float = 0.95,
    seed: int = 0,
) -> Correlations:
    """Correlate `sign * scores` (M,) with `targets` (M,) over M >= 3 models.

    sign: +1 when a higher score should predict a higher target, -1 when lower should. Below
    PERMUTATION_BELOW models: exact permutation p-values, no intervals (zoo_rank.significance). From there
    on: BCa bootstrap intervals from `n_boot` resamples of the models (seeded by `seed`; n_boot=0 skips).
    """
    if sign not in (1, -1):
        raise ZooRankError(f"sign must be +1 or -1, got {sign!r}; use -1 for a score where lower is better.")
    if not 0 < ci_level < 1:
        raise ZooRankError(f"ci_level={ci_level} must lie in (0, 1), e.g. 0.95.")
    s, t = _check_scores_targets(scores, targets, 3)
    oriented = sign * s
    point = _statistics(oriented, t)
    ci: dict[str, tuple[float, float]] = {}
    p_value: dict[str, float] = {}
    uncertainty = ""
    if len(s) < PERMUTATION_BELOW:
        if math.isfinite(point["spearman"]):
            p_value = permutation_p_values(oriented, t)
            uncertainty = "exact permutation p-values (one-sided)"
    elif n_boot > 0:
        ci = bootstrap_intervals(oriented, t, n_boot=n_boot, ci_level=ci_level, seed=seed)
        uncertainty = "BCa bootstrap intervals"
    return Correlations(
        **point,
        regret=selection_regret(oriented, t),
        n_models=len(s),
        sign=sign,
        ci_level=ci_level,
        ci=ci,
        p_value=p_value,
        uncertainty=uncertainty,
    )


# ---- the paper's tables ------------------------------------------------------------------------


def load_paper_tables(path: str | Path | None = None) -> dict[str, Any]:
    """Read and check a paper-tables JSON file (schema in the module docstring).

    Without `path`, the package's own copy of the paper's Tables 1-2 is read (`zoo_rank/paper/`).
    """
    path = Path(PAPER_TABLES_FILE if path is None else path)
    try:
        tables = json.loads(path.read_text())
    except FileNotFoundError:
        raise ZooRankError(
            f"tables file {path} does not exist; pass the path of a paper-tables JSON file."
        ) from None
    except json.JSONDecodeError as err:
        raise ZooRankError(f"tables file {path} is not valid JSON ({err}); fix the file.") from None
    if tables.get("schema") != PAPER_SCHEMA:
        raise ZooRankError(
            f"tables file {path} has schema {tables.get('schema')!r}, expected {PAPER_SCHEMA!r}; "
            "see the schema in zoo_rank/validate.py."
        )
    unit = tables.get("accuracy_unit", "percent")
    if unit not in ("percent", "fraction"):
        raise ZooRankError(f"accuracy_unit={unit!r} in {path}; use 'percent' or 'fraction'.")
    datasets = tables.get("datasets") or []
    models = tables.get("models") or []
    if not datasets or not models:
        raise ZooRankError(f"tables file {path} needs non-empty 'datasets' and 'models' lists.")
    for m in models:
        missing = [k for k in ("name", "group", "pretrain_acc", "downstream_acc") if k not in m]
        if missing:
            raise ZooRankError(f"model entry {m.get('name', m)!r} in {path} lacks {missing}; see the schema.")
        absent = [d for d in datasets if d not in m["downstream_acc"]]
        if absent:
            raise ZooRankError(f"model {m['name']!r} in {path} has no downstream accuracy for {absent}.")
    return tables


def paper_report(tables: dict[str, Any], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Recompute MLOG from Table 1 + pretraining accuracy, and correlate each metric with it per group.

    Returns {"mlog": [{name, group, mlog, published}], "correlations": [{group, metric, sign,
    **Correlations.to_dict(), published, vs_published}], "refused": [{group, metric, reason}]}, where
    `vs_published` = {"pearson", "spearman"} of sign * metric with the table's own MLOG column (None when
    a member has none); the other statistics use the MLOG recomputed from Table 1 (eq. 6).
    """
    scale = 100.0 if tables.get("accuracy_unit", "percent") == "percent" else 1.0
    datasets = tables["datasets"]
    models = tables["models"]
    rows = []
    for m in models:
        down = np.array([m["downstream_acc"][d] for d in datasets], dtype=np.float64) / scale
        value = mlog(down, float(m["pretrain_acc"]) / scale)
        rows.append({"name": m["name"], "group": m["group"], "mlog": value, "published": m.get("mlog")})

    signs = tables.get("signs", {})
    published = tables.get("published_correlations", {})
    correlations, refused = [], []
    for group in dict.fromkeys(m["group"] for m in models):
        members = [i for i, m in enumerate(models) if m["group"] == group]
        names = list(dict.fromkeys(k for i in members for k in models[i].get("metrics", {})))
        for metric in names:
            have = [i for i in members if metric in models[i].get("metrics", {})]
            try:
                sign = int(signs[metric]) if metric in signs else metric_sign(metric, "source")
                corr = rank_correlations(
                    [models[i]["metrics"][metric] for i in have],
                    [rows[i]["mlog"] for i in have],
                    sign=sign,
                    n_boot=n_boot,
                    seed=seed,
                )
            except ZooRankError as err:
                refused.append({"group": group, "metric": metric, "reason": str(err)})
                continue
            table_mlog = [models[i].get("mlog") for i in have]
            oriented = sign * np.array([models[i]["metrics"][metric] for i in have], dtype=np.float64)
            vs_published = (
                None
                if any(v is None for v in table_mlog) or np.ptp(table_mlog) == 0 or np.ptp(oriented) == 0
                else {
                    "pearson": float(sps.pearsonr(oriented, table_mlog)[0]),
                    "spearman": float(sps.spearmanr(oriented, table_mlog)[0]),
                }
            )
            correlations.append(
                {
                    "group": group,
                    "metric": metric,
                    **corr.to_dict(),
                    "published": published.get(group, {}).get(metric),
                    "vs_published": vs_published,
                }
            )
    return {
        "source": tables.get("source", ""),
        "mlog": rows,
        "correlations": correlations,
        "refused": refused,
    }


def print_paper_report(report: dict[str, Any]) -> None:
    """Per group: recomputed MLOG beside the published column, then Pearson / Spearman of each metric with MLOG."""
    from rich.table import Table

    from zoo_rank._console import console

    out = console()
    out.print(report["source"], highlight=False)
    for group in dict.fromkeys(r["group"] for r in report["mlog"]):
        t = Table(title=f"group {group}: MLOG (eq. 6) recomputed from Table 1")
        for col in ("model", "MLOG recomputed", "MLOG published", "difference"):
            t.add_column(col, justify="left" if col == "model" else "right")
        for r in (r for r in report["mlog"] if r["group"] == group):
            pub = r["published"]
            t.add_row(
                r["name"], f"{r['mlog']:+.4f}", "" if pub is None else f"{pub:+.4f}",
                "" if pub is None else f"{r['mlog'] - pub:+.5f}",
            )  # fmt: skip
        out.print(t)
        c = Table(title=f"group {group}: sign * metric vs MLOG")
        for col in ("metric", "sign", "Pearson", "Spearman", "Pearson (published MLOG)", "Spearman (published MLOG)"):
            c.add_column(col, justify="left" if col == "metric" else "right")
        for r in (r for r in report["correlations"] if r["group"] == group):
            pub = r.get("vs_published") or {}
            c.add_row(
                r["metric"], f"{r['sign']:+d}", f"{r['pearson']:+.3f}", f"{r['spearman']:+.3f}",
                *(f"{pub[k]:+.3f}" if k in pub else "" for k in ("pearson", "spearman")),
            )  # fmt: skip
        out.print(c)
    for r in report["refused"]:
        out.print(f"{r['group']} / {r['metric']}: not correlated: {r['reason']}")
