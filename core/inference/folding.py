"""A frozen copy of a model for inference, with each BatchNorm folded into the convolution
before it.

In eval mode a BatchNorm is an affine map per channel, so ``bn(conv(x))`` is one
convolution with scaled weights and a shifted bias: folding it away saves a pass over every
feature map. Which BatchNorm follows which convolution is read from one forward pass
(hooks), not from the module tree, so it works for any backbone; a pair is folded only when
both modules run once and the BatchNorm reads the convolution's output itself, and the
folded copy is checked against the original before it is used.
"""

from __future__ import annotations

import copy
from collections import Counter

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights


class FoldingError(RuntimeError):
    """The folded copy does not compute what the model computes (a convolution's output is
    also read by something other than its BatchNorm); the caller keeps the model unfolded."""


def frozen_copy(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """A copy of ``model`` in eval mode without gradients, optionally channels_last; the
    model itself is left as it is (it may be training)."""
    duplicate = copy.deepcopy(model).eval().requires_grad_(False)
    if channels_last:
        duplicate = duplicate.to(memory_format=torch.channels_last)
    return duplicate


def fold_batch_norms(model: nn.Module, example: torch.Tensor) -> int:
    """Fold, in place, every BatchNorm2d of eval-mode ``model`` that directly follows a
    Conv2d on ``example`` (normalised images), replacing it by ``nn.Identity``; returns how
    many were folded. Raises :class:`FoldingError` (leaving ``model`` folded: discard it)
    when the result differs from the unfolded outputs on ``example``."""
    with torch.no_grad():
        expected = model(example)
        pairs = _conv_bn_pairs(model, example)
        places = _places(model)
        folded = 0
        for bn, conv in pairs:
            where = places.get(id(bn), [])
            if len(where) != 1:  # shared under several names: folding one would break another
                continue
            weight, bias = fuse_conv_bn_weights(
                conv.weight,
                conv.bias,
                bn.running_mean,
                bn.running_var,
                bn.eps,
                bn.weight,
                bn.bias,
            )
            conv.weight = nn.Parameter(weight.detach(), requires_grad=False)
            conv.bias = nn.Parameter(bias.detach(), requires_grad=False)
            parent, name = where[0]
            setattr(parent, name, nn.Identity())
            folded += 1
        got = model(example)
    _check_same(expected, got)
    return folded


def _conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[nn.Module, nn.Module]]:
    """(BatchNorm, Conv2d) pairs where the BatchNorm's input is the convolution's output
    tensor itself, each module run exactly once on ``example``."""
    produced: dict[int, tuple[nn.Module, torch.Tensor]] = {}
    calls: Counter[int] = Counter()
    found: list[tuple[nn.Module, nn.Module]] = []

    def after_conv(module, inputs, output):
        calls[id(module)] += 1
        produced[id(output)] = (module, output)  # the tensor is kept so its id is not reused

    def before_bn(module, inputs):
        calls[id(module)] += 1
        source = produced.get(id(inputs[0])) if inputs else None
        if source is not None and source[1] is inputs[0]:
            found.append((module, source[0]))

    hooks = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(after_conv))
        # Exactly BatchNorm2d: subclasses (timm's BatchNormAct2d) do more than normalise.
        elif type(module) is nn.BatchNorm2d and module.track_running_stats:
            hooks.append(module.register_forward_pre_hook(before_bn))
    try:
        model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return [
        (bn, conv)
        for bn, conv in found
        if calls[id(bn)] == 1 and calls[id(conv)] == 1 and sum(c is conv for _, c in found) == 1
    ]


def _places(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """Each submodule's (parent, attribute name) places in the tree."""
    places: dict[int, list[tuple[nn.Module, str]]] = {}
    for parent in model.modules():
        for name, child in parent.named_children():
            places.setdefault(id(child), []).append((parent, name))
    return places


def _check_same(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    for name, value in expected.items():
        if not torch.allclose(got[name], value, rtol=1e-3, atol=1e-4):
            difference = float((got[name] - value).abs().max())
            raise FoldingError(
                f"folding BatchNorm changed task {name!r}'s logits by up to {difference:.3g}"
            )
