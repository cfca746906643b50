"""``mtl ablate``: the variants of one config (the paper's Table 3: Single-BM, Single-ALNM,
multi-task without the constraint, the full model) trained on the same split and seeds,
each a run of its own in ``<out>/<variant>/``, and the table comparing every variant with
the reference one (``ablation.json``, ``ablation.csv``).

The reference variant runs first; the others reuse its ``splits.json``, so every variant
sees the same patients in every split. A killed ablation resumes: finished variants are
kept, an unfinished one continues like ``mtl run --resume``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console

from mtlkit.components.host import PluginHost
from mtlkit.components.resolve import DENSE_METRICS, call_component, resolve_components
from mtlkit.config.loading import apply_override, dump_config, validate_config
from mtlkit.config.schema import AblationVariant, RunConfig
from mtlkit.errors import ConfigError, UsageError
from mtlkit.evaluation.comparison import compare_models, comparison_csv, single_run_tests
from mtlkit.files import RunLock, atomic_write_text, prepare_run_dir, to_json
from mtlkit.files_in import MAX_CONFIG_BYTES, InputFileError, read_bytes
from mtlkit.progress import Progress
from mtlkit.readback import finished_run, read_json
from mtlkit.results import RunResult
from mtlkit.runs.runner import run
from mtlkit.text import shown

ABLATION_SCHEMA = "mtlkit.ablation/1"
GRID_FILE = "ablation.yaml"
PROGRESS_FILE = "progress.json"
COMPARED_SPLIT = "test"

PAPER_GRID = (
    AblationVariant(name="single_bm", tasks=["bm"], set=["constraints=[]"]),
    AblationVariant(name="single_alnm", tasks=["alnm"], set=["constraints=[]"]),
    AblationVariant(name="multitask", set=["constraints=[]"]),
    AblationVariant(name="full"),
)
"""The default grid: Li et al. 2022's Table 3."""


@dataclass
class AblationResult:
    """A finished ablation: its directory, the content of ablation.json, and each variant's
    run directory by name."""

    out_dir: Path
    document: dict[str, Any]
    run_dirs: dict[str, Path]


def variants_of(config: RunConfig) -> list[AblationVariant]:
    """The config's grid, or the paper's four variants."""
    return list(config.ablation.variants) or list(PAPER_GRID)


def reference_of(config: RunConfig, variants: list[AblationVariant]) -> str:
    """The variant every other is compared with: ``ablation.reference``, else ``full``,
    else the last one."""
    names = [v.name for v in variants]
    return config.ablation.reference or ("full" if "full" in names else names[-1])


def variant_config(
    config: RunConfig,
    variant: AblationVariant,
    task_names: list[str],
    split_file: Path | None,
    where: str,
    dense: frozenset[str] = frozenset(),
) -> RunConfig:
    """``config`` as ``variant`` changes it: only its tasks (and what names them), its
    overrides, and the reference's split file (``split_file``) unless the config fixes one."""
    raw = config.model_dump(mode="json")
    raw.pop("ablation", None)
    raw["name"] = f"{config.name}.{variant.name}"
    if variant.tasks is not None:
        _keep_tasks(raw, variant.tasks, task_names, f"{where}.tasks", dense)
    for index, item in enumerate(variant.set):
        try:
            apply_override(raw, item)
        except ConfigError as exc:
            raise ConfigError([(f"{where}.set[{index}]", _problems_text(exc))]) from None
    split = raw.setdefault("data", {}).setdefault("split", {})
    if split.get("folds"):
        split.pop("test_fraction", None)  # the test share is 1/folds (see dump_config)
    if split_file is not None:
        if not split.get("file"):
            split["file"] = str(split_file)
        # the reference compares the CNN with the baselines; the variants need not again
        raw["baselines"] = []
    try:
        return validate_config(raw, where)
    except ConfigError as exc:
        raise ConfigError([(where, _problems_text(exc))]) from None


def _problems_text(exc: ConfigError) -> str:
    return "; ".join(f"{path}: {problem}" if path else problem for path, problem in exc.problems)


