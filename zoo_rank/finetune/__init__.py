"""The fine-tuning check: full fine-tuning of a backbone with a new head, its test accuracy as ground truth.

Modules, bottom to top: options (FinetuneOptions, FULL), record (result key, file, board check), data
(rows drawn, split and decoded once per cell), head (LP-FT's probe head), run (finetune: the lr x epoch
grid, the best-validation checkpoint tested once). See zoo_rank.finetune.run for the protocol.
"""

from zoo_rank.finetune.data import stratified_split, transforms
from zoo_rank.finetune.head import SCALE_FLOOR, probe_head
from zoo_rank.finetune.options import FULL, KIND, RESULT_FORMAT, FinetuneOptions
from zoo_rank.finetune.record import as_check, cell_key, cell_path
from zoo_rank.finetune.run import finetune

__all__ = [
    "FULL",
    "KIND",
    "RESULT_FORMAT",
    "SCALE_FLOOR",
    "FinetuneOptions",
    "as_check",
    "cell_key",
    "cell_path",
    "finetune",
    "probe_head",
    "stratified_split",
    "transforms",
]
