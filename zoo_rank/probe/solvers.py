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
    N = 10,000, p = 2,048, K = 37 benchmark 50 took 175 iterations along the path where 20 took 295,
    and 100 or 200 were no faster).
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
    ):
        xt = torch.as_tensor(x, device=device).to(dtype)
        self.mean = xt.mean(0)
        scale = xt.std(0, correction=0)
        self.scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        self.x = ((xt - self.mean) / self.scale).contiguous()
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
        self._curvature: float | None = None
        self.g0 = self.hg0 = None

    # ---- the plateau of strong penalties ----------------------------------------------------------

    @property
    def curvature(self) -> float:
        """(1/2) lambda_max(X^T X / N): Boehning's bound on the data term's Hessian, in the penalty's units.

        For l2 well above it the penalty dominates the curvature: W ~ (gradient at W = 0) / l2 only
        shrinks, and no prediction changes as l2 moves. Subspace iteration on 8 fixed random vectors
        (10 rounds, then Rayleigh-Ritz): 20 passes over X, converged far past what a threshold needs.
        """
        if self._curvature is None:
            n, p = self.x.shape
            start = np.random.default_rng(0).normal(size=(p, min(8, p)))  # fixed: the same bound every run
            v = torch.as_tensor(start, device=self.x.device, dtype=self.x.dtype)
            for _ in range(10):
                v, _ = torch.linalg.qr(_matmul(self.x.T, _matmul(self.x, v)))
            xv = _matmul(self.x, v).double()
            ritz = torch.linalg.eigvalsh(xv.T @ xv / n)
            self._curvature = 0.5 * float(ritz.max())
        return self._curvature

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

    # ---- objective ---------------------------------------------------------------------------

    def _evaluate(self, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        """(mean cross-entropy, its gradient (flat, like theta)) at theta: one pass over X (two products)."""
        n, p = self.x.shape
        k = self.n_classes
        W, b = theta[: p * k].view(p, k), theta[p * k :]
        logits = _matmul(self.x, W).double() + b.double()
        lse = torch.logsumexp(logits, 1)
        loss = float((lse - logits[self.rows, self.y]).mean())
        prob = torch.exp(logits - lse[:, None])
        prob[self.rows, self.y] -= 1.0
        residual = (prob / n).to(self.x.dtype)
        grad = torch.cat([_matmul(self.x.T, residual).reshape(-1), residual.sum(0)])
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
        if self._pairs:  # H0 = gamma I, gamma = s.y / y.y of the newest pair (Nocedal & Wright, eq. 7.20)
            s, y, rho = self._pairs[-1]
            r = q / (rho * float(y.dot(y)))
        else:  # no curvature yet: a first step of at most unit L1 length, as torch's L-BFGS
            r = q * min(1.0, 1.0 / max(float(q.abs().sum()), 1e-30))
        for (s, y, rho), alpha in zip(self._pairs, reversed(alphas), strict=True):
            beta = rho * float(y.dot(r))
            r.add_(s, alpha=alpha - beta)
        return r.neg_()

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
        while done < self.max_iter and float(g.abs().max()) > self.tol:
            d = self._direction(g)
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
                self._pairs.append((s, y, 1.0 / sy))
                if len(self._pairs) > self.memory:
                    self._pairs.pop(0)
            theta.copy_(trial)
            self._loss_data, self._grad_data = loss_t, grad_t
            f, g = f_t, g_t
            done += 1
        self.n_iter += done
        return done

    # ---- use -------------------------------------------------------------------------------

    def standardise(self, x: np.ndarray) -> torch.Tensor:
        xt = torch.as_tensor(x, device=self.x.device).to(self.x.dtype)
        return (xt - self.mean) / self.scale

    def predict(self, xs: torch.Tensor) -> np.ndarray:
        """Class codes (M,) for standardised rows xs (M, p)."""
        return (_matmul(xs, self.W) + self.b).argmax(1).cpu().numpy()


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b; on the CPU through numpy's BLAS, which runs these tall-skinny products ~1.5x faster than
    torch's MKL on the AMD cores we measured (scripts/bench_probe.py prints both)."""
    if a.device.type != "cpu":
        return a @ b
    return torch.from_numpy(a.numpy() @ b.numpy())