def _keep_tasks(
    raw: dict[str, Any],
    keep: list[str],
    task_names: list[str],
    where: str,
    dense: frozenset[str] = frozenset(),
) -> None:
    unknown = ", ".join(repr(t) for t in keep if t not in task_names)
    if unknown:
        raise ConfigError([(where, f"no task called {unknown}; tasks: {', '.join(task_names)}")])
    raw["heads"] = [
        spec for spec, name in zip(raw["heads"], task_names, strict=True) if name in keep
    ]
    split = raw["data"]["split"]
    per_image = [t for t in keep if t not in dense]  # a mask is no label to stratify by
    split["stratify"] = [t for t in split.get("stratify", []) if t in keep] or per_image
    evaluation = raw["evaluation"]
    evaluation["reference_columns"] = {
        t: c for t, c in evaluation.get("reference_columns", {}).items() if t in keep
    }
    if evaluation.get("consistency") is not None:
        evaluation["consistency"] = [
            pair for pair in evaluation["consistency"] if all(t in keep for t in pair)
        ]
    task, metric = evaluation["select"].split(".")
    kept_dense = [t for t in keep if t in dense]
    if task not in ("mean", *keep):
        evaluation["select"] = f"mean.{metric}"
    if metric in DENSE_METRICS and not kept_dense:  # no segmentation task left to score it
        fallback = "auc" if "auc" in evaluation["metrics"] else evaluation["metrics"][0]
        evaluation["select"] = f"mean.{fallback}"
    elif metric not in DENSE_METRICS and kept_dense and not per_image:
        evaluation["select"] = f"{kept_dense[0]}.dice"  # only segmentation tasks left


def plan(config: RunConfig, out: Path, host: PluginHost) -> tuple[str, dict[str, RunConfig]]:
    """The reference's name and every variant's config (reference first), each resolved
    against the plugins: a grid with a broken variant is refused before anything runs."""
    variants = variants_of(config)
    reference = reference_of(config, variants)
    if reference not in [v.name for v in variants]:
        names = ", ".join(v.name for v in variants)
        raise ConfigError([("ablation.reference", f"{reference!r} is not a variant: {names}")])
    components = resolve_components(config, host)
    task_names = components.task_names
    dense = frozenset(head.name for head in components.dense_heads)
    if not config.ablation.variants:
        missing = [t for t in ("bm", "alnm") if t not in task_names]
        if missing:
            raise UsageError(
                f"the paper's grid (single_bm, single_alnm, multitask, full) needs the tasks "
                f"bm and alnm; this config has no {', '.join(missing)}: declare "
                "ablation.variants"
            )
    ordered = sorted(variants, key=lambda v: v.name != reference)
    # absolute: each variant's config.yaml records it, and a resume compares that text
    split_file = out.resolve() / reference / "splits.json"
    configs: dict[str, RunConfig] = {}
    problems: list[tuple[str, str]] = []
    for variant in ordered:
        where = (
            f"ablation.variants[{variants.index(variant)}] ({variant.name})"
            if config.ablation.variants
            else f"the paper's ablation variant {variant.name}"
        )
        try:
            derived = variant_config(
                config,
                variant,
                task_names,
                None if variant.name == reference else split_file,
                where,
                dense,
            )
            resolve_components(derived, host)
        except ConfigError as exc:
            problems += [(where, _problems_text(exc))]
            continue
        configs[variant.name] = derived
    if problems:
        raise ConfigError(problems)
    return reference, configs


def ablate(
    config: RunConfig,
    *,
    out_dir: str | Path | None = None,
    plugins: Iterable[Any] = (),
    host: PluginHost | None = None,
    progress: Progress | None = None,
    console: Console | None = None,
    resume: bool = False,
) -> AblationResult:
    """Train every variant of ``config``'s grid into ``out_dir``/<variant> and write the
    comparison; ``resume=True`` continues an interrupted ablation in ``out_dir``."""
    console = console or Console()
    progress = progress or Progress(enabled=False)
    host = host if host is not None else PluginHost(plugins)
    out = Path(out_dir) if out_dir is not None else default_ablation_dir(config)
    reference, configs = plan(config, out, host)
    grid_text = dump_config(config)
    lock = _resume_lock(out, grid_text) if resume else prepare_run_dir(out)
    with lock:
        if not resume:
            atomic_write_text(out / GRID_FILE, grid_text)
        documents: dict[str, dict[str, Any]] = {}
        finished = finished_variants(out) if resume else []
        for name, derived in configs.items():
            run_dir = out / name
            done = finished_run(run_dir) if name in finished else None
            if done is None:
                console.print(
                    f"[bold]ablation variant {shown(name)}[/] ({len(documents) + 1}/{len(configs)})"
                )
                started = (run_dir / "config.yaml").is_file()
                result = run(
                    derived,
                    out_dir=run_dir,
                    host=host,
                    progress=progress,
                    console=console,
                    resume=started,
                )
                documents[name] = result.metrics
                finished.append(name)  # after its baselines and reports too
                atomic_write_text(out / PROGRESS_FILE, to_json({"finished": finished}))
            else:
                documents[name] = done[0]
        tests = comparison_tests(configs[reference], reference, out, documents, host)
        document = ablation_document(config, reference, configs, documents, tests)
        atomic_write_text(out / "ablation.json", to_json(document))
        atomic_write_text(out / "ablation.csv", comparison_csv(document["variants"], "variant"))
        _report_reference(
            configs[reference], out / reference, documents[reference], document, host, console
        )
    return AblationResult(out, document, {name: out / name for name in configs})


