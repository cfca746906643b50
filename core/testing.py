"""The conformance kit: check a plugin's components against mtlkit's contracts in your own
tests, the way mtlkit's test suite checks every built-in one.

Each ``check_*`` function builds the component from small inputs, exercises what the core
relies on, and raises ``AssertionError`` saying what breaks the contract and how to fix it;
it returns the built component for further checks of your own::

    from mtlkit.testing import check_head, check_metric

    def test_my_head():
        check_head(MyHead, {"name": "size", "label": "size_mm"}, labels=[{"size_mm": "23"}])

    def test_my_metric():
        check_metric(my_metric)

``options`` are what a config would give (a dict, validated by the component's options
model) or an already validated model. The checks are those the core runs
(:mod:`mtlkit.components.contracts`), plus calls with small synthetic inputs.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import numbers
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ValidationError
from rich.console import Console
from torch import nn

from mtlkit.components.contracts import (
    baseline_problem,
    built_problem,
    describe,
    feature_width,
    head_problems,
    optimizer_problem,
    registration_problems,
    sample_set_problems,
    scheduler_problem,
    target_problem,
)
from mtlkit.components.host import PluginHost
from mtlkit.components.interfaces import (
    HEAD_KINDS,
    Baseline,
    Command,
    Constraint,
    ExperimentLogger,
    LoggedFit,
    LoggedRun,
    TaskHead,
    TaskWeighting,
)
from mtlkit.components.registry import Entry
from mtlkit.components.resolve import head_loss, require_extra, split_loss
from mtlkit.config.schema import RunConfig
from mtlkit.data.samples import SampleSet
from mtlkit.errors import ConfigError
from mtlkit.evaluation.documents import aggregate, metrics_document
from mtlkit.evaluation.metrics import metric_values
from mtlkit.results import EvalResult, FitResult, Predictions, RunResult

__all__ = [
    "check_backbone",
    "check_baseline",
    "check_command",
    "check_constraint",
    "check_data_source",
    "check_entry",
    "check_head",
    "check_logger",
    "check_metric",
    "check_optimizer",
    "check_report",
    "check_scheduler",
    "check_task_loss",
    "check_weighting",
]

BATCH = 4  # samples in the synthetic batches the checks feed


def _fail(subject: str, problems: Sequence[str]) -> None:
    if problems:
        raise AssertionError(
            f"{subject} breaks its contract:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def _registered(kind: str, obj: Any, options_model: Any) -> type[BaseModel] | None:
    """The options model, after the registration check the core runs."""
    model = options_model if options_model is not None else getattr(obj, "Options", None)
    _fail(describe(obj), registration_problems(kind, obj, model))
    return model


def _call(subject: str, what: str, fn: Any, *args: Any) -> Any:
    """``fn(*args)``; an exception from plugin code fails the check, saying which call."""
    try:
        return fn(*args)
    except AssertionError:
        raise
    except Exception as exc:
        raise AssertionError(f"{subject}: {what} raised {type(exc).__name__}: {exc}") from exc


def _validated(subject: str, options: Any, model: type[BaseModel] | None) -> Any:
    """``options`` validated by ``model`` as the core validates a config's keys (None
    without a model)."""
    if isinstance(options, BaseModel):
        return options
    if model is None:
        if options:
            raise AssertionError(f"{subject} has no options model, but got options {options!r}")
        return None
    try:
        return model.model_validate(dict(options or {}))
    except ValidationError as exc:
        raise AssertionError(f"{subject}: options {options!r} do not validate: {exc}") from None


def _build(subject: str, factory: Any, options: Any, *args: Any) -> Any:
    """``factory(options, *args)`` as the core calls it, ``factory(*args)`` without options."""
    if options is None:
        return _call(subject, "building it", factory, *args)
    return _call(subject, "building it", factory, options, *args)


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# --- heads -----------------------------------------------------------------------------------


def check_head(
    head_cls: type[TaskHead],
    options: Mapping[str, Any] | BaseModel | None = None,
    labels: Iterable[Mapping[str, Any]] = (),
    *,
    plugins: Iterable[Any] = (),
) -> TaskHead:
    """Check a head class: registration, build (name, kind, classes, output layer), its
    default loss (or ``options["loss"]``, as in a config) against the task losses of the
    installed ``plugins`` (plus in-process ones), its probabilities, and its target for each
    of ``labels`` (a number that fits its kind, NaN, or a ``ValueError``; reading only the
    columns in ``label_columns``). Returns the built head."""
    subject = f"head {describe(head_cls)}"
    model = _registered("head", head_cls, None)
    loss_spec = None
    if not isinstance(options, BaseModel):
        options, loss_spec = split_loss(dict(options or {}))
    head = _build(subject, head_cls, _validated(subject, options, model))
    _fail(subject, head_problems(head))
    columns = head.label_columns
    if not isinstance(columns, (tuple, list)) or not all(isinstance(c, str) for c in columns):
        _fail(subject, [f"label_columns is {describe(columns)}: give a tuple of column names"])
    host = PluginHost(plugins)
    entry = Entry("head", head_cls.__name__, head_cls, "the plugin under test", model, "")
    try:
        head_loss(host, loss_spec, "heads[0]", head, entry)
    except ConfigError as exc:
        _fail(subject, [f"{path}: {message}" for path, message in exc.problems])
    _fail(subject, _probability_problems(subject, head))
    problems = []
    for row in labels:
        problems += _target_problems(head, dict(row))
    _fail(subject, problems)
    return head


def _probability_problems(subject: str, head: TaskHead) -> list[str]:
    if head.kind == "segmentation":
        return _mask_probability_problems(subject, head)
    logits = torch.randn(BATCH, head.num_outputs)
    probs = _call(subject, "probabilities(logits)", head.probabilities, logits)
    expected = (BATCH,) if head.kind == "binary" else (BATCH, head.num_outputs)
    if not isinstance(probs, torch.Tensor) or tuple(probs.shape) != expected:
        got = tuple(probs.shape) if isinstance(probs, torch.Tensor) else describe(probs)
        return [f"probabilities(logits {tuple(logits.shape)}) gave {got}, expected {expected}"]
    if not bool(((probs >= 0) & (probs <= 1)).all()):
        return ["probabilities() gave values outside [0, 1]"]
    if head.kind == "multiclass" and not torch.allclose(probs.sum(-1), torch.ones(BATCH)):
        return ["probabilities() of a multiclass head must sum to 1 over the classes"]
    return []


def _mask_probability_problems(subject: str, head: TaskHead) -> list[str]:
    logits = torch.randn(BATCH, 1, 6, 6)
    probs = _call(subject, "probabilities(logits)", head.probabilities, logits)
    if not isinstance(probs, torch.Tensor) or tuple(probs.shape) != (BATCH, 6, 6):
        got = tuple(probs.shape) if isinstance(probs, torch.Tensor) else describe(probs)
        return [f"probabilities(logits {tuple(logits.shape)}) gave {got}, expected {(BATCH, 6, 6)}"]
    if not bool(((probs >= 0) & (probs <= 1)).all()):
        return ["probabilities() gave values outside [0, 1]"]
    return []


REFUSED = object()  # target() raised ValueError: the contract's way of refusing a value


def _target_problems(head: TaskHead, labels: dict[str, Any]) -> list[str]:
    def target(row: dict[str, Any]) -> Any:
        try:
            return head.target(row)
        except ValueError:
            return REFUSED
        except Exception as exc:
            return exc

    value = target(labels)
    if isinstance(value, Exception):
        return [
            f"target({labels!r}) raised {type(value).__name__}: {value}; raise ValueError for "
            "a value it cannot read"
        ]
    if value is REFUSED:
        return []
    problem = target_problem(head, value)
    if problem:
        return [f"labels {labels!r}: {problem}"]
    declared = {c: labels[c] for c in head.label_columns if c in labels}
    narrowed = target(declared)
    both_nan = _real(narrowed) and math.isnan(narrowed) and math.isnan(value)
    if not (both_nan or (_real(narrowed) and narrowed == value)):
        return [
            f"target() gives {value!r} for {labels!r} but {narrowed!r} for only its "
            f"label_columns {declared!r}: list every column target() reads in label_columns"
        ]
    return []


# --- task losses, constraints, weightings ----------------------------------------------------


def _logits_and_targets(kind: str, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    if kind == "segmentation":  # masks (N, 1, H, W), the last one empty
        logits = torch.randn(BATCH, 1, 6, 6, generator=generator)
        targets = (torch.rand(BATCH, 1, 6, 6, generator=generator) > 0.6).float()
        targets[-1] = 0.0
        return logits.requires_grad_(), targets
    if kind == "binary":
        logits = torch.randn(BATCH, 1, generator=generator)
        targets = torch.tensor([0.0, 1.0, 1.0, 0.0])
    else:
        logits = torch.randn(BATCH, classes, generator=generator)
        targets = torch.tensor([0.0, 2.0, 1.0, 0.0])
    return logits.requires_grad_(), targets


def check_task_loss(
    factory: Any,
    options: Mapping[str, Any] | BaseModel | None = None,
    kind: str = "binary",
    *,
    options_model: type[BaseModel] | None = None,
) -> Any:
    """Check a task loss for heads of ``kind``: ``fn(logits, targets)`` gives a finite
    per-sample loss (N,) with a gradient, each sample's loss depending only on its own
    logits. Returns the loss function."""
    subject = f"task loss {describe(factory)}"
    model = _registered("task_loss", factory, options_model)
    kinds = getattr(factory, "head_kinds", None)
    if kinds is not None and (
        not isinstance(kinds, tuple) or not set(kinds) <= set(HEAD_KINDS) or kind not in kinds
    ):
        _fail(subject, [f"head_kinds is {kinds!r}: a tuple from {HEAD_KINDS} including {kind!r}"])
    fn = _build(subject, factory, _validated(subject, options, model))
    _fail(subject, [] if callable(fn) else [f"the factory returned {describe(fn)}, not a function"])
    logits, targets = _logits_and_targets(kind)
    loss = _call(subject, f"fn(logits, targets) for a {kind} head", fn, logits, targets)
    if not isinstance(loss, torch.Tensor) or tuple(loss.shape) != (BATCH,):
        got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else describe(loss)
        _fail(subject, [f"gave {got} for {BATCH} samples: return one loss per sample, (N,)"])
    if not bool(torch.isfinite(loss).all()) or not loss.requires_grad:
        _fail(subject, ["the loss must be finite and have a gradient path to the logits"])
    (grad,) = torch.autograd.grad(loss[0], logits)
    if bool(grad[1:].abs().sum() > 0):
        _fail(subject, ["sample 0's loss depends on other samples: the core averages it"])
    return fn


def _probabilities(heads: Mapping[str, TaskHead]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    out = {}
    for name, head in heads.items():
        logits = torch.randn(BATCH, head.num_outputs, generator=generator)
        out[name] = head.probabilities(logits).requires_grad_()
    return out


def check_constraint(
    cls: Any,
    options: Mapping[str, Any] | BaseModel | None,
    heads: Mapping[str, TaskHead] | Sequence[TaskHead],
    *,
    options_model: type[BaseModel] | None = None,
) -> Constraint:
    """Check a constraint over ``heads``: it is a Constraint; ``forward`` gives a finite
    scalar (with a gradient path, when the constraint implements it); ``task_losses`` finite
    scalars with a gradient path for tasks of ``heads``, each masking unknown (NaN) targets;
    ``adjust`` probabilities of the same shapes in [0, 1] without changing its input, and
    changes them only when ``adjusts_outputs`` says so; ``violations`` shares in [0, 1].
    Returns it."""
    if not isinstance(heads, Mapping):
        heads = {head.name: head for head in heads}
    subject = f"constraint {describe(cls)}"
    model = _registered("constraint", cls, options_model)
    built = _build(subject, cls, _validated(subject, options, model), dict(heads))
    problem = built_problem("constraint", built)
    _fail(subject, [problem] if problem else [])
    probabilities = _probabilities(heads)
    loss = _call(subject, "forward(probabilities)", built, probabilities)
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0 or not bool(torch.isfinite(loss)):
        _fail(subject, [f"forward() gave {describe(loss)}: return a finite 0-dim tensor"])
    if type(built).forward is not Constraint.forward and not loss.requires_grad:
        _fail(subject, ["forward() has no gradient path to the probabilities"])
    _fail(subject, _task_loss_problems(subject, built, heads))
    detached = {k: v.detach() for k, v in probabilities.items()}
    _fail(subject, _adjust_problems(subject, built, detached))
    shares = _call(subject, "violations(probabilities, 0.5)", built.violations, detached, 0.5)
    if not isinstance(shares, dict) or not all(
        isinstance(k, str) and _real(v) and 0 <= v <= 1 for k, v in shares.items()
    ):
        _fail(subject, [f"violations() gave {shares!r}: a dict relation -> share in [0, 1]"])
    return built


def _task_loss_problems(
    subject: str, constraint: Constraint, heads: Mapping[str, TaskHead]
) -> list[str]:
    generator = torch.Generator().manual_seed(1)
    logits = {
        name: torch.randn(BATCH, head.num_outputs, generator=generator).requires_grad_()
        for name, head in heads.items()
    }
    labelled = {name: _logits_and_targets(head.kind)[1] for name, head in heads.items()}
    labelled = {name: torch.cat([t[:-1], torch.tensor([math.nan])]) for name, t in labelled.items()}
    unlabelled = {name: torch.full((BATCH,), math.nan) for name in heads}
    problems = []
    for what, targets in (("partly labelled", labelled), ("unlabelled", unlabelled)):
        losses = _call(
            subject, f"task_losses(logits, {what} targets)", constraint.task_losses, logits, targets
        )
        if not isinstance(losses, Mapping):
            return [f"task_losses() gave {describe(losses)}: a dict task -> scalar loss"]
        unknown = sorted(set(losses) - set(heads))
        if unknown:
            problems.append(f"task_losses() names tasks no head defines: {', '.join(unknown)}")
        for task, loss in losses.items():
            if (
                not isinstance(loss, torch.Tensor)
                or loss.ndim != 0
                or not bool(torch.isfinite(loss))
            ):
                problems.append(
                    f"task_losses()[{task!r}] on {what} targets is {describe(loss)}: "
                    "return a finite 0-dim tensor"
                )
            elif what == "unlabelled" and float(loss.detach()) != 0.0:
                problems.append(
                    f"task_losses()[{task!r}] is {float(loss.detach())} without any known target: "
                    "average over the labelled samples only (mtlkit.masked_mean), 0 without any"
                )
            elif what == "partly labelled" and not loss.requires_grad:
                problems.append(f"task_losses()[{task!r}] has no gradient path to the logits")
    return problems


def _adjust_problems(
    subject: str, constraint: Constraint, probabilities: dict[str, torch.Tensor]
) -> list[str]:
    flag = getattr(constraint, "adjusts_outputs", None)
    if not isinstance(flag, bool):
        return [f"adjusts_outputs is {flag!r}: set True or False"]
    before = {k: v.clone() for k, v in probabilities.items()}
    with torch.no_grad():
        adjusted = _call(subject, "adjust(probabilities)", constraint.adjust, probabilities)
    if not isinstance(adjusted, Mapping):
        return [f"adjust() gave {describe(adjusted)}: a dict task -> probabilities"]
    problems = []
    if any(not torch.equal(before[k], probabilities[k]) for k in before):
        problems.append("adjust() changed its input: return new tensors")
    changed = False
    for task, value in adjusted.items():
        if task not in probabilities:
            problems.append(f"adjust() gave task {task!r}, which no head defines")
            continue
        shape = tuple(probabilities[task].shape)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else describe(value)
            problems.append(
                f"adjust() gave {got} for task {task!r}, whose probabilities are {shape}"
            )
        elif not bool(((value >= 0) & (value <= 1)).all()):
            problems.append(f"adjust() gave values outside [0, 1] for task {task!r}")
        else:
            changed = changed or not torch.equal(value, before[task])
    if changed and not flag:
        problems.append("adjust() changes probabilities but adjusts_outputs is False: set it True")
    return problems


def check_weighting(
    cls: Any,
    options: Mapping[str, Any] | BaseModel | None,
    task_names: Sequence[str],
    *,
    options_model: type[BaseModel] | None = None,
) -> TaskWeighting:
    """Check a task weighting: it is a TaskWeighting, ``forward`` combines every task's loss
    into a finite scalar with a gradient to each, over a few epochs (``end_epoch`` between
    them); ``task_weights`` names tasks with finite weights; and its state dict round-trips
    into a fresh one that then combines losses exactly as it does (runs resume from it).
    Returns it."""
    subject = f"weighting {describe(cls)}"
    model = _registered("weighting", cls, options_model)
    options = _validated(subject, options, model)
    built = _build(subject, cls, options, list(task_names))
    problem = built_problem("weighting", built)
    _fail(subject, [problem] if problem else [])
    for epoch in range(3):  # falling losses, at another rate per task
        losses = {
            name: torch.tensor((i + 1.0) / (1 + epoch * (i + 1)), requires_grad=True)
            for i, name in enumerate(task_names)
        }
        total = _call(subject, "forward(losses)", built, losses)
        if (
            not isinstance(total, torch.Tensor)
            or total.ndim != 0
            or not bool(torch.isfinite(total))
        ):
            _fail(subject, [f"forward() gave {describe(total)}: return a finite 0-dim tensor"])
        grads = torch.autograd.grad(total, list(losses.values()), allow_unused=True)
        ignored = [name for name, grad in zip(losses, grads, strict=True) if grad is None]
        _fail(
            subject,
            [f"forward() ignores the loss of task(s) {', '.join(ignored)}"] if ignored else [],
        )
        _call(subject, "end_epoch()", built.end_epoch)
    weights = _call(subject, "task_weights()", built.task_weights)
    if not isinstance(weights, Mapping) or not all(
        name in task_names and _real(w) and math.isfinite(w) for name, w in weights.items()
    ):
        _fail(subject, [f"task_weights() gave {weights!r}: a dict task -> finite weight"])
    fresh = _build(subject, cls, options, list(task_names))
    try:
        fresh.load_state_dict(built.state_dict())
    except Exception as exc:  # the core resumes a run through exactly this call
        _fail(subject, [f"its state dict does not load into a fresh one: {exc}"])
    probe = {name: torch.tensor(0.5 + i) for i, name in enumerate(task_names)}
    with torch.no_grad():
        again, expected = fresh(dict(probe)), built(dict(probe))
    if not torch.equal(again, expected):
        _fail(
            subject,
            [
                "a fresh one loaded with its state dict combines losses otherwise: keep "
                "everything it learns or counts in parameters or registered buffers"
            ],
        )
    return built


# --- metrics ---------------------------------------------------------------------------------


def _per_class(value: Any, classes: list[str]) -> bool:
    """Whether a metric's ``value`` is one number per class, as the core records it."""
    if isinstance(value, (str, bytes)) or np.ndim(value) != 1:
        return False
    try:
        metric_values("fn", value, classes)
    except (TypeError, ValueError):
        return False
    return True


