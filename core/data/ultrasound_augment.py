"""Photometric ultrasound augmentations: what another scanner, probe or setting does to the
grey levels of the same tissue, never to its geometry (a lesion mask stays aligned).

Each transform takes an image of shape ``(..., C, H, W)``, uint8 (0-255) or float (0-1),
and returns one of the same shape, dtype and range. Row 0 is the near field (the probe's
side): on a cached RoI, "depth" runs from the RoI's top row to its bottom row. With
probability ``p`` an image is changed, by at most ``strength`` (0 < strength <= 1, a share
of each transform's full range, given in its docstring); every random draw comes from
torch's generator, so ``torch.manual_seed`` and the data loader's worker seeding make
augmented epochs reproducible. Masks, boxes and key points pass through unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from mtlkit.config.schema import UltrasoundAugmentConfig


def _plain_tensor(obj: Any) -> bool:
    return isinstance(obj, torch.Tensor) and not isinstance(obj, tv_tensors.TVTensor)


def _uniform(low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand(()))


def _signed(limit: float) -> float:
    """Uniform in [-limit, limit]."""
    return _uniform(-limit, limit)


def _rayleigh(height: int, width: int) -> torch.Tensor:
    """Unit-mean Rayleigh noise, the amplitude of fully developed speckle, shape (H, W)."""
    uniform = torch.rand(height, width)
    return torch.sqrt(-2.0 * torch.log1p(-uniform)) / math.sqrt(math.pi / 2)


def _depth(height: int) -> torch.Tensor:
    """Each row's depth, 0 at the top row (near field) to 1 at the bottom, shape (H, 1)."""
    return torch.linspace(0.0, 1.0, height).unsqueeze(1)