def comparison_tests(
    config: RunConfig,
    reference: str,
    folder: Path,
    documents: dict[str, dict[str, Any]],
    host: PluginHost,
) -> dict[str, Any]:
    """For single runs, each variant's test against the reference from their predictions
    (paired DeLong, paired patient bootstrap), with ``config``'s metrics and statistics."""
    statistics = config.evaluation.statistics
    return single_run_tests(
        reference,
        {name: folder / name for name in documents},
        documents,
        resolve_components(config, host).metrics,
        config.evaluation.threshold,
        statistics.bootstrap_resamples,
        statistics.seed,
        COMPARED_SPLIT,
        statistics.bootstrap_unit == "patient",
    )


def _report_reference(
    config: RunConfig,
    run_dir: Path,
    metrics: dict[str, Any],
    ablation: dict[str, Any],
    host: PluginHost,
    console: Console,
) -> None:
    """The reference variant's reports made again, now that the ablation is known (its
    report.html gains the ablation's table and draws the other variants beside it)."""
    components = resolve_components(config, host)
    result = RunResult(
        out_dir=run_dir,
        metrics=metrics,
        task_names=components.task_names,
        baselines=_read_back(run_dir, [f"{b.name}/metrics.json" for b in components.baselines]),
        comparison=_read_back(run_dir, ["comparison.json"]).get("comparison.json"),
        ablation=ablation,
    )
    for index, (entry, options) in enumerate(components.reports):
        call_component(entry, options, f"reports[{index}]")(result, console)


class FinishedVariants(BaseModel):
    """What resuming reads of progress.json: the variants whose run returned."""

    finished: list[str]


def finished_variants(out: Path) -> list[str]:
    """The variants of the ablation in ``out`` whose run finished, reports included."""
    try:
        return list(
            read_json(out / PROGRESS_FILE, "valid progress.json", FinishedVariants).finished
        )
    except FileNotFoundError:
        return []


def _read_back(run_dir: Path, names: list[str]) -> dict[str, Any]:
    """The JSON files of a finished run that exist, by name (a baseline's by its folder)."""
    found = {}
    for name in names:
        try:
            found[name.split("/")[0] if "/" in name else name] = read_json(
                run_dir / name, f"valid {name} of a finished run"
            )
        except FileNotFoundError:
            continue
    return found


def _resume_lock(out: Path, grid_text: str) -> RunLock:
    try:
        recorded = read_bytes(out / GRID_FILE, "ablation grid", MAX_CONFIG_BYTES).decode(
            "utf-8", "replace"
        )
    except FileNotFoundError:
        raise UsageError(f"{out} is not an mtlkit ablation directory (no {GRID_FILE})") from None
    except InputFileError as exc:
        raise UsageError(str(exc)) from None
    if recorded != grid_text:
        raise UsageError(
            f"{out} was started with another config or grid; resume it with the same config "
            "and --set overrides, or start a new ablation"
        )
    return RunLock(out)


def ablation_document(
    config: RunConfig,
    reference: str,
    configs: dict[str, RunConfig],
    documents: dict[str, dict[str, Any]],
    tests: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ablation.json: every variant's metrics on the test split, summarised
    over runs, with the p-value of its difference from the reference (``tests``: the
    single-run tests from the predictions, see :func:`comparison_tests`)."""
    compared = compare_models(reference, documents, COMPARED_SPLIT, tests)
    grid = {v.name: v for v in variants_of(config)}
    variants = {
        name: {
            "tasks": list(compared[name]["metrics"]),
            "set": grid[name].set,
            "run_dir": name,
            **compared[name],
        }
        for name in configs
    }
    return {
        "schema": ABLATION_SCHEMA,
        "name": config.name,
        "reference": reference,
        "split": COMPARED_SPLIT,
        "seeds": config.seeds,
        "variants": variants,
    }


def default_ablation_dir(config: RunConfig) -> Path:
    """``output_dir`` with ``{name}`` as ``<name>-ablation`` and ``{timestamp}`` filled in."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(config.output_dir.format(name=f"{config.name}-ablation", timestamp=stamp))
