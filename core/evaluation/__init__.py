"""Scoring a model: metrics over a split, summaries of repeated runs, the result documents and
external evaluation of a checkpoint."""
