"""The report's tables of models compared with p-values: the CNN against its baselines
(comparison.json, Tables 2 and 4 of the paper) and the variants of an ablation
(ablation.json, Table 3). The files are read back: :func:`compared_models` keeps only
well-formed entries, and every value is formatted through checks of its type."""

from __future__ import annotations

from typing import Any

from mtlkit import p_value_text
from mtlkit.plugins.html_report.render import METRIC_TITLES, esc, format_value, table
from mtlkit.plugins.reports import compared_models, share_with_p

METRICS = ("acc", "se", "sp", "precision", "f1", "auc", "reference_auc", "raw_auc", "brier", "ece")


def _tests(models: dict[str, dict[str, Any]]) -> list[str]:
    found: list[str] = []
    for model in models.values():
        for rows in model["metrics"].values():
            for row in rows.values():
                test = row.get("test")
                if isinstance(test, str) and test not in found:
                    found.append(test)
    return found


def comparison_html(document: Any, key: str, what: str) -> str:
    """One table per task (``what`` x metrics: mean ± SD (95% interval) over runs, then each
    metric's p-value against the reference), and the inconsistency shares per relation."""
    models = compared_models(document, key)
    if not models:
        return ""
    tests = ", ".join(_tests(models)) or "none"
    parts = [
        f'<p class="note">The {esc(document.get("split", "test"))} split; mean ± SD (95% '
        f"interval) over runs. p: the difference from <b>{esc(document.get('reference', ''))}"
        f"</b> ({esc(tests)}).</p>"
    ]
    tasks = list(dict.fromkeys(t for m in models.values() for t in m["metrics"]))
    for task in tasks:
        present = [
            m for m in METRICS if any(m in v["metrics"].get(task, {}) for v in models.values())
        ]
        headers = [what, *(METRIC_TITLES.get(m, m) for m in present)]
        headers += [f"p {METRIC_TITLES.get(m, m)}" for m in present]
        rows = [
            [
                name,
                *(format_value(model["metrics"][task].get(m)) for m in present),
                *(p_value_text(model["metrics"][task].get(m)) for m in present),
            ]
            for name, model in models.items()
            if task in model["metrics"]
        ]
        parts.append(f"<h3>{esc(task)}</h3>" + table(headers, rows))
    relations = list(
        dict.fromkeys(
            r
            for m in models.values()
            for r in m["consistency"]
            if "_without_" in r or r.startswith("nonmonotonic")
        )
    )
    rows = [
        [name, *(share_with_p(model["consistency"].get(r)) for r in relations)]
        for name, model in models.items()
        if any(r in model["consistency"] for r in relations)
    ]
    if rows:
        parts.append(
            "<h3>Inconsistent predictions</h3>"
            '<p class="note">Share of test images predicted child-positive but '
            "parent-negative at the threshold, and (nonmonotonic) whose probabilities rise "
            "somewhere along a chain of tasks.</p>" + table([what, *relations], rows)
        )
    return "".join(parts)
