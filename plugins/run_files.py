"""A finished run as its files hold it, for reports made without the model or the data:
metrics.json, predictions.csv, history.json, config.yaml, environment.json, splits.json
and the Grad-CAM outputs in cam/. A missing or unreadable file is simply absent."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VARIANT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*")  # as the config allows them
MAX_BYTES = 200 * 1024 * 1024  # a run's own files; anything larger is not one


@dataclass
class RunFiles:
    """The readable content of one run directory."""

    root: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    predictions: list[dict[str, str]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    config_text: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, Any] = field(default_factory=dict)
    gallery: dict[str, Any] = field(default_factory=dict)
    cam_response: dict[str, Any] = field(default_factory=dict)
    comparison: dict[str, Any] = field(default_factory=dict)  # comparison.json
    ablation: dict[str, Any] = field(default_factory=dict)  # ../ablation.json, as a variant
    problems: list[str] = field(default_factory=list)
    name: str = ""  # a model kept inside another run's directory: its folder's name

    @property
    def label(self) -> str:
        """The run's name as legends show it."""
        return self.name or str(self.metrics.get("name") or self.root.name)

    @property
    def sets(self) -> dict[str, Any]:
        sets = self.metrics.get("sets")
        return sets if isinstance(sets, dict) else {}

    @property
    def tasks(self) -> list[str]:
        """Task names in the order of the metrics (else of the prediction columns)."""
        for content in self.sets.values():
            tasks = content.get("tasks") if isinstance(content, dict) else None
            if isinstance(tasks, dict) and tasks:
                return list(tasks)
        return [c[: -len("_label")] for c in self.columns if c.endswith("_label")]

    @property
    def image_tasks(self) -> list[str]:
        """The tasks predicted once per image, those with columns in predictions.csv (not a
        segmentation task): what ROC curves and confusion matrices are drawn for."""
        if not self.columns:
            return self.tasks
        return [t for t in self.tasks if f"{t}_label" in self.columns]

    def metric(self, split: str, task: str, name: str) -> Any:
        try:
            return self.sets[split]["tasks"][task].get(name)
        except (KeyError, AttributeError, TypeError):
            return None


def _text(path: Path, problems: list[str]) -> str | None:
    try:
        if not path.is_file():
            return None
        if path.stat().st_size > MAX_BYTES:
            problems.append(f"{path.name} is larger than {MAX_BYTES} bytes; left out")
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path.name} could not be read ({type(exc).__name__})")
        return None


def _json(path: Path, problems: list[str], kind: type) -> Any:
    text = _text(path, problems)
    if text is None:
        return kind()
    try:
        value = json.loads(text)
    except ValueError:
        problems.append(f"{path.name} is not valid JSON; left out")
        return kind()
    if not isinstance(value, kind):
        problems.append(f"{path.name} does not hold a {kind.__name__}; left out")
        return kind()
    return value


def first_run_dir(root: Path) -> Path:
    """Where the first training run's own files (history.json) lie: the run directory,
    or its first ``fold_*/seed_*`` sub-folder."""
    if (root / "history.json").is_file():
        return root
    candidates = sorted(
        (p.parent for p in root.glob("*/history.json")), key=lambda p: _natural(p.name)
    ) or sorted((p.parent for p in root.glob("*/*/history.json")), key=lambda p: _natural(str(p)))
    return candidates[0] if candidates else root


def _natural(text: str) -> list[Any]:
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def read_run(root: Path) -> RunFiles:
    """Everything readable in the run directory ``root``."""
    root = Path(root)
    run = RunFiles(root=root)
    problems = run.problems
    run.metrics = _json(root / "metrics.json", problems, dict)
    text = _text(root / "predictions.csv", problems)
    if text:
        reader = csv.DictReader(io.StringIO(text))
        run.columns = list(reader.fieldnames or [])
        run.predictions = list(reader)
    run.history = _json(first_run_dir(root) / "history.json", problems, list)
    run.config_text = _text(root / "config.yaml", problems) or ""
    run.environment = _json(root / "environment.json", problems, dict)
    run.splits = _json(root / "splits.json", problems, dict)
    run.gallery = _json(root / "cam" / "gallery.json", problems, dict)
    run.cam_response = _json(root / "cam" / "response.json", problems, dict)
    run.comparison = _json(root / "comparison.json", problems, dict)
    if (root.parent / "ablation.json").is_file():
        ablation = _json(root.parent / "ablation.json", problems, dict)
        variants = ablation.get("variants")
        if isinstance(variants, dict) and root.name in variants:
            run.ablation = ablation
    return run


def ablation_siblings(run: RunFiles) -> list[RunFiles]:
    """The other variants of the ablation ``run`` is the reference of, for the figures
    that draw them beside it; none for any other run."""
    if run.ablation.get("reference") != run.root.name:
        return []
    found = []
    for name in run.ablation.get("variants") or {}:
        if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name):
            continue  # a variant's folder is a plain name beside this one, nothing else
        folder = run.root.parent / name
        if name != run.root.name and (folder / "metrics.json").is_file():
            other = read_run(folder)
            other.name = str(name)
            found.append(other)
    return found


def other_results(root: Path) -> list[RunFiles]:
    """Results of other models kept inside the run directory (a baseline under its own
    name, an ablation): every sub-folder with a metrics.json that is not a fold or seed."""
    found = []
    for path in sorted(Path(root).glob("*/metrics.json")):
        name = path.parent.name
        if name.startswith(("seed_", "fold_")) or name in ("cam", "plots", "checkpoints"):
            continue
        other = read_run(path.parent)
        other.name = name
        found.append(other)
    return found
