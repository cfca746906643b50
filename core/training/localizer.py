"""The automatic RoI (``data.roi.mode: auto``): a trained localisation model, a segmentation
head trained on whole images, finds the lesion; the box around its largest predicted region
becomes the classifier's RoI, with the configured margin added by :func:`~mtlkit.roi_box`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from mtlkit.components.resolve import resolve_components
from mtlkit.config.loading import validate_config
from mtlkit.data.roi import Box, square_box
from mtlkit.data.split_file import training_images
from mtlkit.data.transforms import normalize_batch
from mtlkit.errors import UsageError, list_problems
from mtlkit.inference.outputs import predicted_outputs
from mtlkit.training.checkpoint import checkpoint_of, load_weights, read_metadata
from mtlkit.training.model import MultiTaskModel

if TYPE_CHECKING:
    from mtlkit.components.host import PluginHost
    from mtlkit.components.interfaces import TaskHead
    from mtlkit.data.prepared import PreparedData


class Localizer:
    """Runs a localisation model on whole images: ``localizer(image)`` is the box of the
    largest connected region of predicted lesion pixels, in the image's own pixels, or None
    when no pixel is above the head's threshold.

    ``mirror`` averages each image's probabilities with its mirror image's (the localiser's
    own ``evaluation.tta: hflip``). ``refine`` looks twice: the whole image at the model's
    input size leaves a small lesion a few pixels wide, so the model runs again on a square
    window around the first box (:data:`REFINE_CONTEXT`), at its full input size."""

    def __init__(
        self,
        model: MultiTaskModel,
        task: str,
        size: int,
        threshold: float,
        *,
        mirror: bool = False,
        refine: bool = False,
        heads: Sequence[TaskHead] = (),
    ):
        self.model = model.eval()
        self.heads = list(heads)
        self.task = task
        self.size = size
        self.threshold = threshold
        self.mirror = mirror
        self.refine = refine
        first = next(iter(model.parameters()), None)
        self.device = first.device if first is not None else torch.device("cpu")

    def _input(self, image: np.ndarray) -> torch.Tensor:
        """The whole image as the model's normalised input (1, 1, size, size)."""
        resized = Image.fromarray(np.ascontiguousarray(image)).resize(
            (self.size, self.size), Image.BILINEAR
        )
        return normalize_batch(torch.from_numpy(np.array(resized, dtype=np.uint8))[None, None])

    @torch.no_grad()
    def task_probabilities(self, images: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
        """The localiser's own classification heads on whole images (``roi.blend``): each
        task's probabilities, (N,) binary or (N, classes), raw (no constraint adjusts
        them), mirrored as its masks are."""
        parts: dict[str, list[np.ndarray]] = {head.name: [] for head in self.heads}
        chunk: list[torch.Tensor] = []

        def flush() -> None:
            batch = torch.cat(chunk).to(self.device)
            _, probabilities, _ = predicted_outputs(
                self.model, self.heads, [], [], batch, self.mirror
            )
            for name, p in probabilities.items():
                parts[name].append(p.cpu().numpy())
            chunk.clear()

        for image in images:
            chunk.append(self._input(image))
            if len(chunk) == BATCH:
                flush()
        if chunk:
            flush()
        return {name: np.concatenate(p) if p else np.zeros(0) for name, p in parts.items()}

    @torch.no_grad()
    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Per-pixel lesion probabilities of the whole image at the model's input size."""
        batch = self._input(image)
        if self.mirror:
            batch = torch.cat([batch, batch.flip(-1)])
        logits = self.model(batch.to(self.device))[self.task]
        probabilities = torch.sigmoid(logits.float())
        if self.mirror:
            probabilities = (probabilities[:1] + probabilities[1:].flip(-1)) / 2
        return probabilities[0, 0].cpu().numpy()

    def __call__(self, image: np.ndarray) -> Box | None:
        found = self._look(image)
        if found is None or not self.refine:
            return found
        height, width = image.shape[:2]
        window = square_box(found, width, height, REFINE_CONTEXT)
        x0, y0, x1, y1 = window
        if (x1 - x0) * (y1 - y0) >= 0.9 * width * height:
            return found  # the window is the image: a second look sees nothing new
        closer = self._look(image[y0:y1, x0:x1])
        if closer is None:
            return found
        return within_window(closer, window, found, width, height)

    def _look(self, image: np.ndarray) -> Box | None:
        found = largest_region_box(self.probabilities(image) > self.threshold)
        if found is None:
            return None
        height, width = image.shape[:2]
        sx, sy = width / self.size, height / self.size
        x0, y0, x1, y1 = found
        box = (int(np.floor(x0 * sx)), int(np.floor(y0 * sy)))
        end = (int(np.ceil(x1 * sx)), int(np.ceil(y1 * sy)))
        return (
            min(box[0], width - 1),
            min(box[1], height - 1),
            max(min(end[0], width), box[0] + 1),
            max(min(end[1], height), box[1] + 1),
        )


BATCH = 32
"""Whole images per forward pass of :meth:`Localizer.task_probabilities`."""

REFINE_CONTEXT = 0.5
"""The second look's window: the first box's longer side plus this share of it on each
side, a square (the lesion about half of it)."""


def within_window(closer: Box, window: Box, first: Box, width: int, height: int) -> Box:
    """The second look's box ``closer`` (in the window's pixels) in the image's pixels.
    Where it reaches an edge of the window that is not the image's, the lesion goes on
    beyond the window: there the first look's edge is kept, if it reaches further."""
    wx0, wy0, wx1, wy1 = window
    x0, y0, x1, y1 = closer[0] + wx0, closer[1] + wy0, closer[2] + wx0, closer[3] + wy0
    if x0 == wx0 > 0:
        x0 = min(x0, first[0])
    if y0 == wy0 > 0:
        y0 = min(y0, first[1])
    if x1 == wx1 < width:
        x1 = max(x1, first[2])
    if y1 == wy1 < height:
        y1 = max(y1, first[3])
    return x0, y0, x1, y1


def largest_region_box(mask: np.ndarray) -> Box | None:
    """``(x0, y0, x1, y1)`` (end exclusive) of the largest 8-connected region of a boolean
    mask; None when it is empty. One region, not every pixel: a speck elsewhere in the
    image must not stretch the RoI across it."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    ys, xs = np.nonzero(labels == int(np.argmax(sizes)) + 1)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def localizer_leaks(where: str | Path, data: PreparedData) -> list[str] | None:
    """This data's validation and test images (of any fold) that the localiser trained on,
    from the splits.json of the run that trained it; None when there is none to read (a
    checkpoint file outside its run directory)."""
    checkpoint = checkpoint_of(where, "roi.localizer")
    split_files = [folder / "splits.json" for folder in list(checkpoint.parents)[1:4]]
    split_file = next((f for f in split_files if f.is_file()), None)
    if split_file is None:
        return None
    seen = set().union(*training_images(split_file))
    return [
        f"{sample.where()} ({split}, fold {fold + 1})" if data.n_folds > 1 else sample.where()
        for fold, splits in enumerate(data.folds)
        for sample, split in zip(data.samples, splits, strict=True)
        if split != "train" and sample.image_id in seen
    ]


def check_localizer_split(localizer: str, data: PreparedData) -> None:
    """Refuse a localiser that trained on this run's validation or test images: their RoIs
    would be better than any new image's. Without the localiser's splits.json, say that it
    could not be checked."""
    leaked = localizer_leaks(localizer, data)
    if leaked is None:
        data.warnings.append(
            f"roi.localizer {localizer} has no splits.json beside it: whether it trained on "
            "this run's test images cannot be checked"
        )
    elif leaked:
        raise UsageError(
            list_problems(
                f"roi.localizer {localizer} trained on {len(leaked)} of this run's validation "
                "or test images; train it on the same split (the same data and split "
                "settings, or data.split.file). With data.split.folds every image is "
                "tested once, so no one localiser fits: use one train/val/test split:",
                leaked,
            )
        )


def load_localizer(
    where: str | Path,
    host: PluginHost,
    device: torch.device,
    *,
    refine: bool = False,
    mirror: bool | None = None,
) -> Localizer:
    """The localiser a checkpoint (or its run directory) holds; :class:`UsageError` when it
    is not one: no segmentation head, or trained on crops rather than whole images.
    ``mirror`` None: as the localiser's run scored its masks (its ``evaluation.tta``)."""
    path = checkpoint_of(where, "roi.localizer")
    raw = read_metadata(path)["config"]
    backbone = raw.get("backbone")
    if isinstance(backbone, dict) and "pretrained" in backbone:
        backbone["pretrained"] = False  # the checkpoint holds the weights
    for unused in ("optimizer", "scheduler"):
        raw.get("training", {}).pop(unused, None)
    raw["baselines"] = []
    config = validate_config(raw, f"{path} (the localiser's config)")
    if config.data.roi.mode != "image":
        raise UsageError(
            f"roi.localizer: {path} was trained on {config.data.roi.mode} RoIs; a localiser "
            "is trained on whole images (data.roi.mode: image)"
        )
    components = resolve_components(config, host)
    if not components.dense_heads:
        raise UsageError(
            f"roi.localizer: {path} has no segmentation head; train one with "
            "heads: [{type: segmentation}] and data.roi.mode: image"
        )
    model = MultiTaskModel(components.build_backbone(), components.heads, components.dense_heads)
    load_weights(model, path)
    head = components.dense_heads[0]
    if mirror is None:
        mirror = config.evaluation.tta == "hflip"
    return Localizer(
        model.to(device),
        head.name,
        config.data.image_size,
        head.threshold,
        mirror=mirror,
        refine=refine,
        heads=components.heads,
    )
