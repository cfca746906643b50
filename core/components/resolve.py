"""Turns a validated RunConfig into live components through the plugin registries.

Everything that can be checked without data or training is checked here, so that
``mtl validate`` and ``mtl run`` reject the same configs with the same YAML paths.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from mtlkit.components.contracts import (
    built_problem,
    head_problems,
    kind_label,
    optimizer_problem,
    scheduler_problem,
)
from mtlkit.components.host import PluginHost
from mtlkit.components.interfaces import (
    DEFAULT_LOSSES,
    IMAGE_KINDS,
    Baseline,
    Constraint,
    DenseHead,
    TaskHead,
    TaskLossFn,
    TaskWeighting,
)
from mtlkit.components.registry import Entry
from mtlkit.config.schema import RunConfig
from mtlkit.data.columns import ColumnMap, rename_columns, split_columns
from mtlkit.data.samples import SampleSet
from mtlkit.errors import ConfigError, DataError, PluginError
from mtlkit.evaluation.consistency import default_relations

TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED_TASK_NAMES = {"mean"}  # `select: mean.auc` means the mean over tasks
DENSE_METRICS = ("dice", "iou")
"""What every segmentation task reports (mean per image with a mask), whatever
``evaluation.metrics`` lists."""
BASELINE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*")


@dataclass
class Components:
    """The resolved pieces of one run.

    Everything with state (the backbone, the weighting, the constraints, the optimizer and
    its scheduler) is kept as a spec and built anew by each ``build_*`` call, so that every
    fit starts fresh and trains its own instances.
    """

    backbone_entry: Entry
    backbone_options: BaseModel | None
    heads: list[TaskHead]
    task_losses: dict[str, TaskLossFn]
    constraint_specs: list[tuple[Entry, BaseModel | None, str]]
    weighting_spec: tuple[Entry, BaseModel | None]
    optimizer_spec: tuple[Entry, BaseModel | None]
    scheduler_spec: tuple[Entry, BaseModel | None]
    metrics: dict[str, Callable[..., float]]
    source_entry: Entry
    source_options: BaseModel | None
    source_columns: ColumnMap
    reports: list[tuple[Entry, BaseModel | None]]
    loggers: list[tuple[Entry, BaseModel | None]] = field(default_factory=list)
    """Each configured experiment logger's entry and options; built once per run."""
    baselines: list[Baseline] = field(default_factory=list)
    consistency: list[tuple[str, str]] = field(default_factory=list)
    """The (parent, child) relations whose consistency every evaluation measures."""
    dense_heads: list[DenseHead] = field(default_factory=list)
    """The heads that predict a mask per image; ``heads`` are those that predict one value
    per image (what probabilities, baselines, reports and predictions.csv are about)."""
    task_order: list[str] = field(default_factory=list)
    """Every task's name in config order (empty: those of ``heads``)."""

    def build_backbone(self) -> nn.Module:
        """Instantiate the backbone (may read pretrained weights)."""
        return call_component(self.backbone_entry, self.backbone_options, "backbone")

    def build_constraints(self) -> list[Constraint]:
        """Fresh constraint instances, in config order."""
        heads = {head.name: head for head in self.heads}
        return [build_checked(e, o, path, heads) for e, o, path in self.constraint_specs]

    def build_weighting(self) -> TaskWeighting:
        """A fresh task weighting."""
        entry, options = self.weighting_spec
        return build_checked(entry, options, "weighting", self.task_names)

    def build_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """The configured optimizer over ``params``; a factory that breaks the contract of
        ``mtl_register_optimizers`` is a plugin error naming it."""
        entry, options = self.optimizer_spec
        optimizer = call_component(entry, options, "training.optimizer", params)
        problem = optimizer_problem(optimizer)
        if problem:
            raise _broken(entry, problem)
        return optimizer

    def build_scheduler(self, optimizer: torch.optim.Optimizer, epochs: int) -> Any:
        """The configured learning-rate scheduler of ``optimizer`` for ``epochs`` epochs."""
        entry, options = self.scheduler_spec
        scheduler = call_component(entry, options, "training.scheduler", optimizer, epochs)
        problem = scheduler_problem(scheduler)
        if problem:
            raise _broken(entry, problem)
        return scheduler

    @property
    def every_head(self) -> list[TaskHead]:
        """Every head, dense ones included, in config order."""
        by_name = {head.name: head for head in [*self.heads, *self.dense_heads]}
        return [by_name[name] for name in self.task_names]

    @property
    def task_names(self) -> list[str]:
        """Every task, dense ones included, in config order (the task weighting's tasks)."""
        return list(self.task_order) or [head.name for head in self.heads]


