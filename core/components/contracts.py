"""The component contracts of :mod:`mtlkit.components.interfaces`, checked.

The core runs these checks when a plugin registers a component, when a head is built and
when a head's targets are read; :mod:`mtlkit.testing` runs the same ones in a plugin
author's tests. Each returns its findings as sentences that end with the fix (empty or None
when the component fits), so each caller raises the error of its own layer: a PluginError
at registration, a ConfigError at build, a data problem per image, an AssertionError in a
test.
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from mtlkit.components.interfaces import (
    HEAD_KINDS,
    Baseline,
    Command,
    Constraint,
    DenseHead,
    ExperimentLogger,
    TaskHead,
    TaskWeighting,
)
from mtlkit.data.samples import Sample, SampleSet
from mtlkit.errors import PluginError

PROBE_WIDTH = 8
"""Feature width a head's output layer is probed with at build (any width must work)."""

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60


def describe(obj: Any) -> str:
    """A short phrase naming what ``obj`` is, for messages: ``function my_head``."""
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    if callable(obj) and hasattr(obj, "__qualname__"):
        return f"function {obj.__qualname__}"
    return f"{type(obj).__name__} {_short.repr(obj)}"


def kind_label(kind: str) -> str:
    """A registry kind as prose: ``data_source`` -> ``data source``."""
    return kind.replace("_", " ")


# --- registration: what is registered has what its kind needs -------------------------------


def _head_class(obj: Any) -> list[str]:
    if not isinstance(obj, type):
        return [f"it is {describe(obj)}, not a class: register a subclass of mtlkit.TaskHead"]
    if not issubclass(obj, TaskHead):
        return [f"{describe(obj)} does not subclass mtlkit.TaskHead: derive it from TaskHead"]
    problems = []
    if obj.kind not in HEAD_KINDS:
        problems.append(
            f"its kind is {obj.kind!r}: set kind = {HEAD_KINDS[0]!r} (one sigmoid output) or "
            f"{HEAD_KINDS[1]!r} (a softmax over classes), or derive it from mtlkit.DenseHead "
            "(a mask per image)"
        )
    elif (obj.kind == "segmentation") != issubclass(obj, DenseHead):
        problems.append(
            "a segmentation head derives from mtlkit.DenseHead (it builds a decoder over "
            "feature maps), and a DenseHead has kind 'segmentation'"
        )
    if obj.default_loss is not None and not (
        isinstance(obj.default_loss, str) and obj.default_loss
    ):
        problems.append(
            f"its default_loss is {obj.default_loss!r}: name a task loss, or leave it None "
            "for the default of the head's kind"
        )
    if obj.target is TaskHead.target:
        problems.append(
            "it does not implement target(labels): return the task's target for one "
            "sample's labels (NaN when unknown)"
        )
    return problems


def _module_class(
    base: type[nn.Module], methods: tuple[str, ...] = ("forward",)
) -> Callable[[Any], list[str]]:
    """A registration check for constraints and weightings: a subclass of ``base`` that
    implements at least one of ``methods``, or a factory (what it builds is checked when it
    is built)."""

    def check(obj: Any) -> list[str]:
        if isinstance(obj, type):
            if not issubclass(obj, base):
                return [
                    f"{describe(obj)} does not subclass mtlkit.{base.__name__}: derive it "
                    f"from {base.__name__}"
                ]
            if all(getattr(obj, m) is getattr(base, m) for m in methods):
                others = "".join(f" nor {m}()" for m in methods[1:])
                return [f"{describe(obj)} does not implement {methods[0]}(){others}"]
            return []
        if callable(obj):
            return []
        return [
            f"it is {describe(obj)}: register a subclass of mtlkit.{base.__name__} (or a "
            "function returning one)"
        ]

    return check


def _callable(what: str) -> Callable[[Any], list[str]]:
    def check(obj: Any) -> list[str]:
        return [] if callable(obj) else [f"it is {describe(obj)}, not callable: {what}"]

    return check


def _baseline_class(obj: Any) -> list[str]:
    if not (isinstance(obj, type) and issubclass(obj, Baseline)):
        return [f"it is {describe(obj)}: register a subclass of mtlkit.Baseline"]
    return []


def _logger_class(obj: Any) -> list[str]:
    if not (isinstance(obj, type) and issubclass(obj, ExperimentLogger)):
        return [f"it is {describe(obj)}: register a subclass of mtlkit.ExperimentLogger"]
    return []


