#!/usr/bin/env python
"""Reproduce Section 6.3 of Xu & Liu (ICML 2023) on a 200-class source: does VCI predict transfer in both families?

The paper trains ResNet50 families on ImageNet that differ in one knob -- the softmax temperature tau, or the
weight lambda of the batch's within-class cosine similarity added to the loss -- and finds that VCI on the
pretraining data correlates positively with transfer (MLOG, eq. 6) in both families, while Fuzziness, Squared
Distance and Cosine Similarity change sign between them (its Table 2 / Fig. 7).

Here, with zoo_rank's `small-tinyimagenet` recipe (a narrow timm resnet10t on the real Tiny ImageNet images of
../shared/data: 200 ImageNet classes), for every family member (tau in {0.1, 0.2, 0.4, 0.6, 0.8, 1.0}, lambda in
{2.5, 3.75, 5, 7.5, 10}; two members per family repeated with three seeds):
  * pretraining accuracy: top-1 on the whole Tiny ImageNet validation split (4,000 images),
  * source-mode metrics (VCI, Fuzziness, Squared Distance, cosine distance d_within and 1 - d_within) on a
    class-balanced subset of the images the model trained on,
  * linear probes (zoo_rank.probe.linear_probe: L-BFGS, L2 chosen on a validation split among 97 values in
    [1e-6, 1e6]) on every real labelled set available offline, each scored by the paper's rule (mean per-class
    accuracy for Flowers, top-1 otherwise),
  * MLOG (eq. 6),
then per family, over one run per value (the paper's protocol; the repeats give the seed-to-seed spread), the
Pearson and Spearman correlations of each metric with MLOG and with the knob, with exact permutation p-values
(scipy.stats.permutation_test over all n! orderings). Writes leaderboards/paper-reproduction.{md,json,csv,png}.

    python scripts/reproduce_sec63.py --tiny     # smoke test (a test runs it)
    python scripts/reproduce_sec63.py            # the full setting: "cpu", or "cuda" on a CUDA machine

On a CPU shared with other jobs run it with OMP_NUM_THREADS=1: with more runnable threads than cores, torch's
two intra-op threads wait on each other (measured on 2 cores at load ~20: 13 vs 232 training images/s).

Re-running resumes: trained models (per epoch), per-model evaluations and features are kept under --out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
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
import torch
from scipy import stats

from zoo_rank import probe as probe_module
from zoo_rank._paths import write_text_atomic
from zoo_rank.data import load_images, shared_data_dir
from zoo_rank.extract import extract_features
from zoo_rank.jobs.memo import source_digest
from zoo_rank.metrics import compute_metrics
from zoo_rank.models import create_backbone
from zoo_rank.options import ExtractOptions, ProbeOptions, Subset
from zoo_rank.probe import linear_probe
from zoo_rank.stats import load_paper_tables, logit, mlog, paper_report
from zoo_rank.train import get_recipe, read_record, train

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "small-tinyimagenet"
SOURCE = "tiny-imagenet"
METRICS = ("vci", "fuzziness", "squared_distance", "cosine_distance")
# The paper's four columns, as compared here: COS SIM is read as within-class cosine similarity 1 - d_within.
COLUMNS = ("vci", "fuzziness", "squared_distance", "cos_sim")
TITLES = {
    "vci": "VCI",
    "fuzziness": "Fuzziness",
    "squared_distance": "Sq. distance",
    "cos_sim": "Cos. sim.",
    "mlog": "MLOG",
    "pretrain_acc": "Pretraining acc.",
}
BASELINES = ("fuzziness", "squared_distance", "cos_sim")
# Table 2's direction of each column as the knob grows (../shared/paper/README.md); None: not stated.
PAPER_TRENDS = {
    "tau": {"vci": -1, "fuzziness": -1, "squared_distance": -1, "cos_sim": +1},
    "lambda": {"vci": -1, "squared_distance": +1, "cos_sim": -1},
}
TAU = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
LAMBDA = (2.5, 3.75, 5.0, 7.5, 10.0)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# A member below twice the chance accuracy of the 200-class source did not learn it; flagged on the board.
LEARNED_ACC = 2 / 200


@dataclass(frozen=True)
class Downstream:
    """One real labelled set: where it is, the paper's metric rule, and images per class (None = all)."""

    name: str
    spec: str
    metric: str  # "top1" or "mean_per_class"
    train_per_class: int | None = None
    test_per_class: int | None = None


