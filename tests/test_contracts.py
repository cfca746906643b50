"""Contracts enforced by the core (registration, build, targets, the per-head ``loss`` key)
and by the conformance kit: every check is shown catching a deliberately broken component."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import ROOT, tiny_raw
from torch import nn

from mtlkit import (
    Baseline,
    BaselineOutput,
    Command,
    ConfigError,
    Constraint,
    DataError,
    Engine,
    MulticlassOptions,
    OptionsModel,
    PluginError,
    Sample,
    SampleSet,
    TaskHead,
    TaskWeighting,
    canonical,
    hookimpl,
    load_config,
    masked_mean,
)
from mtlkit.components.host import PluginHost
from mtlkit.components.resolve import resolve_components
from mtlkit.data.targets import build_targets
from mtlkit.plugins.heads import BinaryHead, BinaryOptions
from mtlkit.testing import (
    check_backbone,
    check_baseline,
    check_command,
    check_constraint,
    check_data_source,
    check_entry,
    check_head,
    check_metric,
    check_optimizer,
    check_report,
    check_scheduler,
    check_task_loss,
    check_weighting,
)

SUBTYPES = ["luminal_a", "luminal_b", "her2", "triple_negative"]


def plugin(kind: str, name: str, obj: Any, options: Any = None) -> Any:
    """An object plugin whose one hook registers ``obj`` as a ``kind`` called ``name``."""
    hook = {
        "head": "mtl_register_heads",
        "task_loss": "mtl_register_task_losses",
        "constraint": "mtl_register_constraints",
        "weighting": "mtl_register_task_weightings",
        "metric": "mtl_register_metrics",
        "backbone": "mtl_register_backbones",
        "data_source": "mtl_register_data_sources",
        "report": "mtl_register_reports",
        "command": "mtl_register_commands",
    }[kind]

    def register(registry):
        registry.register(name, obj, options=options)

    return type(
        "BrokenPlugin", (), {"name": "broken_plugin", hook: staticmethod(hookimpl(register))}
    )()


# --- heads used below ------------------------------------------------------------------------


class SubtypeOptions(OptionsModel):
    name: str = "subtype"
    dropout: float = 0.0


class SubtypeHead(TaskHead):
    """A correct third-party multiclass head: no default_loss, no loss option."""

    kind = "multiclass"
    Options = SubtypeOptions

    def __init__(self, options):
        super().__init__(options.name, classes=SUBTYPES)

    @property
    def label_columns(self):
        return ("subtype",)

    def target(self, labels):
        value = canonical(labels.get("subtype"))
        return math.nan if value is None else float(SUBTYPES.index(value))


class ForgotKindHead(SubtypeHead):
    """The issue's silent case: four classes, but ``kind`` left at its binary default."""

    kind = "binary"


class CountHead(TaskHead):
    """Binary by kind, but its target is the raw node count (0..n): a multiclass target."""

    def __init__(self):
        super().__init__("nodes")

    @property
    def label_columns(self):
        return ("alnm_count",)

    def target(self, labels):
        value = labels.get("alnm_count")
        return math.nan if value is None else float(value)


def returns(value: Any, head_kind: str = "binary", classes=None) -> TaskHead:
    """A head of ``head_kind`` whose target() returns ``value`` (or raises it)."""

    class ReturnsHead(TaskHead):
        kind = head_kind

        def target(self, labels):
            if isinstance(value, Exception):
                raise value
            return value

    return ReturnsHead("odd", classes=classes)


def resolve(raw: dict, *plugins: Any):
    return resolve_components(load_config(raw), PluginHost(plugins))


def problems_of(raw: dict, *plugins: Any) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        resolve(raw, *plugins)
    return dict(info.value.problems)


def with_heads(*heads: Any) -> dict:
    raw = tiny_raw(heads=list(heads), constraints=[])
    raw["data"]["split"]["stratify"] = []
    raw["evaluation"]["reference_columns"] = {}
    return raw


# --- registration ----------------------------------------------------------------------------


class NotAHead:
    def target(self, labels):
        return 0.0


class RegressionHead(SubtypeHead):
    kind = "regression"


class NoTargetHead(TaskHead):
    pass


