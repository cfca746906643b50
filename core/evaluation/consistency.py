"""How consistent a model's predictions are with the tasks' hierarchy, measured for every
run whether or not a constraint was trained (the paper's comparison: inconsistency with and
without the hierarchical loss).

A relation ``(parent, child)`` says that every positive of ``child`` is a positive of
``parent`` (ALNM implies malignancy, ALNM >= 3 implies ALNM >= 2). Three shares are reported
per split, each in [0, 1]:

- ``{child}_without_{parent}``: predicted child-positive but parent-negative at the
  threshold (the paper's inconsistency error);
- ``{child}_above_{parent}``: the child's probability exceeds the parent's by more than the
  margin;
- ``nonmonotonic:{a}>{b}>...``: for each chain of three or more tasks (a maximal path of
  the relations, e.g. alnm > alnm_ge2 > alnm_ge3 > alnm_ge4), the images whose
  probabilities do not decrease along it (some task above the one before it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from mtlkit.components.interfaces import TaskHead

Relation = tuple[str, str]


def implied_relations(heads: Sequence[TaskHead]) -> list[Relation]:
    """The heads' own hierarchy: ``(parent, child)`` for every pair of binary heads where
    the child's positives are the parent's (``TaskHead.implies``), without the pairs that
    follow from others (bm > alnm > alnm_ge2 gives no bm > alnm_ge2)."""
    binary = [h for h in heads if h.kind == "binary"]
    implies = {(p.name, c.name) for p in binary for c in binary if p is not c and c.implies(p)}
    # Two heads that imply each other (the same task twice) form no hierarchy.
    implies = {(p, c) for p, c in implies if (c, p) not in implies}
    names = [h.name for h in binary]
    return [
        (p, c)
        for p in names
        for c in names
        if (p, c) in implies
        and not any((p, m) in implies and (m, c) in implies for m in names if m not in (p, c))
    ]


def default_relations(
    heads: Sequence[TaskHead], constraint_relations: Iterable[Relation]
) -> list[Relation]:
    """The relations checked when ``evaluation.consistency`` is not set: the trained
    constraints' relations, then the heads' own hierarchy, each pair once."""
    out: list[Relation] = []
    for pair in [*constraint_relations, *implied_relations(heads)]:
        pair = (str(pair[0]), str(pair[1]))
        if pair not in out:
            out.append(pair)
    return out


def chains(relations: Sequence[Relation]) -> list[list[str]]:
    """The maximal paths of three or more tasks through ``relations`` (acyclic), in a fixed
    order: from each task that is no relation's child, depth first."""
    children: dict[str, list[str]] = {}
    for parent, child in relations:
        children.setdefault(parent, []).append(child)
    has_parent = {child for _, child in relations}
    roots = [p for p in children if p not in has_parent]
    paths: list[list[str]] = []

    def walk(path: list[str]) -> None:
        following = [c for c in children.get(path[-1], []) if c not in path]
        if not following:
            if len(path) >= 3:
                paths.append(path)
            return
        for child in following:
            walk([*path, child])

    for root in roots:
        walk([root])
    return paths


def measure_consistency(
    relations: Sequence[Relation],
    probabilities: Mapping[str, np.ndarray],
    threshold: float,
    margin: float,
) -> dict[str, float]:
    """The shares described in the module docstring over the images of one split; empty
    for a split without images. Relations naming a task without probabilities (a variant
    that dropped it) are skipped."""
    usable = [
        (p, c)
        for p, c in relations
        if _binary(probabilities.get(p)) and _binary(probabilities.get(c))
    ]
    if not usable or len(probabilities[usable[0][0]]) == 0:
        return {}
    out: dict[str, float] = {}
    for parent, child in usable:
        p_parent, p_child = probabilities[parent], probabilities[child]
        broken = (p_child > threshold) & (p_parent <= threshold)
        out[f"{child}_without_{parent}"] = float(broken.mean())
    for parent, child in usable:
        above = probabilities[child] > probabilities[parent] + margin
        out[f"{child}_above_{parent}"] = float(above.mean())
    for path in chains(usable):
        stacked = np.stack([probabilities[task] for task in path])
        rising = (np.diff(stacked, axis=0) > 0).any(axis=0)
        out["nonmonotonic:" + ">".join(path)] = float(rising.mean())
    return out


def _binary(values: np.ndarray | None) -> bool:
    return values is not None and np.ndim(values) == 1
