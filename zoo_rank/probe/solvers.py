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
- Matrix products run in the working dtype (float32 on big designs) through numpy's BLAS on the CPU
  (`zoo_rank.probe._linalg`); the path (W, b), its logits X W + b, loss, softmax and line-search
  decisions in float64, where the tiny loss changes of a near-converged fit are still resolved.
- The logits are kept along the path: a step d costs one product X d and one gradient product, and any
  point along X d is free. So the line search (unit step first, backtracking on the Armijo condition
  only: the objective is strictly convex for l2 > 0, so every pair has s.y > 0 without a curvature
  test) never needs another product, and neither do the two combinations below.
- Each L-BFGS direction is combined with the previous step (whose X s is known) by minimising the exact
  second-order model of J in their span: a 2 x 2 system from the softmax at theta (`subspace_step`).
- The first step at a new l2 is a prediction without a forward product: the same model in the span of
  the path's last three moves between solutions (their X-images are differences of kept logits), then
  one gradient product to check the stopping test. Where the solution moves smoothly with log(l2) (the
  plateau of strong penalties, the weak tail) that one product is often the whole fit; a prediction the
  line search rejects falls back to the L-BFGS step.
- The kept logits drift by the rounding of each float32 X d: a combination may not amplify it more than
  `MAX_AMPLIFICATION` times (cancelling directions), and every `REFRESH_EVERY` fits that moved the logits
  are recomputed with one product. Measured on the benchmark: at most 1e-3 on logits up to ~20 before a
  refresh, which moves the gradient by ~1e-6, far below `tol`.
- Preconditioned: the two-loop recursion starts from (c S (x) I + l2 I)^-1 instead of a multiple of the
  identity, with S = X^T X / N known through its top 128 eigenpairs (the Gram matrix of `SPECTRUM_ROWS`
  random rows) and c fitted to each new pair. The penalty enters this H0 exactly (it is the same
  quadratic at every l2), so the memory still carries over; the stopping test is untouched. `curvature`,
  a threshold of the protocol, is refined on all rows.

On the benchmark (N = 8,000 fit rows, p = 2,048, K = 37, tol 1e-4) the preconditioner took the path from
175 to ~100 iterations of two products each; the kept logits, predictions and subspace steps took the
whole probe (selection and refit) from 192 products to 130: 87 gradient and 43 forward products.

This is our own L-BFGS (two-loop recursion, about 60 lines) rather than torch.optim.LBFGS or scipy's
L-BFGS-B because neither lets a caller carry the curvature memory from one objective to the next through
public API; without it each of the 97 fits restarts its curvature model (scipy's restart also takes a
first step of norm 1, far off the scale of a warm start).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from zoo_rank.probe._linalg import (
    fitted_scale,
    spectral_h0,
    subspace_step,
    top_eigenpairs,
    top_eigenvalue,
)
from zoo_rank.probe._linalg import matmul as _matmul
from zoo_rank.probe._linalg import mean_std as _mean_std

