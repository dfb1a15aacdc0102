"""Linear probes on frozen features (solvers only: arrays in, `ProbeResult` out): the ground truth that
transferability scores are judged against.

Protocol (Kornblith et al., 2019, as used by Xu & Liu, ICML 2023): multinomial logistic regression on
frozen features, trained with full-batch L-BFGS; the L2 strength chosen from 97 log-spaced values in
[1e-6, 1e6] on a validation set (a fixed, seeded, stratified split of train when the dataset has none);
refit on train + validation with the chosen value; report test top-1 and mean per-class accuracy.

How the L2 strength enters the loss (both probes, one convention)
----------------------------------------------------------------
Features are standardised with the statistics of the rows being fitted, then we minimise the
*per-sample* objective

    J(W, b) = (1/N) * sum_i loss(x_i W + b, y_i) + (l2 / 2) * ||W||_F^2         (bias not penalised)

with loss = softmax cross-entropy (`linear_probe`) or half the squared error to one-hot targets
(`ridge_probe`). Because the data term is a mean, `l2` means the same thing for 500 or 50,000 samples
and survives the refit on train + validation unchanged. The mappings to scikit-learn:

    LogisticRegression(C=1 / (l2 * N))        Ridge(alpha=l2 * N)

(scikit-learn minimises C * sum_i loss + ||W||^2 / 2 and sum_i ||r_i||^2 + alpha ||W||^2 respectively).
On standardised features the useful range of `l2` is about [1e-6, 1e1]: at 1e1 and above W is
essentially zero (the probe predicts the majority class), below 1e-6 it is unregularised. The default
grid therefore spends its upper half on near-trivial fits, which cost almost nothing with warm starts,
and early stopping skips the expensive weak end once validation accuracy has clearly peaked.

Modules: `split` (inputs checked and split once), `logistic` (`linear_probe`), `ridge` (`ridge_probe`,
`RidgePath`), `solvers` (`LogisticPath`, our L-BFGS), `result` (`ProbeResult`, `accuracies`).
"""

from zoo_rank.probe.logistic import linear_probe, sklearn_C
from zoo_rank.probe.result import PROBES, ProbeResult, accuracies
from zoo_rank.probe.ridge import RidgePath, ridge_probe
from zoo_rank.probe.solvers import LogisticPath
from zoo_rank.probe.split import DEFAULT_L2_GRID, strongest_first

__all__ = [
    "DEFAULT_L2_GRID",
    "PROBES",
    "LogisticPath",
    "ProbeResult",
    "RidgePath",
    "accuracies",
    "linear_probe",
    "ridge_probe",
    "sklearn_C",
    "strongest_first",
]