class _Problems:
    """Collects the config errors of every component, so that one pass reports them all."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def attempt(self, fn: Callable[[], Any]) -> Any:
        """``fn()``, or None after recording the problems of the ConfigError it raised."""
        try:
            return fn()
        except ConfigError as exc:
            self.items.extend(exc.problems)
            return None


def resolve_components(config: RunConfig, host: PluginHost) -> Components:
    """Look up and validate every component of ``config``; raises :class:`ConfigError`.

    Stateful components are built once here only to check their options; the instances
    are dropped, and each fit builds its own.
    """
    problems = _Problems()
    attempt = problems.attempt
    backbone = attempt(lambda: host.backbones.resolve(config.backbone, "backbone"))
    source = attempt(lambda: resolve_source(host, config.data.source, "data.source"))
    for index, external in enumerate(config.evaluation.external):
        path = f"evaluation.external[{index}].source"
        attempt(lambda e=external, p=path: resolve_source(host, e.source, p))
    every_head, losses = _resolve_heads(config, host, problems)
    heads = [head for head in every_head if not isinstance(head, DenseHead)]
    dense_heads = [head for head in every_head if isinstance(head, DenseHead)]
    by_name = {head.name: head for head in heads}
    constraint_specs, constraint_relations = _resolve_constraints(config, host, by_name, problems)
    weighting_spec = attempt(lambda: host.weightings.resolve(config.weighting, "weighting"))
    task_order = [head.name for head in every_head]
    if weighting_spec is not None:
        attempt(lambda: build_checked(*weighting_spec, "weighting", task_order))
    training = config.training
    optimizer_spec = attempt(
        lambda: host.optimizers.resolve(training.optimizer, "training.optimizer", key="name")
    )
    scheduler_spec = attempt(
        lambda: host.schedulers.resolve(training.scheduler, "training.scheduler", key="name")
    )
    metrics = _resolve_metrics(config, host, problems)
    problems.items.extend(_reference_problems(config, by_name, dense_heads))
    problems.items.extend(_consistency_problems(config, by_name))
    reports = []
    for index, spec in enumerate(config.reports):
        resolved = attempt(lambda spec=spec, i=index: host.reports.resolve(spec, f"reports[{i}]"))
        if resolved is not None:
            reports.append(resolved)
    loggers = _resolve_loggers(config, host, problems)
    baselines = _resolve_baselines(config, host, problems)
    if baselines and config.data.roi.mode == "auto" and config.data.roi.train_mode is None:
        problems.items.append(
            (
                "data.roi.train_mode",
                "baselines cut drawn RoIs, not the localiser's: with roi.mode auto set "
                "train_mode to box or mask (the CNN then also trains on them)",
            )
        )
    if problems.items:
        raise ConfigError(problems.items)
    components = Components(
        backbone_entry=backbone[0],
        backbone_options=backbone[1],
        heads=heads,
        task_losses=losses,
        constraint_specs=constraint_specs,
        weighting_spec=weighting_spec,
        optimizer_spec=optimizer_spec,
        scheduler_spec=scheduler_spec,
        metrics=metrics,
        source_entry=source[0],
        source_options=source[1],
        source_columns=source[2],
        reports=reports,
        loggers=loggers,
        baselines=baselines,
        consistency=list(config.evaluation.consistency)
        if config.evaluation.consistency is not None
        else default_relations(heads, constraint_relations),
        dense_heads=dense_heads,
        task_order=task_order,
    )
    _check_optimization(components, training.epochs)
    return components


def _resolve_heads(
    config: RunConfig, host: PluginHost, problems: _Problems
) -> tuple[list[TaskHead], dict[str, TaskLossFn]]:
    """The heads of ``config`` with unique valid task names, and each one's task loss."""
    heads: list[TaskHead] = []
    losses: dict[str, TaskLossFn] = {}
    for index, spec in enumerate(config.heads):
        path = f"heads[{index}]"
        spec, loss_spec = split_loss(spec)
        resolved = problems.attempt(lambda spec=spec, path=path: host.heads.resolve(spec, path))
        if resolved is None:
            continue
        entry, options = resolved
        head = problems.attempt(lambda e=entry, o=options, p=path: build_head(e, o, p))
        if head is None:
            continue
        problem = _task_name_problem(head.name, [h.name for h in heads])
        if problem:
            problems.items.append((f"{path}.name", problem))
            continue
        heads.append(head)
        loss = problems.attempt(
            lambda s=loss_spec, p=path, h=head, e=entry: head_loss(host, s, p, h, e)
        )
        if loss is not None:
            losses[head.name] = loss
    return heads, losses


