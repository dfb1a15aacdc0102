#!/usr/bin/env python
"""Reproduce Section 6.3 of Xu & Liu (ICML 2023) at CPU scale: does VCI predict transfer in both families?

The paper trains ResNet50 families on ImageNet that differ in one knob -- the softmax temperature tau, or
the weight lambda of a within-class cosine term -- and finds that VCI on the pretraining data keeps a
positive correlation with transfer (MLOG) in both families, while the baselines (Fuzziness, Squared
distance, Cosine distance) flip sign in the lambda family, whose loss acts on cosine geometry directly.

Here: both families with the `small-fmnist` recipe (a narrow timm resnet10t on real Fashion-MNIST
images), then for every model
  * pretraining accuracy: top-1 on the Fashion-MNIST test split,
  * source-mode metrics on a class-balanced subset of the Fashion-MNIST training split,
  * linear-probe accuracy (zoo_rank.probe.linear_probe) on real downstream sets available offline:
    the CIFAR-10 images of ../shared/data (cifar10-local) and scikit-learn digits,
  * MLOG (zoo_rank.validate.mlog, eq. 6),
and the Pearson correlation of each metric with MLOG within each family, with its exact permutation p-value
(families under 10 models) or BCa bootstrap interval (zoo_rank.validate.rank_correlations). Writes leaderboards/paper-reproduction.{md,json,png}.

    .venv/bin/python scripts/reproduce_sec63.py --tiny      # a few minutes: the test's setting
    .venv/bin/python scripts/reproduce_sec63.py --medium    # the families at recipe scale, short probes
    .venv/bin/python scripts/reproduce_sec63.py             # the full setting (about 35 min on 2 quiet cores)

Re-running resumes: trained models are kept under --out and features in its cache folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo_rank.leaderboard import metric_title

ROOT = Path(__file__).resolve().parents[1]

PAPER_METRICS = ("vci", "fuzziness", "squared_distance", "cosine_similarity")
BASELINES = ("fuzziness", "squared_distance", "cosine_similarity")


@dataclass(frozen=True)
class Scale:
    """One setting of the reproduction: the families, the recipe overrides, the subsets and probes."""

    name: str
    tau: tuple[float, ...]
    lam: tuple[float, ...]
    recipe: dict[str, Any]
    source_per_class: int  # Fashion-MNIST train images per class for the source-mode metrics
    downstream: dict[str, tuple[int | None, int | None]]  # spec -> (train, test) images per class; None = all
    l2_grid_size: int = 97
    n_boot: int = 2000
    notes: list[str] = field(default_factory=list)


SCALES = {
    "tiny": Scale(
        name="tiny",
        tau=(0.1, 0.4, 1.0),
        lam=(2.5, 5.0, 10.0),
        recipe=dict(
            n_per_class=40,
            epochs=2,
            batch_size=32,
            warmup_epochs=0,
            track_every=2,
            track_train_per_class=30,
            track_test_per_class=30,
            final_test_per_class=100,
        ),
        source_per_class=150,
        downstream={"cifar10-local": (40, 40), "digits": (40, None)},
        l2_grid_size=13,
        n_boot=500,
        notes=["tiny: 3 values per family, 400 training images, 2 epochs -- a smoke test, not evidence"],
    ),
    "medium": Scale(
        name="medium",
        tau=(0.1, 0.2, 0.4, 0.6, 0.8, 1.0),
        lam=(2.5, 3.75, 5.0, 7.5, 10.0),
        recipe=dict(final_test_per_class=300),
        source_per_class=200,
        downstream={"cifar10-local": (100, 100), "digits": (None, None)},
        l2_grid_size=49,
    ),
    "full": Scale(
        name="full",
        tau=(0.1, 0.2, 0.4, 0.6, 0.8, 1.0),
        lam=(2.5, 3.75, 5.0, 7.5, 10.0),
        recipe=dict(n_per_class=1000, epochs=16, track_every=4),
        source_per_class=300,
        downstream={"cifar10-local": (300, 200), "digits": (None, None)},
    ),
}


def versions() -> dict[str, str]:
    import sklearn
    import timm
    import torch

    import zoo_rank

    return {
        "python": platform.python_version(),
        "zoo_rank": zoo_rank.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "threads": str(torch.get_num_threads()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }


# ---- stages --------------------------------------------------------------------------------------


def train_families(scale: Scale, out: Path, quiet: bool) -> list[Any]:
    from zoo_rank.train import get_recipe, train_family

    recipe = get_recipe("small-fmnist", **scale.recipe)
    results = []
    for family, values in (("tau", scale.tau), ("lambda", scale.lam)):
        results += train_family(recipe, family, list(values), out / "models", resume=True, quiet=quiet)
    return results


def features(
    backbone: Any, spec: str, split: str | None, n_per_class: int | None, cache_dir: Path, quiet: bool
):
    from zoo_rank.extract import extract_features

    # fp32: the source metrics are pseudo-inverses of covariances; keep bf16 rounding out of them. Large
    # batches: these 32 px networks do little work per image, and small batches leave 2 shared cores idle.
    return extract_features(
        backbone,
        spec,
        split=split,
        n_per_class=n_per_class,
        precision="fp32",
        batch_size=256,
        cache_dir=cache_dir,
        quiet=quiet,
    )


def evaluate_model(result: Any, scale: Scale, cache_dir: Path, quiet: bool) -> dict[str, Any]:
    """Source metrics, probe accuracies and MLOG of one trained model."""
    from zoo_rank.data import load_images
    from zoo_rank.metrics import compute_metrics
    from zoo_rank.models import create_backbone
    from zoo_rank.probe import linear_probe
    from zoo_rank.train import read_record
    from zoo_rank.validate import logit, mlog

    record = read_record(result.run_dir)
    backbone = create_backbone(f"local-dir:{result.run_dir}")
    source = features(backbone, "fashion-mnist", "train", scale.source_per_class, cache_dir, quiet)
    metrics = compute_metrics(source.features, source.labels)
    grid = np.logspace(-6, 6, scale.l2_grid_size)
    probes: dict[str, dict[str, Any]] = {}
    for spec, (n_train, n_test) in scale.downstream.items():
        train_fs = features(backbone, spec, "train", n_train, cache_dir, quiet)
        test_fs = features(backbone, spec, "test", n_test, cache_dir, quiet)
        probe = linear_probe(
            train_fs.features, train_fs.labels, test_fs.features, test_fs.labels, l2_grid=grid
        )
        metric = load_images(spec, "test").metric
        probes[spec] = {
            "accuracy": probe.top1 if metric == "top1" else probe.mean_per_class,
            "metric": metric,
            "l2": probe.l2,
            "n_train": probe.n_train + probe.n_val,
            "n_test": probe.n_test,
        }
    pretrain = float(record["test_top1"])
    n_test = min(p["n_test"] for p in probes.values())
    # Accuracies of exactly 0 or 1 have infinite log-odds: clip by half a test sample (documented in validate).
    clip = 1.0 / (2 * max(n_test, record.get("test_images", n_test)))
    accuracies = np.clip([p["accuracy"] for p in probes.values()], clip, 1 - clip)
    return {
        "model": f"{record['family']}={record['value']:g}",
        "family": record["family"],
        "value": record["value"],
        "run_dir": str(result.run_dir),
        "pretrain_acc": pretrain,
        "pretrain_test_images": record.get("test_images"),
        "downstream": probes,
        "mlog": float(mlog({k: v["accuracy"] for k, v in probes.items()}, pretrain, clip=clip)),
        # MLOG without its pretraining term: transfer alone (see the secondary table).
        "downstream_logodds": float(np.mean(logit(accuracies))),
        "metrics": metrics,
        "source_images": len(source.labels),
        "train_seconds": train_seconds(result.run_dir),
        "feature_dim": int(source.features.shape[1]),
    }


def train_seconds(run_dir: str | Path) -> float:
    """Wall time of a model's training epochs, from its history log (measured when it was trained)."""
    import polars as pl

    return float(pl.read_csv(Path(run_dir) / "history.csv")["seconds"].sum())


