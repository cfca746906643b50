"""Backbones from timm: any timm model by name, with ResNet50 (the paper's) as a preset."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import timm
import torch
from pydantic import Field, field_validator
from torch import nn

from mtlkit import OptionsModel, UsageError, hookimpl, state_dict_mismatch

# Keys of a classifier layer in common checkpoints; a feature extractor does not want them.
CLASSIFIER_PREFIXES = ("fc.", "head.", "classifier.", "last_linear.", "head.fc.")


class BackboneOptions(OptionsModel):
    pretrained: bool | str = Field(
        False, description="false, true (timm download) or a local .safetensors/.pth file"
    )
    in_chans: int = Field(1, ge=1, le=4, description="input channels (1 = grayscale)")
    drop_rate: float = Field(
        0.0, ge=0, lt=1, description="dropout on the pooled features (timm's drop_rate)"
    )
    drop_path_rate: float = Field(
        0.0, ge=0, lt=1, description="stochastic depth: chance of skipping a residual block"
    )

    @field_validator("pretrained")
    @classmethod
    def _existing_file(cls, value: bool | str) -> bool | str:
        if isinstance(value, str):
            try:
                found = Path(value).expanduser().is_file()
            except (OSError, ValueError) as exc:  # a name too long, a NUL byte
                raise ValueError(f"not a usable file name ({exc})") from None
            if not found:
                raise ValueError(f"pretrained weights file not found: {value}")
        return value


class TimmOptions(BackboneOptions):
    model: str = Field("resnet50", description="timm model name")

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        names = timm.list_models()
        if value not in names:
            close = difflib.get_close_matches(value, names, n=5, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"timm has no model {value!r}{hint}")
        return value


def timm_backbone(options: TimmOptions) -> nn.Module:
    """A timm model without its classifier: images -> pooled features (``num_features``)."""
    return create_backbone(options.model, options)


def resnet50_backbone(options: BackboneOptions) -> nn.Module:
    """ResNet50, the backbone of Li et al. 2022."""
    return create_backbone("resnet50", options)


def create_backbone(name: str, options: BackboneOptions) -> nn.Module:
    """Build timm model ``name`` with ``options``; pretrained weights from timm or a file."""
    kwargs: dict[str, Any] = dict(
        num_classes=0,
        in_chans=options.in_chans,
        drop_rate=options.drop_rate,
        drop_path_rate=options.drop_path_rate,
    )
    if options.pretrained is True:
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as exc:  # no network, no hub access, unknown weights ...
            raise UsageError(
                f"could not download pretrained weights for {name!r} "
                f"({type(exc).__name__}: {exc}); set backbone.pretrained to a local file"
            ) from None
    model = timm.create_model(name, pretrained=False, **kwargs)
    if isinstance(options.pretrained, str):
        load_local_weights(model, Path(options.pretrained).expanduser(), options.in_chans)
    return model


def load_local_weights(model: nn.Module, path: Path, in_chans: int) -> None:
    """Load a safetensors file or a plain state dict (read without executing pickled code).

    Classifier weights are dropped; a 3-channel first convolution is adapted to
    ``in_chans`` the way timm adapts its own pretrained weights.
    """
    from timm.models import adapt_input_conv

    state = read_state_dict(path)
    state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    own = model.state_dict()
    for key, value in list(state.items()):
        if key in own and _is_input_conv(value, own[key], in_chans):
            state[key] = adapt_input_conv(in_chans, value)
    mismatch = state_dict_mismatch(own, state)
    if mismatch:
        raise UsageError(f"{path} does not fit the backbone ({mismatch})")
    model.load_state_dict(state)


def _is_input_conv(saved: torch.Tensor, own: torch.Tensor, in_chans: int) -> bool:
    """The first convolution, saved for another channel count (e.g. RGB for grayscale)."""
    return (
        saved.ndim == 4
        and own.ndim == 4
        and own.shape[1] == in_chans
        and saved.shape[1] != in_chans
        and saved.shape[0] == own.shape[0]
        and saved.shape[2:] == own.shape[2:]
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or a state dict via ``torch.load(weights_only=True)``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise UsageError(f"cannot read safetensors weights {path}: {exc}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # includes pickles that want to run code: refused, never executed
        raise UsageError(
            f"cannot read weights {path} safely ({type(exc).__name__}); give a .safetensors "
            "file or a plain state dict of tensors"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{path} does not hold a state dict of tensors")
    return state


@hookimpl
def mtl_register_backbones(registry):
    registry.register(
        "timm",
        timm_backbone,
        options=TimmOptions,
        description="any timm model by name (model: resnet18, ...)",
    )
    registry.register("resnet50", resnet50_backbone, options=BackboneOptions)