class NumberLossHead(SubtypeHead):
    default_loss = 3


class ModuleConstraint(nn.Module):
    def forward(self, probabilities):
        return torch.zeros(())


class NoForwardConstraint(Constraint):
    pass


class ModuleWeighting(nn.Module):
    def forward(self, losses):
        return sum(losses.values())


@pytest.mark.parametrize(
    "kind, obj, options, words",
    [
        ("head", lambda options: None, None, "not a class: register a subclass of mtlkit.TaskHead"),
        ("head", NotAHead, None, "does not subclass mtlkit.TaskHead"),
        ("head", RegressionHead, None, "its kind is 'regression': set kind = 'binary'"),
        ("head", NoTargetHead, None, "does not implement target(labels)"),
        ("head", NumberLossHead, None, "its default_loss is 3"),
        ("constraint", ModuleConstraint, None, "does not subclass mtlkit.Constraint"),
        ("constraint", NoForwardConstraint, None, "does not implement forward()"),
        ("constraint", 42, None, "register a subclass of mtlkit.Constraint"),
        ("weighting", ModuleWeighting, None, "does not subclass mtlkit.TaskWeighting"),
        ("metric", "auc", None, "not callable: register a function fn(y_true, y_prob"),
        ("task_loss", 1.0, None, "not callable"),
        ("backbone", None, None, "not callable"),
        ("data_source", "rows.csv", None, "not callable"),
        ("report", 3, None, "not callable"),
        ("command", lambda args, ctx: 0, None, "register a mtlkit.Command(help"),
        ("metric", lambda y, p, t: 0.0, dict, "options model is class builtins.dict"),
    ],
)
def test_registration_checks_what_a_kind_needs(kind, obj, options, words):
    with pytest.raises(PluginError) as info:
        PluginHost([plugin(kind, "broken", obj, options)])
    message = str(info.value)
    assert "plugin 'broken_plugin'" in message and "'broken'" in message
    assert words in message


def test_a_correct_head_registration_is_accepted():
    host = PluginHost([plugin("head", "subtype", SubtypeHead)])
    assert host.heads.get("subtype").owner == "broken_plugin"


def test_a_broken_registration_is_a_usage_error_in_the_cli(monkeypatch, capsys):
    import mtlkit.cli as cli

    monkeypatch.setattr(cli, "PluginHost", lambda: PluginHost([plugin("head", "x", NotAHead)]))
    assert cli.main(["plugins"]) == 2
    err = capsys.readouterr().err
    assert "broken_plugin" in err and "mtlkit.TaskHead" in err and "Traceback" not in err


# --- build -----------------------------------------------------------------------------------


def test_a_head_that_forgets_its_kind_is_an_error_naming_it():
    problems = problems_of(with_heads("bm", "forgot"), plugin("head", "forgot", ForgotKindHead))
    message = problems["heads[1]"]
    assert "head 'forgot' (plugin 'broken_plugin')" in message
    assert "4 classes" in message and "set kind = 'multiclass'" in message


class TwoLogitHead(SubtypeHead):
    kind = "binary"

    def __init__(self, options):
        TaskHead.__init__(self, options.name)

    def build_module(self, in_features):
        return nn.Linear(in_features, 2)


class NumberNameHead(SubtypeHead):
    def __init__(self, options):
        super().__init__(options)
        self.name = 7


class FewClassesHead(SubtypeHead):
    def __init__(self, options):
        TaskHead.__init__(self, options.name, classes=["a", "a"])


@pytest.mark.parametrize(
    "head_cls, words",
    [
        (
            TwoLogitHead,
            "to shape (2, 2), but a binary head with 2 classes needs logits of shape (2, 1)",
        ),
        (NumberNameHead, "its name is int 7, not a str"),
        (FewClassesHead, "two or more distinct class names"),
    ],
)
def test_a_built_head_is_checked_at_its_yaml_path(head_cls, words):
    problems = problems_of(with_heads("bm", "odd"), plugin("head", "odd", head_cls))
    assert words in problems["heads[1]"]
    assert "head 'odd' (plugin 'broken_plugin')" in problems["heads[1]"]


