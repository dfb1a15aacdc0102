"""Dense linear algebra of the logistic path on the CPU's terms: products through numpy's BLAS, column
statistics without float64 temporaries, the top of the spectrum of X^T X / N for the preconditioner, and
the second-order step in a few directions whose X-images are known."""

from __future__ import annotations

import numpy as np
import torch


def top_eigenpairs(
    x: torch.Tensor, rank: int, *, rows: int
) -> tuple[torch.Tensor, torch.Tensor, float, bool]:
    """(U (p, r), eigenvalues (r,), mean of the other p - r, sampled) of S = X^T X / N for x (N, p), r = rank.

    One Gram matrix (p, p: a single large product, several times faster per flop than the thin products of
    an evaluation) of a fixed random subset of `rows` rows where N > 2 rows (`sampled`: a preconditioner
    needs only an approximation), then subspace iteration on it from fixed random vectors (4 rounds,
    Rayleigh-Ritz in float64: the top eigenvalues converge as (lambda_{r+8} / lambda_i)^8; 6 rounds took no
    fewer iterations); for p <= r + 8 an exact eigendecomposition of the Gram of all rows.
    """
    n, p = x.shape
    r = min(rank, p)
    sample, sampled = x, p > r + 8 and n > 2 * rows
    if sampled:
        keep = np.sort(np.random.default_rng(0).choice(n, rows, replace=False))
        sample = x[torch.as_tensor(keep, device=x.device)]
    # numpy sees X^T X: a symmetric rank-k update, half the flops; in the working dtype: a preconditioner
    # needs no more
    gram = matmul(sample.T, sample) / len(sample)
    if p <= r + 8:
        vals, vecs = torch.linalg.eigh(gram.double())
    else:
        start = np.random.default_rng(0).normal(size=(p, r + 8))  # fixed: the same answer every run
        v = torch.as_tensor(start, device=gram.device, dtype=gram.dtype)
        for _ in range(4):
            v, _ = torch.linalg.qr(matmul(gram, v))
        v = v.double()
        vals, rot = torch.linalg.eigh(v.T @ matmul(gram, v.to(gram.dtype)).double())
        vecs = v @ rot
    vals, vecs = vals[-r:].clamp_min(0.0), vecs[:, -r:]
    rest = max(float(gram.diagonal().double().sum() - vals.sum()), 0.0) / max(p - r, 1)
    return vecs.to(x.dtype).contiguous(), vals.to(x.dtype), rest, sampled


def top_eigenvalue(x: torch.Tensor, u: torch.Tensor) -> float:
    """lambda_max(X^T X / N) for x (N, p), from approximate top eigenvectors u (p, r), ascending: two block
    power rounds on all rows from the top 32, then Rayleigh-Ritz in float64 (on the benchmark within 1e-6
    relative of the Gram of all rows; the sample's own top eigenvalue was 5% high)."""
    v = u[:, -32:]
    for _ in range(2):
        v, _ = torch.linalg.qr(matmul(matmul(x, v).T, x).T)
    xv = matmul(x, v).double()
    return float(torch.linalg.eigvalsh(xv.T @ xv / len(xv)).max())


