"""Turns a validated RunConfig into live components through the plugin registries.

Everything that can be checked without data or training is checked here, so that
``mtl validate`` and ``mtl run`` reject the same configs with the same YAML paths.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from torch import nn

from mtlkit.components.host import PluginHost
from mtlkit.components.interfaces import (
    Baseline,
    Constraint,
    TaskHead,
    TaskLossFn,
    TaskWeighting,
)
from mtlkit.components.registry import Entry
from mtlkit.config.schema import RunConfig
from mtlkit.errors import ConfigError

TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED_TASK_NAMES = {"mean"}  # `select: mean.auc` means the mean over tasks
BASELINE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*")


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
    baselines: list[Baseline] = field(default_factory=list)

    def build_backbone(self) -> nn.Module:
        """Instantiate the backbone (may read pretrained weights)."""
        return call_component(self.backbone_entry, self.backbone_options, "backbone")

    def build_constraints(self) -> list[Constraint]:
        heads = {head.name: head for head in self.heads}
        return [call_component(e, o, path, heads) for e, o, path in self.constraint_specs]

    def build_weighting(self) -> TaskWeighting:
        entry, options = self.weighting_spec
        return call_component(entry, options, "weighting", self.task_names)

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
        resolved = attempt(lambda spec=spec, path=path: host.heads.resolve(spec, path))
        if resolved is None:
            continue
        entry, options = resolved
        head = attempt(lambda e=entry, o=options, p=path: call_component(e, o, p))
        if head is None:
            continue
        problem = _task_name_problem(head.name, [h.name for h in heads])
        if problem:
            problems.append((f"{path}.name", problem))
            continue
        heads.append(head)
        loss_spec = getattr(options, "loss", None) or {"type": head.default_loss}
        loss_spec = {"type": loss_spec} if isinstance(loss_spec, str) else loss_spec
        loss = attempt(lambda s=loss_spec, p=path, h=head: _build_loss(host, s, f"{p}.loss", h))
        if loss is not None:
            losses[head.name] = loss

    by_name = {head.name: head for head in heads}
    constraint_specs, constraints = [], []
    for index, spec in enumerate(config.constraints):
        path = f"constraints[{index}]"
        resolved = attempt(lambda spec=spec, path=path: host.constraints.resolve(spec, path))
        if resolved is not None:
            entry, options = resolved
            built = attempt(lambda e=entry, o=options, p=path: call_component(e, o, p, by_name))
            if built is not None:
                constraint_specs.append((entry, options, path))
                constraints.append(built)

    weighting_spec = attempt(lambda: host.weightings.resolve(config.weighting, "weighting"))
    weighting = None
    if weighting_spec is not None:
        weighting = attempt(lambda: call_component(*weighting_spec, "weighting", list(by_name)))

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

    baselines: list[Baseline] = []
    for index, spec in enumerate(config.baselines):
        path = f"baselines[{index}]"
        built = attempt(lambda spec=spec, path=path: _build_baseline(host, spec, path))
        if built is None:
            continue
        problem = _baseline_name_problem(built, [b.name for b in baselines])
        if problem:
            problems.append((f"{path}.name", problem))
        else:
            baselines.append(built)

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
        baselines=baselines,
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


def _build_loss(host: PluginHost, spec: dict[str, Any], path: str, head: TaskHead) -> TaskLossFn:
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


def _build_baseline(host: PluginHost, spec: dict[str, Any], path: str) -> Baseline:
    """A baseline from its config entry; one whose optional extra is not installed is a
    config error naming the install command (checked here, before any data or training)."""
    entry, options = host.baselines.resolve(spec, path)
    missing = []
    for module in getattr(entry.obj, "requires", ()):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
        except Exception as exc:  # a broken installation: say what it raised
            missing.append(f"{module} ({type(exc).__name__}: {exc})")
    if missing:
        install = getattr(entry.obj, "install", "") or "install the packages it needs"
        raise ConfigError(
            [
                (
                    f"{path}.type",
                    f"baseline {entry.name!r} needs {', '.join(missing)}, which cannot be "
                    f"imported here; install it: {install}",
                )
            ]
        )
    baseline = call_component(entry, options, path)
    if not isinstance(baseline, Baseline):
        raise ConfigError(
            [(path, f"baseline {entry.name!r} built a {type(baseline).__name__}, not a Baseline")]
        )
    return baseline


def _baseline_name_problem(baseline: Baseline, taken: list[str]) -> str | None:
    name = getattr(baseline, "name", None)
    if not isinstance(name, str) or not BASELINE_NAME.fullmatch(name):
        return f"baseline name {name!r} must start with a letter and hold only letters, digits, _ -"
    if name.lower() == "cnn" or name == "checkpoints" or name.startswith(("seed_", "fold_")):
        return f"baseline name {name!r} is reserved (the CNN's results and folders use it)"
    if name in taken:
        return f"baseline name {name!r} is used by two baselines; give one another name"
    return None


def call_component(entry: Entry, options: BaseModel | None, path: str, *args: Any) -> Any:
    """Build a component; a ``ValueError`` from its constructor becomes a config error."""
    try:
        return entry.obj(options, *args) if options is not None else entry.obj(*args)
    except ValueError as exc:
        raise ConfigError([(path, str(exc))]) from None