def check_metric(fn: Any) -> Any:
    """Check a metric: ``fn(y_true, y_prob, threshold)`` gives a number (NaN where undefined),
    or one number per class (a per-class metric), for binary (N,) and multiclass (N, C)
    probabilities with integer labels, and for a split with one class only, as the core
    records it (:func:`~mtlkit.evaluation.metrics.metric_values`), without changing its
    inputs. Returns ``fn``."""
    subject = f"metric {describe(fn)}"
    _registered("metric", fn, None)
    rng = np.random.default_rng(0)
    binary = rng.random(8)
    multiclass = rng.dirichlet(np.ones(3), size=8)
    cases = [
        ("binary", np.array([0, 1, 1, 0, 1, 0, 0, 1]), binary),
        ("multiclass", np.array([0, 1, 2, 0, 1, 2, 0, 1]), multiclass),
        ("one-class binary", np.ones(8, dtype=int), binary),
    ]
    problems = []
    for name, y_true, y_prob in cases:
        before = (y_true.copy(), y_prob.copy())
        value = _call(subject, f"fn(y_true, y_prob, 0.5) on {name} input", fn, y_true, y_prob, 0.5)
        classes = [str(c) for c in range(y_prob.shape[1] if y_prob.ndim == 2 else 2)]
        if not (_real(value) or _per_class(value, classes)):
            problems.append(
                f"{name}: gave {describe(value)}, not a float (NaN if undefined) nor one "
                f"float per class ({len(classes)} here)"
            )
        if not (np.array_equal(before[0], y_true) and np.array_equal(before[1], y_prob)):
            problems.append(f"{name}: changed its input arrays")
    flag = getattr(fn, "higher_is_better", True)
    if not isinstance(flag, bool):
        problems.append(f"higher_is_better is {flag!r}: set True or False")
    _fail(subject, problems)
    return fn