def _resolve_constraints(
    config: RunConfig, host: PluginHost, heads: dict[str, TaskHead], problems: _Problems
) -> tuple[list[tuple[Entry, BaseModel | None, str]], list[tuple[str, str]]]:
    """``(entry, options, yaml path)`` of every constraint whose options build, and the
    task pairs the constraints tie (``Constraint.relations``)."""
    specs = []
    relations: list[tuple[str, str]] = []
    for index, spec in enumerate(config.constraints):
        path = f"constraints[{index}]"
        resolved = problems.attempt(lambda s=spec, p=path: host.constraints.resolve(s, p))
        if resolved is None:
            continue
        entry, options = resolved
        built = problems.attempt(lambda e=entry, o=options, p=path: build_checked(e, o, p, heads))
        if built is not None:
            specs.append((entry, options, path))
            relations += [(str(p), str(c)) for p, c in built.relations]
    return specs, relations


def _resolve_baselines(config: RunConfig, host: PluginHost, problems: _Problems) -> list[Baseline]:
    """The baselines of ``config``, built, with unique names."""
    baselines: list[Baseline] = []
    for index, spec in enumerate(config.baselines):
        path = f"baselines[{index}]"
        built = problems.attempt(lambda spec=spec, path=path: _build_baseline(host, spec, path))
        if built is None:
            continue
        problem = _baseline_name_problem(built, [b.name for b in baselines])
        if problem:
            problems.items.append((f"{path}.name", problem))
        else:
            baselines.append(built)
    return baselines


def _resolve_loggers(
    config: RunConfig, host: PluginHost, problems: _Problems
) -> list[tuple[Entry, BaseModel | None]]:
    """The experiment loggers of ``config``, each with its extra installed, each named once."""
    loggers: list[tuple[Entry, BaseModel | None]] = []
    for index, spec in enumerate(config.loggers):
        path = f"loggers[{index}]"
        resolved = problems.attempt(lambda s=spec, p=path: host.loggers.resolve(s, p))
        if resolved is None:
            continue
        if any(entry.name == resolved[0].name for entry, _ in loggers):
            problems.items.append((f"{path}.type", f"logger {resolved[0].name!r} is listed twice"))
            continue
        if problems.attempt(lambda e=resolved[0], p=path: require_extra(e, p)) is not None:
            loggers.append(resolved)
    return loggers


def _resolve_metrics(
    config: RunConfig, host: PluginHost, problems: _Problems
) -> dict[str, Callable[..., float]]:
    """The metric functions of ``evaluation.metrics`` by name."""
    metrics = {}
    for index, name in enumerate(config.evaluation.metrics):
        if name not in host.metrics:
            problems.items.append(
                (f"evaluation.metrics[{index}]", host.metrics.unknown_message(name))
            )
        else:
            metrics[name] = host.metrics.get(name).obj
    return metrics


def _check_optimization(components: Components, epochs: int) -> None:
    """Build the optimizer and scheduler once over a stand-in parameter, so that values
    their factories refuse are config errors of ``mtl validate`` too."""
    probe = [nn.Parameter(torch.zeros(1))]
    components.build_scheduler(components.build_optimizer(probe), epochs)