def baseline_problem(baseline: Any) -> str | None:
    """What is wrong with a built baseline, or None."""
    if not isinstance(baseline, Baseline):
        return f"built {describe(baseline)}, not a mtlkit.Baseline"
    if not isinstance(getattr(baseline, "name", None), str) or not baseline.name:
        return "has no name: call super().__init__(name)"
    return None


def _command(obj: Any) -> list[str]:
    if isinstance(obj, Command):
        return []
    return [f"it is {describe(obj)}: register a mtlkit.Command(help, add_arguments, run)"]


_REGISTRATION: dict[str, Callable[[Any], list[str]]] = {
    "head": _head_class,
    # a loss, task losses of its own, or predictions that obey it by construction
    "constraint": _module_class(Constraint, ("forward", "task_losses", "adjust")),
    "weighting": _module_class(TaskWeighting),
    "backbone": _callable("register a function building an nn.Module from its options"),
    "task_loss": _callable("register a function returning fn(logits, targets)"),
    "metric": _callable("register a function fn(y_true, y_prob, threshold) -> float"),
    "data_source": _callable("register a function returning a SampleSet from its options"),
    "report": _callable("register a function returning fn(run_result, console)"),
    "command": _command,
    "baseline": _baseline_class,
    "logger": _logger_class,
    "optimizer": _callable("register a function fn(options, params) -> torch.optim.Optimizer"),
    "scheduler": _callable("register a function fn(options, optimizer, epochs) -> scheduler"),
}

SCHEDULER_METHODS = ("step", "state_dict", "load_state_dict")


