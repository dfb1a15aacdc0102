"""The zoo benchmark's board: agreement of every score with fine-tuned and probe accuracy, as md/csv/json/png.

Input: the cells of ``zoo_rank.jobs.benchmark.run_grid`` (one dict per (model, target): scores, probe and
fine-tuned accuracy, seed repeats). Output: per target and averaged over targets, for every score and
both ground truths, with and without the random-init controls, the statistics of ``zoo_rank.stats.zoo``;
a heat map (scores x targets, weighted tau against fine-tuned accuracy) beside a scatter (score vs
fine-tuned accuracy for the best score and for VCI); a plain-language verdict.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from zoo_rank._paths import atomic_path, write_text_atomic
from zoo_rank.board.table import frame_table
from zoo_rank.metrics import METRICS, metric_sign
from zoo_rank.stats.zoo import rank_agreement, same_order, seed_spread, tie_band

TRUTHS = ("finetune", "probe")
SUBSETS = ("all", "no-controls")


def analyse(cells: list[dict], *, seed: int = 0) -> dict[str, Any]:
    """Per-target and averaged agreement of every score; seed spread and ties; VCI vs H-score."""
    ok = [c for c in cells if "error" not in c]
    targets = sorted({c["target"] for c in ok})
    scores = [n for n in METRICS if any(math.isfinite(c["scores"].get(n, math.nan)) for c in ok)]
    repeats = {(c["model"], c["target"]): [r["accuracy"] for r in c["finetune_runs"]] for c in ok if len(c["finetune_runs"]) > 1}
    spread = seed_spread(repeats)
    band = tie_band(spread)
    rows = []
    for target in targets:
        for subset in SUBSETS:
            sel = [c for c in ok if c["target"] == target and (subset == "all" or not c["control"])]
            for truth in TRUTHS:
                acc = np.array([c[truth] for c in sel], dtype=np.float64)
                for name in scores:
                    s = np.array([c["scores"].get(name, math.nan) for c in sel], dtype=np.float64)
                    ra = rank_agreement(s, acc, sign=metric_sign(name, "target"), tie_band=band, seed=seed)
                    rows.append({"score": name, "target": target, "truth": truth, "subset": subset, **ra.to_dict()})
    table = pl.DataFrame(rows)
    mean = (
        table.filter(pl.col("weighted_tau").is_not_nan())  # fewer than 3 models, or one accuracy: no statistic
        .group_by(["score", "truth", "subset"], maintain_order=True)
        .agg(
            pl.col("weighted_tau").mean().alias("mean_weighted_tau"),
            pl.col("pearson").mean().alias("mean_pearson"),
            pl.col("spearman").mean().alias("mean_spearman"),
            pl.col("regret").mean().alias("mean_regret"),
            pl.col("pick_is_best").mean().alias("best_pick_rate"),
            pl.col("pick_within_ties").mean().alias("tied_pick_rate"),
            (pl.col("p_value") < 0.05).sum().alias("targets_p_below_0.05"),
            pl.len().alias("targets"),
        )
        .sort(["truth", "subset", "mean_weighted_tau"], descending=[False, False, True])
    )
    coincide = _vci_vs_h_score(ok, targets, scores)
    # N <= p + 1 scored images: pinv(S_T) S_B is the identity on the class-mean span for ANY features, so
    # VCI = 0 and H-score = K - 1 for every such model: they cannot rank (the paper's N >> p regime is absent).
    degenerate = {t: sorted(c["model"] for c in ok if c["target"] == t and c["n_train"] <= c["feature_dim"] + 1)
                  for t in targets}  # fmt: skip
    return {"targets": targets, "scores": scores, "table": table, "mean": mean, "spread": spread,
            "tie_band": band, "tied_with_best": _tied_with_best(ok, targets, band), "vci_vs_h_score": coincide, "n_below_p": degenerate}  # fmt: skip


def _score_lines(ft: pl.DataFrame, best: str, pick: Any, n_targets: int) -> list[str]:
    """The paper's score and the shrunk variants target mode uses below N = 5p, each against fine-tuned
    accuracy (no controls), with how many targets it could rank at all."""
    lines = []
    for name, what in (("vci", "VCI (plain; target mode, lower = better)"),
                       ("vci_lw", "VCI with Ledoit-Wolf shrinkage (vci_lw)"), ("h_score_lw", "H-score, Ledoit-Wolf")):  # fmt: skip
        row = ft.filter(pl.col("score") == name)
        if row.height and name != best:
            r = row.row(0, named=True)
            lines.append(f"{what}: defined on {r['targets']} of {n_targets} targets; {pick(r)}")
    return lines


def _vci_vs_h_score(ok: list[dict], targets: list[str], scores: list[str]) -> dict[str, dict]:
    """Per target: is min(p, K - 1) = K - 1 for every model (then VCI = 1 - H / (K - 1), exactly, for the
    plain pair and for the Ledoit-Wolf pair alike), and do the pairs order the models identically? A pair
    undefined or constant on the target (N <= p + 1 for the plain one) has no order to compare: None."""
    out = {}
    for target in targets:
        sel = [c for c in ok if c["target"] == target]
        k = sel[0]["n_classes"]
        row = {"K": k, "min_p_K-1_is_K-1": all(c["feature_dim"] >= k - 1 for c in sel)}
        for v_name, h_name, key in (("vci", "h_score", "same_order"), ("vci_lw", "h_score_lw", "same_order_lw")):
            if v_name not in scores or h_name not in scores:
                continue
            v = np.array([-c["scores"].get(v_name, math.nan) for c in sel])
            h = np.array([c["scores"].get(h_name, math.nan) for c in sel])
            keep = np.isfinite(v) & np.isfinite(h)
            row[key] = same_order(v[keep], h[keep]) if keep.sum() >= 2 and np.ptp(v[keep]) > 0 else None
        out[target] = row
    return out


def _tied_with_best(ok: list[dict], targets: list[str], band: float) -> dict[str, tuple[int, int]]:
    """Per target: (trained models whose fine-tuned accuracy is within `band` of the best, trained models)."""
    out = {}
    for t in targets:
        acc = [c["finetune"] for c in ok if c["target"] == t and not c["control"]]
        out[t] = (sum(a >= max(acc) - band for a in acc), len(acc)) if acc else (0, 0)
    return out


def verdict(analysis: dict[str, Any]) -> list[str]:
    """Plain-language conclusions, each from a number on the board."""
    mean = analysis["mean"]
    # A mean over the targets where a score is defined is not comparable with one over all of them: the
    # best score is chosen among those defined on every target (the others are reported by name below).
    ft = mean.filter((pl.col("truth") == "finetune") & (pl.col("subset") == "no-controls"))
    ft_all = mean.filter((pl.col("truth") == "finetune") & (pl.col("subset") == "all"))
    ft = pl.concat([ft.filter(pl.col("targets") == pl.col("targets").max()), ft.filter(pl.col("targets") < pl.col("targets").max())])
    ft_all = ft_all.filter(pl.col("targets") == pl.col("targets").max())
    lines = [] if ft.height else ["Against fine-tuned accuracy without the controls there is no ranking statistic: "
                                  "fewer than 3 models (or equal accuracies) on every target."]  # fmt: skip
    def pick(r: dict) -> str:
        return (f"mean weighted tau {r['mean_weighted_tau']:+.2f} over {r['targets']} targets; its first pick is the "
                f"best fine-tuned model on {r['best_pick_rate']:.0%} of them and within the seed spread on "
                f"{r['tied_pick_rate']:.0%} (mean regret {100 * r['mean_regret']:.1f} points).")  # fmt: skip

    if ft.height:
        best = ft.row(0, named=True)
        tied = [r["score"] for r in ft.iter_rows(named=True)
                if r["score"] != best["score"] and abs(r["mean_weighted_tau"] - best["mean_weighted_tau"]) < 0.005]  # fmt: skip
        also = f" (tied with {', '.join(tied)})" if tied else ""
        lines.append(f"Against fine-tuned accuracy, without the random controls, **{best['score']}**{also} ranks the "
                     f"zoo best: {pick(best)}")  # fmt: skip
        lines += _score_lines(ft, best["score"], pick, len(analysis["targets"]))
    if ft_all.height and ft.height:
        b = ft_all.row(0, named=True)
        lines.append(f"With the random controls in the zoo the best mean weighted tau is {b['mean_weighted_tau']:+.2f} "
                     f"({b['score']}), without them {ft.row(0, named=True)['mean_weighted_tau']:+.2f}: telling trained "
                     "from random networks is the easy part; the no-controls numbers are the ones to trust.")  # fmt: skip
    sp = analysis["spread"]
    if sp.get("cells"):
        ties = analysis.get("tied_with_best", {})
        per = ", ".join(f"{t} {n}/{m}" for t, (n, m) in ties.items())
        lines.append(
            f"Seed spread of fine-tuning: pooled SD {100 * sp['sd']:.1f} points over {sp['cells']} repeated cells "
            f"(largest range {100 * sp['max_range']:.1f}); accuracy differences below {100 * analysis['tie_band']:.1f} "
            f"points (2 SD) are ties. Trained models (no controls) tied with the best fine-tuned one: {per}."
        )
    below = {t: m for t, m in analysis.get("n_below_p", {}).items() if m}
    if below:
        worst = max(below.values(), key=len)
        lines.append(
            f"On {len(below)} of {len(analysis['targets'])} targets some models have more feature dimensions than "
            f"scored images (N <= p + 1; up to {len(worst)} models per target): there VCI = 0 and H-score = K - 1 "
            "whatever the features, so those two (and other full-covariance scores) cannot rank them; use a score "
            "that stays informative at N < p, or more labelled images."
        )
    co = analysis["vci_vs_h_score"]
    if co:
        full = [t for t, v in co.items() if v["min_p_K-1_is_K-1"]]
        compared = {key: [t for t, v in co.items() if v.get(key) is not None] for key in ("same_order", "same_order_lw")}
        same = {key: [t for t in ts if co[t][key]] for key, ts in compared.items()}
        lines.append(
            f"min(p, K-1) = K-1 for every model on {len(full)} of {len(co)} targets, so there VCI = 1 - H-score/(K-1) "
            f"and the two order the models identically; measured: plain pair same order on {len(same['same_order'])} "
            f"of {len(compared['same_order'])} targets where it is defined, Ledoit-Wolf pair on "
            f"{len(same['same_order_lw'])} of {len(compared['same_order_lw'])}."
        )
    return lines


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:+.2f}" if abs(v) <= 1 else f"{v:.3g}"
    return "" if v is None else str(v)


def _md_table(df: pl.DataFrame) -> str:
    return "".join(line + "\n" for line in frame_table(df, _fmt))


# The covariance scores and their Ledoit-Wolf variants (issue 16), shown side by side on every target.
SHRINKAGE_PAIRS = (("vci", "vci_lw"), ("h_score", "h_score_lw"))


def _first_pick(sel: list[dict], name: str) -> str:
    """The model a score ranks first (direction applied), or N/A when it is undefined for every model."""
    values = [(metric_sign(name, "target") * c["scores"].get(name, math.nan), c["model"]) for c in sel]
    values = [v for v in values if math.isfinite(v[0])]
    return max(values)[1] if values else "N/A"


def regimes(analysis: dict[str, Any], cells: list[dict]) -> pl.DataFrame:
    """One row per target: N scored images, K, the widths p of the zoo, how many models sit at N <= p + 1
    (plain VCI / H-score undefined) or below 5p, the test-set sampling error of an accuracy (binomial SE
    sqrt(a (1 - a) / n_test), pooled over the trained models: differences inside ~2 SE are noise before any
    seed effect), and each plain score's weighted tau (fine-tuned, no controls) and first pick beside its
    shrunk variant's, so a reader sees where shrinkage changes the answer."""
    table = analysis["table"].filter((pl.col("truth") == "finetune") & (pl.col("subset") == "no-controls"))
    tau = {(r["score"], r["target"]): r["weighted_tau"] for r in table.iter_rows(named=True)}
    rows = []
    for target in analysis["targets"]:
        sel = [c for c in cells if c["target"] == target and "error" not in c and not c["control"]]
        if not sel:
            continue
        widths = sorted({c["feature_dim"] for c in sel})
        var = [c["finetune"] * (1 - c["finetune"]) / c["n_test"] for c in sel]
        row = {"target": target, "N": sel[0]["n_train"], "K": sel[0]["n_classes"],
               "p": f"{widths[0]}-{widths[-1]}" if len(widths) > 1 else str(widths[0]),
               "N <= p+1": sum(c["n_train"] <= c["feature_dim"] + 1 for c in sel),
               "N < 5p": sum(c["n_train"] < 5 * c["feature_dim"] for c in sel), "models": len(sel),
               "test SE (points)": round(100 * math.sqrt(float(np.mean(var))), 1)}  # fmt: skip
        for plain, shrunk in SHRINKAGE_PAIRS:
            for name in (plain, shrunk):
                row[f"{name} tau"] = tau.get((name, target), math.nan)
                row[f"{name} pick"] = _first_pick(sel, name)
        rows.append(row)
    return pl.DataFrame(rows)


