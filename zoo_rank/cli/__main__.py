"""`python -m zoo_rank.cli ...` (e.g. under `torchrun -m zoo_rank.cli extract ...`): the console script."""

from zoo_rank.cli import main

main()