def optimizer_problem(optimizer: Any) -> str | None:
    """What is wrong with what an optimizer factory returned, or None."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return None
    return f"returned {type(optimizer).__name__}, not a torch.optim.Optimizer"


def scheduler_problem(scheduler: Any) -> str | None:
    """What is wrong with what a scheduler factory returned, or None."""
    missing = [m for m in SCHEDULER_METHODS if not callable(getattr(scheduler, m, None))]
    if not missing:
        return None
    return f"returned {type(scheduler).__name__}, which has no {', '.join(missing)}"


def registration_problems(kind: str, obj: Any, options: Any = None) -> list[str]:
    """What ``obj`` lacks to be registered as a ``kind`` component (``options`` is its
    options model), each with the fix; empty when it fits."""
    check = _REGISTRATION.get(kind)
    problems = check(obj) if check is not None else []
    if options is not None and not (isinstance(options, type) and issubclass(options, BaseModel)):
        problems.append(
            f"its options model is {describe(options)}: give a subclass of mtlkit.OptionsModel"
        )
    return problems


def check_registration(kind: str, name: str, obj: Any, owner: str, options: Any = None) -> None:
    """Refuse a registration that breaks its kind's contract.

    Raises :class:`PluginError` naming the plugin, the component and the fix.
    """
    problems = registration_problems(kind, obj, options)
    if problems:
        raise PluginError(
            f"plugin {owner!r} registered {kind_label(kind)} {name!r}, which does not fit: "
            + "; ".join(problems)
        )


# --- build: what must agree once a component exists ------------------------------------------


def head_problems(head: Any) -> list[str]:
    """What is wrong with a built head (its name, kind, classes and output layer), each with
    the fix; empty when it fits."""
    if not isinstance(head, TaskHead):
        return [f"building it gave {describe(head)}, not a mtlkit.TaskHead"]
    problems = []
    if not isinstance(head.name, str):
        problems.append(
            f"its name is {describe(head.name)}, not a str: pass the task name to TaskHead.__init__"
        )
    if head.kind not in HEAD_KINDS:
        return [
            *problems,
            f"its kind is {head.kind!r}: set kind = 'binary' or 'multiclass', or derive it "
            "from mtlkit.DenseHead",
        ]
    if isinstance(head, DenseHead):
        return problems + decoder_problems(head)
    classes = class_problems(head)
    if classes:  # the output layer's size depends on the classes
        return problems + classes
    return problems + output_problems(head)


def class_problems(head: TaskHead) -> list[str]:
    """Whether a head's ``classes`` fit its ``kind``: a binary head has exactly two, a
    multiclass head two or more distinct ones."""
    classes = head.classes
    if not isinstance(classes, (list, tuple)):
        return [f"its classes are {describe(classes)}: give a list of class names"]
    names = ", ".join(map(str, classes))
    if head.kind == "binary" and len(classes) != 2:
        if len(classes) > 2:
            return [
                f"it has {len(classes)} classes ({names}) but kind 'binary' (one sigmoid "
                "output, targets 0 or 1): set kind = 'multiclass' for a softmax over them"
            ]
        return [
            f"it is a binary head with {len(classes)} class(es) ({names or 'none'}): a binary "
            "head has two, negative and positive (leave classes unset for those)"
        ]
    if head.kind == "multiclass" and (
        len(classes) < 2 or len(set(map(str, classes))) != len(classes)
    ):
        return [
            f"it is a multiclass head with classes [{names}]: give two or more distinct "
            "class names, in output order"
        ]
    return []


def output_problems(head: TaskHead, width: int = PROBE_WIDTH) -> list[str]:
    """Whether ``head.build_module(width)`` maps features (2, width) to logits
    (2, num_outputs)."""
    expected = (2, head.num_outputs)
    # Probing draws initial weights; the run's seeded initialisation must not shift.
    with torch.random.fork_rng(devices=[]):
        try:
            module = head.build_module(width)
            if not isinstance(module, nn.Module):
                return [f"build_module({width}) returned {describe(module)}, not an nn.Module"]
            module.eval()
            with torch.no_grad():
                out = module(torch.zeros(2, width))
        except Exception as exc:  # any failure of plugin code is reported, not raised
            return [
                f"build_module({width}) or its forward failed ({type(exc).__name__}: {exc}): "
                "it must build a layer for any feature width"
            ]
    if isinstance(out, torch.Tensor) and tuple(out.shape) == expected:
        return []
    got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else describe(out)
    fix = "make its last layer output num_outputs logits"
    if head.kind == "binary" and isinstance(out, torch.Tensor) and out.ndim == 2:
        fix = "set kind = 'multiclass' if it predicts one of several classes, else " + fix
    return [
        f"build_module(width) maps features (2, width) to {got}, but a {head.kind} head with "
        f"{len(head.classes)} classes needs logits of shape {expected}: {fix}"
    ]


def decoder_problems(head: DenseHead) -> list[str]:
    """Whether ``head.build_decoder`` maps two probe feature maps (finest first) to logits
    (2, 1, h, w)."""
    channels, reductions = [PROBE_WIDTH, 2 * PROBE_WIDTH], [4, 8]
    maps = [torch.zeros(2, PROBE_WIDTH, 8, 8), torch.zeros(2, 2 * PROBE_WIDTH, 4, 4)]
    with torch.random.fork_rng(devices=[]):
        try:
            module = head.build_decoder(channels, reductions)
            if not isinstance(module, nn.Module):
                return [f"build_decoder() returned {describe(module)}, not an nn.Module"]
            module.eval()
            with torch.no_grad():
                out = module(maps)
        except Exception as exc:  # any failure of plugin code is reported, not raised
            return [
                f"build_decoder(channels, reductions) or its forward failed "
                f"({type(exc).__name__}: {exc}): it must decode any list of feature maps"
            ]
    if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[:2] == (2, 1):
        return []
    got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else describe(out)
    return [
        f"build_decoder() maps feature maps of 2 images to {got}; a segmentation head "
        "needs logits of shape (2, 1, height, width)"
    ]


def built_problem(kind: str, obj: Any) -> str | None:
    """Whether a built constraint or weighting is an instance of its base class."""
    base = {"constraint": Constraint, "weighting": TaskWeighting}[kind]
    if isinstance(obj, base):
        return None
    return (
        f"building it gave {describe(obj)}, not a mtlkit.{base.__name__}: its class or "
        f"function must return a {base.__name__}"
    )


def feature_width(backbone: nn.Module) -> int | None:
    """The width of a backbone's pooled features; None when it does not say."""
    # timm: pooled features are ``head_hidden_size`` wide where a model has a pre-logits
    # layer (e.g. MobileNetV3), else ``num_features``.
    width = getattr(backbone, "head_hidden_size", None) or getattr(backbone, "num_features", None)
    return width if isinstance(width, int) and not isinstance(width, bool) and width > 0 else None


# --- data: targets and samples ---------------------------------------------------------------