def test_probing_a_head_at_build_leaves_the_random_state_alone():
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    resolve(with_heads("bm", "subtype"), plugin("head", "subtype", SubtypeHead))
    assert torch.equal(torch.rand(3), expected)


def test_a_constraint_factory_must_build_a_constraint():
    def factory(heads):
        return ModuleConstraint()

    raw = with_heads("bm")
    raw["constraints"] = [{"type": "odd"}]
    problems = problems_of(raw, plugin("constraint", "odd", factory))
    assert "not a mtlkit.Constraint" in problems["constraints[0]"]


# --- the per-head loss -----------------------------------------------------------------------


def test_a_head_without_default_loss_gets_the_default_of_its_kind():
    components = resolve(with_heads("bm", "subtype"), plugin("head", "subtype", SubtypeHead))
    logits, targets = torch.randn(5, 4), torch.tensor([0.0, 3, 1, 2, 0])
    expected = F.cross_entropy(logits, targets.long(), reduction="none")
    assert torch.allclose(components.task_losses["subtype"](logits, targets), expected)


def test_heads_loss_works_for_a_head_without_a_loss_option():
    assert "loss" not in SubtypeOptions.model_fields
    raw = with_heads({"type": "subtype", "loss": {"type": "cross_entropy", "label_smoothing": 0.2}})
    components = resolve(raw, plugin("head", "subtype", SubtypeHead))
    logits, targets = torch.randn(5, 4), torch.tensor([0.0, 3, 1, 2, 0])
    expected = F.cross_entropy(logits, targets.long(), reduction="none", label_smoothing=0.2)
    assert torch.allclose(components.task_losses["subtype"](logits, targets), expected)


def test_heads_loss_errors_name_the_loss_keys():
    raw = with_heads("bm", {"type": "subtype", "loss": {"type": "cross_entropy", "smooth": 1}})
    problems = problems_of(raw, plugin("head", "subtype", SubtypeHead))
    assert problems == {"heads[1].loss.smooth": "unknown key"}
    raw = with_heads("bm", {"type": "subtype", "loss": "bce"})
    problems = problems_of(raw, plugin("head", "subtype", SubtypeHead))
    assert "binary" in problems["heads[1].loss.type"]


def test_the_builtin_heads_leave_loss_to_the_core():
    assert "loss" not in BinaryOptions.model_fields and "loss" not in MulticlassOptions.model_fields
    components = resolve(with_heads({"type": "bm", "loss": {"type": "bce", "pos_weight": 4}}))
    logits, targets = torch.randn(6, 1), torch.tensor([0.0, 1, 1, 0, 1, 0])
    expected = F.binary_cross_entropy_with_logits(
        logits.reshape(-1), targets, reduction="none", pos_weight=torch.tensor(4.0)
    )
    assert torch.allclose(components.task_losses["bm"](logits, targets), expected)


class BCEDefaultHead(SubtypeHead):
    default_loss = "bce"  # a binary loss on a multiclass head


class UnknownDefaultHead(SubtypeHead):
    default_loss = "focal"


@pytest.mark.parametrize(
    "head_cls, words",
    [(BCEDefaultHead, "is for binary heads"), (UnknownDefaultHead, "unknown task_loss 'focal'")],
)
def test_a_default_loss_that_does_not_fit_is_an_error_at_the_head(head_cls, words):
    problems = problems_of(with_heads("bm", "odd"), plugin("head", "odd", head_cls))
    assert list(problems) == ["heads[1]"]  # not heads[1].loss...: the user wrote no loss
    message = problems["heads[1]"]
    assert (
        f"the default loss {head_cls.default_loss!r} of head 'odd' (plugin 'broken_plugin')"
        in message
    )
    assert words in message and "set default_loss = 'cross_entropy'" in message


# --- targets while preparing data ------------------------------------------------------------


def sample(i: int, **labels: Any) -> Sample:
    return Sample(f"img{i}", f"p{i}", labels, lambda: np.zeros((4, 4), np.uint8), origin=f"row {i}")


