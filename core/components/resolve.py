"""Turns a validated RunConfig into live components through the plugin registries.

Everything that can be checked without data or training is checked here, so that
``mtl validate`` and ``mtl run`` reject the same configs with the same YAML paths.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from torch import nn

from mtlkit.components.contracts import built_problem, head_problems, kind_label
from mtlkit.components.host import PluginHost
from mtlkit.components.interfaces import (
    DEFAULT_LOSSES,
    Constraint,
    TaskHead,
    TaskLossFn,
    TaskWeighting,
)
from mtlkit.components.registry import Entry
from mtlkit.config.schema import RunConfig
from mtlkit.data.samples import SampleSet
from mtlkit.errors import ConfigError, DataError

TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED_TASK_NAMES = {"mean"}  # `select: mean.auc` means the mean over tasks


@dataclass
class Components:
    """The resolved pieces of one run.

    The backbone, the weighting and the constraints are built anew by each ``build_*``
    call, so every training run starts from fresh state; ``weighting`` and ``constraints``
    are the instances built while validating.
    """

    backbone_entry: Entry
    backbone_options: BaseModel | None
    heads: list[TaskHead]
    task_losses: dict[str, TaskLossFn]
    constraint_specs: list[tuple[Entry, BaseModel | None, str]]
    constraints: list[Constraint]
    weighting_spec: tuple[Entry, BaseModel | None]
    weighting: TaskWeighting
    metrics: dict[str, Callable[..., float]]
    source_entry: Entry
    source_options: BaseModel | None
    reports: list[tuple[Entry, BaseModel | None]]

    def build_backbone(self) -> nn.Module:
        """Instantiate the backbone (may read pretrained weights)."""
        return call_component(self.backbone_entry, self.backbone_options, "backbone")

    def build_constraints(self) -> list[Constraint]:
        heads = {head.name: head for head in self.heads}
        return [build_checked(e, o, path, heads) for e, o, path in self.constraint_specs]

    def build_weighting(self) -> TaskWeighting:
        entry, options = self.weighting_spec
        return build_checked(entry, options, "weighting", self.task_names)

    @property
    def task_names(self) -> list[str]:
        return [head.name for head in self.heads]


def resolve_components(config: RunConfig, host: PluginHost) -> Components:
    """Look up and validate every component of ``config``; raises :class:`ConfigError`."""
    problems: list[tuple[str, str]] = []

    def attempt(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ConfigError as exc:
            problems.extend(exc.problems)
            return None

    backbone = attempt(lambda: host.backbones.resolve(config.backbone, "backbone"))
    source = attempt(lambda: host.data_sources.resolve(config.data.source, "data.source"))
    for index, external in enumerate(config.evaluation.external):
        path = f"evaluation.external[{index}].source"
        attempt(lambda e=external, p=path: host.data_sources.resolve(e.source, p))

    heads: list[TaskHead] = []
    losses: dict[str, TaskLossFn] = {}
    for index, spec in enumerate(config.heads):
        path = f"heads[{index}]"
        spec, loss_spec = split_loss(spec)
        resolved = attempt(lambda spec=spec, path=path: host.heads.resolve(spec, path))
        if resolved is None:
            continue
        entry, options = resolved
        head = attempt(lambda e=entry, o=options, p=path: build_head(e, o, p))
        if head is None:
            continue
        problem = _task_name_problem(head.name, [h.name for h in heads])
        if problem:
            problems.append((f"{path}.name", problem))
            continue
        heads.append(head)
        loss = attempt(lambda s=loss_spec, p=path, h=head, e=entry: head_loss(host, s, p, h, e))
        if loss is not None:
            losses[head.name] = loss

    by_name = {head.name: head for head in heads}
    constraint_specs, constraints = [], []
    for index, spec in enumerate(config.constraints):
        path = f"constraints[{index}]"
        resolved = attempt(lambda spec=spec, path=path: host.constraints.resolve(spec, path))
        if resolved is not None:
            entry, options = resolved
            built = attempt(lambda e=entry, o=options, p=path: build_checked(e, o, p, by_name))
            if built is not None:
                constraint_specs.append((entry, options, path))
                constraints.append(built)

    weighting_spec = attempt(lambda: host.weightings.resolve(config.weighting, "weighting"))
    weighting = None
    if weighting_spec is not None:
        weighting = attempt(lambda: build_checked(*weighting_spec, "weighting", list(by_name)))

    metrics = {}
    for index, name in enumerate(config.evaluation.metrics):
        if name not in host.metrics:
            problems.append((f"evaluation.metrics[{index}]", host.metrics.unknown_message(name)))
        else:
            metrics[name] = host.metrics.get(name).obj

    problems += _reference_problems(config, by_name)

    reports = []
    for index, spec in enumerate(config.reports):
        resolved = attempt(lambda spec=spec, i=index: host.reports.resolve(spec, f"reports[{i}]"))
        if resolved is not None:
            reports.append(resolved)

    if problems:
        raise ConfigError(problems)
    return Components(
        backbone_entry=backbone[0],
        backbone_options=backbone[1],
        heads=heads,
        task_losses=losses,
        constraint_specs=constraint_specs,
        constraints=constraints,
        weighting_spec=weighting_spec,
        weighting=weighting,
        metrics=metrics,
        source_entry=source[0],
        source_options=source[1],
        reports=reports,
    )


def _task_name_problem(name: str, taken: list[str]) -> str | None:
    if not TASK_NAME.fullmatch(name or ""):
        return (
            f"task name {name!r} must start with a letter or _ and hold only letters, digits and _"
        )
    if name in RESERVED_TASK_NAMES:
        return f"task name {name!r} is reserved"
    if name in taken:
        return f"task name {name!r} is used by two heads"
    return None


def _reference_problems(config: RunConfig, by_name: dict[str, TaskHead]) -> list:
    """Config keys that name tasks must name existing ones."""
    problems = []
    tasks = ", ".join(by_name) or "(none)"
    select_task, select_metric = config.evaluation.select.split(".")
    if select_task != "mean" and select_task not in by_name:
        problems.append(
            ("evaluation.select", f"no task called {select_task!r}; tasks: {tasks} (or mean)")
        )
    if select_metric not in config.evaluation.metrics:
        problems.append(
            ("evaluation.select", f"metric {select_metric!r} is not in evaluation.metrics")
        )
    for task in config.evaluation.reference_columns:
        if task not in by_name:
            problems.append((f"evaluation.reference_columns.{task}", "no task of that name"))
    for index, task in enumerate(config.data.split.stratify):
        if task not in by_name:
            problems.append(
                (f"data.split.stratify[{index}]", f"no task called {task!r}; tasks: {tasks}")
            )
    return problems


def split_loss(spec: Any) -> tuple[Any, Any]:
    """A head spec without its ``loss`` key, and that key's value (None when not given).

    ``loss`` belongs to the core, not to the head's options model, so every head, a
    third-party one included, takes ``loss: NAME`` or ``loss: {type: NAME, ...}``.
    """
    if not isinstance(spec, Mapping) or "loss" not in spec:
        return spec, None
    return {k: v for k, v in spec.items() if k != "loss"}, spec["loss"]


def build_head(entry: Entry, options: BaseModel | None, path: str) -> TaskHead:
    """Build a head and check it against its contract (name, kind, classes, outputs).

    Raises :class:`ConfigError` at ``path`` naming the head type, its plugin and the fix.
    """
    head = call_component(entry, options, path)
    problems = head_problems(head)
    if problems:
        raise ConfigError([(path, f"{_component(entry)}: {p}") for p in problems])
    return head


def build_checked(entry: Entry, options: BaseModel | None, path: str, *args: Any) -> Any:
    """Build a constraint or weighting and check that it is one (``entry.kind``)."""
    built = call_component(entry, options, path, *args)
    problem = built_problem(entry.kind, built)
    if problem:
        raise ConfigError([(path, f"{_component(entry)}: {problem}")])
    return built


def _component(entry: Entry) -> str:
    return f"{kind_label(entry.kind)} {entry.name!r} (plugin {entry.owner!r})"


def head_loss(
    host: PluginHost, loss_spec: Any, path: str, head: TaskHead, entry: Entry
) -> TaskLossFn:
    """The task loss the config names at ``{path}.loss``, else the head's default; a
    default that does not fit is an error at ``path``, which the user did write."""
    if loss_spec is not None:
        spec = {"type": loss_spec} if isinstance(loss_spec, str) else loss_spec
        return _build_loss(host, spec, f"{path}.loss", head)
    name = head.loss_name
    try:
        return _build_loss(host, {"type": name}, f"{path}.loss", head)
    except ConfigError as exc:
        reason = "; ".join(message for _, message in exc.problems)
        default = DEFAULT_LOSSES[head.kind]
        raise ConfigError(
            [
                (
                    path,
                    f"the default loss {name!r} of {_component(entry)} does not fit ({reason}): "
                    f"set default_loss = {default!r} in the head class (or leave it None, the "
                    f"{head.kind} default), or give {path}.loss",
                )
            ]
        ) from None


def _build_loss(host: PluginHost, spec: Any, path: str, head: TaskHead) -> TaskLossFn:
    entry, options = host.task_losses.resolve(spec, path)
    kinds = getattr(entry.obj, "head_kinds", None)
    if kinds is not None and head.kind not in kinds:
        raise ConfigError(
            [
                (
                    f"{path}.type",
                    f"loss {entry.name!r} is for {'/'.join(kinds)} heads; task "
                    f"{head.name!r} is {head.kind}",
                )
            ]
        )
    return call_component(entry, options, path)


def call_component(entry: Entry, options: BaseModel | None, path: str, *args: Any) -> Any:
    """Build a component; a ``ValueError`` from its constructor becomes a config error."""
    try:
        return entry.obj(options, *args) if options is not None else entry.obj(*args)
    except ValueError as exc:
        raise ConfigError([(path, str(exc))]) from None


def read_sample_set(entry: Entry, options: BaseModel | None, path: str) -> SampleSet:
    """Call a data source; what it returns must be a :class:`SampleSet`."""
    sample_set = call_component(entry, options, path)
    if not isinstance(sample_set, SampleSet):
        raise DataError(
            f"data source {entry.name!r} returned {type(sample_set).__name__}, not a SampleSet"
        )
    return sample_set
