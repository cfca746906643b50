"""Constraints that tie tasks together the way clinicians reason: as a loss (the
hierarchical hinge) or as predictions that obey the hierarchy by construction (coherent)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from mtlkit import Constraint, OptionsModel, TaskHead, hookimpl, masked_mean


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
        self.pairs = check_pairs(options.pairs, heads, "the hinge")
        self.relations = tuple(self.pairs)  # the core measures their consistency
        self.margin = options.margin
        self.weight = options.weight

    def forward(self, probabilities: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for parent, child in self.pairs:
            gap = probabilities[child] - probabilities[parent] - self.margin
            total = total + torch.clamp(gap, min=0).mean()
        return self.weight * total


def check_pairs(
    pairs: list[tuple[str, str]], heads: Mapping[str, TaskHead], what: str
) -> list[tuple[str, str]]:
    """``pairs`` as (parent, child) tuples, after checking that every task has a binary head,
    that no pair relates a task to itself and that the pairs form no cycle; ``what`` names
    the constraint in the ``ValueError`` raised otherwise."""
    for parent, child in pairs:
        for task in (parent, child):
            if task not in heads:
                raise ValueError(
                    f"pair ({parent}, {child}) names task {task!r}, which no "
                    f"head defines; tasks: {', '.join(heads)}"
                )
            if heads[task].kind != "binary":
                raise ValueError(
                    f"task {task!r} is not binary; {what} relates probabilities of binary tasks"
                )
        if parent == child:
            raise ValueError(f"pair ({parent}, {child}) relates a task to itself")
    _check_acyclic(pairs)
    return [(parent, child) for parent, child in pairs]


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


# --- coherent outputs (C-HMCNN) --------------------------------------------------------------


class CoherentOptions(OptionsModel):
    pairs: list[tuple[str, str]] = Field(
        min_length=1,
        description="(parent, child) task pairs of the hierarchy (a DAG; transitive links "
        "count): a child's predicted probability never exceeds its parent's, e.g. [[bm, "
        "alnm], [alnm, alnm_ge2], [alnm_ge2, alnm_ge3], [alnm_ge3, alnm_ge4]]",
    )
    form: Literal["max", "conditional"] = Field(
        "max",
        description="max: C-HMCNN's max constraint module (a parent's probability is the "
        "max of its own and its descendants' raw ones) trained with MCLoss; conditional: a "
        "child's probability is its parent's times sigmoid(its logit), trained with BCE on "
        "those probabilities",
    )


class Coherent(Constraint):
    """Predictions that obey the hierarchy by construction, at every threshold: no child's
    probability exceeds its parent's (Giunchiglia and Lukasiewicz 2020, C-HMCNN).

    ``form: max``: the max constraint module, ``p'_A = max(h_B for B in {A} u desc(A))``
    with ``h`` the raw probabilities and ``desc(A)`` A's descendants (transitively), and
    MCLoss for every task that has descendants (for a leaf MCLoss is its BCE, so a leaf
    keeps its configured loss)::

        loss_A = -mean[ y_A log(max_{B in {A} u desc(A)} y_B h_B)
                        + (1 - y_A) log(1 - p'_A) ]

    A descendant whose label is unknown counts as not positive in the positive term (the
    term never relies on a guessed label); the negative term uses every descendant's
    output, whatever its label. Gradients reach only the maximising task, as in the paper.

    ``form: conditional``: ``p'_C = min(p'_P for the parents P of C) * sigmoid(z_C)`` (one
    parent in a chain; with several the least probable one bounds the child), and ``p'`` of
    a task without parents is its raw probability; every task with a parent is trained with
    BCE on ``p'``, so its sigmoid learns P(child | parent).

    Both are computed in log space from the logits, finite for any finite logits. Samples
    whose own label of a task is unknown add nothing to that task's loss. Trains through
    :meth:`task_losses` (replacing the configured loss of the governed tasks) and predicts
    through :meth:`adjust`; there is no extra loss term.
    """

    Options = CoherentOptions
    adjusts_outputs = True

    def __init__(self, options: CoherentOptions, heads: Mapping[str, TaskHead]):
        super().__init__()
        self.pairs = check_pairs(options.pairs, heads, "the coherent constraint")
        self.relations = tuple(self.pairs)
        self.form = options.form
        self.order = _topological(self.pairs)
        self.parents = {t: [p for p, c in self.pairs if c == t] for t in self.order}
        self.members = {t: _with_descendants(t, self.pairs, self.order) for t in self.order}
        # the tasks whose outputs (and so losses) it changes
        if self.form == "max":
            self.governed = [t for t in self.order if len(self.members[t]) > 1]
        else:
            self.governed = [t for t in self.order if self.parents[t]]

    def adjust(self, probabilities: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.form == "max":
            return {
                task: torch.stack([probabilities[b] for b in self.members[task]]).amax(0)
                for task in self.governed
            }
        out: dict[str, torch.Tensor] = {}
        for task in self.order:  # parents first
            if self.parents[task]:
                bound = torch.stack([out.get(p, probabilities[p]) for p in self.parents[task]])
                out[task] = bound.amin(0) * probabilities[task]
        return out

    def task_losses(
        self, logits: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        z = {task: logits[task].reshape(-1) for task in self.order}
        if self.form == "max":
            per_sample = self._mc_losses(z, targets)
        else:
            per_sample = self._conditional_losses(z, targets)
        return {task: masked_mean(per_sample[task], targets[task]) for task in self.governed}

    def _mc_losses(
        self, z: dict[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """MCLoss per sample: log h = logsigmoid(z), and the max of h is the h of the max z."""
        out = {}
        for task in self.governed:
            logit = torch.stack([z[b] for b in self.members[task]], dim=1)  # (N, members)
            y = torch.stack([targets[b] for b in self.members[task]], dim=1)
            positive = y == 1  # False for NaN: an unknown label is not a positive one
            floor = torch.finfo(logit.dtype).min
            best_positive = torch.where(positive, F.logsigmoid(logit), floor).amax(1)
            negative = F.logsigmoid(-logit.amax(1))  # log(1 - max h)
            out[task] = -torch.where(positive[:, 0], best_positive, negative)
        return out

    def _conditional_losses(
        self, z: dict[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """BCE on p' per sample, with log p' = logsigmoid(z) + min over parents of log p'."""
        log_p: dict[str, torch.Tensor] = {}
        out = {}
        for task in self.order:
            log_p[task] = F.logsigmoid(z[task])
            if self.parents[task]:
                bound = torch.stack([log_p[p] for p in self.parents[task]]).amin(0)
                log_p[task] = log_p[task] + bound
                positive = targets[task] == 1
                out[task] = -torch.where(positive, log_p[task], _log1mexp(log_p[task]))
        return out


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate near 0 and -inf (Maechler 2012), with finite
    values and gradients in both branches (x is kept below 0 by the smallest float)."""
    x = x.clamp(max=-torch.finfo(x.dtype).tiny)
    near = x > -math.log(2)
    close = torch.log(-torch.expm1(torch.where(near, x, -1.0)))
    far = torch.log1p(-torch.exp(torch.where(near, -1.0, x)))
    return torch.where(near, close, far)


def _topological(pairs: list[tuple[str, str]]) -> list[str]:
    """The tasks of acyclic ``pairs``, each after all its parents; ties in order of first
    mention."""
    tasks = list(dict.fromkeys(t for pair in pairs for t in pair))
    order: list[str] = []
    while len(order) < len(tasks):
        for task in tasks:
            if task not in order and all(p in order for p, c in pairs if c == task):
                order.append(task)
    return order


def _with_descendants(task: str, pairs: list[tuple[str, str]], order: list[str]) -> list[str]:
    """``task`` first, then every task below it (transitively), in topological order."""
    below: set[str] = set()
    frontier = [task]
    while frontier:
        node = frontier.pop()
        for parent, child in pairs:
            if parent == node and child not in below:
                below.add(child)
                frontier.append(child)
    return [task, *(t for t in order if t in below)]


@hookimpl
def mtl_register_constraints(registry):
    registry.register("hierarchical_hinge", HierarchicalHinge)
    registry.register("coherent", Coherent)