def test_a_binary_head_returning_counts_is_an_error_for_every_such_row():
    samples = [sample(i, alnm_count=count) for i, count in enumerate([0, 3, 1, 2, None])]
    targets, problems = build_targets(samples, [CountHead()])
    assert len(problems) == 2  # counts 3 and 2; 0, 1 and unknown are binary targets
    assert problems[0].startswith("image img1 (row 1), task nodes: target() returned 3.0")
    assert "CountHead is a binary head (targets 0 or 1): set kind = 'multiclass'" in problems[0]
    assert targets[:, 0].tolist()[:1] == [0.0]


def test_the_engine_refuses_binary_targets_out_of_range():
    raw = with_heads("bm", "nodes")
    engine = Engine(load_config(raw), plugins=[plugin("head", "nodes", CountHead)])
    with pytest.raises(DataError) as info:
        engine.load_data()
    assert "task nodes: target() returned" in str(info.value)
    assert "binary head (targets 0 or 1)" in str(info.value)


@pytest.mark.parametrize("value", ["1", None, torch.tensor(1.0), [1.0]])
def test_a_target_that_is_not_a_number_names_the_head_and_the_row(value):
    _, problems = build_targets([sample(0), sample(1)], [returns(value)])
    assert len(problems) == 2
    assert problems[0].startswith("image img0 (row 0), task odd: target() returned ")
    assert "not a number: ReturnsHead.target must return a float" in problems[0]


def test_an_exception_other_than_value_error_is_listed_naming_the_head():
    _, problems = build_targets([sample(0)], [returns(KeyError("subtype"))])
    assert problems == [
        "image img0 (row 0), task odd (ReturnsHead): target() raised KeyError: 'subtype'; a head "
        "raises ValueError for a value it cannot read: fix the head's target()"
    ]


@pytest.mark.parametrize("value, words", [(4.0, "targets 0 to 3"), (1.5, "targets 0 to 3")])
def test_a_multiclass_target_must_be_a_class_index(value, words):
    head = returns(value, "multiclass", SUBTYPES)
    _, problems = build_targets([sample(0)], [head])
    assert "is a multiclass head with 4 classes" in problems[0] and words in problems[0]


@pytest.mark.parametrize("value", [0.0, 1, True, np.float32(1.0), math.nan])
def test_binary_targets_that_fit_are_kept(value):
    targets, problems = build_targets([sample(0)], [returns(value)])
    assert problems == []
    assert targets[0, 0].item() == float(value) or math.isnan(targets[0, 0].item())


# --- the kit: each check catches its breach --------------------------------------------------


def test_check_head_passes_a_correct_head_and_returns_it():
    head = check_head(SubtypeHead, {}, labels=[{"subtype": "her2"}, {"subtype": ""}])
    assert head.num_outputs == 4


class NoProbabilitiesHead(SubtypeHead):
    def probabilities(self, logits):
        return torch.sigmoid(logits)  # in [0, 1], but not a distribution over the classes


class UndeclaredColumnHead(SubtypeHead):
    @property
    def label_columns(self):
        return ()


class StringTargetHead(SubtypeHead):
    def target(self, labels):
        return labels.get("subtype")


@pytest.mark.parametrize(
    "head_cls, words",
    [
        (ForgotKindHead, "set kind = 'multiclass'"),
        (TwoLogitHead, "needs logits of shape (2, 1)"),
        (NoProbabilitiesHead, "must sum to 1"),
        (UndeclaredColumnHead, "list every column target() reads in label_columns"),
        (StringTargetHead, "not a number"),
        (BCEDefaultHead, "the default loss 'bce'"),
        (NoTargetHead, "does not implement target"),
    ],
)
def test_check_head_catches_each_breach(head_cls, words):
    with pytest.raises(AssertionError) as info:
        check_head(head_cls, {}, labels=[{"subtype": "her2", "other": 1}])
    assert words in str(info.value)


def test_check_head_reads_loss_and_validates_options_like_a_config():
    check_head(SubtypeHead, {"loss": {"type": "cross_entropy", "label_smoothing": 0.1}})
    with pytest.raises(AssertionError, match="is for binary heads"):
        check_head(SubtypeHead, {"loss": "bce"})
    with pytest.raises(AssertionError, match="do not validate"):
        check_head(SubtypeHead, {"colour": "red"})