def downstream_sets(caps: dict[str, tuple[int | None, int | None]]) -> list[Downstream]:
    """Every real labelled set available offline; Flowers is scored by mean per-class accuracy, as in the paper."""
    shared = shared_data_dir()
    where = {
        "cifar10": ("cifar10-local", "top1"),
        "flowers102": (str(shared / "flowers102"), "mean_per_class"),
        "food101-10": (str(shared / "food101-10"), "top1"),
        "gtsrb": (str(shared / "gtsrb"), "top1"),
        "clothing10": (str(shared / "clothing10"), "top1"),
        "sign-digits": (str(shared / "sign-digits"), "top1"),
        "fashion-mnist": ("fashion-mnist", "top1"),
        "digits": ("digits", "top1"),
    }
    return [Downstream(name, *where[name], *caps.get(name, (None, None))) for name in where]


@dataclass(frozen=True)
class Scale:
    """One setting: family values, which members are repeated, recipe overrides, subsets, probe grid."""

    name: str
    recipe: dict[str, Any]
    source_per_class: int  # source-mode metric images per class, drawn from the images trained on
    downstream_caps: dict[str, tuple[int | None, int | None]]
    tau: tuple[float, ...] = TAU
    lam: tuple[float, ...] = LAMBDA
    repeats: dict[str, tuple[float, ...]] = field(
        default_factory=lambda: {"tau": (0.1, 1.0), "lambda": (2.5, 10.0)}
    )
    seeds: tuple[int, ...] = (0, 1, 2)
    l2_grid_size: int = 97
    notes: tuple[str, ...] = ()

    def runs(self) -> list[tuple[str, float, int]]:
        """(family, value, seed) of every model: seed 0 for each value, then the repeats."""
        first = [("tau", v, 0) for v in self.tau] + [("lambda", v, 0) for v in self.lam]
        more = [(f, v, s) for f, values in self.repeats.items() for v in values for s in self.seeds[1:]]
        return first + more


SCALES = {
    "tiny": Scale(
        name="tiny",
        recipe=dict(
            n_per_class=2,
            epochs=1,
            batch_size=64,
            warmup_epochs=0,
            model_args={"channels": (8, 16, 32, 64), "stem_width": 8},
            track_every=1,
            track_train_per_class=2,
            track_test_per_class=2,
            final_test_per_class=2,
        ),
        source_per_class=2,
        downstream_caps={
            "cifar10": (5, 2),
            "flowers102": (2, 1),
            "food101-10": (4, 2),
            "gtsrb": (2, 1),
            "clothing10": (4, 2),
            "sign-digits": (4, 2),
            "fashion-mnist": (4, 2),
            "digits": (4, 2),
        },
        tau=(0.1, 0.4, 1.0),
        lam=(2.5, 5.0, 10.0),
        repeats={"tau": (1.0,), "lambda": (10.0,)},
        seeds=(0, 1),
        l2_grid_size=13,
        notes=(
            "tiny: 3 values per family, 400 training images, 1 epoch, 64-d features -- a smoke test, not evidence",
        ),
    ),
    # Sized for ~1 h on 2 CPU cores shared with other jobs (see the board for the measured time).
    "cpu": Scale(
        name="cpu",
        recipe=dict(n_per_class=40, epochs=3, track_every=3),
        source_per_class=10,
        downstream_caps={
            "cifar10": (20, 20),
            "gtsrb": (15, 10),
            "sign-digits": (20, 10),
            "fashion-mnist": (20, 20),
            "digits": (30, 20),
        },
    ),
    "cuda": Scale(
        name="cuda",
        recipe=dict(
            n_per_class=None,
            epochs=60,
            img_size=64,
            batch_size=256,
            warmup_epochs=3,
            num_workers=8,
            track_every=10,
            track_train_per_class=50,
            track_test_per_class=20,
        ),
        source_per_class=50,
        downstream_caps={"cifar10": (500, 100), "fashion-mnist": (500, 100)},
    ),
}


