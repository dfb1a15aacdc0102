"""Multinomial logistic regression along an L2 path: L-BFGS whose state we own, warm-started exactly.

Objective (the per-sample convention of `zoo_rank.probe`): on standardised x (N, p), labels y (N,),

    J(W, b) = (1/N) * sum_i [logsumexp(x_i W + b) - (x_i W + b)_{y_i}] + (l2 / 2) * ||W||_F^2

for W (p, K), b (K,). `LogisticPath` solves it for a decreasing sequence of l2 values, each fit starting
where the previous one ended. What makes a step along the path cost a few passes over X:

- The L-BFGS memory carries over exactly. Two objectives on the path differ by (delta / 2) ||W||^2, a
  quadratic, so a stored pair (s, y) of the old objective becomes a pair of the new one with
  y_W += delta * s_W, and the gradient at the current point becomes g_W += delta * W: no pass over
  the data. When that corrected gradient is already below `tol` the fit is done without touching X
  (where scikit-learn and torch's L-BFGS stop after their first evaluation).
- Matrix products run in the working dtype (float32 on big designs) through numpy's BLAS on the CPU;
  loss, softmax and line-search decisions in float64, where the tiny loss changes of a near-converged
  fit are still resolved.
- The line search tries the unit L-BFGS step first and backtracks on the Armijo condition only: the
  objective is strictly convex (l2 > 0), so every pair has s.y > 0 without a curvature test, and
  nearly every step costs exactly one pass.
- Preconditioned: the two-loop recursion starts from (c S (x) I + l2 I)^-1 instead of a multiple of the
  identity, with S = X^T X / N known through its top 128 eigenpairs (one Gram product) and c fitted to
  each new pair. The penalty enters this H0 exactly (it is the same quadratic at every l2), so the
  memory still carries over; the stopping test is untouched. On the benchmark (N = 8,000 fit rows,
  p = 2,048, K = 37) this took the path from 175 to ~100 iterations.
- The first step at a new l2 extrapolates the path linearly in log(l2) where the previous value
  needed two or more iterations (the middle of the path, where W turns fastest).

This is our own L-BFGS (two-loop recursion, about 60 lines) rather than torch.optim.LBFGS or scipy's
L-BFGS-B because neither lets a caller carry the curvature memory from one objective to the next through
public API; without it each of the 97 fits restarts its curvature model (scipy's restart also takes a
first step of norm 1, far off the scale of a warm start).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["LogisticPath"]


class LogisticPath:
    """Multinomial logistic regression on one design, refit for each l2 from the previous solution.

    x (N, p) is standardised here with its own mean and scale (ddof=0, as StandardScaler; constant
    columns get scale 1); W (p, K) and b (K,) are plain tensors on `device` in `dtype`, updated in place
    by `fit`. `memory` curvature pairs are kept (50 pairs of (p K + K) floats: small next to X; on the
    N = 10,000, p = 2,048, K = 37 benchmark, without the preconditioner, 50 took 175 iterations along
    the path where 20 took 295, and 100 or 200 were no faster; with it 20 took 111, 50 and 100 ~100).
    `rank` eigenpairs of X^T X / N precondition it (`spectrum`; 32 took 172 iterations, 128 ~100,
    256 and 512 no fewer).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        n_classes: int,
        device: str,
        dtype: torch.dtype,
        *,
        tol: float,
        max_iter: int,
        memory: int = 50,
        rank: int = 128,
    ):
        xt = torch.as_tensor(x, device=device).to(dtype)
        self.mean, scale = _mean_std(xt)
        self.scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        self.x = (xt - self.mean).div_(self.scale)
        # X^T stored as well on the CPU: W^T X^T runs ~20% faster than X W through OpenBLAS on these shapes.
        self.xt = self.x.T.contiguous() if self.x.device.type == "cpu" else self.x.T
        self.y = torch.as_tensor(y, device=device, dtype=torch.long)
        n, p = self.x.shape
        self.n_classes = n_classes
        self.rows = torch.arange(n, device=device)
        # One flat parameter vector: the two-loop recursion works on (W, b) as a whole.
        self.theta = torch.zeros(p * n_classes + n_classes, device=device, dtype=dtype)
        self.W = self.theta[: p * n_classes].view(p, n_classes)
        self.b = self.theta[p * n_classes :]
        # The intercept's optimum for W = 0 (log class priors), centred: the loss is blind to a common
        # shift of b, and every gradient keeps sum(b) where it starts (scikit-learn's symmetric intercepts).
        counts = torch.bincount(self.y, minlength=n_classes).to(dtype).clamp_min(0.5)
        log_prior = counts.log()
        self.b.copy_(log_prior - log_prior.mean())
        self.tol, self.max_iter, self.memory = tol, max_iter, memory
        self.l2: float | None = None
        self.n_iter = 0  # L-BFGS iterations, all fits together
        self.n_evals = 0  # passes over X (loss + gradient), all fits together
        self._pairs: list[tuple[torch.Tensor, torch.Tensor, float]] = []  # (s, y, 1 / s.y)
        self._grad_data: torch.Tensor | None = None  # data-term gradient at theta (flat)
        self._loss_data = math.nan
        self.rank = rank
        self._spectrum: tuple[torch.Tensor, torch.Tensor, float] | None = None
        self._scale_c = 1.0 / n_classes  # softmax variance at uniform probabilities: the first guess
        self._curvature: float | None = None
        self.g0 = self.hg0 = None
        self._prev: torch.Tensor | None = None
        self._last_done = 0

    # ---- the plateau of strong penalties ----------------------------------------------------------

    @property
    def curvature(self) -> float:
        """(1/2) lambda_max(X^T X / N): Boehning's bound on the data term's Hessian, in the penalty's units.

        For l2 well above it the penalty dominates the curvature: W ~ (gradient at W = 0) / l2 only
        shrinks, and no prediction changes as l2 moves. Read off the top of `spectrum`.
        """
        if self._curvature is None:
            self._curvature = 0.5 * float(self.spectrum[1].max())
        return self._curvature

    @property
    def spectrum(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(U (p, r), eigenvalues (r,), mean of the other p - r) of S = X^T X / N: its top-r eigenpairs.

        One Gram matrix (p, p: a single large product, several times faster per flop than the thin
        products of an evaluation), then subspace iteration on it from fixed random vectors (6 rounds,
        Rayleigh-Ritz in float64: the top eigenvalues converge as (lambda_{r+8} / lambda_i)^12); below
        p <= r + 8 an exact eigendecomposition. Feeds `curvature` and the preconditioner of `_apply_h0`.
        """
        if self._spectrum is None:
            n, p = self.x.shape
            gram = (
                _matmul(self.x.T, self.x) / n
            )  # numpy sees X^T X: a symmetric rank-k update, half the flops  # working dtype: a preconditioner needs no more
            r = min(self.rank, p)
            if p <= r + 8:
                vals, vecs = torch.linalg.eigh(gram.double())
            else:
                start = np.random.default_rng(0).normal(size=(p, r + 8))  # fixed: the same answer every run
                v = torch.as_tensor(start, device=gram.device, dtype=gram.dtype)
                for _ in range(6):
                    v, _ = torch.linalg.qr(_matmul(gram, v))
                v = v.double()
                vals, rot = torch.linalg.eigh(v.T @ _matmul(gram, v.to(gram.dtype)).double())
                vecs = v @ rot
            vals, vecs = vals[-r:].clamp_min(0.0), vecs[:, -r:]
            rest = max(float(gram.diagonal().double().sum() - vals.sum()), 0.0) / max(p - r, 1)
            self._spectrum = (vecs.to(self.x.dtype).contiguous(), vals.to(self.x.dtype), rest)
        return self._spectrum

    def set_expansion(self, l2: float) -> None:
        """Set W to the second-order expansion of the solution at a strong penalty; no L-BFGS runs.

        At W = 0, b = log priors the data term has gradient -g0 and Hessian H (W block; its coupling to b
        vanishes as standardised features have zero mean, so b moves only at second order). The minimiser
        W = (l2 + H)^-1 g0 = g0 / l2 - H g0 / l2^2 + O(|H|^2 / l2^3): with ||H|| <= 2 * curvature the
        relative error is below (2 * curvature / l2)^2, i.e. 4% at l2 >= 10 * curvature. H g0 is exact and
        cheap: every row shares the softmax Jacobian J = diag(p) - p p^T, so H g0 = X^T (X g0) J / N.
        """
        if self.g0 is None:
            n = len(self.y)
            p = torch.softmax(self.b, 0)
            residual = p.expand(n, -1).clone()
            residual[self.rows, self.y] -= 1.0
            self.g0 = -(self.x.T @ residual) / n
            jac = torch.diag(p) - torch.outer(p, p)
            self.hg0 = self.x.T @ ((self.x @ self.g0) @ jac) / n
        self.W.copy_(self.g0 / l2 - self.hg0 / (l2 * l2))
        self.l2 = l2
        self._grad_data = None  # a jump, not a step: the next fit re-evaluates and starts a fresh memory
        self._pairs.clear()

    def start_from(self, other: LogisticPath, W: torch.Tensor, b: torch.Tensor) -> None:
        """Warm start on these rows from `other`'s (W, b), given in `other`'s standardisation: the same
        affine function of the raw features in this one. `other`'s spectrum preconditions this fit too
        (same features, nearly the same scaling); its curvature pairs belong to another objective and are
        not carried (measured: they save 3 of 8 passes but move where a loose `tol` stops)."""
        ratio = (self.scale / other.scale).unsqueeze(1)
        self.W.copy_(W * ratio)
        shifted = b + ((self.mean - other.mean) / other.scale) @ W
        self.b.copy_(shifted - shifted.mean())
        self._spectrum = other.spectrum

    # ---- objective ---------------------------------------------------------------------------

    def _evaluate(self, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        """(mean cross-entropy, its gradient (flat, like theta)) at theta: one pass over X (two products)."""
        n, p = self.x.shape
        k = self.n_classes
        W, b = theta[: p * k].view(p, k), theta[p * k :]
        logits = _matmul(W.T, self.xt).T.double().add_(b.double())  # (n, K), float64 from here: the loss
        picked = logits[self.rows, self.y]
        top = logits.amax(1, keepdim=True)
        prob = logits.sub_(top).exp_()  # in place: every (n, K) temporary costs as much as the softmax
        total = prob.sum(1, keepdim=True)
        loss = float((total.log() + top).squeeze(1).sub_(picked).mean())
        prob.div_(total)
        prob[self.rows, self.y] -= 1.0
        residual = prob.mul_(1.0 / n).to(self.x.dtype)
        # (R^T X)^T rather than X^T R: the same numbers, ~10% faster through OpenBLAS on these shapes.
        grad = torch.cat([_matmul(residual.T, self.x).T.reshape(-1), residual.sum(0)])
        self.n_evals += 1
        return loss, grad

    def _full_grad(self, grad_data: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        g = grad_data.clone()
        nw = self.W.numel()
        g[:nw].add_(theta[:nw], alpha=self.l2)
        return g

    def _objective(self, loss_data: float, theta: torch.Tensor) -> float:
        w = theta[: self.W.numel()].double()
        return loss_data + 0.5 * self.l2 * float(w.dot(w))

    # ---- L-BFGS ------------------------------------------------------------------------------

    def _direction(self, g: torch.Tensor) -> torch.Tensor:
        q = g.clone()
        alphas = []
        for s, y, rho in reversed(self._pairs):
            alpha = rho * float(s.dot(q))
            q.add_(y, alpha=-alpha)
            alphas.append(alpha)
        r = self._apply_h0(q)
        for (s, y, rho), alpha in zip(self._pairs, reversed(alphas), strict=True):
            beta = rho * float(y.dot(r))
            r.add_(s, alpha=alpha - beta)
        return r.neg_()

    def _apply_h0(self, q: torch.Tensor) -> torch.Tensor:
        """The initial inverse Hessian of the two-loop recursion: (c M + l2 P)^-1 q, where M = S (x) I_K on W
        and I_K on b (the data term's Hessian at softmax variance c, W and b decoupled as rows have zero
        mean), S from `spectrum` (top-r eigenpairs, the rest at their mean), P the penalty's mask, and c
        fitted to the newest pair (`_fit_scale`). Any positive definite H0 keeps L-BFGS convergent; this
        one takes the spread of S out of the condition number."""
        u, vals, rest = self.spectrum
        c, nw = self._scale_c, self.W.numel()
        qw = q[:nw].view(-1, self.n_classes)
        d_rest = 1.0 / (c * rest + self.l2)
        gain = 1.0 / (c * vals + self.l2) - d_rest
        out_w = qw * d_rest + u @ (gain[:, None] * (u.T @ qw))
        return torch.cat([out_w.reshape(-1), q[nw:] / c])

    def _fit_scale(self, s: torch.Tensor, sy: float) -> None:
        """Fit c of `_apply_h0` so that the model's curvature along s matches the pair's:
        s.y = s^T (c M + l2 P) s, clipped to (0, 1/2] (1/2: Boehning's bound on a softmax variance)."""
        u, vals, rest = self.spectrum
        nw = self.W.numel()
        sw, sb = s[:nw].view(-1, self.n_classes), s[nw:]
        proj = (u.T @ sw).pow_(2)  # working dtype; the sums below accumulate in float64
        f64 = torch.float64
        total, top = float(sw.pow(2).sum(dtype=f64)), float(proj.sum(dtype=f64))
        model = (
            float((vals[:, None] * proj).sum(dtype=f64))
            + rest * (total - top)
            + float(sb.pow(2).sum(dtype=f64))
        )
        data = sy - self.l2 * total
        if data > 0 and model > 0:
            self._scale_c = min(max(data / model, 1e-8), 0.5)

    def _first_direction(self, g: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        """The first step at a new l2. When the previous value needed two or more iterations (the middle of
        the path, where W turns fastest), extrapolate the path linearly in log(l2): from the last solution
        by the last solution's change (the grid is log-spaced; the line search still checks the step);
        elsewhere (and if that is no descent direction) the L-BFGS step, which one iteration suffices for."""
        if prev is not None and self._last_done >= 2:
            d = self.theta - prev
            if float(g.double().dot(d.double())) < 0:
                return d
        return self._direction(g)

    def _move_penalty(self, l2: float) -> None:
        """Carry gradient and memory from the previous l2 to this one: both change by a quadratic only."""
        delta = l2 - self.l2
        nw = self.W.numel()
        kept = []
        for s, y, _ in self._pairs:
            y[:nw].add_(s[:nw], alpha=delta)
            sy = float(s.dot(y))
            if sy > 0:  # always for a convex data term and l2 > 0; guards rounding
                kept.append((s, y, 1.0 / sy))
        self._pairs = kept
        self.l2 = l2

    def fit(self, l2: float) -> int:
        """Minimise J at `l2` from the current (W, b) and memory; return the number of iterations run.

        Stops when max |gradient| <= `tol` (the test of torch's L-BFGS and scikit-learn's lbfgs), after
        `max_iter` iterations, or when the line search cannot decrease J any more (rounding).
        """
        if self._grad_data is None:
            if self.g0 is not None:  # after expansions at stronger values: start from the one at this l2
                self.set_expansion(l2)
            self.l2 = l2
            self._loss_data, self._grad_data = self._evaluate(self.theta)
        else:
            self._move_penalty(l2)
        theta = self.theta
        f = self._objective(self._loss_data, theta)
        g = self._full_grad(self._grad_data, theta)
        done = 0
        prev, self._prev = self._prev, theta.clone()
        while done < self.max_iter and float(g.abs().max()) > self.tol:
            d = self._first_direction(g, prev) if done == 0 else self._direction(g)
            gd = float(g.double().dot(d.double()))
            if not gd < 0:  # not a descent direction (rounding in the memory): restart the memory
                self._pairs.clear()
                d = self._direction(g)
                gd = float(g.double().dot(d.double()))
            step, accepted = 1.0, None
            for _ in range(30):
                trial = theta + step * d
                loss_t, grad_t = self._evaluate(trial)
                f_t = self._objective(loss_t, trial)
                if f_t <= f + 1e-4 * step * gd:
                    accepted = (trial, loss_t, grad_t, f_t)
                    break
                # Minimiser of the quadratic through f, its slope gd and f_t, kept within [0.1, 0.5] step.
                curv = f_t - f - gd * step
                guess = -gd * step * step / (2.0 * curv) if curv > 0 else 0.5 * step
                step = min(max(guess, 0.1 * step), 0.5 * step)
            if accepted is None:
                break  # no decrease the float64 loss can resolve: as converged as this dtype allows
            trial, loss_t, grad_t, f_t = accepted
            g_t = self._full_grad(grad_t, trial)
            s, y = trial - theta, g_t - g
            sy = float(s.double().dot(y.double()))
            if sy > 0:
                self._fit_scale(s, sy)
                self._pairs.append((s, y, 1.0 / sy))
                if len(self._pairs) > self.memory:
                    self._pairs.pop(0)
            theta.copy_(trial)
            self._loss_data, self._grad_data = loss_t, grad_t
            f, g = f_t, g_t
            done += 1
        self.n_iter += done
        self._last_done = done
        return done

    # ---- use -------------------------------------------------------------------------------

    def standardise(self, x: np.ndarray, *, column_major: bool = False) -> torch.Tensor:
        """Rows x (M, p) in this path's standardisation; `column_major` for rows predicted many times."""
        xs = (torch.as_tensor(x, device=self.x.device).to(self.x.dtype) - self.mean).div_(self.scale)
        return xs.T.contiguous().T if column_major else xs

    def predict(self, xs: torch.Tensor) -> np.ndarray:
        """Class codes (M,) for standardised rows xs (M, p); rows stored column-major (xs.T contiguous, as
        `standardise(x, column_major=True)` gives) take the faster W^T X^T product on the CPU."""
        logits = _matmul(self.W.T, xs.T).T if xs.T.is_contiguous() else _matmul(xs, self.W)
        return (logits + self.b).argmax(1).cpu().numpy()


def _mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b; on the CPU through numpy's BLAS, which runs these tall-skinny products ~1.5x faster than
    torch's MKL on the AMD cores we measured (scripts/bench_probe.py prints both)."""
    if a.device.type != "cpu":
        return a @ b
    return torch.from_numpy(a.numpy() @ b.numpy())
