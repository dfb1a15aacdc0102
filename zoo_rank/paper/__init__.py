"""The paper's published numbers, shipped as package data (facts, with their citation).

`xu-liu-2023-tables.json`: Tables 1 and 2 of Xu & Liu, "Quantifying the Variability Collapse of Neural
Networks", ICML 2023, Appendix C (linear-probe accuracy on ten downstream sets; Fuzziness, Squared
Distance, COS SIM and VCI on a 50,000-image ImageNet train subset; pretraining top-1; MLOG) for the
tau and lambda families of Sec. 6.3, in the `zoo_rank.paper_tables/1` schema of `zoo_rank.stats.paper`.
Read it with `zoo_rank.stats.load_paper_tables()`; `zoo-rank validate --paper` reports on it.
"""

from pathlib import Path

TABLES_FILE = Path(__file__).with_name("xu-liu-2023-tables.json")
CITATION = "Xu & Liu, Quantifying the Variability Collapse of Neural Networks, ICML 2023, Appendix C, Tables 1-2"
