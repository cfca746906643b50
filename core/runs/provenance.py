"""What produced a run, recorded in environment.json so that it can be audited and
reproduced: package versions, the mtlkit source's git commit, the command line and the
data's fingerprint."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from mtlkit.data.prepared import PreparedData
from mtlkit.version import __version__


def environment(
    data: PreparedData | None = None, plugins: list[dict[str, Any]] = ()
) -> dict[str, Any]:
    """What produced a run, recorded beside its results so that it can be audited and
    reproduced: package versions, the mtlkit source's git commit, the plugins whose
    components the run used (:func:`~mtlkit.components.usage.components_used`) and the
    data's fingerprint."""
    record: dict[str, Any] = {
        "mtlkit": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "packages": package_versions(),
        "git": git_commit(Path(__file__).resolve().parent),
        "command": sys.argv,
        "plugins": list(plugins),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if data is not None:
        record["data"] = {
            "fingerprint": data.fingerprint(),
            "images": len(data.samples),
            "patients": len({s.patient_id for s in data.samples}),
            "splits": split_summary(data),
            "warnings": list(data.warnings),
        }
    return record


def split_summary(data: PreparedData) -> dict[str, Any]:
    """Per split: images, patients, and per task the labelled images (and the positive ones
    of a binary task, target 1), for reports that show what the model was trained on."""
    summary: dict[str, Any] = {}
    splits = np.array(data.splits)
    targets = data.targets.numpy()
    for split in dict.fromkeys(data.splits):
        rows = np.flatnonzero(splits == split)
        tasks = {}
        for column, task in enumerate(data.task_names):
            values = targets[rows, column]
            known = values[~np.isnan(values)]
            tasks[task] = {"labelled": int(len(known)), "positive": int((known == 1).sum())}
        summary[split] = {
            "images": int(len(rows)),
            "patients": len({data.samples[i].patient_id for i in rows}),
            "tasks": tasks,
        }
    return summary


PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "pillow",
    "pydantic",
    "pluggy",
    "scikit-learn",
    "scipy",
    "safetensors",
    "imagehash",
    "pydicom",
    "rich",
    "pyyaml",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(folder: Path) -> dict[str, Any] | None:
    """The commit of the git checkout ``folder`` lies in, and whether it has local changes;
    None outside a checkout or without git."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}
