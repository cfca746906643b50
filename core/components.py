"""Turns a validated RunConfig into live components through the plugin registries.

Everything that can be checked without data or training is checked here, so that
``mtl validate`` and ``mtl run`` reject the same configs with the same YAML paths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from torch import nn

from .config import RunConfig
from .errors import ConfigError
from .losses import TaskLossFn
from .pluginhost import PluginHost
from .registry import Entry
from .tasks import Constraint, TaskHead, TaskWeighting


@dataclass
class Components:
    """The resolved pieces of one run (the backbone is built later, when needed)."""

    backbone_entry: Entry
    backbone_options: BaseModel | None
    heads: list[TaskHead]
    task_losses: dict[str, TaskLossFn]
    constraints: list[Constraint]
    weighting: TaskWeighting
    metrics: dict[str, Callable[..., float]]
    source_entry: Entry
    source_options: BaseModel | None
    reports: list[tuple[Entry, BaseModel | None]]

    def build_backbone(self) -> nn.Module:
        """Instantiate the backbone (may read pretrained weights)."""
        return _call(self.backbone_entry, self.backbone_options, "backbone")

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

    heads: list[TaskHead] = []
    losses: dict[str, TaskLossFn] = {}
    for index, spec in enumerate(config.heads):
        path = f"heads[{index}]"
        resolved = attempt(lambda spec=spec, path=path: host.heads.resolve(spec, path))
        if resolved is None:
            continue
        entry, options = resolved
        head = attempt(lambda e=entry, o=options, p=path: _call(e, o, p))
        if head is None:
            continue
        if head.name in {h.name for h in heads}:
            problems.append((f"{path}.name", f"task name {head.name!r} is used by two heads"))
            continue
        heads.append(head)
        loss_spec = getattr(options, "loss", None) or {"type": head.default_loss}
        loss_spec = {"type": loss_spec} if isinstance(loss_spec, str) else loss_spec
        loss = attempt(lambda s=loss_spec, p=path: _build_loss(host, s, f"{p}.loss"))
        if loss is not None:
            losses[head.name] = loss

    by_name = {head.name: head for head in heads}
    constraints = []
    for index, spec in enumerate(config.constraints):
        path = f"constraints[{index}]"
        resolved = attempt(lambda spec=spec, path=path: host.constraints.resolve(spec, path))
        if resolved is not None:
            entry, options = resolved
            built = attempt(lambda e=entry, o=options, p=path: _call(e, o, p, by_name))
            if built is not None:
                constraints.append(built)

    weighting = None
    resolved = attempt(lambda: host.weightings.resolve(config.weighting, "weighting"))
    if resolved is not None:
        weighting = attempt(lambda: _call(*resolved, "weighting", [h.name for h in heads]))

    metrics = {}
    for index, name in enumerate(config.evaluation.metrics):
        if name not in host.metrics:
            problems.append((f"evaluation.metrics[{index}]", host.metrics.unknown_message(name)))
        else:
            metrics[name] = host.metrics.get(name).obj

    select_task, select_metric = config.evaluation.select.split(".")
    if select_task != "mean" and select_task not in by_name:
        problems.append(
            (
                "evaluation.select",
                f"no task called {select_task!r}; tasks: {', '.join(by_name)} (or mean)",
            )
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
                (
                    f"data.split.stratify[{index}]",
                    f"no task called {task!r}; tasks: {', '.join(by_name)}",
                )
            )

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
        constraints=constraints,
        weighting=weighting,
        metrics=metrics,
        source_entry=source[0],
        source_options=source[1],
        reports=reports,
    )


def _build_loss(host: PluginHost, spec: dict[str, Any], path: str) -> TaskLossFn:
    entry, options = host.task_losses.resolve(spec, path)
    return _call(entry, options, path)


def _call(entry: Entry, options: BaseModel | None, path: str, *args: Any) -> Any:
    """Build a component; a ``ValueError`` from its constructor becomes a config error."""
    try:
        return entry.obj(options, *args) if options is not None else entry.obj(*args)
    except ValueError as exc:
        raise ConfigError([(path, str(exc))]) from None
