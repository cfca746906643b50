"""The automatic RoI (``data.roi.mode: auto``): a trained localisation model, a segmentation
head trained on whole images, finds the lesion; the box around its largest predicted region
becomes the classifier's RoI, with the configured margin added by :func:`~mtlkit.roi_box`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from mtlkit.components.resolve import resolve_components
from mtlkit.config.loading import validate_config
from mtlkit.data.roi import Box
from mtlkit.data.split_file import training_images
from mtlkit.data.transforms import normalize_batch
from mtlkit.errors import UsageError, list_problems
from mtlkit.training.checkpoint import checkpoint_of, load_weights, read_metadata
from mtlkit.training.model import MultiTaskModel

if TYPE_CHECKING:
    from mtlkit.components.host import PluginHost
    from mtlkit.data.prepared import PreparedData


class Localizer:
    """Runs a localisation model on whole images: ``localizer(image)`` is the box of the
    largest connected region of predicted lesion pixels, in the image's own pixels, or None
    when no pixel is above the head's threshold."""

    def __init__(self, model: MultiTaskModel, task: str, size: int, threshold: float):
        self.model = model.eval()
        self.task = task
        self.size = size
        self.threshold = threshold
        first = next(iter(model.parameters()), None)
        self.device = first.device if first is not None else torch.device("cpu")

    @torch.no_grad()
    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Per-pixel lesion probabilities of the whole image at the model's input size."""
        resized = Image.fromarray(np.ascontiguousarray(image)).resize(
            (self.size, self.size), Image.BILINEAR
        )
        batch = torch.from_numpy(np.array(resized, dtype=np.uint8))[None, None]
        logits = self.model(normalize_batch(batch).to(self.device))[self.task]
        return torch.sigmoid(logits.float())[0, 0].cpu().numpy()

    def __call__(self, image: np.ndarray) -> Box | None:
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


def load_localizer(where: str | Path, host: PluginHost, device: torch.device) -> Localizer:
    """The localiser a checkpoint (or its run directory) holds; :class:`UsageError` when it
    is not one: no segmentation head, or trained on crops rather than whole images."""
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
    return Localizer(model.to(device), head.name, config.data.image_size, head.threshold)