def write_board(analysis: dict, zoo: list, cells: list[dict], run: dict[str, Any], stem: Path) -> dict[str, Path]:
    """leaderboards/zoo-benchmark.{md,csv,json,png}."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {ext: stem.with_suffix(f".{ext}") for ext in ("md", "csv", "json", "png")}
    with atomic_path(paths["csv"]) as tmp:
        analysis["table"].write_csv(tmp)
    ok = [c for c in cells if "error" not in c]
    acc = pl.DataFrame([{"model": c["model"], "control": c["control"], "target": c["target"], "probe": c["probe"],
                         "finetune": c["finetune"], "lr": c["finetune_runs"][0]["lr"]} for c in ok])  # fmt: skip
    lines = [f"# Zoo benchmark: does the ranking hold?{' (TINY smoke setting, not the benchmark)' if run['tiny'] else ''}", ""]
    lines += ["## Verdict", "", *[f"- {v}" for v in verdict(analysis)], ""]
    lines += ["## The zoo", "", "| model | group | control | spec |", "|---|---|---|---|"]
    lines += [f"| {m.name} | {m.group} | {'yes' if m.control else ''} | `{m.spec}` |" for m in zoo]
    lines += ["", "## Ground truth per target (fine-tuned / probe accuracy; flowers102 mean per class)", ""]
    if acc.height:
        wide = acc.with_columns(pl.format("{} / {}", pl.col("finetune").round(3), pl.col("probe").round(3)).alias("ft / probe"))
        lines.append(_md_table(wide.pivot(on="target", index="model", values="ft / probe")))
    for truth in ("finetune", "probe"):
        m = analysis["mean"].filter(pl.col("truth") == truth).drop("truth")
        lines += [f"## Averaged over targets, against {truth} accuracy", "", _md_table(m)]
    wt = analysis["table"].filter((pl.col("truth") == "finetune") & (pl.col("subset") == "no-controls"))
    if wt.height:
        lines += ["## Weighted tau per target (fine-tuned, no controls; p = permutation p-value)", "",
                  _md_table(wt.select("score", "target", "n_models", "weighted_tau", "spearman", "regret", "p_value", "exact")
                            .pivot(on="target", index="score", values="weighted_tau"))]  # fmt: skip
    reg = regimes(analysis, ok)
    if reg.height:
        lines += ["## Plain vs shrunk covariance scores per target (N scored images, p feature width; no controls)", "",
                  "Plain VCI / H-score are undefined at N <= p + 1 (N/A, no rank) and biased below 5p; the `_lw` "
                  "columns use Ledoit-Wolf shrinkage. tau: weighted Kendall tau against fine-tuned accuracy; pick: "
                  "the model the score ranks first.", "", _md_table(reg)]  # fmt: skip
    lines += ["## Reproduce", "", f"```\n{run['command']}\n```", "",
              *[f"- {k}: {json.dumps(v) if not isinstance(v, str) else v}" for k, v in run.items() if k != "command"]]  # fmt: skip
    write_text_atomic(paths["md"], "\n".join(lines) + "\n")
    record = {"run": run, "zoo": [m.__dict__ for m in zoo], "cells": cells, "spread": analysis["spread"],
              "n_below_p": analysis["n_below_p"], "regimes": reg.to_dicts(),
              "tie_band": analysis["tie_band"], "vci_vs_h_score": analysis["vci_vs_h_score"],
              "verdict": verdict(analysis), "mean": analysis["mean"].to_dicts(), "per_target": analysis["table"].to_dicts()}  # fmt: skip
    write_text_atomic(paths["json"], json.dumps(record, indent=1, default=str))
    plot(analysis, ok, paths["png"])
    return paths


def plot(analysis: dict, cells: list[dict], path: Path) -> None:
    """Left: weighted tau (fine-tuned, no controls), scores x targets. Right: score vs fine-tuned accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = analysis["table"].filter((pl.col("truth") == "finetune") & (pl.col("subset") == "no-controls"))
    scores, targets = analysis["scores"], analysis["targets"]
    grid = np.full((len(scores), len(targets)), np.nan)
    for r in t.iter_rows(named=True):
        grid[scores.index(r["score"]), targets.index(r["target"])] = r["weighted_tau"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(6 + 0.8 * len(targets), 0.45 * len(scores) + 3))
    im = ax.imshow(grid, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(targets)), targets, rotation=45, ha="right")
    ax.set_yticks(range(len(scores)), scores)
    for i in range(len(scores)):
        for j in range(len(targets)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:+.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label="weighted tau vs fine-tuned acc.")
    ax.set_title("weighted Kendall tau (no controls)")
    mean = analysis["mean"].filter((pl.col("truth") == "finetune") & (pl.col("subset") == "no-controls"))
    full = mean.filter(pl.col("targets") == pl.col("targets").max())  # as in the verdict
    best = full.row(0, named=True)["score"] if full.height else "vci"
    # The paper's score where it is defined on every target, else its shrunk variant (N <= p + 1 cells).
    counts = dict(zip(mean["score"], mean["targets"], strict=True)) if mean.height else {}
    vci = "vci" if counts.get("vci", 0) >= max(counts.values(), default=0) or "vci_lw" not in scores else "vci_lw"
    for name in dict.fromkeys([best, vci]):
        if name not in scores:
            continue
        for target in targets:
            sel = [c for c in cells if c["target"] == target]
            s = np.array([metric_sign(name, "target") * c["scores"].get(name, np.nan) for c in sel])
            z = (s - np.nanmean(s)) / (np.nanstd(s) or 1.0)  # per target z-scores: one axis for all targets
            ax2.scatter(z, [c["finetune"] for c in sel], s=14, marker="o" if name == best else "x",
                        label=f"{name} ({target})")  # fmt: skip
    ax2.set_xlabel("score x direction, z-scored per target (right = predicted better)")
    ax2.set_ylabel("fine-tuned accuracy")
    ax2.set_title(f"{best} (o) and {vci} (x) vs fine-tuned accuracy")
    ax2.legend(fontsize=5, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