def correlate(
    rows: list[dict[str, Any]], n_boot: int, target: str = "mlog"
) -> dict[str, dict[str, dict[str, Any]]]:
    """family -> metric -> Pearson r of the raw metric with the target column (MLOG), its bootstrap interval."""
    from zoo_rank.metrics import METRICS
    from zoo_rank.validate import rank_correlations

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for family in ("tau", "lambda"):
        members = [r for r in rows if r["family"] == family]
        out[family] = {}
        if len(members) < 3:
            continue
        targets = np.array([r[target] for r in members])
        for name in members[0]["metrics"]:
            scores = np.array([r["metrics"][name] for r in members])
            if not np.all(np.isfinite(scores)) or np.ptp(scores) == 0:
                out[family][name] = {
                    "pearson": math.nan,
                    "ci": [math.nan, math.nan],
                    "p": math.nan,
                    "source_sign": METRICS[name].source_sign,
                }
                continue
            corr = rank_correlations(scores, targets, sign=1, n_boot=n_boot, seed=0)
            out[family][name] = {
                "pearson": corr.pearson,
                "ci": [float(v) for v in corr.ci.get("pearson", (math.nan, math.nan))],
                "p": corr.p_value.get("pearson", math.nan),
                "spearman": corr.spearman,
                "source_sign": METRICS[name].source_sign,
                "n_models": corr.n_models,
            }
    return out