# --- backbones and data sources --------------------------------------------------------------


def check_backbone(
    factory: Any,
    options: Mapping[str, Any] | BaseModel | None = None,
    *,
    options_model: type[BaseModel] | None = None,
    image_size: int = 32,
) -> nn.Module:
    """Check a backbone: an ``nn.Module`` that says its feature width (``num_features``, or
    ``head_hidden_size``) and maps images (2, in_chans, S, S) to pooled features
    (2, width). Build it with ``pretrained: false`` in tests. Returns it."""
    subject = f"backbone {describe(factory)}"
    model = _registered("backbone", factory, options_model)
    options = _validated(subject, options, model)
    net = _build(subject, factory, options)
    if not isinstance(net, nn.Module):
        _fail(subject, [f"the factory returned {describe(net)}, not an nn.Module"])
    width = feature_width(net)
    if width is None:
        _fail(subject, ["it has no positive integer num_features: set the feature width"])
    channels = getattr(options, "in_chans", 1)
    net.eval()
    images = torch.zeros(2, channels, image_size, image_size)
    with torch.no_grad():
        features = _call(subject, f"forward(images {tuple(images.shape)})", net, images)
    if not isinstance(features, torch.Tensor) or tuple(features.shape) != (2, width):
        got = tuple(features.shape) if isinstance(features, torch.Tensor) else describe(features)
        _fail(subject, [f"it maps 2 images to {got}, expected pooled features (2, {width})"])
    return net


