"""Grad-CAM for one task head of a multi-task model, with the ``grad-cam`` package.

That library explains a model with one output tensor; :class:`HeadOutput` turns the
multi-task model (``{task: logits}``) into one, the raw logits of one head, so that the
targets below choose what is explained and no sigmoid or softmax flattens the gradients.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np
import pytorch_grad_cam
import torch
from torch import nn

from mtlkit import UsageError, positive_at

# The CAM methods of the library that explain a classifier from one target layer.
METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
    "gradcamelementwise": "GradCAMElementWise",
}
MethodName = Literal[tuple(METHODS)]  # type: ignore[valid-type]

# What a CAM explains. positive/negative: a binary head's logit or its negative ("why
# positive", "why negative"); predicted: the decision the model made (for a binary head the
# positive logit when p > threshold, else its negative; the predicted class for a
# multiclass head); true: the same for the true label (predicted where it is unknown).
TargetName = Literal["predicted", "true", "positive", "negative"]


class HeadOutput(nn.Module):
    """The multi-task model seen through one head: images -> that head's logits (N, K)."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        if task not in model.heads:
            raise UsageError(f"the model has no task {task!r}; tasks: {', '.join(model.heads)}")
        self.model = model
        self.task = task

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)[self.task]


class LogitTarget:
    """One output of one image, times ``sign``: the library calls it on the (K,) logits."""

    def __init__(self, index: int, sign: float = 1.0):
        self.index = index
        self.sign = sign

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return self.sign * (output[self.index] if output.ndim == 1 else output[:, self.index])


def cam_targets(
    kind: str,
    target: str,
    probabilities: np.ndarray,
    labels: np.ndarray | None,
    threshold: float,
) -> list[LogitTarget]:
    """One target per image for a head of ``kind``; ``probabilities`` (N,) or (N, C),
    ``labels`` (N,) with NaN for unknown."""
    n = len(probabilities)
    chosen = _decisions(kind, probabilities, threshold)
    if target == "true" and labels is not None:
        known = ~np.isnan(labels)
        chosen = np.where(known, np.nan_to_num(labels).astype(int), chosen)
    if kind == "binary":
        if target == "positive":
            return [LogitTarget(0, 1.0) for _ in range(n)]
        if target == "negative":
            return [LogitTarget(0, -1.0) for _ in range(n)]
        return [LogitTarget(0, 1.0 if c == 1 else -1.0) for c in chosen]
    if target in ("positive", "negative"):
        raise UsageError(f"target {target!r} is for binary heads; use predicted or true")
    return [LogitTarget(int(c)) for c in chosen]


def _decisions(kind: str, probabilities: np.ndarray, threshold: float) -> np.ndarray:
    if kind == "binary":
        return positive_at(probabilities, threshold).astype(int)
    return np.argmax(probabilities, axis=1)


def target_layer(model: nn.Module, name: str | None = None, input_size: int = 224) -> nn.Module:
    """The layer a CAM is computed at: ``name`` (a module path such as ``backbone.layer4``
    or, within the backbone, ``layer4``), else the backbone's last stage whose feature map
    is still at least 2 x 2 for ``input_size`` pixels (a 1 x 1 map has nothing to localise:
    at 32 px a ResNet's ``layer4`` is 1 x 1, so ``layer3`` is used).

    Stages are found generically: timm's ``feature_info`` when the backbone has one (every
    timm CNN: ``layer4`` of a ResNet, the last block stage of an EfficientNet, the last
    stage of a ConvNeXt), otherwise the modules that produce 4-D feature maps on a probe
    image of ``input_size``.
    """
    backbone = getattr(model, "backbone", model)
    if name:
        for root in (model, backbone):
            try:
                return root.get_submodule(name)
            except AttributeError:
                continue
        choices = [n for n, m in backbone.named_children()]
        raise UsageError(f"no module {name!r} in the backbone; its top-level modules: {choices}")
    info = getattr(backbone, "feature_info", None)
    if info is not None:
        stages = [e for e in _feature_entries(info) if e.get("module")]
        large = [e for e in stages if input_size // int(e.get("reduction") or 1) >= 2]
        if stages:
            return backbone.get_submodule((large or stages)[-1]["module"])
    return _last_spatial_module(backbone, input_size)


def _feature_entries(info) -> list[dict]:
    if hasattr(info, "get_dicts"):  # timm's FeatureInfo object
        return list(info.get_dicts())
    return [e for e in info if isinstance(e, dict)]


def _last_spatial_module(backbone: nn.Module, input_size: int) -> nn.Module:
    """The last module whose output on a probe image is a (N, C, H, W) map with H, W > 1,
    or failing that the last one with any 4-D output."""
    seen: list[tuple[nn.Module, tuple[int, ...]]] = []
    hooks = [
        module.register_forward_hook(
            lambda m, _inputs, out: (
                seen.append((m, tuple(out.shape)))
                if isinstance(out, torch.Tensor) and out.ndim == 4
                else None
            )
        )
        for module in backbone.modules()
        if module is not backbone
    ]
    try:
        channels = _input_channels(backbone)
        was_training = backbone.training
        backbone.eval()
        with torch.no_grad():
            backbone(torch.zeros(1, channels, input_size, input_size, device=_device(backbone)))
        backbone.train(was_training)
    finally:
        for hook in hooks:
            hook.remove()
    spatial = [m for m, shape in seen if shape[2] > 1 and shape[3] > 1]
    if spatial or seen:
        return (spatial or [m for m, _ in seen])[-1]
    raise UsageError(
        f"found no layer with a spatial feature map in {type(backbone).__name__}; "
        "name one with target_layer"
    )


def _input_channels(module: nn.Module) -> int:
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            return layer.in_channels
    return 1


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@contextmanager
def cam_extractor(
    model: nn.Module,
    task: str,
    method: str = "gradcam",
    layer: str | None = None,
    input_size: int = 224,
) -> Iterator[pytorch_grad_cam.base_cam.BaseCAM]:
    """A CAM object of ``method`` for ``task``'s head; its hooks are removed on exit (the
    library's own ``__exit__`` would also swallow an IndexError, so it is not used)."""
    if method not in METHODS:
        raise UsageError(f"unknown CAM method {method!r}; choices: {', '.join(METHODS)}")
    wrapped = HeadOutput(model, task)
    cam_class = getattr(pytorch_grad_cam, METHODS[method])
    was_training = model.training
    cam = cam_class(model=wrapped, target_layers=[target_layer(model, layer, input_size)])
    try:
        yield cam
    finally:
        cam.activations_and_grads.release()
        model.train(was_training)


def compute_cams(
    model: nn.Module,
    task: str,
    images: torch.Tensor,
    targets: Sequence[LogitTarget],
    *,
    method: str = "gradcam",
    layer: str | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """CAMs (N, H, W) in [0, 1] at the input's size for normalised ``images`` (N, C, H, W),
    one target per image. Each map is scaled to its own maximum, as the library does."""
    if len(images) != len(targets):
        raise ValueError(f"{len(images)} images but {len(targets)} targets")
    height, width = images.shape[-2:]
    if not len(images):
        return np.zeros((0, height, width), dtype=np.float32)
    device = _device(model)
    parts = []
    with cam_extractor(model, task, method, layer, min(height, width)) as cam:
        if hasattr(cam, "batch_size"):  # ScoreCAM, AblationCAM: masked copies per batch
            cam.batch_size = batch_size
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(device)
            parts.append(cam(input_tensor=batch, targets=list(targets[start : start + batch_size])))
    return np.concatenate(parts).astype(np.float32)
