"""Streaming sufficient statistics of a labelled feature set.

Every collapse metric of the paper is a function of five quantities, all sums over samples, so they
are accumulated batch by batch, merged by addition and all-reduced across processes:

    counts      (K,)    n_k, samples per class
    sums        (K, p)  sum_{i in k} (h_i - c)            class sums of shifted features
    second      (p, p)  sum_i (h_i - c)(h_i - c)^T         one second-moment matrix
    sq_norms    (K,)    sum_{i in k} ||h_i - c||^2
    unit_sums   (K, p)  sum_{i in k} h_i / ||h_i||         for the cosine metrics (no shift)
    quartic     ()      sum_i ||h_i - c||^4                 for the Ledoit-Wolf shrinkage
    cubic       (p,)    sum_i ||h_i - c||^2 (h_i - c)       (metrics/shrinkage.py)

`c` is a shift (the first batch's mean). Features from a network often share a large common
offset; subtracting it before the float32 products keeps them accurate, and every metric is
shift-invariant (the cosine sums use the raw features, where the shift would change the angles).
State is float64 torch tensors on the device of the first batch, so CUDA features stay on the GPU.
This module accumulates (update, merge, all_reduce); what the metrics read from the sums (class means,
covariances, the eigh of Sigma_T) is in metrics/covariances.py, the base class ClassStats extends.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from zoo_rank._validation import ZooRankError, check_features, label_vector
from zoo_rank.metrics.covariances import STATE, ClassCovariances, fourth_moments

# Rows per product: bounds the scratch memory (one block of x - c of this many bytes); longer blocks run
# the Gram faster (50,000 x 2,048: 1.19 s in 16,384-row blocks, 1.23 s in 8,192, 1.12 s whole). Block
# length does not move the float32 rounding: Sigma_T is off by ~4e-7 relative for 4,096 to 32,768 rows.
_CHUNK_BYTES = 128 * 2**20
_MIN_CHUNK = 4096
# A zero feature vector has no direction: it contributes nothing to the cosine sums.
_NORM_EPS = 1e-12


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    arr = np.asarray(x)
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(np.ascontiguousarray(arr))


@dataclass(eq=False)
class ClassStats(ClassCovariances):
    """Class counts, class sums and one second-moment matrix of a feature set, in float64.

    >>> stats = ClassStats(dim=2048)
    >>> for x, y in loader:               # x (B, p) numpy or torch, any device; y (B,) labels
    ...     stats.update(x, y)
    >>> vci(stats)

    Labels are any hashable values; `classes` keeps them in order of first appearance and
    `counts[k]`, `sums[k]` belong to `classes[k]`. `a + b` (or `a.merge(b)`) is the statistics of
    the union of both sets. Batched updates equal one update with everything.
    """

    dim: int
    classes: list[Hashable] = field(default_factory=list)
    shift: torch.Tensor | None = None
    counts: torch.Tensor | None = None
    sums: torch.Tensor | None = None
    second: torch.Tensor | None = None
    sq_norms: torch.Tensor | None = None
    unit_sums: torch.Tensor | None = None
    quartic: torch.Tensor | None = None
    cubic: torch.Tensor | None = None
    #: True once any batch was multiplied in float64 only; float32 products make metrics use a looser cut-off.
    exact: bool = True
    _index: dict[Hashable, int] = field(default_factory=dict, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # ---- construction --------------------------------------------------------------------------

    @classmethod
    def from_arrays(cls, features: Any, labels: Any) -> ClassStats:
        """Statistics of a whole (N, p) feature matrix with its (N,) labels."""
        check_features(features)
        stats = cls(dim=int(features.shape[1]))
        return stats._add(_as_tensor(features), labels)

    @property
    def device(self) -> torch.device:
        return self.second.device if self.second is not None else torch.device("cpu")

    @property
    def n_samples(self) -> int:
        return int(self.counts.sum()) if self.counts is not None else 0

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def _init_state(self, device: torch.device, shift: torch.Tensor) -> None:
        f64 = dict(dtype=torch.float64, device=device)
        p = self.dim
        self.shift = shift.to(**f64)
        self.counts = torch.zeros(0, **f64)
        self.sums = torch.zeros(0, p, **f64)
        self.second = torch.zeros(p, p, **f64)
        self.sq_norms = torch.zeros(0, **f64)
        self.unit_sums = torch.zeros(0, p, **f64)
        self.quartic = torch.zeros((), **f64)
        self.cubic = torch.zeros(p, **f64)

    def _codes(self, labels: Any, n: int, device: torch.device) -> torch.Tensor:
        """Map a batch of labels to row indices, growing the class tables for unseen labels."""
        values = label_vector(labels, n)
        uniques, inverse = np.unique(values, return_inverse=True) if values.dtype != object else (None, None)
        if uniques is None:
            codes = np.fromiter((self._row(v) for v in values.tolist()), dtype=np.int64, count=n)
        else:
            rows = np.array([self._row(v) for v in uniques.tolist()], dtype=np.int64)
            codes = rows[inverse.reshape(-1)]
        grow = len(self.classes) - self.counts.shape[0]
        if grow:
            z = dict(dtype=torch.float64, device=self.device)
            self.counts = torch.cat([self.counts, torch.zeros(grow, **z)])
            self.sq_norms = torch.cat([self.sq_norms, torch.zeros(grow, **z)])
            self.sums = torch.cat([self.sums, torch.zeros(grow, self.dim, **z)])
            self.unit_sums = torch.cat([self.unit_sums, torch.zeros(grow, self.dim, **z)])
        return torch.from_numpy(codes).to(device)

    def _row(self, label: Hashable) -> int:
        row = self._index.get(label)
        if row is None:
            row = self._index[label] = len(self.classes)
            self.classes.append(label)
        return row

    # ---- accumulation --------------------------------------------------------------------------

    def update(self, features: Any, labels: Any) -> ClassStats:
        """Add a batch: features (B, p) numpy or torch on any device, labels (B,) any hashables."""
        check_features(features)
        return self._add(_as_tensor(features), labels)

    def _add(self, x: torch.Tensor, labels: Any) -> ClassStats:
        """`update` on features already checked (finite, 2D) and made a tensor."""
        if x.shape[1] != self.dim:
            raise ZooRankError(
                f"features have {x.shape[1]} columns but these statistics were started with dim={self.dim}; "
                "feed features of one model (one width) into one ClassStats."
            )
        # Products in float64 for float64 input, float32 otherwise (bf16/fp16 features are upcast).
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        if self.second is None:
            # Any shift is exact; near the mean is what keeps the float32 products accurate.
            self._init_state(x.device, x[:_MIN_CHUNK].to(compute).mean(dim=0))
        elif x.device != self.device:
            x = x.to(self.device)
        self.exact = self.exact and compute == torch.float64
        codes = self._codes(labels, x.shape[0], self.device)
        shift = self.shift.to(compute)
        n_classes = len(self.classes)
        # Scratch reused by every chunk: a fresh block-sized array per step costs more in page faults than the
        # arithmetic it holds (measured: 47 ms to allocate x - c vs 5 ms into a warm buffer), and adding
        # float32 into float64 in place takes torch's slow mixed-dtype path (11 ms for p = 2048 vs 3 ms as
        # a copy into a float64 buffer plus a same-dtype add).
        chunk = max(_MIN_CHUNK, _CHUNK_BYTES // (torch.finfo(compute).bits // 8 * self.dim))
        rows = min(chunk, x.shape[0])
        z_buf = x.new_empty((rows, self.dim), dtype=compute)
        class_buf = x.new_empty((n_classes, self.dim), dtype=compute)
        f64 = dict(dtype=torch.float64, device=self.device)
        gram_buf = torch.empty(self.dim, self.dim, **f64) if compute != torch.float64 else None
        class_buf64 = torch.empty(n_classes, self.dim, **f64) if compute != torch.float64 else None

        def accumulate(total: torch.Tensor, part: torch.Tensor, buf: torch.Tensor | None) -> None:
            total.add_(part if buf is None else buf.copy_(part))

        for start in range(0, x.shape[0], chunk):
            xb = x[start : start + chunk].to(compute)
            cb = codes[start : start + chunk]
            zb = torch.sub(xb, shift, out=z_buf[: len(xb)])
            accumulate(self.second, _gram(zb), gram_buf)
            # Per-chunk sums in the compute dtype (one chunk is short enough for float32), then float64.
            accumulate(self.sums, class_buf.zero_().index_add_(0, cb, zb), class_buf64)
            sq = torch.linalg.vector_norm(zb, dim=1).square_()
            self.sq_norms += sq.new_zeros(n_classes).index_add_(0, cb, sq).to(torch.float64)
            # Ledoit-Wolf's fourth moment, about the shift: one (B,) x (B, p) product, O(Bp) next to the Gram.
            sq64 = sq.to(torch.float64)
            self.quartic += sq64.dot(sq64)
            self.cubic += (sq @ zb).to(torch.float64)
            self.counts += torch.bincount(cb, minlength=n_classes).to(torch.float64)
            inv_norm = torch.linalg.vector_norm(xb, dim=1).clamp_min_(_NORM_EPS).reciprocal_()
            unit_sums = _weighted_class_sums(xb, cb, inv_norm, n_classes, class_buf)
            accumulate(self.unit_sums, unit_sums, class_buf64)
        self._cache.clear()
        self._check_overflow(x, compute)
        return self

    def _check_overflow(self, x: torch.Tensor, compute: torch.dtype) -> None:
        """Finite input can still overflow its own products (|h|^2 summed over N rows): say so, once."""
        if torch.isfinite(self.second).all() and torch.isfinite(self.quartic):
            return
        largest = float(x.abs().max())
        raise ZooRankError(
            f"feature values up to {largest:.3g} overflow the {str(compute).removeprefix('torch.')} products of the "
            "covariance or its fourth moment (sums of squares over rows became inf); divide the features by a "
            "constant first (every covariance-based metric is invariant to scaling)."
        )

    def _reshifted(self, shift: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(sums, second, sq_norms, quartic, cubic) as if accumulated around `shift` instead of `self.shift`."""
        delta = self.shift - shift  # z' = z + delta
        total = self.sums.sum(dim=0)
        second = self.second + torch.outer(delta, total) + torch.outer(total, delta)
        second += self.n_samples * torch.outer(delta, delta)
        sums = self.sums + self.counts[:, None] * delta
        sq_norms = self.sq_norms + 2 * self.sums @ delta + self.counts * delta.dot(delta)
        quartic, cubic = fourth_moments(self, -delta)
        return sums, second, sq_norms, quartic, cubic

    def merge(self, other: ClassStats) -> ClassStats:
        """A new ClassStats of the union of both sets (neither input is changed)."""
        if other.dim != self.dim:
            raise ZooRankError(
                f"cannot merge statistics of width {other.dim} into width {self.dim}; merge one model's features only."
            )
        if other.second is None:
            return self._copy()
        if self.second is None:
            return other._copy()
        out = self._copy()
        sums, second, sq_norms, quartic, cubic = other._to(out.device)._reshifted(out.shift)
        rows = torch.tensor([out._row(c) for c in other.classes], dtype=torch.long, device=out.device)
        out._codes(np.zeros(0), 0, out.device)  # grow tables for classes new to `out`
        out.second += second
        out.counts.index_add_(0, rows, other.counts.to(out.device))
        out.sums.index_add_(0, rows, sums)
        out.sq_norms.index_add_(0, rows, sq_norms)
        out.unit_sums.index_add_(0, rows, other.unit_sums.to(out.device))
        out.quartic += quartic
        out.cubic += cubic
        out.exact = self.exact and other.exact
        return out

    __add__ = merge

    def _to(self, device: torch.device) -> ClassStats:
        if self.second is None or self.device == device:
            return self
        out = self._copy()
        for name in STATE:
            setattr(out, name, getattr(out, name).to(device))
        return out

    def _copy(self) -> ClassStats:
        out = ClassStats(dim=self.dim, classes=list(self.classes), exact=self.exact)
        out._index = dict(self._index)
        for name in STATE:
            value = getattr(self, name)
            setattr(out, name, None if value is None else value.clone())
        return out

    def all_reduce(self, group: Any = None) -> ClassStats:
        """Sum the statistics of every process of `torch.distributed` in place; every rank gets the total.

        Ranks may have seen different labels: the label sets are gathered first and every rank
        re-indexes to their sorted union, and all re-shift to one common shift before summing.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return self
        gathered: list[Any] = [None] * dist.get_world_size(group)
        local_shift = None if self.shift is None else self.shift.cpu().numpy()
        dist.all_gather_object(gathered, (list(self.classes), local_shift, self.exact), group=group)
        union = sorted({c for classes, _, _ in gathered for c in classes}, key=_sort_key)
        shifts = [s for _, s, _ in gathered if s is not None]
        if not shifts:
            return self
        backend_device = (
            torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend(group) == "nccl"
            else torch.device("cpu")
        )
        device = self.device if self.second is not None else backend_device
        common = torch.from_numpy(np.mean(shifts, axis=0)).to(device=device, dtype=torch.float64)
        position = {c: i for i, c in enumerate(union)}
        K, p = len(union), self.dim
        z = dict(dtype=torch.float64, device=device)
        counts, sq_norms = torch.zeros(K, **z), torch.zeros(K, **z)
        sums, unit_sums, second = torch.zeros(K, p, **z), torch.zeros(K, p, **z), torch.zeros(p, p, **z)
        quartic, cubic = torch.zeros((), **z), torch.zeros(p, **z)
        if self.second is not None:
            local = self._to(device)
            my_sums, my_second, my_sq, my_quartic, my_cubic = local._reshifted(common)
            rows = torch.tensor([position[c] for c in self.classes], dtype=torch.long, device=device)
            counts.index_add_(0, rows, local.counts)
            sums.index_add_(0, rows, my_sums)
            sq_norms.index_add_(0, rows, my_sq)
            unit_sums.index_add_(0, rows, local.unit_sums)
            second += my_second
            quartic += my_quartic
            cubic += my_cubic
        comm = backend_device
        for tensor in (counts, sums, second, sq_norms, unit_sums, quartic, cubic):
            moved = tensor.to(comm)
            dist.all_reduce(moved, group=group)
            tensor.copy_(moved.to(device))
        self.classes = list(union)
        self._index = position
        self.shift, self.counts, self.sums, self.second = common, counts, sums, second
        self.sq_norms, self.unit_sums = sq_norms, unit_sums
        self.quartic, self.cubic = quartic, cubic
        self.exact = all(e for _, _, e in gathered)
        self._cache.clear()
        return self


def _weighted_class_sums(
    x: torch.Tensor, codes: torch.Tensor, weights: torch.Tensor, n_classes: int, scratch: torch.Tensor
) -> torch.Tensor:
    """(K, p) rows sum_{i: codes_i = k} weights_i x_i, for x (B, p), codes (B,), weights (B,)."""
    if x.device.type != "cpu":
        return scratch.zero_().index_add_(0, codes, x * weights[:, None])
    # On the CPU one sparse (K, B) x dense (B, p) product: no scaled copy of x (a 128 MB pass) and
    # threaded, where index_add_ runs on one core (13 ms against 35 ms for the scaled copy plus
    # index_add_, 16,384 x 2,048 on 2 threads).
    rows = torch.stack([codes, torch.arange(len(x))])
    onehot = torch.sparse_coo_tensor(rows, weights, size=(n_classes, len(x)), check_invariants=False)
    return torch.sparse.mm(onehot, x)


def _gram(z: torch.Tensor) -> torch.Tensor:
    """z^T z. On the CPU through numpy, whose matmul recognises the transposed self-product and
    calls BLAS syrk (half the flops of a general product)."""
    if z.device.type == "cpu":
        zn = z.numpy()
        with np.errstate(over="ignore"):  # ClassStats._check_overflow reports it, in one line
            return torch.from_numpy(zn.T @ zn)
    return z.T @ z


def _sort_key(value: Any) -> tuple[str, Any]:
    # Labels of mixed types still get one deterministic order on every rank.
    return (
        type(value).__name__,
        value if isinstance(value, (int, float, str, np.integer, np.floating)) else repr(value),
    )


def stats_of(features: Any, labels: Any | None = None) -> ClassStats:
    """`features` if it is a ClassStats already, else the statistics of (features, labels)."""
    if isinstance(features, ClassStats):
        if labels is not None:
            raise ZooRankError(
                "got ClassStats and labels; pass either a ClassStats alone or (features, labels)."
            )
        return features
    if labels is None:
        raise ZooRankError("got features without labels; pass (features, labels) or a ClassStats.")
    return ClassStats.from_arrays(features, labels)


def pooled(stats: Sequence[ClassStats]) -> ClassStats:
    """The merge of several ClassStats (e.g. one per shard)."""
    if not stats:
        raise ZooRankError("nothing to merge: got an empty list of ClassStats.")
    total = stats[0]
    for s in stats[1:]:
        total = total + s
    return total