def mean_loss():
    return lambda logits, targets: F.cross_entropy(logits, targets.long())


def centred_loss():
    def loss(logits, targets):
        each = F.binary_cross_entropy_with_logits(logits.reshape(-1), targets, reduction="none")
        return each - each.mean()  # depends on the batch

    return loss


def nan_loss():
    return lambda logits, targets: torch.full((len(targets),), math.nan)


def detached_loss():
    return lambda logits, targets: (logits.reshape(-1) - targets).detach() ** 2


def binary_only():
    return lambda logits, targets: torch.zeros(len(targets))


binary_only.head_kinds = ("binary",)


@pytest.mark.parametrize(
    "factory, kind, words",
    [
        (mean_loss, "multiclass", "return one loss per sample"),
        (centred_loss, "binary", "depends on other samples"),
        (nan_loss, "binary", "finite"),
        (detached_loss, "binary", "gradient path"),
        (binary_only, "multiclass", "head_kinds is ('binary',)"),
        (lambda: "bce", "binary", "not a function"),
    ],
)
def test_check_task_loss_catches_each_breach(factory, kind, words):
    with pytest.raises(AssertionError) as info:
        check_task_loss(factory, None, kind)
    assert words in str(info.value)


class PairOptions(OptionsModel):
    child: str = "alnm"


class FloatConstraint(Constraint):
    Options = PairOptions

    def __init__(self, options, heads):
        super().__init__()
        self.child = options.child

    def forward(self, probabilities):
        return float(probabilities[self.child].detach().mean())


class VectorConstraint(FloatConstraint):
    def forward(self, probabilities):
        return probabilities[self.child] * 0.1


class ConstantConstraint(FloatConstraint):
    def forward(self, probabilities):
        return torch.tensor(0.0)


class MeanConstraint(FloatConstraint):
    """A correct one: the mean child probability, no violations reported."""

    def forward(self, probabilities):
        return probabilities[self.child].mean()


class OverCountingConstraint(FloatConstraint):
    def forward(self, probabilities):
        return probabilities[self.child].mean()

    def violations(self, probabilities, threshold):
        return {"everything": 2.0}


def constraint_heads():
    return [check_head(SubtypeHead, {"name": "bm"}), check_head(SubtypeHead, {"name": "alnm"})]


@pytest.mark.parametrize(
    "cls, words",
    [
        (FloatConstraint, "return a finite 0-dim tensor"),
        (VectorConstraint, "return a finite 0-dim tensor"),
        (ConstantConstraint, "no gradient path"),
        (OverCountingConstraint, "share in [0, 1]"),
        (lambda heads: nn.Linear(1, 1), "not a mtlkit.Constraint"),
    ],
)
def test_check_constraint_catches_each_breach(cls, words):
    assert check_constraint(MeanConstraint, {}, constraint_heads()).child == "alnm"
    with pytest.raises(AssertionError) as info:
        check_constraint(cls, {} if isinstance(cls, type) else None, constraint_heads())
    assert words in str(info.value)


class GoverningConstraint(Constraint):
    """A correct one without a loss of its own: the child's task loss, masked."""

    Options = PairOptions

    def __init__(self, options, heads):
        super().__init__()
        self.child = options.child

    def task_losses(self, logits, targets):
        known = ~torch.isnan(targets[self.child])
        filled = torch.where(known, targets[self.child], 0.0)
        per_sample = (logits[self.child].reshape(-1) - filled) ** 2
        return {self.child: masked_mean(per_sample, targets[self.child])}


class UnmaskedConstraint(GoverningConstraint):
    def task_losses(self, logits, targets):
        return {self.child: (logits[self.child].reshape(-1) - targets[self.child]).mean()}


class AlwaysOneConstraint(GoverningConstraint):
    def task_losses(self, logits, targets):
        return {self.child: logits[self.child].sum() * 0 + 1.0}


class StrangerConstraint(GoverningConstraint):
    def task_losses(self, logits, targets):
        return {"size": logits[self.child].sum()}


class ClampingConstraint(MeanConstraint):
    """Adjusts the child to at most the parent (binary tasks only)."""

    adjusts_outputs = True

    def adjust(self, probabilities):
        return {self.child: torch.minimum(probabilities[self.child], probabilities["bm"])}