def check_data_source(
    factory: Any,
    options: Mapping[str, Any] | BaseModel | None = None,
    *,
    options_model: type[BaseModel] | None = None,
    max_images: int = 16,
) -> SampleSet:
    """Check a data source on a small fixture: it returns a non-empty SampleSet of Samples
    with unique image ids, non-empty patient ids and dict labels; the first ``max_images``
    images are read: 2-D uint8, masks of the image's shape, boxes inside it. Returns it."""
    subject = f"data source {describe(factory)}"
    model = _registered("data_source", factory, options_model)
    sample_set = _build(subject, factory, _validated(subject, options, model))
    problems = _call(subject, "reading its samples", sample_set_problems, sample_set, max_images)
    _fail(subject, problems)
    _fail(subject, [] if len(sample_set) else ["it returned no samples: give it a fixture"])
    return sample_set


# --- reports and commands --------------------------------------------------------------------


def _run_results(folder: Path) -> list[RunResult]:
    """A single-seed and a two-seed result of a tiny run, as metrics.json holds them."""
    config = RunConfig.model_validate(
        {"name": "check", "data": {"source": {"type": "synthetic"}}, "heads": ["bm"]}
    )
    fit = FitResult(1, 0.5, [], 1.0, 10.0)
    predictions = Predictions("test", ["a", "b"], ["p", "q"], {}, {})
    tasks = {"bm": {"n": 2, "n_positive": 1, "acc": 0.5, "precision": math.nan, "auc": 1.0}}
    evals = {"test": EvalResult("test", 2, 2, tasks, {"alnm_without_bm": 0.0}, predictions)}
    single = metrics_document(config, 0, fit, evals)
    repeated = aggregate(
        config, {"seed_0": single, "seed_1": metrics_document(config, 1, fit, evals)}
    )
    return [RunResult(folder, single, ["bm"]), RunResult(folder, repeated, ["bm"])]


