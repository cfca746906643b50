"""``mtl export --format onnx``: a trained checkpoint as one ONNX file, run in ONNX Runtime
and compared with PyTorch before it is written (the export call and the extra it needs:
:mod:`mtlkit.inference.onnx_graph`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlkit.errors import MtlError, UsageError
from mtlkit.evaluation.external import trained_engine
from mtlkit.export.graph import INPUT_NAME, DeployedModel
from mtlkit.export.metadata import export_metadata, metadata_props
from mtlkit.files import atomic_write_bytes, check_output_file
from mtlkit.inference.onnx_graph import INSTALL_HINT, OPSET, missing_onnx_modules, onnx_proto
from mtlkit.progress import Progress
from mtlkit.training.checkpoint import checkpoint_of, read_metadata
from mtlkit.version import __version__

TOLERANCE = 1e-4
"""The largest difference between ONNX Runtime's and PyTorch's outputs an export accepts."""


@dataclass
class ExportOutcome:
    """Where the model was written, its metadata and the largest difference between ONNX
    Runtime and PyTorch on the check images."""

    path: Path
    metadata: dict[str, Any]
    max_difference: float


def require_onnx_extra() -> None:
    """A UsageError naming the install command when a package of the ``onnx`` extra is
    missing."""
    missing = missing_onnx_modules()
    if missing:
        raise UsageError(
            f"exporting to ONNX needs {', '.join(missing)}, which is not installed: {INSTALL_HINT}"
        )


def output_path(checkpoint: Path, out: str | Path | None, force: bool) -> Path:
    """Where the model goes (default: beside the checkpoint, ``best.onnx`` for
    ``best.safetensors``), refused before exporting as every output file is
    (:func:`~mtlkit.files.check_output_file`): an existing file unless ``force``, a folder,
    a place that cannot be written."""
    path = Path(out).expanduser() if out is not None else checkpoint.with_suffix(".onnx")
    check_output_file(path, overwrite=force)
    return path


def export_onnx(
    checkpoint: str | Path,
    out: str | Path | None = None,
    *,
    force: bool = False,
    tta: str | None = None,
    host=None,
    progress: Progress | None = None,
) -> ExportOutcome:
    """Export a checkpoint (or a run directory's) to ONNX with its metadata; ``tta``
    (``hflip`` or ``none``) overrides the checkpoint's ``evaluation.tta``. The model is
    checked in ONNX Runtime against PyTorch before anything is written."""
    if tta not in (None, "none", "hflip"):
        raise UsageError(f"--tta {tta!r}: choices are hflip, none")
    require_onnx_extra()
    weights = checkpoint_of(checkpoint, option="--checkpoint")
    path = output_path(weights, out, force)
    progress = progress or Progress(enabled=False)
    engine = trained_engine(weights, device="cpu", host=host)
    mirror = (tta or engine.config.evaluation.tta) == "hflip"
    deployed = DeployedModel.of(engine, mirror)
    size = engine.config.data.image_size
    with progress.status("exporting to ONNX"):
        model = _exported_proto(deployed, size)
    with progress.status("checking the export in ONNX Runtime"):
        difference = max_difference(model.SerializeToString(), deployed, size)
    if not difference <= TOLERANCE:
        raise MtlError(
            f"the exported model differs from PyTorch by {difference:.3g} (more than "
            f"{TOLERANCE:g}) on random RoIs; nothing was written"
        )
    import onnxruntime

    exporter = {
        "exporter": "torch.onnx.export (dynamo=True)",
        "torch": torch.__version__,
        "onnxruntime_checked": onnxruntime.__version__,
        "opset": OPSET,
        "max_abs_difference": difference,
    }
    document = export_metadata(
        engine,
        deployed.outputs,
        weights,
        read_metadata(weights),
        mirror=mirror,
        exporter=exporter,
    )
    _describe(model, document)
    atomic_write_bytes(path, model.SerializeToString())
    return ExportOutcome(path, document, difference)


def _exported_proto(deployed: DeployedModel, size: int):
    """The ONNX model of ``deployed``, with a dynamic batch size."""
    example = torch.zeros((2, 1, size, size), dtype=torch.uint8)
    return onnx_proto(deployed, example, INPUT_NAME, [o.name for o in deployed.outputs])


def max_difference(model: bytes, deployed: DeployedModel, size: int, seed: int = 0) -> float:
    """The largest absolute difference between ONNX Runtime's and PyTorch's outputs, over
    random uint8 RoIs in a batch of one and a batch of several."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    largest = 0.0
    for batch in (1, 3):
        images = torch.randint(0, 256, (batch, 1, size, size), generator=generator)
        images = images.to(torch.uint8)
        with torch.no_grad():
            expected = deployed(images)
        got = session.run([o.name for o in deployed.outputs], {INPUT_NAME: images.numpy()})
        for ours, theirs in zip(got, expected, strict=True):
            largest = max(largest, float(np.abs(ours - theirs.numpy()).max()))
    return largest


def _describe(model, document: dict[str, Any]) -> None:
    """Write ``document`` into the model's ``metadata_props`` and its producer fields."""
    del model.metadata_props[:]
    for key, value in metadata_props(document).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "mtlkit"
    model.producer_version = __version__
    tasks = ", ".join(t["name"] for t in document["tasks"])
    model.doc_string = (
        f"mtlkit {document['checkpoint']['run_name']}: tasks {tasks}; input {INPUT_NAME} "
        "uint8 (batch, 1, S, S) 0..255, normalised inside the graph; see the mtlkit.* "
        "metadata"
    )