def subspace_step(
    g: torch.Tensor,
    dirs: list[tuple[torch.Tensor, torch.Tensor, float]],
    prob: torch.Tensor,
    l2: float,
    n_penalised: int,
    max_amplification: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(d, X d): the combination d = sum_j a_j d_j of directions (d_j (P,) float64, X d_j (N, K), ||X d_j||)
    that minimises the second-order model of the probe's objective at a point with gradient g (P,) and
    softmax prob (N, K): the exact Hessian of the mean cross-entropy restricted to their span plus l2 on
    the first `n_penalised` coordinates (a J x J system; no product; the (N, K) passes in X d_j's dtype:
    a model needs no more). Oldest directions (last in `dirs`) are dropped until the combination is a
    descent direction and sum_j |a_j| ||X d_j|| <= max_amplification ||X d||: each X d_j carries the rounding
    of a float32 product, which cancelling combinations would amplify. The first direction alone if none is.
    """
    n = len(prob)
    D = torch.stack([d for d, _, _ in dirs])  # (J, P)
    U = torch.stack([u for _, u, _ in dirs]).flatten(1)  # (J, N K)
    pu = U * prob.to(U.dtype).reshape(1, -1)
    rowdot = pu.view(len(dirs), n, -1).sum(2)  # (J, N): p_i . u_i
    # sum_i u_i^T (diag(p_i) - p_i p_i^T) v_i / N, plus the penalty's l2 d_W . e_W
    Dw = D[:, :n_penalised]
    hess = (pu @ U.T - rowdot @ rowdot.T).double() / n + l2 * (Dw @ Dw.T)
    slope = D @ g.double()
    norms = torch.tensor([norm for _, _, norm in dirs], dtype=torch.float64)
    for j in range(len(dirs), 0, -1):
        h = hess[:j, :j]
        scale = h.diagonal().clamp_min(1e-300).rsqrt()
        hn = h * scale[:, None] * scale[None, :] + 1e-10 * torch.eye(j, dtype=h.dtype)
        coef = scale * torch.linalg.solve(hn, -slope[:j] * scale)
        if not bool(torch.isfinite(coef).all()) or float(slope[:j] @ coef) >= 0:
            continue
        xd = (coef.to(U.dtype) @ U[:j]).view(n, -1)
        if float((coef.abs() * norms[:j]).sum()) <= max_amplification * float(xd.norm()) or j == 1:
            return coef @ D[:j], xd
    return dirs[0][0], dirs[0][1]


def spectral_h0(
    q: torch.Tensor, spectrum: tuple[torch.Tensor, torch.Tensor, float], c: float, l2: float, k: int
) -> torch.Tensor:
    """The initial inverse Hessian of the two-loop recursion applied to q (flat: W (p, K) then b (K,)):
    (c M + l2 P)^-1 q, where M = S (x) I_K on W and I_K on b (the data term's Hessian at softmax variance c,
    W and b decoupled as rows have zero mean), S = X^T X / N from `spectrum` (U (p, r), its eigenvalues,
    the rest at their mean), P the penalty's mask, and c fitted to the newest pair (`fitted_scale`). Any
    positive definite H0 keeps L-BFGS convergent; this one takes the spread of S out of the condition
    number."""
    u, vals, rest = spectrum
    nw = u.shape[0] * k
    qw = q[:nw].view(-1, k)
    d_rest = 1.0 / (c * rest + l2)
    gain = 1.0 / (c * vals + l2) - d_rest
    out_w = qw * d_rest + u @ (gain[:, None] * (u.T @ qw))
    return torch.cat([out_w.reshape(-1), q[nw:] / c])


def fitted_scale(
    s: torch.Tensor, sy: float, spectrum: tuple[torch.Tensor, torch.Tensor, float], l2: float, k: int, c: float
) -> float:
    """c of `spectral_h0` such that the model's curvature along the step s matches the pair's:
    s.y = s^T (c M + l2 P) s, clipped to (0, 1/2] (1/2: Boehning's bound on a softmax variance); the
    current c where the pair says nothing (no positive data curvature)."""
    u, vals, rest = spectrum
    nw = u.shape[0] * k
    sw, sb = s[:nw].view(-1, k), s[nw:]
    proj = (u.T @ sw).pow_(2)  # working dtype; the sums below accumulate in float64
    f64 = torch.float64
    total, top = float(sw.pow(2).sum(dtype=f64)), float(proj.sum(dtype=f64))
    model = float((vals[:, None] * proj).sum(dtype=f64)) + rest * (total - top) + float(sb.pow(2).sum(dtype=f64))
    data = sy - l2 * total
    if data > 0 and model > 0:
        return min(max(data / model, 1e-8), 0.5)
    return c


def mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column mean and standard deviation (ddof=0, as StandardScaler) of x (N, p), accumulated in float64,
    in x's dtype out. On the CPU through numpy in blocks of rows: no (N, p) float64 temporary, whose
    allocation alone costs more than torch's or numpy's whole reduction saves."""
    if x.device.type != "cpu":
        return x.mean(0), x.std(0, correction=0)
    arr = x.numpy()
    mean = arr.mean(0, dtype=np.float64)
    centre = mean.astype(arr.dtype)
    total = np.zeros_like(mean)
    for start in range(0, len(arr), 1024):
        block = arr[start : start + 1024] - centre
        total += np.einsum("ij,ij->j", block, block, dtype=np.float64)
    std = np.sqrt(total / len(arr))
    return torch.from_numpy(mean).to(x.dtype), torch.from_numpy(std).to(x.dtype)


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b; on the CPU through numpy's BLAS, which runs these tall-skinny products ~1.5x faster than
    torch's MKL on the AMD cores we measured (scripts/bench_probe.py prints both)."""
    if a.device.type != "cpu":
        return a @ b
    return torch.from_numpy(a.numpy() @ b.numpy())