def check_report(
    factory: Any,
    options: Mapping[str, Any] | BaseModel | None = None,
    *,
    options_model: type[BaseModel] | None = None,
) -> Any:
    """Check a report: the factory returns ``fn(run_result, console)``, which presents a
    one-seed and a repeated-runs result (written to a temporary run directory). Returns
    ``fn``."""
    subject = f"report {describe(factory)}"
    model = _registered("report", factory, options_model)
    report = _build(subject, factory, _validated(subject, options, model))
    _fail(subject, [] if callable(report) else [f"the factory returned {describe(report)}"])
    with tempfile.TemporaryDirectory() as folder:
        for result in _run_results(Path(folder)):
            console = Console(file=io.StringIO(), width=120)
            _call(subject, "fn(run_result, console)", report, result, console)
    return report


def check_command(command: Any) -> Command:
    """Check a CLI command: a ``mtlkit.Command`` with a help text whose ``add_arguments``
    sets up a parser and whose ``run`` is callable. Returns it."""
    subject = f"command {describe(command)}"
    _registered("command", command, None)
    problems = [] if isinstance(command.help, str) and command.help.strip() else ["no help text"]
    _call(subject, "add_arguments(parser)", command.add_arguments, argparse.ArgumentParser())
    problems += [] if callable(command.run) else [f"run is {describe(command.run)}"]
    _fail(subject, problems)
    return command