def _broken(entry: Entry, problem: str) -> PluginError:
    return PluginError(
        f"{entry.kind} {entry.name!r} of plugin {entry.owner!r} {problem}; see the contract "
        f"of mtl_register_{entry.kind}s in mtlkit.components.hookspecs"
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


def _reference_problems(
    config: RunConfig, by_name: dict[str, TaskHead], dense_heads: list[DenseHead]
) -> list:
    """Config keys that name tasks must name existing ones (a segmentation task only where
    a mask, not one value per image, makes sense)."""
    problems = []
    dense = {head.name for head in dense_heads}
    tasks = ", ".join([*by_name, *dense]) or "(none)"
    select_task, select_metric = config.evaluation.select.split(".")
    if select_task != "mean" and select_task not in by_name and select_task not in dense:
        problems.append(
            ("evaluation.select", f"no task called {select_task!r}; tasks: {tasks} (or mean)")
        )
    if select_task in dense or (select_task == "mean" and select_metric in DENSE_METRICS):
        if select_metric not in DENSE_METRICS:
            problems.append(
                (
                    "evaluation.select",
                    f"{select_task!r} is a segmentation task: select "
                    f"{select_task}.dice or {select_task}.iou",
                )
            )
        elif not dense:
            problems.append(("evaluation.select", f"no segmentation task reports {select_metric}"))
        return problems + _task_key_problems(config, by_name, dense, tasks)
    if select_metric not in config.evaluation.metrics:
        problems.append(
            ("evaluation.select", f"metric {select_metric!r} is not in evaluation.metrics")
        )
    elif select_task == "mean" and not by_name:  # every epoch would score NaN
        problems.append(
            (
                "evaluation.select",
                f"only segmentation tasks here: no task reports {select_metric}; select "
                f"{next(iter(dense), 'TASK')}.dice",
            )
        )
    return problems + _task_key_problems(config, by_name, dense, tasks)


def _task_key_problems(
    config: RunConfig, by_name: dict[str, TaskHead], dense: set[str], tasks: str
) -> list:
    """``reference_columns`` and ``split.stratify`` name tasks with one value per image."""

    def problem(task: str) -> str:
        if task in dense:
            return f"{task!r} is a segmentation task: only a task with one label per image fits"
        return f"no task called {task!r}; tasks: {tasks}"

    problems = []
    for task in config.evaluation.reference_columns:
        if task not in by_name:
            problems.append((f"evaluation.reference_columns.{task}", problem(task)))
    for index, task in enumerate(config.data.split.stratify):
        if task not in by_name:
            problems.append((f"data.split.stratify[{index}]", problem(task)))
    return problems


def _consistency_problems(config: RunConfig, by_name: dict[str, TaskHead]) -> list:
    """``evaluation.consistency`` must pair two different binary tasks of the run."""
    problems = []
    for index, pair in enumerate(config.evaluation.consistency or []):
        where = f"evaluation.consistency[{index}]"
        for task in pair:
            if task not in by_name:
                tasks = ", ".join(by_name) or "(none)"
                problems.append((where, f"no task called {task!r}; tasks: {tasks}"))
            elif by_name[task].kind != "binary":
                problems.append((where, f"task {task!r} is not binary"))
        if pair[0] == pair[1]:
            problems.append((where, f"({pair[0]}, {pair[1]}) relates a task to itself"))
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
    if kinds is None and head.kind not in IMAGE_KINDS:  # a mask needs a loss made for one
        raise ConfigError(
            [
                (
                    f"{path}.type",
                    f"loss {entry.name!r} declares no head_kinds; a {head.kind} task needs a "
                    f"loss with {head.kind!r} in its head_kinds (e.g. dice_bce)",
                )
            ]
        )
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


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The modules of ``modules`` that cannot be imported here (a broken installation with
    what it raised)."""
    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
        except Exception as exc:  # a broken installation: say what it raised
            missing.append(f"{module} ({type(exc).__name__}: {exc})")
    return missing


def require_extra(entry: Entry, path: str) -> Entry:
    """``entry``, when every module its component ``requires`` imports; else a config error
    at ``{path}.type`` naming the missing modules and the component's ``install`` command
    (checked while the config is validated, before any data or training)."""
    missing = missing_modules(getattr(entry.obj, "requires", ()))
    if missing:
        install = getattr(entry.obj, "install", "") or "install the packages it needs"
        raise ConfigError(
            [
                (
                    f"{path}.type",
                    f"{kind_label(entry.kind)} {entry.name!r} needs {', '.join(missing)}, which "
                    f"cannot be imported here; install it: {install}",
                )
            ]
        )
    return entry


def _build_baseline(host: PluginHost, spec: dict[str, Any], path: str) -> Baseline:
    """A baseline from its config entry; one whose optional extra is not installed is a
    config error naming the install command (checked here, before any data or training)."""
    entry, options = host.baselines.resolve(spec, path)
    require_extra(entry, path)
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


def resolve_source(
    host: PluginHost, spec: Any, path: str
) -> tuple[Entry, BaseModel | None, ColumnMap]:
    """A data source's entry, its own options, and the ``columns`` mapping every source
    takes (handled here, not by the source: :mod:`mtlkit.data.columns`)."""
    rest, columns = split_columns(spec, path)
    entry, options = host.data_sources.resolve(rest, path)
    return entry, options, columns


def read_sample_set(
    entry: Entry,
    options: BaseModel | None,
    path: str,
    columns: Mapping[str, str] | None = None,
) -> SampleSet:
    """Call a data source, with its ``columns`` mapping applied to what it returns, which
    must be a :class:`SampleSet`."""
    sample_set = call_component(entry, options, path)
    if not isinstance(sample_set, SampleSet):
        raise DataError(
            f"data source {entry.name!r} returned {type(sample_set).__name__}, not a SampleSet"
        )
    return rename_columns(sample_set, columns or {}, path)
