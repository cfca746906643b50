"""Constraint losses that tie tasks together the way clinicians reason."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field

from mtlkit import Constraint, OptionsModel, TaskHead, hookimpl


class HierarchicalHingeOptions(OptionsModel):
    pairs: list[tuple[str, str]] = Field(
        min_length=1,
        description="(parent, child) task pairs: a child's probability should not exceed its "
        "parent's, e.g. [bm, alnm]: a tumour with nodal metastasis is malignant",
    )
    margin: float = Field(0.1, ge=0, le=1, description="m: allowed excess of child over parent")
    weight: float = Field(0.05, ge=0, description="lambda: weight in the total loss")


class HierarchicalHinge(Constraint):
    """Li et al. 2022: ``lambda * mean(max(0, p_child - p_parent - m))``, summed over pairs."""

    Options = HierarchicalHingeOptions

    def __init__(self, options: HierarchicalHingeOptions, heads: Mapping[str, TaskHead]):
        super().__init__()
        for parent, child in options.pairs:
            for task in (parent, child):
                if task not in heads:
                    raise ValueError(
                        f"pair ({parent}, {child}) names task {task!r}, which no "
                        f"head defines; tasks: {', '.join(heads)}"
                    )
                if heads[task].kind != "binary":
                    raise ValueError(
                        f"task {task!r} is not binary; the hinge compares "
                        "probabilities of binary tasks"
                    )
            if parent == child:
                raise ValueError(f"pair ({parent}, {child}) relates a task to itself")
        _check_acyclic(options.pairs)
        self.pairs = [tuple(p) for p in options.pairs]
        self.margin = options.margin
        self.weight = options.weight

    def forward(self, probabilities: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for parent, child in self.pairs:
            gap = probabilities[child] - probabilities[parent] - self.margin
            total = total + torch.clamp(gap, min=0).mean()
        return self.weight * total

    @property
    def relations(self) -> tuple[tuple[str, str], ...]:
        # The core measures their consistency (the paper's inconsistency error and more).
        return tuple(self.pairs)


def _check_acyclic(pairs: list[tuple[str, str]]) -> None:
    children: dict[str, set[str]] = {}
    for parent, child in pairs:
        children.setdefault(parent, set()).add(child)

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            cycle = " -> ".join([*trail[trail.index(node) :], node])
            raise ValueError(f"the pairs form a cycle: {cycle}")
        for nxt in children.get(node, ()):
            visit(nxt, [*trail, node])

    for start in children:
        visit(start, [])


@hookimpl
def mtl_register_constraints(registry):
    registry.register("hierarchical_hinge", HierarchicalHinge)
