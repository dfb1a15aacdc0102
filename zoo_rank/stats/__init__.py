"""Statistics over models: how well a score predicts transfer, and how sure that is.

correlation.py   MLOG (eq. 6 of Xu & Liu), logit, rank correlations, top-1 selection regret
significance.py  exact permutation p-values (below 10 models), BCa bootstrap intervals (from 10 on)
zoo.py           the zoo benchmark's statistics: weighted tau with its p-value, regret, seed spread, ties
paper.py         the paper's Tables 1-2: load, recompute MLOG and the metric-vs-MLOG correlations, report

Pure math on arrays (scipy underneath); imports only zoo_rank.metrics, zoo_rank.paper and the bottom helpers.
"""

from zoo_rank.stats.correlation import (
    STATISTICS,
    Correlations,
    logit,
    mlog,
    rank_correlations,
    selection_regret,
)
from zoo_rank.stats.paper import (
    PAPER_SCHEMA,
    format_paper_report,
    load_paper_tables,
    paper_report,
    print_paper_report,
)
from zoo_rank.stats.significance import (
    PERMUTATION_BELOW,
    TESTED,
    bootstrap_intervals,
    permutation_p_values,
    top1_regret,
)
from zoo_rank.stats.zoo import (
    N_RESAMPLES,
    RankAgreement,
    rank_agreement,
    same_order,
    seed_spread,
    tie_band,
)

__all__ = [
    "N_RESAMPLES",
    "PAPER_SCHEMA",
    "PERMUTATION_BELOW",
    "STATISTICS",
    "TESTED",
    "Correlations",
    "RankAgreement",
    "bootstrap_intervals",
    "format_paper_report",
    "load_paper_tables",
    "logit",
    "mlog",
    "paper_report",
    "permutation_p_values",
    "print_paper_report",
    "rank_agreement",
    "rank_correlations",
    "same_order",
    "seed_spread",
    "selection_regret",
    "tie_band",
    "top1_regret",
]