__all__ = ["LogisticPath"]
#: Rows of the Gram matrix behind the preconditioner, a fixed random subset where N is over twice that
#: (a quarter of the benchmark's; 1,000 took as many iterations, 4,000 no fewer). All rows cost 0.3 s there.
SPECTRUM_ROWS = 2000
#: Largest sum_j |a_j| ||X d_j|| / ||X d|| a subspace step may have: each X d_j carries the rounding of a
#: float32 product, which a cancelling combination would amplify into the logits kept along the path.
MAX_AMPLIFICATION = 10.0
#: Fits that moved between two exact recomputations of the logits (one product): bounds their drift.
REFRESH_EVERY = 16


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
        self.n_evals = 0  # gradient products (one per iteration; forward products not counted), all fits
        self._pairs: list[tuple[torch.Tensor, torch.Tensor, float]] = []  # (s, y, 1 / s.y)
        self._grad_data: torch.Tensor | None = None  # data-term gradient at theta (flat)
        self._loss_data = math.nan
        self.rank = rank
        self._spectrum: tuple[torch.Tensor, torch.Tensor, float] | None = None
        self._scale_c = 1.0 / n_classes  # softmax variance at uniform probabilities: the first guess
        self._curvature: float | None = None
        self._sampled = False  # whether `spectrum` came from a subset of the rows
        self.g0 = self.hg0 = None
        # The path in float64 with its logits (N, K) and softmax: each step moves the logits by its X d,
        # so a prediction from the path's moves (`_moves`: the last three changes between solutions,
        # from `_anchor`, the last solution) and a backtracking line search cost no product. Directions
        # travel as (d (flat, float64), X d (N, K) in the working dtype, ||X d||); `_last_step` is one.
        self._theta64 = self.theta.to(torch.float64, copy=True)
        self._logits: torch.Tensor | None = None
        self._prob: torch.Tensor | None = None
        self._moves: list[tuple[torch.Tensor, torch.Tensor, float]] = []
        self._anchor: tuple[torch.Tensor, torch.Tensor] | None = None
        self._last_step: tuple[torch.Tensor, torch.Tensor, float] | None = None
        self._moved = 0  # fits that moved since the logits were last computed from scratch

    # ---- the plateau of strong penalties ----------------------------------------------------------

    @property
    def curvature(self) -> float:
        """(1/2) lambda_max(X^T X / N): Boehning's bound on the data term's Hessian, in the penalty's units.

        For l2 well above it the penalty dominates the curvature: W ~ (gradient at W = 0) / l2 only
        shrinks, and no prediction changes as l2 moves. Read off the top of `spectrum`.
        """
        if self._curvature is None:
            u, vals, _ = self.spectrum
            top = float(vals.max())
            if self._sampled:  # refined on all rows: `curvature` is a threshold of the protocol
                top = top_eigenvalue(self.x, u)
            self._curvature = 0.5 * top
        return self._curvature

    @property
    def spectrum(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(U (p, r), eigenvalues (r,), mean of the other p - r) of S = X^T X / N: its top-r eigenpairs.

        From `top_eigenpairs` (the Gram matrix of `SPECTRUM_ROWS` random rows where N is over twice that,
        subspace iteration). Feeds `curvature` and the preconditioner (`spectral_h0`).
        """
        if self._spectrum is None:
            vecs, vals, rest, self._sampled = top_eigenpairs(self.x, self.rank, rows=SPECTRUM_ROWS)
            self._spectrum = (vecs, vals, rest)
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
            # the products in the layouts of `_evaluate` (X^T R as (R^T X)^T, X G as (G^T X^T)^T): faster here
            self.g0 = -_matmul(residual.T, self.x).T / n
            jac = torch.diag(p) - torch.outer(p, p)
            self.hg0 = _matmul((_matmul(self.g0.T, self.xt).T @ jac).T, self.x).T / n
        self.W.copy_(self.g0 / l2 - self.hg0 / (l2 * l2))
        self.l2 = l2
        self._grad_data = None  # a jump, not a step: the next fit re-evaluates and starts a fresh memory
        self._pairs.clear()
        self._moves, self._anchor = [], None

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
        """(mean cross-entropy, its gradient (flat, like theta)) at theta: one pass over X (two products).
        Also makes theta's logits and probabilities the ones steps start from."""
        p = self.x.shape[1]
        W, b = theta[: p * self.n_classes].view(p, self.n_classes), theta[p * self.n_classes :]
        self._logits = self._forward(W, b).double()
        loss, self._prob = self._loss(self._logits)
        return loss, self._gradient(self._prob)

    def _forward(self, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """X W + b (N, K) in the working dtype: one product (W^T X^T: ~20% faster than X W through OpenBLAS
        here)."""
        return _matmul(W.T, self.xt).T.contiguous().add_(b)  # row-major: the softmax runs along rows

    def _loss(self, logits: torch.Tensor) -> tuple[float, torch.Tensor]:
        """(mean cross-entropy, softmax (N, K)) of logits (N, K), float64: no product."""
        picked = logits[self.rows, self.y]
        top = logits.amax(1, keepdim=True)
        # in place from here: every (n, K) temporary costs as much as the softmax
        prob = logits.sub(top).exp_()
        total = prob.sum(1, keepdim=True)
        loss = float((total.log() + top).squeeze(1).sub_(picked).mean())
        return loss, prob.div_(total)

    def _gradient(self, prob: torch.Tensor) -> torch.Tensor:
        """The data term's gradient (flat, like theta) from softmax prob (N, K): one product."""
        n = len(self.y)
        self.n_evals += 1
        residual = prob.clone()
        residual[self.rows, self.y] -= 1.0
        residual = residual.mul_(1.0 / n).to(self.x.dtype)
        # (R^T X)^T rather than X^T R: the same numbers, ~10% faster through OpenBLAS on these shapes.
        return torch.cat([_matmul(residual.T, self.x).T.reshape(-1), residual.sum(0)])

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
        r = spectral_h0(q, self.spectrum, self._scale_c, self.l2, self.n_classes)
        for (s, y, rho), alpha in zip(self._pairs, reversed(alphas), strict=True):
            beta = rho * float(y.dot(r))
            r.add_(s, alpha=alpha - beta)
        return r.neg_()

    def _combine(self, g: torch.Tensor, dirs: list) -> tuple[torch.Tensor, torch.Tensor]:
        """`subspace_step` at theta: the best combination of dirs, newest first, with its X-image."""
        return subspace_step(g, dirs, self._prob, self.l2, self.W.numel(), MAX_AMPLIFICATION)

    def _refresh_logits(self) -> None:
        """Recompute theta's logits with one product. Steps update them by X d, exact up to a float32
        product's rounding, which the path's moves carry on into later predictions; the moves (differences)
        keep predicting."""
        self._moved = 0
        self._logits = self._forward(self.W, self.b).double()
        self._theta64 = self.theta.to(torch.float64, copy=True)
        self._anchor = (self._theta64.clone(), self._logits)
        self._loss_data, self._prob = self._loss(self._logits)

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

    def _line_search(
        self, f: float, g: torch.Tensor, d: torch.Tensor, xd: torch.Tensor
    ) -> tuple[float, tuple | None]:
        """(step, (logits, loss, softmax, J) there) along d (float64, flat) with X-image xd (N, K) from
        theta (objective f, gradient g): the unit step first, then backtracking on the Armijo condition
        only (J is strictly convex for l2 > 0); (step, None) when no step of 30 decreases J."""
        nw = self.W.numel()
        gd = float(g.double().dot(d.double()))
        wd = d[:nw].double()
        w = self._theta64[:nw]
        ww, wdw, dd = float(w.dot(w)), float(w.dot(wd)), float(wd.dot(wd))
        step = 1.0
        for _ in range(30):  # backtracking moves along X d: no product
            logits_t = self._logits + step * xd
            loss_t, prob_t = self._loss(logits_t)
            f_t = loss_t + 0.5 * self.l2 * (ww + 2 * step * wdw + step * step * dd)
            if f_t <= f + 1e-4 * step * gd:
                return step, (logits_t, loss_t, prob_t, f_t)
            # Minimiser of the quadratic through f, its slope gd and f_t, kept within [0.1, 0.5] step.
            curv = f_t - f - gd * step
            guess = -gd * step * step / (2.0 * curv) if curv > 0 else 0.5 * step
            step = min(max(guess, 0.1 * step), 0.5 * step)
        return step, None

    def _accept(
        self, step: float, d: torch.Tensor, xd: torch.Tensor, accepted: tuple, g: torch.Tensor
    ) -> tuple[float, torch.Tensor]:
        """Move theta by step * d (X-image step * xd) to the line search's accepted point: one gradient
        product, a new curvature pair (and preconditioner scale); returns (J, full gradient) there."""
        theta = self.theta
        logits_t, loss_t, prob_t, f_t = accepted
        s64 = d * step
        self._theta64 += s64
        trial = self._theta64.to(theta.dtype, copy=True)
        s = trial - theta
        grad_t = self._gradient(prob_t)
        g_t = self._full_grad(grad_t, trial)
        y = g_t - g
        sy = float(s.double().dot(y.double()))
        if sy > 0:
            self._scale_c = fitted_scale(s, sy, self.spectrum, self.l2, self.n_classes, self._scale_c)
            self._pairs.append((s, y, 1.0 / sy))
            if len(self._pairs) > self.memory:
                self._pairs.pop(0)
        xs = xd * step
        self._last_step = (s64, xs, float(xs.norm()))
        theta.copy_(trial)
        self._logits, self._prob = logits_t, prob_t
        self._loss_data, self._grad_data = loss_t, grad_t
        return f_t, g_t

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
            self._theta64 = self.theta.to(torch.float64, copy=True)
            self._moves, self._anchor = [], (self._theta64.clone(), self._logits)
        else:
            self._move_penalty(l2)
            if self._moved >= REFRESH_EVERY:
                self._refresh_logits()
        theta = self.theta
        f = self._objective(self._loss_data, self._theta64)
        g = self._full_grad(self._grad_data, theta)
        done, predict = 0, bool(self._moves)
        nw, k = self.W.numel(), self.n_classes
        while done < self.max_iter and float(g.abs().max()) > self.tol:
            if predict:  # the new solution from the path's last three moves, whose logits are known
                d, xd = self._combine(g, self._moves[::-1])
            else:
                d = self._direction(g)
                if not float(g.double().dot(d.double())) < 0:  # rounding in the memory: restart it
                    self._pairs.clear()
                    d = self._direction(g)
                xd = self._forward(d[:nw].view(-1, k), d[nw:])
                d = d.double()
                if done:  # with the previous step, whose logits are known
                    d, xd = self._combine(g, [(d, xd, float(xd.norm())), self._last_step])
            step, accepted = self._line_search(f, g, d, xd)
            if accepted is None and predict:  # a poor prediction: take the L-BFGS step instead
                predict = False
                continue
            predict = False
            if accepted is None:
                break  # no decrease the float64 loss can resolve: as converged as this dtype allows
            f, g = self._accept(step, d, xd, accepted, g)
            done += 1
        if done:
            theta0, logits0 = self._anchor
            xm = (self._logits - logits0).to(self.x.dtype)
            self._moves = [*self._moves[-2:], (self._theta64 - theta0, xm, float(xm.norm()))]
            self._anchor = (self._theta64.clone(), self._logits)
            self._moved += 1
        self.n_iter += done
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