class SilentClamping(ClampingConstraint):
    adjusts_outputs = False


class OverflowingConstraint(ClampingConstraint):
    def adjust(self, probabilities):
        return {self.child: probabilities[self.child] + 1.0}


class InPlaceConstraint(ClampingConstraint):
    def adjust(self, probabilities):
        probabilities[self.child].clamp_(max=0.5)
        return probabilities


class ReshapingConstraint(ClampingConstraint):
    def adjust(self, probabilities):
        return {self.child: probabilities[self.child][:1]}


def binary_pair():
    return [
        check_head(BinaryHead, {"name": "bm", "label": "bm"}),
        check_head(BinaryHead, {"name": "alnm", "label": "alnm"}),
    ]


@pytest.mark.parametrize(
    "cls, words",
    [
        (UnmaskedConstraint, "finite 0-dim tensor"),  # NaN targets make it NaN
        (AlwaysOneConstraint, "without any known target"),
        (StrangerConstraint, "names tasks no head defines: size"),
        (SilentClamping, "adjusts_outputs is False"),
        (OverflowingConstraint, "outside [0, 1]"),
        (InPlaceConstraint, "changed its input"),
        (ReshapingConstraint, "whose probabilities are (4,)"),
    ],
)
def test_check_constraint_catches_breaches_of_task_losses_and_adjust(cls, words):
    assert isinstance(check_constraint(GoverningConstraint, {}, binary_pair()), Constraint)
    assert isinstance(check_constraint(ClampingConstraint, {}, binary_pair()), Constraint)
    with pytest.raises(AssertionError) as info:
        check_constraint(cls, {}, binary_pair())
    assert words in str(info.value)


def test_an_old_style_constraint_inherits_the_new_methods():
    built = check_constraint(MeanConstraint, {}, constraint_heads())
    assert built.task_losses({}, {}) == {} and built.adjusts_outputs is False
    probabilities = {"alnm": torch.tensor([0.2, 0.7])}
    assert built.adjust(probabilities) is probabilities


class SkipFirst(TaskWeighting):
    def forward(self, losses):
        return sum(loss for name, loss in losses.items() if name != self.task_names[0])


class PerTask(TaskWeighting):
    def forward(self, losses):
        return torch.stack(list(losses.values()))


class GrowingWeighting(TaskWeighting):
    count = 0

    def __init__(self, task_names):
        super().__init__(task_names)
        GrowingWeighting.count += 1  # a parameter whose shape differs between instances
        self.scale = nn.Parameter(torch.ones(GrowingWeighting.count))

    def forward(self, losses):
        return self.scale.sum() * sum(losses.values())


@pytest.mark.parametrize(
    "cls, words",
    [
        (SkipFirst, "ignores the loss of task(s) a"),
        (PerTask, "return a finite 0-dim tensor"),
        (GrowingWeighting, "does not load into a fresh one"),
    ],
)
def test_check_weighting_catches_each_breach(cls, words):
    with pytest.raises(AssertionError) as info:
        check_weighting(cls, None, ["a", "b"])
    assert words in str(info.value)


def test_check_weighting_passes_a_learned_weighting():
    class Learned(TaskWeighting):
        def __init__(self, task_names):
            super().__init__(task_names)
            self.log_var = nn.Parameter(torch.zeros(len(task_names)))

        def forward(self, losses):
            return sum(
                torch.exp(-s) * losses[n] + s
                for n, s in zip(self.task_names, self.log_var, strict=True)
            )

    assert isinstance(check_weighting(Learned, None, ["a", "b"]), Learned)


def text_metric(y_true, y_prob, threshold):
    return "0.5"


def sorting_metric(y_true, y_prob, threshold):
    y_prob.sort(axis=0)
    return 0.0


def binary_only_metric(y_true, y_prob, threshold):
    return float(np.mean((y_prob > threshold) == y_true))  # (N, C) != (N,): broadcast error


def flagged(y_true, y_prob, threshold):
    return 0.0


flagged.higher_is_better = "no"


