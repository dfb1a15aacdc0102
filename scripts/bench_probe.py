"""Benchmark: the 97-value L2 selection of `zoo_rank.probe.linear_probe` against scikit-learn.

Target (issue 4): the whole selection >= 10x faster than scikit-learn's LogisticRegression (lbfgs) over
the same values, with the selected test accuracy within 0.5 points, at N = 10,000, p = 2,048, K = 37.

Both solve the same problem: the same standardised features, the same fit/validation rows, the same
objective (mean cross-entropy + l2/2 ||W||^2, i.e. LogisticRegression(C = 1/(l2 * N_fit))), selection by
validation accuracy, refit on fit + validation at the chosen value. scikit-learn over all 97 values takes
hours on 2 cores, so it is timed on `--sk-values` values spread evenly over the grid and its total is
extrapolated as 97 x the mean time per value (printed as such).

Features: `--features synthetic` (default) draws real-structured stand-ins (a low-dimensional class
structure with correlated within-class noise, pushed through a random ReLU layer: non-negative,
correlated, low effective rank, like pooled CNN features). `--features MODEL` uses cached CIFAR-10
features of MODEL from ../shared/data (K = 10, extracted on a miss: slow on CPU).

    .venv/bin/python scripts/bench_probe.py [--n 10000 --p 2048 --k 37 --sk-values 9 --device auto]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def synthetic(n: int, n_test: int, p: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    latent = 64
    means = rng.normal(size=(k, latent)) * 0.4  # about 75% top-1: regularisation matters
    mix = np.eye(latent) + 1.5 * rng.normal(size=(latent, latent)) / np.sqrt(latent)  # correlated noise
    lift = rng.normal(size=(latent, p)) / np.sqrt(latent)
    bias = rng.normal(size=p) * 0.5

    def draw(m):
        y = rng.integers(0, k, m)
        z = means[y] + rng.normal(size=(m, latent)) @ mix.T
        x = np.maximum(z @ lift + bias, 0.0) + 0.05 * rng.normal(size=(m, p))
        return x.astype(np.float32), y

    return (*draw(n), *draw(n_test))


def cifar10(model: str, n: int, seed: int):
    from zoo_rank.extract import extract_features

    per_class = n // 10
    train = extract_features(model, "cifar10-local", split="train", n_per_class=per_class, seed=seed)
    test = extract_features(model, "cifar10-local", split="test")
    return train.features, train.labels, test.features, test.labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="training rows (fit + validation)")
    ap.add_argument("--n-test", type=int, default=5_000)
    ap.add_argument("--p", type=int, default=2048)
    ap.add_argument("--k", type=int, default=37)
    ap.add_argument("--features", default="synthetic", help="'synthetic' or a model spec (CIFAR-10 features)")
    ap.add_argument("--sk-values", type=int, default=9, help="grid values scikit-learn is timed on")
    ap.add_argument("--sk-max-iter", type=int, default=1000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import scipy
    import sklearn
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    import zoo_rank
    from zoo_rank.probe import DEFAULT_L2_GRID, linear_probe, sklearn_C

    print("command:", " ".join([sys.executable, *sys.argv]))
    print(
        f"versions: zoo_rank {zoo_rank.__version__}, torch {torch.__version__}, scikit-learn {sklearn.__version__}, "
        f"scipy {scipy.__version__}, numpy {np.__version__}; torch threads {torch.get_num_threads()}; "
        f"cuda {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}"
    )
    if args.features == "synthetic":
        X, y, Xt, yt = synthetic(args.n, args.n_test, args.p, args.k, args.seed)
        what = f"synthetic real-structured features (NOT real images), K={args.k}"
    else:
        X, y, Xt, yt = cifar10(args.features, args.n, args.seed)
        what = f"CIFAR-10 features of {args.features} from ../shared/data"
    fit_i, val_i = train_test_split(np.arange(len(y)), test_size=0.2, random_state=args.seed, stratify=y)
    print(f"data: {what}; fit {len(fit_i)} / val {len(val_i)} / test {len(yt)} rows, p={X.shape[1]}")

    # Wall time depends on whatever else the machine runs; CPU time of this process less so. Both are shown,
    # with the load average, and the speedup is given on both.
    print(f"load average before: {os.getloadavg()[0]:.1f} (cores: {os.cpu_count()})")
    grid = DEFAULT_L2_GRID
    t0, c0 = time.perf_counter(), time.process_time()
    ours = linear_probe(X[fit_i], y[fit_i], Xt, yt, X[val_i], y[val_i], l2_grid=grid, device=args.device)
    ours_s, ours_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"zoo_rank: {ours_s:.1f} s wall, {ours_cpu:.1f} s CPU (select {ours.seconds['select']:.1f} s over {len(ours.l2_path)} of 97 "
        f"values, early_stopped={ours.early_stopped}; refit {ours.seconds['refit']:.1f} s), "
        f"{ours.n_iter} L-BFGS iterations, {ours.device}/{ours.dtype}; chosen l2={ours.l2:.3g}, "
        f"val acc {ours.val_acc:.4f}, test top1 {ours.top1:.4f}"
    )

    # scikit-learn on the same standardised rows, one value at a time (no warm start: its per-C protocol).
    scaler = StandardScaler().fit(X[fit_i])
    Xf, Xv = scaler.transform(X[fit_i]), scaler.transform(X[val_i])
    sub = np.unique(np.linspace(0, len(grid) - 1, args.sk_values).round().astype(int))
    sk_times, sk_cpu, sk_val = [], [], {}
    for j in sub[::-1]:  # strong to weak, like ours
        l2 = float(grid[j])
        t, c = time.perf_counter(), time.process_time()
        clf = LogisticRegression(C=sklearn_C(l2, len(fit_i)), max_iter=args.sk_max_iter, tol=1e-4).fit(
            Xf, y[fit_i]
        )
        sk_times.append(time.perf_counter() - t)
        sk_cpu.append(time.process_time() - c)
        sk_val[l2] = clf.score(Xv, y[val_i])
        print(
            f"  sklearn l2={l2:9.3g}: {sk_times[-1]:7.1f} s wall, {sk_cpu[-1]:7.1f} s CPU, "
            f"{clf.n_iter_[0]:4d} iterations, val acc {sk_val[l2]:.4f}"
        )
    sk_total = float(np.mean(sk_times)) * len(grid)
    sk_total_cpu = float(np.mean(sk_cpu)) * len(grid)
    print(
        f"sklearn: {sum(sk_times):.1f} s wall measured on {len(sub)} values -> EXTRAPOLATED {sk_total:.0f} s wall, "
        f"{sk_total_cpu:.0f} s CPU for all 97 values (mean per value x 97); load average now {os.getloadavg()[0]:.1f}"
    )

    def sk_refit(l2: float) -> float:
        sc = StandardScaler().fit(X)
        clf = LogisticRegression(C=sklearn_C(l2, len(X)), max_iter=args.sk_max_iter, tol=1e-4).fit(
            sc.transform(X), y
        )
        return clf.score(sc.transform(Xt), yt)

    best_sub = max(sk_val, key=lambda v: (sk_val[v], v))  # ties -> stronger penalty, as ours
    sk_sel_acc = sk_refit(best_sub)
    sk_at_ours = sk_refit(ours.l2)
    ours_at = dict(zip(ours.l2_path, ours.val_acc_path, strict=True))
    gaps = [abs(ours_at[v] - a) for v, a in sk_val.items() if v in ours_at]
    print(
        f"sklearn selection over its {len(sub)} timed values: l2={best_sub:.3g}, test top1 {sk_sel_acc:.4f}; "
        f"sklearn refit at our l2: test top1 {sk_at_ours:.4f}; max |val acc ours - sklearn| at shared values "
        f"{max(gaps) if gaps else float('nan'):.4f}"
    )
    speedup, speedup_cpu = sk_total / ours_s, sk_total_cpu / ours_cpu
    gap_pts = 100 * abs(ours.top1 - sk_sel_acc)
    print(
        f"RESULT: speedup {speedup:.1f}x wall, {speedup_cpu:.1f}x CPU (target >= 10x: "
        f"{'PASS' if min(speedup, speedup_cpu) >= 10 else 'FAIL'}); selected accuracy "
        f"gap {gap_pts:.2f} points vs sklearn's selection, {100 * abs(ours.top1 - sk_at_ours):.2f} at the same l2 "
        f"(target <= 0.5: {'PASS' if gap_pts <= 0.5 else 'FAIL'})"
    )


if __name__ == "__main__":
    main()
