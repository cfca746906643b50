"""A module as an ONNX graph in memory, with torch's ``torch.export``-based exporter, and
the optional packages that needs: shared by ``mtl export`` (``mtlkit.export.onnx_file``)
and the ``onnx`` inference path (``onnx_model``).

The exporter is ``dynamo=True`` (it needs ``onnxscript``): the TorchScript exporter still
exists in torch 2.14 but is deprecated, warns that it will be removed, and leaves the dense
heads' spatial sizes symbolic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtlkit.components.resolve import missing_modules
from mtlkit.errors import MtlError

OPSET = 18
"""The ONNX opset of every export: the oldest the torch.export-based exporter writes."""

EXTRA_MODULES = ("onnx", "onnxruntime", "onnxscript")
INSTALL_HINT = "pip install 'mtlkit[onnx]'"


def missing_onnx_modules() -> list[str]:
    """The packages of the ``onnx`` extra that cannot be imported here."""
    return missing_modules(EXTRA_MODULES)


def onnx_proto(
    module: nn.Module,
    example: torch.Tensor,
    input_name: str,
    output_names: Sequence[str],
):
    """The ONNX ``ModelProto`` of ``module`` called on one tensor like ``example``, with a
    dynamic batch size; a model torch cannot export is an MtlError saying why."""
    try:
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            opset_version=OPSET,
            verbose=False,
        )
    except Exception as exc:  # torch.export refuses code it cannot trace (a plugin's model)
        raise MtlError(
            f"torch could not export the model to ONNX ({type(exc).__name__}: {str(exc)[:1000]})"
        ) from None
    return program.model_proto
