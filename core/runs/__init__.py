"""``mtl run``: one model per fold and seed, the run directory and its provenance."""