class UltrasoundTransform(v2.Transform):
    """Base of the ultrasound augmentations: with probability ``p`` draws the parameters
    of one change (:meth:`draw`) and applies them to the image in 0-1 floats (:meth:`apply`)."""

    # images only: a mask, boxes or key points in the sample pass through untouched
    _transformed_types = (tv_tensors.Image, tv_tensors.Video, _plain_tensor)

    def __init__(self, p: float = 0.5, strength: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        self.p = p
        self.strength = strength

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if not flat_inputs or float(torch.rand(())) >= self.p:
            return {}
        height, width = v2.functional.get_size(flat_inputs[0])
        return self.draw(height, width)

    def draw(self, height: int, width: int) -> dict[str, Any]:
        """The random parameters of one application to an image of ``height`` x ``width``."""
        raise NotImplementedError

    def apply(self, image: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """The changed image, float in [0, 1] (values outside are clipped afterwards)."""
        raise NotImplementedError

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params:
            return inpt
        if inpt.dtype == torch.uint8:
            out = self.apply(inpt.float() / 255.0, params)
            out = out.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
        elif inpt.is_floating_point():
            out = self.apply(inpt, params).clamp(0.0, 1.0).to(inpt.dtype)
        else:
            raise TypeError(f"{type(self).__name__} needs a uint8 or float image, got {inpt.dtype}")
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


class DepthAttenuation(UltrasoundTransform):
    """More attenuation with depth than the training scanner's time-gain compensation
    undoes: the image times ``exp(-a * depth)``, ``a`` uniform in [0, strength * ln 5]
    (at strength 1 the bottom row keeps down to a fifth of its brightness, the top row
    all of it)."""

    def draw(self, height: int, width: int) -> dict[str, Any]:
        return {"rate": _uniform(0.0, self.strength * math.log(5.0)), "height": height}

    def apply(self, image: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return image * torch.exp(-params["rate"] * _depth(params["height"]))


class TimeGainCompensation(UltrasoundTransform):
    """Another setting of the time-gain-compensation sliders: a smooth gain profile along
    the rows, interpolated (bicubic) through 5 gains at equally spaced depths, each
    ``2 ** u`` with ``u`` uniform in [-strength, strength] (at strength 1, half to twice as
    bright)."""

    KNOTS = 5

    def draw(self, height: int, width: int) -> dict[str, Any]:
        log_gains = (2.0 * torch.rand(self.KNOTS) - 1.0) * self.strength * math.log(2.0)
        profile = F.interpolate(
            log_gains.view(1, 1, self.KNOTS, 1),
            size=(height, 1),
            mode="bicubic",
            align_corners=True,
        )
        return {"gain": torch.exp(profile.view(height, 1))}

    def apply(self, image: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return image * params["gain"]


class Gain(UltrasoundTransform):
    """Another overall gain and grey map: ``b * image ** g``, with the gamma
    ``g = 2 ** u`` and the brightness ``b = 1.5 ** v``, ``u`` and ``v`` uniform in
    [-strength, strength] (at strength 1: gamma 0.5-2, brightness x0.67-1.5)."""

    def draw(self, height: int, width: int) -> dict[str, Any]:
        return {
            "gamma": 2.0 ** _signed(self.strength),
            "brightness": 1.5 ** _signed(self.strength),
        }

    def apply(self, image: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return params["brightness"] * image.clamp(min=0.0) ** params["gamma"]


class Speckle(UltrasoundTransform):
    """More or other speckle: the image times ``1 + a * (n - 1)``, ``n`` unit-mean Rayleigh
    noise per pixel (the amplitude statistics of fully developed speckle) and ``a`` uniform
    in [0, strength] (at strength 1, pure Rayleigh: a spread of 52% of the mean)."""

    def draw(self, height: int, width: int) -> dict[str, Any]:
        return {"amount": _uniform(0.0, self.strength), "noise": _rayleigh(height, width)}

    def apply(self, image: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return image * (1.0 + params["amount"] * (params["noise"] - 1.0))


class ResolutionLoss(UltrasoundTransform):
    """A coarser point-spread function, as with a lower transducer frequency: down-sampling
    (antialiased) by a lateral and an axial factor, each uniform in [1, 1 + 3 * strength],
    and back to the image's size (bilinear)."""

    def draw(self, height: int, width: int) -> dict[str, Any]:
        axial, lateral = (_uniform(1.0, 1.0 + 3.0 * self.strength) for _ in range(2))
        return {"size": (max(1, round(height / axial)), max(1, round(width / lateral)))}

    def apply(self, image: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        shape = image.shape
        flat = image.reshape(-1, 1, *shape[-2:])  # interpolate wants (N, C, H, W)
        small = F.interpolate(
            flat, size=params["size"], mode="bilinear", antialias=True, align_corners=False
        )
        out = F.interpolate(small, size=shape[-2:], mode="bilinear", align_corners=False)
        return out.reshape(shape)


class AcousticShadow(UltrasoundTransform):
    """An acoustic shadow: below a strongly attenuating structure at a random depth (top
    20-80% of the image) a vertical band, Gaussian across (its sigma 3-12% of the width),
    is darkened by a share uniform in [0, strength] at its centre (strength 1: up to black).
    Posterior shadowing is itself a sign of malignancy (BI-RADS posterior features), so
    keep this one rare and weak, or off, for benign/malignant tasks."""

    def draw(self, height: int, width: int) -> dict[str, Any]:
        centre, sigma = _uniform(), _uniform(0.03, 0.12)
        start, darkness = _uniform(0.2, 0.8), _uniform(0.0, self.strength)
        across = torch.exp(-0.5 * ((torch.linspace(0.0, 1.0, width) - centre) / sigma) ** 2)
        below = torch.sigmoid((_depth(height) - start) / 0.02)  # a soft upper edge
        return {"gain": 1.0 - darkness * below * across.unsqueeze(0)}

    def apply(self, image: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return image * params["gain"]


class Haze(UltrasoundTransform):
    """Near-field haze (reverberation clutter): a speckled veil that lifts dark pixels
    towards white, strongest at the top row and fading with depth: ``image + (1 - image)
    * h``, ``h = a * exp(-depth / d) * n``, ``a`` uniform in [0, 0.6 * strength], the decay
    depth ``d`` 15-50% of the height, ``n`` unit-mean Rayleigh noise."""

    def draw(self, height: int, width: int) -> dict[str, Any]:
        amount, decay = _uniform(0.0, 0.6 * self.strength), _uniform(0.15, 0.5)
        veil = amount * torch.exp(-_depth(height) / decay) * _rayleigh(height, width)
        return {"veil": veil}

    def apply(self, image: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return image + (1.0 - image) * params["veil"]


# The order a scanner makes them in: sound through tissue (shadow, attenuation), the
# receiver (time-gain compensation), clutter and speckle, the point-spread function that
# blurs them all, then the display's gain and grey map.
TRANSFORMS: dict[str, type[UltrasoundTransform]] = {
    "shadow": AcousticShadow,
    "depth_attenuation": DepthAttenuation,
    "tgc": TimeGainCompensation,
    "haze": Haze,
    "speckle": Speckle,
    "blur": ResolutionLoss,
    "gain": Gain,
}


def ultrasound_steps(config: UltrasoundAugmentConfig) -> list[v2.Transform]:
    """The configured transforms with ``p > 0``, in :data:`TRANSFORMS`' order; none is
    built for ``p = 0``, so that an unused one draws nothing from the random generator."""
    steps: list[v2.Transform] = []
    for key, cls in TRANSFORMS.items():
        step = getattr(config, key)
        if step.p > 0:
            steps.append(cls(p=step.p, strength=step.strength))
    return steps
