"""The compact tables of docs/results.md from an ``mtl ablate`` directory's ablation.json:
per variant, each task's test AUC (mean ± SD over runs) with its p-value against the
reference and the oracle's AUC, the raw AUC where a constraint adjusted the outputs, and
the consistency shares with their p-values.

    python benchmarks/ablation_summary.py ABLATION_DIR
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from mtlkit import finite, p_value_text


def mean_sd(row: dict | None, scale: float = 1.0, digits: int = 3) -> str:
    if not isinstance(row, dict) or math.isnan(finite(row.get("mean"))):
        return "-"
    mean, sd = scale * finite(row["mean"]), scale * finite(row.get("sd"))
    return f"{mean:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd:.{digits}f}")


def auc_table(document: dict) -> list[str]:
    variants = document["variants"]
    tasks = list(dict.fromkeys(t for v in variants.values() for t in v["metrics"]))
    lines = [
        "| variant | " + " | ".join(f"{t} AUC (p)" for t in tasks) + " |",
        "|---|" + "---|" * len(tasks),
    ]
    for name, variant in variants.items():
        cells = []
        for task in tasks:
            rows = variant["metrics"].get(task)
            if not rows:
                cells.append("")
                continue
            text = f"{mean_sd(rows.get('auc'))} ({p_value_text(rows.get('auc'))})"
            if "raw_auc" in rows:
                text += f"; raw {mean_sd(rows['raw_auc'])}"
            cells.append(text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    oracle = next(iter(variants.values()))["metrics"]
    lines.append(
        "| oracle | "
        + " | ".join(mean_sd(oracle.get(t, {}).get("reference_auc")) for t in tasks)
        + " |"
    )
    return lines


def consistency_table(document: dict) -> list[str]:
    variants = document["variants"]
    relations = list(
        dict.fromkeys(
            r
            for v in variants.values()
            for r in v["consistency"]
            if "_without_" in r or "_above_" in r or r.startswith("nonmonotonic")
        )
    )
    lines = [
        "| variant | " + " | ".join(relations) + " |",
        "|---|" + "---|" * len(relations),
    ]
    for name, variant in variants.items():
        shares = variant["consistency"]
        if not shares:
            continue
        cells = [
            f"{mean_sd(shares.get(r), 100, 1)}% ({p_value_text(shares.get(r))})"
            if r in shares
            else ""
            for r in relations
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ablation_dir", type=Path)
    args = parser.parse_args()
    document = json.loads((args.ablation_dir / "ablation.json").read_text(encoding="utf-8"))
    print("\n".join(auc_table(document)))
    print()
    print("\n".join(consistency_table(document)))


if __name__ == "__main__":
    main()
