"""The report's tables of models compared with p-values: the CNN against its baselines
(comparison.json, Tables 2 and 4 of the paper) and the variants of an ablation
(ablation.json, Table 3). The files are read back, so every value is checked for its type
before it is shown."""

from __future__ import annotations

import math
from typing import Any

from mtlkit.plugins.html_report.render import METRIC_TITLES, esc, format_value, table

METRICS = ("acc", "se", "sp", "precision", "f1", "auc", "raw_auc", "brier", "ece")


def p_text(row: Any) -> str:
    """A p-value as the paper prints it (``<0.001``); ``-`` without one."""
    p = row.get("p_value") if isinstance(row, dict) else None
    if not isinstance(p, int | float) or isinstance(p, bool) or math.isnan(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _percent(row: Any) -> str:
    mean = row.get("mean") if isinstance(row, dict) else None
    if not isinstance(mean, int | float) or isinstance(mean, bool) or math.isnan(mean):
        return "-"
    sd = row.get("sd")
    spread = f" ± {100 * sd:.1f}" if isinstance(sd, int | float) and not math.isnan(sd) else ""
    return f"{100 * mean:.1f}{spread}%"


def _models(document: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    models = document.get(key)
    if not isinstance(models, dict):
        return {}
    return {str(k): v for k, v in models.items() if isinstance(v, dict)}


def _tests(models: dict[str, dict[str, Any]]) -> list[str]:
    found: list[str] = []
    for model in models.values():
        for rows in (model.get("metrics") or {}).values():
            for row in rows.values() if isinstance(rows, dict) else ():
                test = row.get("test") if isinstance(row, dict) else None
                if isinstance(test, str) and test not in found:
                    found.append(test)
    return found


def comparison_html(document: dict[str, Any], key: str, what: str) -> str:
    """One table per task (``what`` x metrics: mean ± SD (95% CI) over runs, then each
    metric's p-value against the reference), and the inconsistency error per relation."""
    models = _models(document, key)
    if not models:
        return ""
    reference = esc(document.get("reference", ""))
    split = esc(document.get("split", "test"))
    tests = ", ".join(_tests(models)) or "none (one run, no predictions compared)"
    parts = [
        f'<p class="note">The {split} split; mean ± SD (95% interval) over runs. p: the '
        f"difference from <b>{reference}</b> ({esc(tests)}).</p>"
    ]
    tasks = list(
        dict.fromkeys(
            t for m in models.values() if isinstance(m.get("metrics"), dict) for t in m["metrics"]
        )
    )
    for task in tasks:
        present = [
            m
            for m in METRICS
            if any(m in ((v.get("metrics") or {}).get(task) or {}) for v in models.values())
        ]
        headers = [what, *(METRIC_TITLES.get(m, m) for m in present)]
        headers += [f"p {METRIC_TITLES.get(m, m)}" for m in present]
        rows = []
        for name, model in models.items():
            metrics = (model.get("metrics") or {}).get(task)
            if not isinstance(metrics, dict):
                continue
            rows.append(
                [
                    name,
                    *(format_value(metrics.get(m)) for m in present),
                    *(p_text(metrics.get(m)) for m in present),
                ]
            )
        parts.append(f"<h3>{esc(task)}</h3>" + table(headers, rows))
    relations = list(
        dict.fromkeys(
            r
            for m in models.values()
            if isinstance(m.get("consistency"), dict)
            for r in m["consistency"]
            if "_without_" in r or r.startswith("nonmonotonic")
        )
    )
    if relations:
        rows = []
        for name, model in models.items():
            shares = model.get("consistency") if isinstance(model.get("consistency"), dict) else {}
            if not any(r in shares for r in relations):
                continue
            rows.append(
                [name]
                + [
                    f"{_percent(shares.get(r))} (p {p_text(shares.get(r))})"
                    if p_text(shares.get(r)) != "-"
                    else _percent(shares.get(r))
                    for r in relations
                ]
            )
        parts.append(
            "<h3>Inconsistent predictions</h3>"
            '<p class="note">Share of test images predicted child-positive but '
            "parent-negative at the threshold, and (nonmonotonic) whose probabilities rise "
            "somewhere along a chain of tasks.</p>" + table([what, *relations], rows)
        )
    return "".join(parts)