# --- optimizers and schedulers --------------------------------------------------------------


def check_optimizer(
    factory: Any, options: Mapping[str, Any] | BaseModel | None = None, *, options_model=None
) -> torch.optim.Optimizer:
    """Check an optimizer: ``factory(options, params)`` returns a torch optimizer over
    ``params`` whose ``step`` changes them and whose state round-trips through
    ``state_dict``/``load_state_dict`` (a resumed run continues exactly). Returns it."""
    subject = f"optimizer {describe(factory)}"
    model = _registered("optimizer", factory, options_model)
    validated = _validated(subject, options, model)
    layer = nn.Linear(3, 1)
    optimizer = _build(subject, factory, validated, list(layer.parameters()))
    _fail(subject, [p for p in [optimizer_problem(optimizer)] if p])
    before = layer.weight.detach().clone()
    for _ in range(2):  # two steps, so that moments exist in the state
        optimizer.zero_grad()
        layer(torch.ones(BATCH, 3)).sum().backward()
        _call(subject, "step()", optimizer.step)
    problems = []
    if torch.equal(before, layer.weight.detach()):
        problems.append("step() did not change the parameters")
    state = _call(subject, "state_dict()", optimizer.state_dict)
    again = _build(subject, factory, validated, list(layer.parameters()))
    _call(subject, "load_state_dict(state_dict())", again.load_state_dict, state)
    if again.state_dict()["param_groups"] != state["param_groups"]:
        problems.append("load_state_dict(state_dict()) did not restore the hyper-parameters")
    _fail(subject, problems)
    return optimizer