def versions() -> dict[str, str]:
    import scipy
    import timm

    import zoo_rank

    return {
        "python": platform.python_version(),
        "zoo_rank": zoo_rank.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "threads": str(torch.get_num_threads()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
    }


# ---- one model: train, then evaluate -----------------------------------------------------------------


def run_label(family: str, value: float, seed: int) -> str:
    return f"{family}={value:g}" + (f" (seed {seed})" if seed else "")


def train_one(scale: Scale, family: str, value: float, seed: int, out: Path, quiet: bool) -> Path:
    recipe = get_recipe(RECIPE, **scale.recipe).replace(seed=seed)
    return train(recipe, family, value, out / "models" / f"seed{seed}", resume=True, quiet=quiet).run_dir


def _settings_digest(scale: Scale) -> str:
    """Digest of everything an evaluation depends on besides the model (a changed scale or probe solver
    re-evaluates)."""
    what = {
        k: v for k, v in asdict(scale).items() if k in ("source_per_class", "downstream_caps", "l2_grid_size")
    }
    what["probe_code"] = source_digest(probe_module)
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


@functools.cache
def _images(spec: str, split: str) -> Any:
    """Each image set is opened once per process, not once per model."""
    return load_images(spec, split)


def _features(
    backbone: Any, spec: str, split: str, n_per_class: int | None, seed: int, cache_dir: Path, quiet: bool
):
    # fp32: the source metrics are pseudo-inverses of covariances; keep bf16 rounding out of them. No loader
    # workers: at 32 px decoding is cheap, and on a shared CPU a worker process costs more than it overlaps.
    return extract_features(
        backbone,
        _images(spec, split),
        subset=Subset(n_per_class, seed),
        options=ExtractOptions(
            precision="fp32",
            batch_size=256,
            num_workers=0 if DEVICE == "cpu" else None,
            cache_dir=cache_dir,
            quiet=quiet,
        ),
    )


def evaluate(run_dir: Path, scale: Scale, seed: int, cache_dir: Path, quiet: bool) -> dict[str, Any]:
    """Source metrics, probe accuracies and MLOG of one trained model; cached in run_dir/sec63-eval.json."""
    path = run_dir / "sec63-eval.json"
    digest = _settings_digest(scale)
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("settings") == digest:
            return saved
    started = time.perf_counter()
    record = read_record(run_dir)
    backbone = create_backbone(f"local-dir:{run_dir}")
    # The model's own training subset is balanced_subset(train, n, seed): a smaller n with the same seed is nested
    # in it, so the metrics are measured on images the model trained on, as the paper's ImageNet train subset.
    source = _features(backbone, SOURCE, "train", scale.source_per_class, seed, cache_dir, quiet)
    metrics = compute_metrics(source.features, source.labels, METRICS)
    metrics["cos_sim"] = 1.0 - metrics["cosine_distance"]
    grid = np.logspace(-6, 6, scale.l2_grid_size)
    probes = {}
    for d in downstream_sets(scale.downstream_caps):
        fit = _features(backbone, d.spec, "train", d.train_per_class, 0, cache_dir, quiet)
        test = _features(backbone, d.spec, "test", d.test_per_class, 0, cache_dir, quiet)
        # The L2 strength is chosen on a stratified validation split; where 20 % cannot hold every class
        # (Flowers: 4 training images per class) the probe validates one image of each (probe/split.py).
        probe = linear_probe(
            fit.features, fit.labels, test.features, test.labels, options=ProbeOptions(l2_grid=tuple(grid))
        )
        probes[d.name] = {
            "accuracy": probe.top1 if d.metric == "top1" else probe.mean_per_class,
            "metric": d.metric,
            "l2": probe.l2,
            "n_train": probe.n_train + probe.n_val,
            "n_test": probe.n_test,
        }
    pretrain = float(record["test_top1"])
    # Accuracies of exactly 0 or 1 have infinite log-odds: clip by half a sample of the smallest test split.
    clip = 1.0 / (2 * min(min(p["n_test"] for p in probes.values()), int(record.get("test_images") or 10**9)))
    accuracies = {k: v["accuracy"] for k, v in probes.items()}
    result = {
        "model": run_label(record["family"], record["value"], seed),
        "family": record["family"],
        "value": float(record["value"]),
        "seed": seed,
        "run_dir": str(run_dir),
        "pretrain_acc": pretrain,
        "pretrain_images": record.get("test_images"),
        "downstream": probes,
        "mlog": float(mlog(accuracies, pretrain, clip=clip)),
        "downstream_logodds": float(np.mean(logit(np.clip(list(accuracies.values()), clip, 1 - clip)))),
        "metrics": metrics,
        "source_images": len(source.labels),
        "feature_dim": int(source.features.shape[1]),
        "train_seconds": _train_seconds(run_dir),
        "eval_seconds": time.perf_counter() - started,
        "settings": digest,
    }
    write_text_atomic(path, json.dumps(result, indent=1))
    return result


def _train_seconds(run_dir: Path) -> float:
    import polars as pl

    return float(pl.read_csv(run_dir / "history.csv")["seconds"].sum())


# ---- statistics ----------------------------------------------------------------------------------------


def exact_correlations(x: Any, y: Any) -> dict[str, float]:
    """Pearson r and Spearman rho of x with y, each with its exact two-sided permutation p-value.

    scipy.stats.permutation_test with permutation_type="pairings" and n_resamples=inf enumerates all n!
    orderings of x against y (720 for n = 6). NaN when x or y is constant.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    # A member whose metric is undefined (inf: e.g. every feature zero) is left out of that column's statistics.
    finite = np.isfinite(x) & np.isfinite(y)
    out: dict[str, float] = {"n": int(finite.sum()), "n_all": len(x)}
    if out["n"] < 3:
        return {
            **out,
            "pearson": math.nan,
            "pearson_p": math.nan,
            "spearman": math.nan,
            "spearman_p": math.nan,
        }
    x, y = x[finite], y[finite]
    for name, (a, b) in {"pearson": (x, y), "spearman": (stats.rankdata(x), stats.rankdata(y))}.items():
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            out[name], out[f"{name}_p"] = math.nan, math.nan
            continue
        bc = (b - b.mean()) / np.linalg.norm(b - b.mean())

        def r(a_perm: np.ndarray, axis: int = -1, bc: np.ndarray = bc) -> np.ndarray:
            ac = a_perm - a_perm.mean(axis=axis, keepdims=True)
            return (ac * bc).sum(axis=axis) / np.linalg.norm(ac, axis=axis)

        res = stats.permutation_test(
            (a,), r, permutation_type="pairings", n_resamples=np.inf, vectorized=True, alternative="two-sided"
        )
        out[name], out[f"{name}_p"] = float(res.statistic), float(res.pvalue)
    return out


def family_statistics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per family, over the seed-0 run of each value: correlations with MLOG and with the knob; seed spread."""
    out: dict[str, Any] = {}
    for family in ("tau", "lambda"):
        members = sorted(
            (r for r in rows if r["family"] == family and r["seed"] == 0), key=lambda r: r["value"]
        )
        if len(members) < 3:
            out[family] = {"n_models": len(members)}
            continue
        knob = [r["value"] for r in members]
        target = [r["mlog"] for r in members]
        columns = {c: [r["metrics"][c] for r in members] for c in COLUMNS}
        out[family] = {
            "n_models": len(members),
            "with_mlog": {c: exact_correlations(v, target) for c, v in columns.items()},
            "with_logodds": {
                c: exact_correlations(v, [r["downstream_logodds"] for r in members])
                for c, v in columns.items()
            },
            "with_knob": {
                **{c: exact_correlations(knob, v) for c, v in columns.items()},
                "mlog": exact_correlations(knob, target),
                "pretrain_acc": exact_correlations(knob, [r["pretrain_acc"] for r in members]),
            },
            "seed_spread": _seed_spread([r for r in rows if r["family"] == family], members),
        }
        learned = [r for r in members if r["pretrain_acc"] >= LEARNED_ACC]
        if 3 <= len(learned) < len(members):
            out[family]["with_mlog_learned"] = {
                "models": [r["model"] for r in learned],
                **{
                    c: exact_correlations([r["metrics"][c] for r in learned], [r["mlog"] for r in learned])
                    for c in COLUMNS
                },
            }
    return out


def _seed_spread(runs: list[dict[str, Any]], members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each repeated value: the standard deviation over seeds of every column, beside the family's range."""
    spread = []
    for value in sorted({r["value"] for r in runs if r["seed"] != 0}):
        same = [r for r in runs if r["value"] == value]
        row = {"value": value, "n_seeds": len(same)}
        for key in (*COLUMNS, "mlog", "pretrain_acc"):
            values = _finite([r["metrics"][key] if key in r["metrics"] else r[key] for r in same])
            family = _finite([r["metrics"][key] if key in r["metrics"] else r[key] for r in members])
            row[key] = {
                "mean": float(np.mean(values)) if len(values) else math.nan,
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
                "family_range": float(np.ptp(family)) if len(family) else math.nan,
            }
        spread.append(row)
    return spread


def _finite(values: list[float]) -> np.ndarray:
    """The defined values (an undefined metric is inf)."""
    arr = np.asarray(values, dtype=np.float64)
    return arr[np.isfinite(arr)]


def verdict(fam: dict[str, Any]) -> dict[str, Any]:
    """Trends of Table 2 and the paper's claim (VCI positive with MLOG in both; every baseline flips sign)."""
    tau, lam = fam.get("tau", {}), fam.get("lambda", {})
    if "with_mlog" not in tau or "with_mlog" not in lam:
        return {"complete": False}
    trends = {
        family: {
            c: {
                "expected": sign,
                "spearman": fam[family]["with_knob"][c]["spearman"],
                "p": fam[family]["with_knob"][c]["spearman_p"],
                "reappears": bool(np.sign(fam[family]["with_knob"][c]["spearman"]) == sign),
            }
            for c, sign in PAPER_TRENDS[family].items()
        }
        for family in ("tau", "lambda")
    }
    r = {f: {c: fam[f]["with_mlog"][c]["pearson"] for c in COLUMNS} for f in ("tau", "lambda")}
    flips = {b: bool(np.sign(r["tau"][b]) * np.sign(r["lambda"][b]) < 0) for b in BASELINES}
    vci_positive = bool(r["tau"]["vci"] > 0 and r["lambda"]["vci"] > 0)
    significant = bool(all(fam[f]["with_mlog"]["vci"]["pearson_p"] < 0.05 for f in ("tau", "lambda")))
    return {
        "complete": True,
        "trends": trends,
        "vci_positive_in_both": vci_positive,
        "vci_significant_in_both": significant,
        "baselines_flip": flips,
        "claim_held": vci_positive and all(flips.values()),
    }


def paper_reference() -> dict[str, dict[str, float]]:
    """Pearson r of each metric with the published MLOG in the paper's own Table 2 (the shipped tables)."""
    report = paper_report(load_paper_tables(), n_boot=0)
    return {
        group: {
            c["metric"]: c["vs_published"]["pearson"] for c in report["correlations"] if c["group"] == group
        }
        for group in ("tau", "lambda")
    }


# ---- the board -------------------------------------------------------------------------------------------


def _f(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}" if abs(x) >= 1000 else f"{x:.{digits}f}"


def _corr(c: dict[str, float], stat: str = "pearson") -> str:
    if not c or not math.isfinite(c.get(stat, math.nan)):
        return "n/a"
    dropped = f", n={c['n']} of {c['n_all']}" if c.get("n_all", c["n"]) != c["n"] else ""
    return f"{c[stat]:+.2f} (p={c[f'{stat}_p']:.3f}{dropped})"


def statement(report: dict[str, Any]) -> str:
    """A plain paragraph per family and the answer, with the numbers."""
    fam, ver = report["families"], report["verdict"]
    if not ver.get("complete"):
        return (
            "**Answer: not available**: a family has fewer than three evaluated models (run again to resume)."
        )
    parts = []
    for family, up in (("tau", "tau up"), ("lambda", "lambda up")):
        t = ver["trends"][family]
        seen = [c for c in t if t[c]["reappears"]]
        parts.append(
            f"**{family} family, Table 2 trends ({up}):** "
            + "; ".join(
                f"{TITLES[c]} {'down' if t[c]['expected'] < 0 else 'up'} in the paper, Spearman with {family} here "
                f"{t[c]['spearman']:+.2f} (p={t[c]['p']:.3f}): {'reappears' if t[c]['reappears'] else 'does not reappear'}"
                for c in t
            )
            + f". {len(seen)} of {len(t)} trends reappear in sign."
        )
    r = {f: fam[f]["with_mlog"] for f in ("tau", "lambda")}
    parts.append(
        "**The paper's claim** (VCI correlates positively with MLOG in both families; Fuzziness, Squared Distance "
        f"and Cosine Similarity change sign between them): VCI Pearson r = {_corr(r['tau']['vci'])} (tau) and "
        f"{_corr(r['lambda']['vci'])} (lambda); "
        + "; ".join(
            f"{TITLES[b]} {_corr(r['tau'][b])} -> {_corr(r['lambda'][b])} "
            f"({'flips' if ver['baselines_flip'][b] else 'does not flip'})"
            for b in BASELINES
        )
        + "."
    )
    if ver["claim_held"]:
        answer = "**Answer: the claim held in sign at this scale**" + (
            ", and VCI's correlation is significant (p < 0.05) in both families."
            if ver["vci_significant_in_both"]
            else ", but VCI's correlation is not significant (p < 0.05) in both families."
        )
    elif ver["vci_positive_in_both"]:
        answer = "**Answer: the claim held only in part**: VCI was positive in both families, but not every baseline flipped sign."
    else:
        answer = "**Answer: the claim did not hold at this scale**: VCI's correlation with MLOG was not positive in both families."
    return "\n\n".join([*parts, answer])


def write_markdown(report: dict[str, Any], path: Path) -> None:
    rows, scale, fam = report["rows"], report["scale"], report["families"]
    sets = list(rows[0]["downstream"]) if rows else []
    recipe = report["recipe"]
    train_min = sum(r["train_seconds"] for r in rows) / 60
    repeated = "; ".join(f"{f} = " + ", ".join(f"{v:g}" for v in vs) for f, vs in scale["repeats"].items())
    lines = [
        "# Paper reproduction: Xu & Liu (ICML 2023), Section 6.3, on a 200-class source",
        "",
        f"Generated {report['date']} by `{report['command']}` (setting `{scale['name']}`); this call took "
        f"{report['seconds'] / 60:.1f} min; the {len(rows)} models took {train_min:.1f} min of training epochs and "
        f"{sum(r['eval_seconds'] for r in rows) / 60:.1f} min of evaluation when they were made "
        f"({report['versions']['machine']}; a rerun resumes trained models, evaluations and features).",
        "",
        f"**Source.** Tiny ImageNet (../shared/data): 200 ImageNet classes; each model trains on "
        f"{recipe['n_per_class'] or 160} images per class ({200 * (recipe['n_per_class'] or 160):,} images) for "
        f"{recipe['epochs']} epochs at {recipe['img_size']} px with zoo_rank's `{recipe['name']}` recipe (timm "
        f"`{recipe['model']}` {recipe['model_args']}, {rows[0]['feature_dim'] if rows else '?'}-d features, batch "
        f"{recipe['batch_size']}, lr {recipe['lr_per_256']} x batch/256, cosine schedule). Pretraining accuracy: "
        f"top-1 on {rows[0]['pretrain_images'] if rows else '?'} validation images. Source-mode metrics: "
        f"{scale['source_per_class']} training images per class ({rows[0]['source_images'] if rows else '?'} images, "
        "fp32 features) drawn from the images each model trained on.",
        "",
        "**Families.** tau: cross-entropy on logits / tau. lambda: cross-entropy + lambda x the batch's mean "
        "within-class cosine similarity (`zoo_rank.train.losses`: every ordered pair of a class, self-pairs included, "
        "weighted 1/n_c^2; each class of the batch counts once), which spreads a class's features in angle. One run "
        f"per value (seed 0), as in the paper; {repeated} "
        f"repeated with seeds {', '.join(str(s) for s in scale['seeds'])} (the seed changes the initialisation and the "
        "training subset).",
        "",
        "**Transfer.** Linear probes (`zoo_rank.probe.linear_probe`: multinomial logistic regression, L-BFGS, L2 chosen "
        f"on a validation split among {scale['l2_grid_size']} values in [1e-6, 1e6]) on "
        + ", ".join(
            f"{d} ({rows[0]['downstream'][d]['n_train']} train / {rows[0]['downstream'][d]['n_test']} test, "
            f"{'mean per-class acc.' if rows[0]['downstream'][d]['metric'] == 'mean_per_class' else 'top-1'})"
            for d in sets
        )
        + "; MLOG = mean over these sets of logit(acc) - logit(pretraining acc) (eq. 6).",
        "",
        "The paper's setting is ResNet50 on ImageNet-1K for 300 epochs with ten downstream sets; this is a small "
        "proxy of it, and its answer speaks for this scale only.",
        "",
        *[f"> Note: {n}\n" for n in scale.get("notes", [])],
        "## Per-model table (as the paper's Table 2)",
        "",
    ]
    head = [
        "model",
        "pretrain acc",
        *sets,
        "MLOG",
        "VCI",
        "Fuzziness",
        "Sq. distance",
        "Cos. dist.",
        "Cos. sim.",
    ]
    lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        m = r["metrics"]
        cells = [
            r["model"],
            _f(r["pretrain_acc"]),
            *[_f(r["downstream"][d]["accuracy"]) for d in sets],
            _f(r["mlog"]),
        ]
        cells += [
            _f(m["vci"]),
            _f(m["fuzziness"]),
            _f(m["squared_distance"]),
            _f(m["cosine_distance"]),
            _f(m["cos_sim"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Cos. dist. is Kornblith et al.'s mean within-class cosine distance d_within (`cosine_distance`, which the "
        'paper\'s text calls "Cosine Similarity"); Cos. sim. = 1 - d_within is the within-class cosine similarity, '
        "the quantity the paper's Table 2 column COS SIM behaves as, and the one correlated below. Sq. distance = "
        "Tr(Sigma_W)/Tr(Sigma_B) (eq. 4).",
        "",
        *_undefined_notes(rows),
    ]
    if fam.get("tau", {}).get("with_mlog") and fam.get("lambda", {}).get("with_mlog"):
        ref = report["paper_reference"]
        lines += [
            "## Correlation with MLOG within each family",
            "",
            "Over the seed-0 run of each value; exact two-sided permutation p-values over all n! orderings "
            f"(n = {fam['tau']['n_models']} and {fam['lambda']['n_models']}: the smallest possible p is "
            f"{2 / math.factorial(fam['tau']['n_models']):.4f} and {2 / math.factorial(fam['lambda']['n_models']):.4f}). "
            "The paper's column is Pearson r computed from its Table 2.",
            "",
            "| metric | tau: Pearson | tau: Spearman | tau: paper r | lambda: Pearson | lambda: Spearman | lambda: paper r |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for c in COLUMNS:
            t, lam = fam["tau"]["with_mlog"][c], fam["lambda"]["with_mlog"][c]
            lines.append(
                f"| {TITLES[c]} | {_corr(t)} | {_corr(t, 'spearman')} | {ref['tau'].get(c, math.nan):+.3f} "
                f"| {_corr(lam)} | {_corr(lam, 'spearman')} | {ref['lambda'].get(c, math.nan):+.3f} |"
            )
        lines += [
            "",
            "## Trends with the knob (Spearman of the column with tau or lambda)",
            "",
            "| column | tau family | lambda family |",
            "|---|---:|---:|",
        ]
        for c in (*COLUMNS, "mlog", "pretrain_acc"):
            lines.append(
                f"| {TITLES[c]} | {_corr(fam['tau']['with_knob'][c], 'spearman')} "
                f"| {_corr(fam['lambda']['with_knob'][c], 'spearman')} |"
            )
        lines += [
            "",
            "## Seed-to-seed spread",
            "",
            "| family | value | seeds | "
            + " | ".join(f"{TITLES[c]} sd (family range)" for c in (*COLUMNS, "mlog"))
            + " |",
            "|---|---:|---:|" + "---:|" * (len(COLUMNS) + 1),
        ]
        for family in ("tau", "lambda"):
            for s in fam[family]["seed_spread"]:
                lines.append(
                    f"| {family} | {s['value']:g} | {s['n_seeds']} | "
                    + " | ".join(f"{_f(s[c]['sd'])} ({_f(s[c]['family_range'])})" for c in (*COLUMNS, "mlog"))
                    + " |"
                )
        lines += [
            "",
            "A column whose seed sd is comparable to its family range cannot order the family at this scale.",
            "",
            *_learned_section(report),
            "",
            "### Secondary: correlation with transfer alone (mean downstream log-odds, no pretraining term)",
            "",
            "| metric | tau: Pearson | lambda: Pearson |",
            "|---|---:|---:|",
            *[
                f"| {TITLES[c]} | {_corr(fam['tau']['with_logodds'][c])} | {_corr(fam['lambda']['with_logodds'][c])} |"
                for c in COLUMNS
            ],
            "",
        ]
    lines += ["## Do the paper's trends and claim reappear?", "", statement(report), ""]
    lines += [
        "## Reproduce",
        "",
        "```",
        report["command"],
        "```",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".",
        "",
        f"Models (timm local-dir folders with their collapse curves) are under `{report['out']}/models`.",
        "",
    ]
    write_text_atomic(path, "\n".join(lines))


def _undefined_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Say why a metric is n/a: a model without between-class spread (e.g. a dead network) makes it 0/0."""
    notes = []
    titles = {**TITLES, "cosine_distance": "Cos. dist."}
    for r in rows:
        bad = [titles[c] for c in (*COLUMNS, "cosine_distance") if not math.isfinite(r["metrics"][c])]
        if not bad:
            continue
        # Constant features leave even the cosine distance without a value (older records: 1, no direction).
        cos = r["metrics"]["cosine_distance"]
        dead = not math.isfinite(cos) or cos == 1.0
        notes.append(
            f"> {r['model']}: {', '.join(bad)} undefined (n/a): "
            + (
                "its source features do not vary across the images (a network whose last ReLUs all died in "
                "training gives all-zero features), so no collapse score has a value. "
                if dead
                else "its class means coincide. "
            )
            + "Correlations leave it out of the undefined columns (n is then given)."
        )
    return [*notes, *([""] if notes else [])]


def _learned_section(report: dict[str, Any]) -> list[str]:
    """Members that did not learn the source task, and the correlations without them (a sensitivity check)."""
    low = [r for r in report["rows"] if r["pretrain_acc"] < LEARNED_ACC]
    if not low:
        return []
    fam = report["families"]
    names = ", ".join(f"{r['model']} ({r['pretrain_acc']:.4f})" for r in low)
    lines = [
        "### Members that did not learn the source task",
        "",
        f"{names} reached less than twice the chance "
        f"accuracy of the 200-class source ({LEARNED_ACC:.3f}). Eq. 6 subtracts their very low pretraining log-odds, "
        "so their MLOG is high whatever they transfer. The verdict above counts them, as the protocol says; the "
        "correlations without them are:",
        "",
        "| metric | tau: Pearson | lambda: Pearson |",
        "|---|---:|---:|",
    ]
    excluded = {f: any(r["family"] == f and r["seed"] == 0 for r in low) for f in ("tau", "lambda")}
    for c in COLUMNS:
        cells = [
            _corr(fam[f]["with_mlog_learned"][c])
            if "with_mlog_learned" in fam[f]
            else "n/a (fewer than 3 left)"
            if excluded[f]
            else "(all learned)"
            for f in ("tau", "lambda")
        ]
        lines.append(f"| {TITLES[c]} | {cells[0]} | {cells[1]} |")
    return [*lines, ""]


def write_csv(report: dict[str, Any], path: Path) -> None:
    import polars as pl

    flat = [
        {
            "model": r["model"],
            "family": r["family"],
            "value": r["value"],
            "seed": r["seed"],
            "pretrain_acc": r["pretrain_acc"],
            "mlog": r["mlog"],
            "downstream_logodds": r["downstream_logodds"],
            **{m: r["metrics"][m] for m in (*METRICS, "cos_sim")},
            **{f"acc_{d}": v["accuracy"] for d, v in r["downstream"].items()},
            "train_seconds": r["train_seconds"],
            "eval_seconds": r["eval_seconds"],
        }
        for r in report["rows"]
    ]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pl.DataFrame(flat).write_csv(tmp)
    os.replace(tmp, path)


def write_figure(report: dict[str, Any], path: Path) -> None:
    """Each paper column against MLOG, one colour per family, repeats hollow (the paper's Fig. 7 layout)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, fam = report["rows"], report["families"]
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(4 * len(COLUMNS), 3.4))
    for ax, c in zip(axes, COLUMNS, strict=True):
        for family, colour in (("tau", "tab:blue"), ("lambda", "tab:orange")):
            members = [r for r in rows if r["family"] == family]
            r_value = fam.get(family, {}).get("with_mlog", {}).get(c, {}).get("pearson", math.nan)
            first = [r for r in members if r["seed"] == 0]
            ax.scatter(
                [x["metrics"][c] for x in first],
                [x["mlog"] for x in first],
                color=colour,
                label=f"{family} (r = {r_value:+.2f})",
            )
            again = [r for r in members if r["seed"] != 0]
            ax.scatter(
                [x["metrics"][c] for x in again],
                [x["mlog"] for x in again],
                facecolors="none",
                edgecolors=colour,
            )
            for x in first:
                ax.annotate(f"{x['value']:g}", (x["metrics"][c], x["mlog"]), fontsize=7)
        ax.set_xlabel(TITLES[c])
        ax.set_ylabel("MLOG")
        ax.legend(fontsize=7)
    fig.suptitle("Source metrics vs MLOG within each family (hollow: other seeds)", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def publish(report: dict[str, Any], board: Path) -> None:
    """board.md / .json / .csv / .png; statistics and verdict recomputed from the rows."""
    report["families"] = family_statistics(report["rows"])
    report["verdict"] = verdict(report["families"])
    report["paper_reference"] = paper_reference()
    board.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(board.with_suffix(".json"), json.dumps(report, indent=1, default=float))
    write_csv(report, board.with_suffix(".csv"))
    write_figure(report, board.with_suffix(".png"))
    write_markdown(report, board)


# ---- main ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="smoke test: 8 tiny models (what the test runs)")
    parser.add_argument(
        "--scale",
        choices=sorted(SCALES),
        default=None,
        help="setting (default: tiny with --tiny, else cuda when CUDA is available, else cpu)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="models and feature cache (default runs/sec63-<scale>)"
    )
    parser.add_argument("--board", type=Path, default=ROOT / "leaderboards" / "paper-reproduction.md")
    parser.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default <out>/cache)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--render", action="store_true", help="only rebuild the board from its saved .json")
    args = parser.parse_args(argv)
    if args.render:
        report = json.loads(args.board.with_suffix(".json").read_text())
        publish(report, args.board)
        return report
    name = args.scale or ("tiny" if args.tiny else DEVICE)
    scale = SCALES[name]
    out = args.out or ROOT / "runs" / f"sec63-{scale.name}"
    cache_dir = args.cache_dir or out / "cache"
    command = shlex.join(["python", "scripts/reproduce_sec63.py", *(sys.argv[1:] if argv is None else argv)])
    info = versions()
    print(command, json.dumps(info), sep="\n", flush=True)

    started = time.perf_counter()
    rows = []
    for family, value, seed in scale.runs():
        run_dir = train_one(scale, family, value, seed, out, args.quiet)
        rows.append(evaluate(run_dir, scale, seed, cache_dir, args.quiet))
        print(
            f"{rows[-1]['model']}: pretrain {rows[-1]['pretrain_acc']:.4f}  MLOG {rows[-1]['mlog']:+.4f}  "
            f"VCI {rows[-1]['metrics']['vci']:.4f}  [{time.perf_counter() - started:.0f} s]",
            flush=True,
        )
    report = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "versions": info,
        "out": os.path.relpath(out, ROOT) if out.is_relative_to(ROOT) else str(out),
        "scale": asdict(scale),
        "recipe": get_recipe(RECIPE, **scale.recipe).to_dict(),
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    publish(report, args.board)
    print(f"total {report['seconds']:.0f} s; wrote {args.board}", flush=True)
    print(statement(report), flush=True)
    return report


if __name__ == "__main__":
    main()
