"""Grad-CAM per task head (the ``grad-cam`` package): the ``gradcam`` report (a gallery of
test images per task and the CAM-response curve, in ``cam/`` of a run) and ``mtl explain``."""

from __future__ import annotations

from mtlkit import Command, hookimpl
from mtlkit.plugins.gradcam.explain import add_arguments, run_explain
from mtlkit.plugins.gradcam.gallery import GradCamOptions, gradcam_report


@hookimpl
def mtl_register_reports(registry):
    registry.register("gradcam", gradcam_report, options=GradCamOptions)


@hookimpl
def mtl_register_commands(registry):
    registry.register(
        "explain",
        Command(
            "Grad-CAM heatmaps of a trained model per task, for images or two runs side by side",
            add_arguments,
            run_explain,
        ),
    )