def check_scheduler(
    factory: Any,
    options: Mapping[str, Any] | BaseModel | None = None,
    *,
    options_model=None,
    epochs: int = 4,
) -> Any:
    """Check a learning-rate scheduler: ``factory(options, optimizer, epochs)`` returns an
    object stepped once per epoch that keeps the learning rate finite and >= 0, with a
    JSON-serialisable ``state_dict`` (it is saved in the training state as JSON) that
    ``load_state_dict`` restores. Returns it."""
    subject = f"scheduler {describe(factory)}"
    model = _registered("scheduler", factory, options_model)
    validated = _validated(subject, options, model)

    def build() -> tuple[torch.optim.Optimizer, Any]:
        optimizer = torch.optim.SGD(nn.Linear(3, 1).parameters(), lr=0.1)
        return optimizer, _build(subject, factory, validated, optimizer, epochs)

    optimizer, scheduler = build()
    _fail(subject, [p for p in [scheduler_problem(scheduler)] if p])
    problems = []
    for epoch in range(epochs):
        optimizer.step()
        _call(subject, "step()", scheduler.step)
        lr = optimizer.param_groups[0]["lr"]
        if not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr >= 0):
            problems.append(f"after {epoch + 1} step(s) the learning rate is {lr!r}")
            break
    state = _call(subject, "state_dict()", scheduler.state_dict)
    try:
        json.dumps(state)
    except (TypeError, ValueError) as exc:
        problems.append(f"state_dict() is not JSON-serialisable ({exc})")
    restored_optimizer, restored = build()
    restored_optimizer.load_state_dict(optimizer.state_dict())  # as a resumed run does
    _call(subject, "load_state_dict(state_dict())", restored.load_state_dict, state)
    optimizer.step()
    scheduler.step()
    restored_optimizer.step()
    restored.step()
    if restored_optimizer.param_groups[0]["lr"] != optimizer.param_groups[0]["lr"]:
        problems.append("a scheduler restored from state_dict() steps to another learning rate")
    _fail(subject, problems)
    return scheduler


# --- baselines -------------------------------------------------------------------------------


def check_baseline(
    cls: Any, options: Mapping[str, Any] | BaseModel | None = None, *, options_model=None
) -> Any:
    """Check a baseline class: it subclasses ``mtlkit.Baseline`` and implements ``fit``; it
    builds from its options with a name; ``requires`` names modules and ``install`` says
    how to get them. Training one needs real data: test ``fit`` on a small fixture of your
    own (a baseline must learn from the ``train`` split only). Returns the built baseline."""
    subject = f"baseline {describe(cls)}"
    model = _registered("baseline", cls, options_model)
    baseline = _build(subject, cls, _validated(subject, options, model))
    problems = [p for p in [baseline_problem(baseline)] if p]
    if type(baseline).fit is Baseline.fit:
        problems.append("it does not implement fit(context, seed)")
    problems += _extra_problems(baseline)
    _fail(subject, problems)
    return baseline


def _extra_problems(component: Any) -> list[str]:
    """What is wrong with a component's declaration of its optional extra: ``requires``,
    a tuple of module names, and ``install``, how to install them."""
    requires = getattr(component, "requires", ())
    if not (isinstance(requires, tuple) and all(isinstance(r, str) for r in requires)):
        return [f"requires is {requires!r}: a tuple of module names"]
    if requires and not getattr(component, "install", ""):
        return ["requires modules but install is empty: say how to install them"]
    return []


