"""What an exported model says about itself (ONNX ``metadata_props``), and reading it back.

Everything a deployer needs besides the graph: how to make its input from an image (RoI,
size, channels, dtype and range; the normalisation is inside the graph), what each output
is (task, kind, classes, decision threshold), whether the mirror-image test-time
augmentation is inside the graph, and where the weights came from. Each value is JSON text
under a ``mtlkit.`` key, so any ONNX reader can get at it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from mtlkit.data.transforms import PIXEL_MEAN, PIXEL_STD
from mtlkit.engine import Engine
from mtlkit.errors import UsageError
from mtlkit.export.graph import INPUT_NAME, Output
from mtlkit.files import to_json
from mtlkit.readback import parse_json, validated
from mtlkit.version import __version__

FORMAT = "mtlkit-onnx/1"
PREFIX = "mtlkit."


def export_metadata(
    engine: Engine,
    outputs: list[Output],
    checkpoint: Path,
    checkpoint_meta: dict[str, Any],
    *,
    mirror: bool,
    exporter: dict[str, Any],
) -> dict[str, Any]:
    """The metadata document of ``engine``'s exported graph (keys without the prefix)."""
    config = engine.config
    return {
        "format": FORMAT,
        "version": __version__,
        "preprocessing": preprocessing(engine),
        "tta": {
            "in_graph": mirror,
            "method": "hflip" if mirror else "none",
            "configured": config.evaluation.tta,
            "note": (
                "the graph averages each image's probabilities with its mirror image's, as "
                "the engine does with evaluation.tta: hflip"
                if mirror
                else "the graph computes one view; the engine's evaluation.tta "
                f"({config.evaluation.tta}) is not applied"
            ),
        },
        "tasks": tasks(engine, outputs),
        "checkpoint": {
            "file": checkpoint.name,
            "sha256": file_sha256(checkpoint),
            "run_name": config.name,
            "info": checkpoint_meta["info"],
            "plugins": checkpoint_meta["plugins"],
        },
        "config": checkpoint_meta["config"],  # as trained, before inference settings
        "exporter": exporter,
    }


def preprocessing(engine: Engine) -> dict[str, Any]:
    """How a deployer makes the graph's input from an image, as mtlkit does."""
    size = engine.config.data.image_size
    roi = engine.config.data.roi
    return {
        "input": INPUT_NAME,
        "shape": ["batch", 1, size, size],
        "layout": "NCHW",
        "image_size": size,
        "channels": 1,
        "color": "grayscale: every image is read as 8-bit grayscale",
        "dtype": "uint8",
        "range": [0, 255],
        "normalization": {
            "in_graph": True,
            "formula": "(image / 255 - mean) / std",
            "mean": PIXEL_MEAN,
            "std": PIXEL_STD,
        },
        "roi": {
            "mode": roi.mode,
            "margin": roi.margin,
            "shape": roi.shape,
            "localizer": roi.localizer,
            "refine": roi.refine,
            "blend": roi.blend,
            "crop": (
                "the whole image"
                if roi.mode == "image"
                else "the lesion's box (mode box: the drawn box; mask: the mask's extent; "
                "auto: the localiser's box) grown by margin x its width and height on each "
                "side, clipped to the image"
                if roi.shape == "stretch"
                else "the square of side (1 + 2 margin) x the longer side of the lesion's box "
                "(mode box: the drawn box; mask: the mask's extent; auto: the localiser's "
                "box) around its centre, moved inside the image where it sticks out"
            ),
            "resize": f"bilinear (Pillow) to {size} x {size}"
            + (", not keeping the aspect ratio" if roi.shape == "stretch" else ""),
        },
    }


def tasks(engine: Engine, outputs: list[Output]) -> list[dict[str, Any]]:
    """One entry per task: its outputs, kind, classes and how a decision is made."""
    raw = {o.task: o.name for o in outputs if o.holds == "raw_probabilities"}
    size = engine.config.data.image_size
    threshold = engine.config.evaluation.threshold
    entries = []
    for head in engine.heads:
        binary = head.kind == "binary"
        entries.append(
            {
                "name": head.name,
                "kind": head.kind,
                "classes": head.classes,
                "output": head.name,
                "raw_output": raw.get(head.name),
                "shape": ["batch"] if binary else ["batch", len(head.classes)],
                "threshold": threshold if binary else None,
                "decision": (
                    f"{head.classes[1]} when the probability > threshold, else {head.classes[0]}"
                    if binary
                    else "the class of the largest probability (softmax over classes)"
                ),
            }
        )
    for head in engine.dense_heads:
        entries.append(
            {
                "name": head.name,
                "kind": "segmentation",
                "classes": head.classes,
                "output": head.name,
                "raw_output": None,
                "shape": ["batch", size, size],
                "threshold": head.threshold,
                "decision": "a pixel is lesion when its probability > threshold",
            }
        )
    return entries


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ExportedTask(_Open):
    name: str
    kind: str
    classes: list[str]
    output: str
    raw_output: str | None
    threshold: float | None


class ExportMetadata(_Open):
    """The schema of an exported model's metadata, as :func:`read_metadata_props` checks it."""

    format: str
    version: str
    preprocessing: dict[str, Any]
    tta: dict[str, Any]
    tasks: list[ExportedTask]
    checkpoint: dict[str, Any]
    config: dict[str, Any]
    exporter: dict[str, Any]


def metadata_props(document: dict[str, Any]) -> dict[str, str]:
    """The document as ONNX ``metadata_props``: ``mtlkit.<key>`` to JSON text."""
    return {PREFIX + key: to_json(value).strip() for key, value in document.items()}


def read_metadata_props(props: dict[str, str], where: Path | str) -> dict[str, Any]:
    """The metadata document back from ``metadata_props`` (``mtlkit.`` keys), checked
    against :class:`ExportMetadata`; a model mtlkit did not export is a UsageError."""
    ours = {k[len(PREFIX) :]: v for k, v in props.items() if k.startswith(PREFIX)}
    what = "model exported by mtlkit"
    document = {
        key: parse_json(text, where, f"{what} ({PREFIX}{key})") for key, text in ours.items()
    }
    if document.get("format") != FORMAT:
        raise UsageError(f"{where} is not a {what} (no {PREFIX}format {FORMAT!r} metadata)")
    return validated(document, ExportMetadata, where, what).model_dump()