def verdict(corr: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The paper's claim, piece by piece: VCI positive in both families; each baseline flips sign in lambda."""
    tau, lam = corr.get("tau", {}), corr.get("lambda", {})

    def r(family: dict, name: str) -> float:
        return family.get(name, {}).get("pearson", math.nan)

    def established(family: dict, name: str) -> bool:
        """Interval above 0 where there is one (10+ models), else a one-sided permutation p below 0.05."""
        c = family.get(name, {})
        low = c.get("ci", [math.nan])[0]
        return bool(low > 0) if math.isfinite(low) else bool(c.get("p", math.nan) < 0.05)

    vci_tau, vci_lam = r(tau, "vci"), r(lam, "vci")
    flips = {b: bool(np.sign(r(tau, b)) * np.sign(r(lam, b)) < 0) for b in BASELINES}
    vci_positive = bool(vci_tau > 0 and vci_lam > 0)
    return {
        "vci_positive_in_both": vci_positive,
        "vci_significant_in_both": established(tau, "vci") and established(lam, "vci"),
        "baselines_flip": flips,
        "all_baselines_flip": all(flips.values()),
        "claim_held": vci_positive and all(flips.values()),
    }


# ---- output --------------------------------------------------------------------------------------


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def write_markdown(report: dict[str, Any], path: Path) -> None:
    rows, corr, ver, scale = report["rows"], report["correlations"], report["verdict"], report["scale"]
    downstream = list(scale["downstream"])
    metric_names = list(rows[0]["metrics"]) if rows else []
    lines = [
        "# Paper reproduction: Xu & Liu (ICML 2023), Section 6.3, at CPU scale",
        "",
        f"Generated {report['date']} by `{report['command']}`; this run took {report['seconds'] / 60:.1f} min, "
        f"and training the {len(rows)} models took {sum(r['train_seconds'] for r in rows) / 60:.1f} min of "
        "epoch time when they were trained (2 shared CPU cores; a re-run resumes trained models and cached features).",
        "",
        "**Setting.** Two model families trained with zoo_rank's `small-fmnist` recipe (a narrow timm resnet10t, "
        f"{rows[0]['feature_dim'] if rows else '?'}-d features, 32 px) on real Fashion-MNIST images: the **tau** family "
        "(cross-entropy on logits / tau) and the **lambda** family (cross-entropy + lambda x within-class cosine "
        "distance of the batch). Recipe overrides for this run: "
        f"`{json.dumps(scale['recipe'])}`. Pretraining accuracy is top-1 on the Fashion-MNIST test split "
        f"({rows[0]['pretrain_test_images'] if rows else '?'} images). Source-mode metrics use "
        f"{scale['source_per_class']} Fashion-MNIST training images per class (fp32 features). Transfer: "
        "multinomial logistic-regression linear probes (`zoo_rank.probe.linear_probe`, L2 chosen on a validation "
        f"split over {scale['l2_grid_size']} values in [1e-6, 1e6]) on "
        + ", ".join(f"`{d}` ({_per_class(scale['downstream'][d])})" for d in downstream)
        + "; MLOG = mean over downstream sets of logit(acc) - logit(pretraining acc) (eq. 6, `zoo_rank.validate.mlog`).",
        "",
        "The paper's setting is ResNet50 on ImageNet, 300 epochs, ten downstream sets; this is a small proxy, "
        "so its answer says what happens at this scale only.",
        "",
    ]
    for note in scale.get("notes", []):
        lines += [f"> Note: {note}", ""]

    lines += ["## Per-model table (as the paper's Table 2)", ""]
    head = [
        "model",
        "pretrain acc",
        *[f"{d} acc" for d in downstream],
        "MLOG",
        "log-odds",
        *[metric_title(m) for m in metric_names],
    ]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], _fmt(r["pretrain_acc"])]
        cells += [_fmt(r["downstream"][d]["accuracy"]) for d in downstream]
        cells += [
            _fmt(r["mlog"]),
            _fmt(r["downstream_logodds"]),
            *[_fmt(r["metrics"][m]) for m in metric_names],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Cosine dist. is Kornblith et al.'s mean within-class cosine distance (the paper's \"Cosine Similarity\" "
        "column); lower VCI, Fuzziness, Sq. distance and Cosine dist. all mean more collapse. log-odds is MLOG "
        "without its pretraining term: the mean over downstream sets of logit(acc).",
        "",
        "## Correlation with MLOG within each family",
        "",
        f"Pearson r of each metric (raw value) with MLOG over the models of one family. With {len(scale['tau'])} "
        f"and {len(scale['lam'])} models (under 10) a bootstrap interval would only repeat them: (p) is the exact "
        "one-sided permutation p-value over every order of the models; a family of 10 or more gets a [95% BCa "
        f"bootstrap interval, {scale['n_boot']} resamples] instead.",
        "",
    ]
    lines += _correlation_table(corr, metric_names)
    lines += [
        "",
        "### Secondary: correlation with transfer alone (mean downstream log-odds)",
        "",
        "Eq. 6 subtracts each model's pretraining log-odds, so when pretraining accuracy differs a lot between "
        "members (as it can at this scale: a member that trains poorly gets a high MLOG) MLOG mixes transfer "
        "with pretraining failure. This table uses the mean logit of the downstream accuracies instead; the "
        "verdict below is on MLOG, as in the paper.",
        "",
        *_correlation_table(report["correlations_logodds"], metric_names),
    ]
    lines += ["", "## Did the paper's claim hold at this scale?", "", statement(corr, ver), ""]
    notes = poorly_trained(rows)
    lines += [*[f"> {note}" for note in notes], *([""] if notes else [])]
    second = verdict(report["correlations_logodds"])
    lines += [
        f"With the secondary target (downstream log-odds) instead of MLOG: VCI r = "
        f"{report['correlations_logodds']['tau'].get('vci', {}).get('pearson', math.nan):+.2f} (tau) and "
        f"{report['correlations_logodds']['lambda'].get('vci', {}).get('pearson', math.nan):+.2f} (lambda); the claim "
        f"{'would hold' if second['claim_held'] else 'would not hold'} "
        f"({'VCI positive in both' if second['vci_positive_in_both'] else 'VCI not positive in both'}, "
        f"{sum(second['baselines_flip'].values())} of {len(BASELINES)} baselines flip).",
        "",
    ]
    lines += [
        "## Reproduce",
        "",
        "```",
        report["command"],
        "```",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".",
        "",
        "Per-model runs (collapse curves, spectra, Fig. 1 split: `collapse.png`, `spectra.png`, `within_split.png` "
        "in each folder) are under `" + report["out"] + "`.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def poorly_trained(rows: list[dict[str, Any]], ratio: float = 0.8) -> list[str]:
    """Notes on members whose pretraining accuracy is far below their family's median (training did not converge)."""
    notes = []
    for family in ("tau", "lambda"):
        members = [r for r in rows if r["family"] == family]
        if not members:
            continue
        median = float(np.median([r["pretrain_acc"] for r in members]))
        notes += [
            f"{r['model']} reached only {r['pretrain_acc']:.2f} pretraining accuracy (family median {median:.2f}): "
            "its training did not converge under this recipe, and eq. 6 subtracts its low pretraining log-odds, "
            "so its MLOG sits well above what its poor transfer alone gives. Read the correlations with this "
            "member in mind."
            for r in members
            if r["pretrain_acc"] < ratio * median
        ]
    return notes


def _correlation_table(corr: dict[str, Any], metric_names: list[str]) -> list[str]:
    lines = ["| metric | tau family | lambda family | sign flips? |", "|---|---|---|---|"]
    for m in metric_names:
        t, lam = corr["tau"].get(m, {}), corr["lambda"].get(m, {})
        flip = np.sign(t.get("pearson", math.nan)) * np.sign(lam.get("pearson", math.nan)) < 0
        lines.append(
            f"| {metric_title(m)} | {_corr_cell(t)} | {_corr_cell(lam)} | {'yes' if flip else 'no'} |"
        )
    return lines


def _per_class(sizes: tuple[int | None, int | None]) -> str:
    train, test = sizes
    return (
        f"{'all' if train is None else train} train / {'all' if test is None else test} test images per class"
    )


def _corr_cell(c: dict[str, Any]) -> str:
    if not c or not math.isfinite(c.get("pearson", math.nan)):
        return "n/a"
    low, high = c["ci"]
    if math.isfinite(low):
        return f"{c['pearson']:+.2f} [{_fmt(low, 2)}, {_fmt(high, 2)}]"
    return f"{c['pearson']:+.2f} (p = {c.get('p', math.nan):.2g})"


def statement(corr: dict[str, Any], ver: dict[str, Any]) -> str:
    """A plain paragraph: what the paper claims, what we measured, and the answer."""
    tau, lam = corr["tau"], corr["lambda"]

    def r(family: dict, name: str) -> str:
        return f"{family.get(name, {}).get('pearson', math.nan):+.2f}"

    def sign_word(family: dict) -> str:
        value = family.get("vci", {}).get("pearson", math.nan)
        return "positive" if value > 0 else "negative" if value < 0 else "undefined"

    parts = [
        "The paper claims that VCI on the pretraining data correlates positively with transfer (MLOG) in both "
        "families, while Fuzziness, Squared distance and Cosine distance flip sign in the lambda family.",
        f"Here VCI's correlation is r = {_corr_cell(tau.get('vci', {}))} in the tau family ({sign_word(tau)}) and "
        f"r = {_corr_cell(lam.get('vci', {}))} in the lambda family ({sign_word(lam)})"
        + (
            "; both are significant (p < 0.05, or an interval above 0)."
            if ver["vci_significant_in_both"]
            else "; with this few models that is not significant in both families (p >= 0.05)."
        ),
        "Baselines (tau -> lambda): "
        + "; ".join(
            f"{metric_title(b)} {r(tau, b)} -> {r(lam, b)} ({'flips' if ver['baselines_flip'][b] else 'does not flip'})"
            for b in BASELINES
        )
        + ".",
    ]
    if ver["claim_held"]:
        answer = "**Answer: the claim held at this scale**" + (
            "."
            if ver["vci_significant_in_both"]
            else ", in sign only: with this few models it is not significant in both families."
        )
    elif ver["vci_positive_in_both"]:
        answer = "**Answer: the claim held only in part**: VCI stayed positive in both families, but not every baseline flipped sign."
    else:
        answer = "**Answer: the claim did not hold at this scale**: VCI's correlation with MLOG was not positive in both families."
    return " ".join([*parts, answer])


def write_figure(report: dict[str, Any], path: Path) -> None:
    """Scatter of each paper metric against MLOG, one colour per family (the paper's Fig. 7 layout)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, corr = report["rows"], report["correlations"]
    fig, axes = plt.subplots(1, len(PAPER_METRICS), figsize=(4 * len(PAPER_METRICS), 3.4))
    for ax, m in zip(axes, PAPER_METRICS, strict=True):
        for family, colour in (("tau", "tab:blue"), ("lambda", "tab:orange")):
            members = [r for r in rows if r["family"] == family]
            r_value = corr[family].get(m, {}).get("pearson", math.nan)
            ax.scatter(
                [x["metrics"][m] for x in members], [x["mlog"] for x in members], color=colour,
                label=f"{family} (r = {r_value:+.2f})",
            )  # fmt: skip
            for x in members:
                ax.annotate(f"{x['value']:g}", (x["metrics"][m], x["mlog"]), fontsize=7)
        ax.set_xlabel(metric_title(m))
        ax.set_ylabel("MLOG")
        ax.legend(fontsize=7)
    fig.suptitle("Source-mode metrics vs MLOG within each family", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--tiny", action="store_true", help="a few minutes: 3 models per family, 2 epochs (for tests)"
    )
    size.add_argument(
        "--medium", action="store_true", help="all family values at the small-fmnist recipe's scale"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="models and feature cache (default runs/sec63-<scale>)"
    )
    parser.add_argument("--board", type=Path, default=ROOT / "leaderboards" / "paper-reproduction.md")
    parser.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default <out>/cache)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--render", action="store_true", help="only rebuild the board (.md, .png) from its saved .json"
    )
    args = parser.parse_args(argv)
    if args.render:
        report = json.loads(args.board.with_suffix(".json").read_text())
        for row in report["rows"]:
            row.setdefault("train_seconds", train_seconds(ROOT / report["out"] / "models" / run_folder(row)))
        publish(report, args.board)
        return report
    scale = SCALES["tiny" if args.tiny else "medium" if args.medium else "full"]
    out = args.out or ROOT / "runs" / f"sec63-{scale.name}"
    cache_dir = args.cache_dir or out / "cache"
    command = shlex.join(["python", "scripts/reproduce_sec63.py", *(sys.argv[1:] if argv is None else argv)])
    print(command, flush=True)
    info = versions()
    print(json.dumps(info), flush=True)

    started = time.perf_counter()
    results = train_families(scale, out, args.quiet)
    trained = time.perf_counter()
    rows = [evaluate_model(r, scale, cache_dir, args.quiet) for r in results]
    report = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "versions": info,
        "out": os.path.relpath(out, ROOT) if out.is_relative_to(ROOT) else str(out),
        "scale": {**asdict(scale), "downstream": {k: list(v) for k, v in scale.downstream.items()}},
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "seconds_training": trained - started,
    }
    board = args.board
    publish(report, board)
    print(
        f"training {report['seconds_training']:.0f} s, total {report['seconds']:.0f} s; wrote {board}",
        flush=True,
    )
    print(statement(report["correlations"], report["verdict"]), flush=True)
    return report


def run_folder(row: dict[str, Any]) -> str:
    from zoo_rank.train import run_name

    return run_name(row["family"], row["value"])


def publish(report: dict[str, Any], board: Path) -> None:
    """board.md, board.json and board.png; the correlations and verdict are recomputed from the rows."""
    n_boot = report["scale"]["n_boot"]
    report["correlations"] = correlate(report["rows"], n_boot)
    report["correlations_logodds"] = correlate(report["rows"], n_boot, target="downstream_logodds")
    report["verdict"] = verdict(report["correlations"])
    write_markdown(report, board)
    board.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float))
    write_figure(report, board.with_suffix(".png"))


if __name__ == "__main__":
    main()