# --- experiment loggers ----------------------------------------------------------------------


def check_logger(
    cls: Any, options: Mapping[str, Any] | BaseModel | None = None, *, options_model=None
) -> Any:
    """Check an experiment logger class: it subclasses ``mtlkit.ExperimentLogger``, builds
    from its options, says how to install what it ``requires``, and, where that imports,
    logs a run of two seeds of two epochs into a temporary run directory and then a resume
    of it (the second seed's epochs replayed) without raising. What it recorded is for
    your own test to read back from the tracker. Returns the built logger."""
    subject = f"logger {describe(cls)}"
    model = _registered("logger", cls, options_model)
    validated = _validated(subject, options, model)
    logger = _build(subject, cls, validated)
    problems = [] if isinstance(logger, ExperimentLogger) else [f"built {describe(logger)}"]
    problems += _extra_problems(cls)
    _fail(subject, problems)
    try:
        require_extra(Entry("logger", "checked", cls, "check", model, ""), "loggers[0]")
    except ConfigError:
        return logger  # its extra is not installed here: nothing more can be exercised
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        for resume in (False, True):
            again = logger if not resume else _build(subject, cls, validated)
            _log_two_seeds(subject, again, out, resume)
    return logger


def _log_two_seeds(subject: str, logger: Any, out: Path, resume: bool) -> None:
    """Drive ``logger`` through a two-seed run in ``out``; a resume redoes the second seed."""
    fits = ["seed_0", "seed_1"]
    run = LoggedRun("check", out, {"name": "check"}, {"name": "check"}, fits, resume)
    _call(subject, "start_run(run)", logger.start_run, run)
    for seed, label in enumerate(fits):
        if resume and seed == 0:
            continue  # finished before the interruption
        (out / label).mkdir(exist_ok=True)
        (out / label / "metrics.json").write_text("{}", encoding="utf-8")
        fit = LoggedFit(label, out / label, None, seed)
        _call(subject, "start_fit(fit)", logger.start_fit, fit)
        for epoch in (1, 2):
            values = {"train_loss": 1.0 / epoch, "val_metrics.bm.auc": math.nan}
            _call(subject, "log_epoch(epoch, values)", logger.log_epoch, epoch, values)
        files = [out / label / "metrics.json"]
        _call(subject, "end_fit(final, files)", logger.end_fit, {"test.tasks.bm.auc": 0.5}, files)
    final = {"test.tasks.bm.auc.mean": 0.5}
    _call(subject, "end_run(final, files)", logger.end_run, final, [])


# --- one registry entry ----------------------------------------------------------------------


def check_entry(entry: Entry, options: Mapping[str, Any] | None = None, **context: Any) -> Any:
    """Check one registry entry (``PluginHost().registries[kind].get(name)``) with the check
    of its kind and its registered options model. ``context`` gives what the kind needs:
    ``labels`` (heads), ``heads`` (constraints), ``task_names`` (weightings; default two
    tasks), ``kind`` (task losses; default every kind it declares). Returns what the check
    built (a list for task losses, one per kind)."""
    model = entry.options
    kind = entry.kind
    if kind == "head":
        return check_head(entry.obj, options, context.get("labels", ()))
    if kind == "task_loss":
        kinds = (
            [context["kind"]] if "kind" in context else getattr(entry.obj, "head_kinds", HEAD_KINDS)
        )
        return [check_task_loss(entry.obj, options, k, options_model=model) for k in kinds]
    if kind == "constraint":
        return check_constraint(entry.obj, options, context["heads"], options_model=model)
    if kind == "weighting":
        names = context.get("task_names", ["task_a", "task_b"])
        return check_weighting(entry.obj, options, names, options_model=model)
    if kind == "metric":
        return check_metric(entry.obj)
    if kind == "backbone":
        return check_backbone(entry.obj, options, options_model=model)
    if kind == "data_source":
        return check_data_source(entry.obj, options, options_model=model)
    if kind == "report":
        return check_report(entry.obj, options, options_model=model)
    if kind == "command":
        return check_command(entry.obj)
    if kind == "baseline":
        return check_baseline(entry.obj, options, options_model=model)
    if kind == "optimizer":
        return check_optimizer(entry.obj, options, options_model=model)
    if kind == "scheduler":
        return check_scheduler(entry.obj, options, options_model=model)
    if kind == "logger":
        return check_logger(entry.obj, options, options_model=model)
    raise AssertionError(f"no conformance check for components of kind {kind!r}")
