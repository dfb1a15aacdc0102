"""Jobs: the models x datasets grids (rank, probe, validate, zoo benchmark)."""
