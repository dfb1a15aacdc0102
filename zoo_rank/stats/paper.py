"""The paper's Tables 1-2 as a check of the metrics: recompute MLOG and the metric-vs-MLOG correlations.

`paper_report` recomputes MLOG (eq. 6 of Xu & Liu, ICML 2023) and the correlations of each metric with it
from the paper's Tables 1-2 given as a JSON file (schema below); the published tables ship with the package
(`zoo_rank/paper/`). `format_paper_report` lays the report out as rich tables, `print_paper_report` prints them.

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
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from scipy import stats as sps

from zoo_rank._console import console
from zoo_rank._validation import ZooRankError
from zoo_rank.metrics import metric_sign
from zoo_rank.paper import TABLES_FILE as PAPER_TABLES_FILE
from zoo_rank.stats.correlation import mlog, rank_correlations

PAPER_SCHEMA = "zoo_rank.paper_tables/1"


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
            "see the schema in zoo_rank/stats/paper.py."
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
    correlations, refused = [], []
    for group in dict.fromkeys(m["group"] for m in models):
        members = [i for i, m in enumerate(models) if m["group"] == group]
        names = list(dict.fromkeys(k for i in members for k in models[i].get("metrics", {})))
        for metric in names:
            have = [i for i in members if metric in models[i].get("metrics", {})]
            try:
                row = _correlate_metric(tables, group, metric, [models[i] for i in have],
                                        [rows[i]["mlog"] for i in have], n_boot=n_boot, seed=seed)  # fmt: skip
            except ZooRankError as err:
                refused.append({"group": group, "metric": metric, "reason": str(err)})
                continue
            correlations.append(row)
    return {
        "source": tables.get("source", ""),
        "mlog": rows,
        "correlations": correlations,
        "refused": refused,
    }


def _correlate_metric(
    tables: dict[str, Any], group: str, metric: str, members: list[dict[str, Any]], mlogs: list[float],
    *, n_boot: int, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """One row of paper_report's "correlations": `metric` of `members` (the models of `group` that have it)
    against their recomputed MLOG `mlogs`, and against the table's own MLOG column (`vs_published`)."""
    signs = tables.get("signs", {})
    sign = int(signs[metric]) if metric in signs else metric_sign(metric, "source")
    values = [m["metrics"][metric] for m in members]
    corr = rank_correlations(values, mlogs, sign=sign, n_boot=n_boot, seed=seed)
    table_mlog = [m.get("mlog") for m in members]
    oriented = sign * np.array(values, dtype=np.float64)
    vs_published = (
        None
        if any(v is None for v in table_mlog) or np.ptp(table_mlog) == 0 or np.ptp(oriented) == 0
        else {
            "pearson": float(sps.pearsonr(oriented, table_mlog)[0]),
            "spearman": float(sps.spearmanr(oriented, table_mlog)[0]),
        }
    )
    return {
        "group": group,
        "metric": metric,
        **corr.to_dict(),
        "published": tables.get("published_correlations", {}).get(group, {}).get(metric),
        "vs_published": vs_published,
    }


def format_paper_report(report: dict[str, Any]) -> list[RenderableType]:
    """Per group: recomputed MLOG beside the published column, then Pearson / Spearman of each metric with
    MLOG; then one line per refused (group, metric). Strings are printed with rich markup, as before."""
    out: list[RenderableType] = [Text.from_markup(report["source"])]  # markup, no highlighting
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
        out.append(t)
        c = Table(title=f"group {group}: sign * metric vs MLOG")
        for col in (
            "metric",
            "sign",
            "Pearson",
            "Spearman",
            "Pearson (published MLOG)",
            "Spearman (published MLOG)",
        ):
            c.add_column(col, justify="left" if col == "metric" else "right")
        for r in (r for r in report["correlations"] if r["group"] == group):
            pub = r.get("vs_published") or {}
            c.add_row(
                r["metric"], f"{r['sign']:+d}", f"{r['pearson']:+.3f}", f"{r['spearman']:+.3f}",
                *(f"{pub[k]:+.3f}" if k in pub else "" for k in ("pearson", "spearman")),
            )  # fmt: skip
        out.append(c)
    out.extend(f"{r['group']} / {r['metric']}: not correlated: {r['reason']}" for r in report["refused"])
    return out


def print_paper_report(report: dict[str, Any]) -> None:
    """Print `format_paper_report(report)` on the shared console."""
    out = console()
    for item in format_paper_report(report):
        out.print(item)