def target_problem(head: TaskHead, value: Any) -> str | None:
    """Why ``value``, returned by ``head.target()``, is not a target of the head's kind, with
    the fix; None when it is one (NaN, unknown, always is)."""
    name = type(head).__name__
    if type(value) is not float and not isinstance(value, numbers.Real):
        return (
            f"target() returned {describe(value)}, not a number: {name}.target must return a "
            "float (0.0 or 1.0 for a binary head, the class index for a multiclass one, NaN "
            "when unknown) and raise ValueError for a value it cannot read"
        )
    number = float(value)
    if math.isnan(number):
        return None
    if head.kind == "binary":
        if number in (0.0, 1.0):
            return None
        return (
            f"target() returned {value!r}, but {name} is a binary head (targets 0 or 1): set "
            "kind = 'multiclass' and classes = [...] for a task with more classes"
        )
    count = len(head.classes)
    if number.is_integer() and 0 <= number < count:
        return None
    return (
        f"target() returned {value!r}, but {name} is a multiclass head with {count} classes "
        f"(targets 0 to {count - 1}): return the index of the class in classes"
    )


def image_problem(image: Any) -> str | None:
    """Whether a sample's decoded image is a non-empty 2-D uint8 grayscale array."""
    if not isinstance(image, np.ndarray) or image.ndim != 2 or image.dtype != np.uint8:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else describe(image)
        return f"expected 2-D uint8 grayscale, got {got}"
    if 0 in image.shape:
        return f"the image is empty ({image.shape[1]}x{image.shape[0]} pixels)"
    return None


def sample_problems(sample: Any, *, read: bool = True) -> list[str]:
    """What breaks the :class:`~mtlkit.Sample` contract in one sample: ids, labels, and
    (``read``) its image, mask and box against the image."""
    if not isinstance(sample, Sample):
        return [f"it is {describe(sample)}, not a mtlkit.Sample"]
    problems = []
    for field in ("image_id", "patient_id"):
        value = getattr(sample, field)
        if not isinstance(value, str) or not value:
            problems.append(f"its {field} is {describe(value)}: give a non-empty str")
    if not isinstance(sample.labels, dict):
        problems.append(f"its labels are {describe(sample.labels)}: give a dict column -> value")
    if not read:
        return problems
    image = sample.image()
    problem = image_problem(image)
    if problem:
        return [*problems, f"image(): {problem}"]
    height, width = image.shape
    if sample.mask is not None:
        mask = sample.mask()
        if not isinstance(mask, np.ndarray) or mask.shape != image.shape:
            got = mask.shape if isinstance(mask, np.ndarray) else describe(mask)
            problems.append(f"mask() gave {got}, but the image is {image.shape}: same shape")
        elif mask.dtype != bool:
            problems.append(f"mask() gave {mask.dtype}: give a boolean array")
    if sample.box is not None:
        box = sample.box
        fits = (
            isinstance(box, tuple)
            and len(box) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) for v in box)
            and 0 <= box[0] < box[2] <= width
            and 0 <= box[1] < box[3] <= height
        )
        if not fits:
            problems.append(
                f"its box {box!r} is not (x0, y0, x1, y1) integers inside the {width}x{height} "
                "image with x0 < x1 and y0 < y1 (end exclusive)"
            )
    return problems


def sample_set_problems(sample_set: Any, max_read: int | None = None) -> list[str]:
    """What breaks the :class:`~mtlkit.SampleSet` contract: its type, each sample's (the
    first ``max_read`` samples' images are read; None reads all) and unique image ids."""
    if not isinstance(sample_set, SampleSet):
        return [f"it returned {describe(sample_set)}, not a mtlkit.SampleSet"]
    if not isinstance(sample_set.samples, list):
        return [f"its samples are {describe(sample_set.samples)}: give a list of Samples"]
    problems = []
    seen: set[str] = set()
    for index, sample in enumerate(sample_set.samples):
        read = max_read is None or index < max_read
        problems += [f"sample {index}: {p}" for p in sample_problems(sample, read=read)]
        image_id = getattr(sample, "image_id", None)
        if isinstance(image_id, str) and image_id in seen:
            problems.append(f"sample {index}: image id {image_id!r} is used twice: make ids unique")
        if isinstance(image_id, str):
            seen.add(image_id)
    return problems