@pytest.mark.parametrize(
    "fn, words",
    [
        (text_metric, "not a float"),
        (sorting_metric, "changed its input arrays"),
        (binary_only_metric, "on multiclass input raised ValueError"),
        (flagged, "higher_is_better is 'no'"),
    ],
)
def test_check_metric_catches_each_breach(fn, words):
    with pytest.raises(AssertionError) as info:
        check_metric(fn)
    assert words in str(info.value)


class WidthOptions(OptionsModel):
    width: int = 6


class Pooled(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.num_features = width
        self.conv = nn.Conv2d(1, width, 3)

    def forward(self, images):
        return self.conv(images).mean(dim=(2, 3))


def pooled(options):
    return Pooled(options.width)


def unpooled(options):
    net = Pooled(options.width)
    net.forward = lambda images: net.conv(images)  # a feature map, not pooled features
    return net


def unsized(options):
    net = Pooled(options.width)
    del net.num_features
    return net


@pytest.mark.parametrize(
    "factory, words",
    [
        (unpooled, "expected pooled features (2, 6)"),
        (unsized, "no positive integer num_features"),
        (lambda options: "resnet", "not an nn.Module"),
    ],
)
def test_check_backbone_catches_each_breach(factory, words):
    assert check_backbone(pooled, {"width": 6}, options_model=WidthOptions).num_features == 6
    with pytest.raises(AssertionError) as info:
        check_backbone(factory, {}, options_model=WidthOptions)
    assert words in str(info.value)


def good_sample(i: int, **changes: Any) -> Sample:
    values = dict(
        image_id=f"i{i}",
        patient_id="p",
        labels={"bm": 1},
        image=lambda: np.zeros((10, 12), np.uint8),
        mask=lambda: np.ones((10, 12), bool),
        box=(1, 1, 12, 10),
    )
    values.update(changes)
    return Sample(**values)


@pytest.mark.parametrize(
    "samples, words",
    [
        ([good_sample(0, image=lambda: np.zeros((10, 12)))], "expected 2-D uint8 grayscale"),
        ([good_sample(0, image=lambda: np.zeros((10, 12, 3), np.uint8))], "2-D uint8"),
        ([good_sample(0, mask=lambda: np.ones((12, 10), bool))], "same shape"),
        ([good_sample(0, mask=lambda: np.ones((10, 12), np.uint8))], "boolean array"),
        ([good_sample(0, box=(0, 0, 13, 10))], "inside the 12x10 image"),
        ([good_sample(0, box=(5, 5, 5, 8))], "x0 < x1"),
        ([good_sample(0), good_sample(0)], "image id 'i0' is used twice"),
        ([good_sample(0, patient_id="")], "patient_id is str ''"),
        ([good_sample(0, labels=[1])], "give a dict column -> value"),
        (["img.png"], "not a mtlkit.Sample"),
        ([], "returned no samples"),
    ],
)
def test_check_data_source_catches_each_breach(samples, words):
    assert len(check_data_source(lambda: SampleSet([good_sample(0), good_sample(1)]))) == 2
    with pytest.raises(AssertionError) as info:
        check_data_source(lambda: SampleSet(samples))
    assert words in str(info.value)


def test_check_data_source_wants_a_sample_set():
    with pytest.raises(AssertionError, match="not a mtlkit.SampleSet"):
        check_data_source(lambda: [good_sample(0)])


def test_check_report_runs_the_report_on_one_and_several_seeds():
    seen = []

    def factory():
        return lambda result, console: seen.append(result.metrics["sets"]["test"]["n_images"])

    check_report(factory)
    assert seen == [2, 2]

    def reads_a_missing_key():
        return lambda result, console: result.metrics["splits"]

    with pytest.raises(AssertionError, match="fn\\(run_result, console\\) raised KeyError"):
        check_report(reads_a_missing_key)
    with pytest.raises(AssertionError, match="the factory returned"):
        check_report(lambda: None)


def test_check_command_catches_each_breach():
    def arguments(parser):
        parser.add_argument("--n", type=int)

    check_command(Command("count things", arguments, lambda args, ctx: 0))
    with pytest.raises(AssertionError, match="no help text"):
        check_command(Command("  ", arguments, lambda args, ctx: 0))
    with pytest.raises(AssertionError, match="add_arguments\\(parser\\) raised"):
        check_command(Command("x", lambda parser: parser.add_argument(1), lambda a, c: 0))
    with pytest.raises(AssertionError, match="mtlkit.Command"):
        check_command(arguments)


def test_check_entry_uses_the_registered_options_model():
    host = PluginHost([plugin("backbone", "pooled", pooled, WidthOptions)])
    net = check_entry(host.backbones.get("pooled"), {"width": 5})
    assert net.num_features == 5
    with pytest.raises(AssertionError, match="do not validate"):
        check_entry(host.backbones.get("pooled"), {"depth": 5})


# --- the README's examples -------------------------------------------------------------------


def readme_block(language: str, containing: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)
    return next(block for block in blocks if containing in block)


def test_the_readme_head_example_conforms():
    namespace: dict[str, Any] = {}
    exec(readme_block("python", "class LargeTumour(TaskHead)"), namespace)
    labels = [{"size_mm": "22"}, {"size_mm": ""}, {"size_mm": "big"}]
    head = check_head(namespace["LargeTumour"], {"min_mm": 15}, labels=labels)
    assert head.target({"size_mm": "22"}) == 1.0 and head.classes == ["small", "large"]


def test_the_readme_subtype_snippet_configures_a_multiclass_head():
    heads = yaml.safe_load(readme_block("yaml", "type: multiclass"))["heads"]
    subtype = resolve(with_heads(*heads)).heads[1]
    assert subtype.kind == "multiclass" and subtype.num_outputs == 4


# --- optimizers and schedulers ----------------------------------------------------------------
# Components registered without an options model are called without options, as the core does.


def _adam(params):
    return torch.optim.Adam(params, lr=0.01)


def _not_an_optimizer(params):
    return {"lr": 0.01}


def _frozen(params):
    return torch.optim.SGD(params, lr=0.0)  # steps change nothing


class _OpaqueState:
    """A scheduler whose state holds a tensor: it cannot be saved as JSON."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def step(self):
        pass

    def state_dict(self):
        return {"anchor": torch.zeros(1)}

    def load_state_dict(self, state):
        pass


class _Forgetful(torch.optim.lr_scheduler.StepLR):
    """Ignores the state it is given, so a resumed run would decay from the start again."""

    def load_state_dict(self, state_dict):
        pass


@pytest.mark.parametrize(
    "factory, words",
    [(_not_an_optimizer, "not a torch.optim.Optimizer"), (_frozen, "did not change")],
)
def test_check_optimizer_catches_each_breach(factory, words):
    with pytest.raises(AssertionError, match=words):
        check_optimizer(factory)


@pytest.mark.parametrize(
    "factory, words",
    [
        (lambda optimizer, epochs: object(), "has no step, state_dict"),
        (lambda optimizer, epochs: _OpaqueState(optimizer), "not JSON-serialisable"),
        (lambda optimizer, epochs: _Forgetful(optimizer, 5, 0.5), "another learning"),
    ],
)
def test_check_scheduler_catches_each_breach(factory, words):
    with pytest.raises(AssertionError, match=words):
        check_scheduler(factory)


def test_working_optimizer_and_scheduler_pass():
    check_optimizer(_adam)
    check_scheduler(lambda optimizer, epochs: torch.optim.lr_scheduler.StepLR(optimizer, 1))


# --- baselines --------------------------------------------------------------------------------


class _NoFit(Baseline):
    def __init__(self):
        super().__init__("nofit")


class _Unnamed(Baseline):
    def __init__(self):
        pass

    def fit(self, context, seed):
        return BaselineOutput()


class _SecretExtra(Baseline):
    requires = ("some_module",)

    def __init__(self):
        super().__init__("secret")

    def fit(self, context, seed):
        return BaselineOutput()


@pytest.mark.parametrize(
    "cls, words",
    [
        (_NoFit, "does not implement fit"),
        (_Unnamed, "has no name"),
        (_SecretExtra, "install is empty"),
        (object, "register a subclass of mtlkit.Baseline"),
    ],
)
def test_check_baseline_catches_each_breach(cls, words):
    with pytest.raises(AssertionError, match=words):
        check_baseline(cls)
