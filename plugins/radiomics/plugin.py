"""The ``radiomics`` baseline (``baselines: [{type: radiomics, ...}]``) and the
``mtl radiomics CONFIG`` command, which runs it alone on the config's data and splits."""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np

from mtlkit import (
    Baseline,
    BaselineContext,
    BaselineOutput,
    Command,
    CommandContext,
    DataError,
    Progress,
    add_config_arguments,
    hookimpl,
    list_problems,
    load_config,
    run,
    shown,
    to_json,
)
from mtlkit.plugins.radiomics.cache import FeatureCache, default_cache_dir
from mtlkit.plugins.radiomics.extraction import (
    ExtractionSettings,
    FeatureTable,
    available_cpus,
    extract_features,
)
from mtlkit.plugins.radiomics.model import (
    fit_task,
    predict_task,
    selection_csv,
    training_medians,
)
from mtlkit.plugins.radiomics.options import RadiomicsOptions

INSTALL = (
    'pip install -e ".[radiomics]" (in a checkout; elsewhere: pip install pyradiomics-bhklab '
    "boruta)"
)


class RadiomicsBaseline(Baseline):
    """PyRadiomics features of each RoI, Boruta selection and a random forest per task."""

    Options = RadiomicsOptions
    requires = ("radiomics", "SimpleITK", "boruta")
    install = INSTALL

    def __init__(self, options: RadiomicsOptions):
        super().__init__(options.name)
        self.options = options
        self.table: FeatureTable | None = None

    # --- once per run: the features ------------------------------------------------------

    def prepare(self, context: BaselineContext) -> BaselineOutput:
        """Extract (or read from the cache) every image's features; writes features.csv,
        failures.csv and extraction.json."""
        options = self.options
        samples = context.data.samples
        settings = ExtractionSettings.from_options(options, context.roi)
        if settings.region == "mask":
            without = [s.where() for s in samples if s.mask is None]
            if without:
                raise DataError(
                    list_problems(
                        f"baseline {self.name}: region: mask needs a lesion mask for every "
                        f"image; {len(without)} have none:",
                        without,
                    )
                )
        cache = FeatureCache(self.cache_folder(context)) if options.cache else None
        progress = context.progress
        bar = progress.task(f"{self.name} features", total=len(samples))
        table = extract_features(
            samples,
            context.roi,
            settings,
            cache=cache,
            workers=options.workers or available_cpus(),
            advance=lambda: progress.advance(bar),
        )
        progress.remove(bar)
        failed = [f"{samples[i].where()}: {reason}" for i, reason in table.failures.items()]
        if not table.names:
            raise DataError(
                list_problems(f"baseline {self.name}: no image has radiomics features:", failed)
            )
        self.table = table
        warnings = []
        if failed:
            warnings.append(
                list_problems(
                    f"{len(failed)} of {len(samples)} image(s) have no radiomics features "
                    f"(listed in {self.name}/failures.csv); they are left out of training, "
                    "and their predictions use the training images' median features:",
                    failed,
                )
            )
        if table.cache_problem:
            warnings.append(table.cache_problem)
        files = {
            "features.csv": features_csv(table, [s.image_id for s in samples]),
            "failures.csv": failures_csv(table, [s.image_id for s in samples]),
            "extraction.json": to_json(
                {
                    "features": len(table.names),
                    "per_class": dict(Counter(n.split("_")[1] for n in table.names)),
                    "images": len(samples),
                    "extracted": table.extracted,
                    "from_cache": table.from_cache,
                    "failed": len(table.failures),
                    "workers": table.workers,
                    "seconds": round(table.seconds, 3),
                    "cache": str(cache.folder) if cache is not None else None,
                    "settings": json.loads(settings.fingerprint()),
                    "pyradiomics_settings": settings.pyradiomics_settings(),
                }
            ),
        }
        return BaselineOutput(files=files, warnings=warnings)

    def cache_folder(self, context: BaselineContext) -> Path:
        """``cache_dir``, else ``<data.cache_dir>/radiomics``, else the user's cache."""
        if self.options.cache_dir:
            return Path(self.options.cache_dir).expanduser()
        if context.cache_dir is not None:
            return context.cache_dir / "radiomics"
        return default_cache_dir()

    # --- per fold and seed: selection and forest ----------------------------------------

    def fit(self, context: BaselineContext, seed: int) -> BaselineOutput:
        """Boruta and a forest per task on the training split's rows; probabilities for
        the evaluated splits."""
        if self.table is None:
            raise RuntimeError("RadiomicsBaseline.fit before prepare")
        data, values = context.data, self.table.values
        usable = ~np.isnan(values).any(axis=1)
        train = data.indices("train")
        train = train[usable[train]]
        if len(train) == 0:
            raise DataError(f"baseline {self.name}: no training image has radiomics features")
        # Images without features are predicted from the training images' medians: every
        # evaluated image gets a probability, as with the CNN.
        filled = np.where(usable[:, None], values, training_medians(values[train]))
        evaluated = [s for s in context.evaluate if len(data.indices(s))]
        probabilities: dict[str, dict[str, np.ndarray]] = {s: {} for s in evaluated}
        models, warnings = [], []
        for column, head in enumerate(context.heads):
            targets = data.targets[:, column].numpy()
            rows = train[~np.isnan(targets[train])]
            if len(rows) == 0:
                raise DataError(
                    f"baseline {self.name}, task {head.name}: no training image has both a "
                    "label and radiomics features"
                )
            n_classes = 2 if head.kind == "binary" else len(head.classes)
            model = fit_task(
                head.name,
                values[rows],
                targets[rows].astype(np.int64),
                n_classes,
                self.options,
                seed,
                binary=head.kind == "binary",
            )
            if model.forest is None:
                warnings.append(
                    f"task {head.name}: every training image is of one class; that class is "
                    "predicted for every image"
                )
            if model.fallback:
                warnings.append(
                    f"task {head.name}: Boruta confirmed no feature; the forest uses the "
                    f"{len(model.selected)} best-ranked one(s)"
                )
            models.append(model)
            for split in evaluated:
                probabilities[split][head.name] = predict_task(model, filled[data.indices(split)])
        files = {"selected_features.csv": selection_csv(models, self.table.names)}
        return BaselineOutput(probabilities=probabilities, files=files, warnings=warnings)


def features_csv(table: FeatureTable, image_ids: list[str]) -> str:
    """features.csv: one row per image, ``image_id`` then every feature; empty cells for an
    image without features. Values are written exactly (Python's shortest round-trip form)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image_id", *table.names])
    for index, image_id in enumerate(image_ids):
        if index in table.failures:
            writer.writerow([image_id, *([""] * len(table.names))])
        else:
            writer.writerow([image_id, *(repr(float(v)) for v in table.values[index])])
    return buffer.getvalue()


def failures_csv(table: FeatureTable, image_ids: list[str]) -> str:
    """failures.csv: ``image_id, reason`` for every image without features."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image_id", "reason"])
    for index, reason in sorted(table.failures.items()):
        writer.writerow([image_ids[index], reason])
    return buffer.getvalue()


# --- mtl radiomics ---------------------------------------------------------------------------


def _command_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", help="run directory (must not exist or be empty)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _command(args: argparse.Namespace, ctx: CommandContext) -> int:
    config = load_config(args.config, args.overrides)
    # The config's radiomics entries (its settings), else the default baseline; no CNN.
    mine = [spec for spec in config.baselines if spec.get("type") == "radiomics"]
    config = config.model_copy(update={"baselines": mine or [{"type": "radiomics"}]})
    show = not args.quiet and ctx.err.is_terminal
    with Progress(enabled=show, console=ctx.err) as progress:
        result = run(
            config,
            out_dir=args.out,
            host=ctx.host,
            progress=progress,
            console=ctx.console,
            cnn=False,
        )
    ctx.console.print(f"run directory: {shown(result.out_dir)}")
    return 0


@hookimpl
def mtl_register_baselines(registry):
    registry.register("radiomics", RadiomicsBaseline)


@hookimpl
def mtl_register_commands(registry):
    registry.register(
        "radiomics",
        Command(
            "run the radiomics baseline alone (PyRadiomics + Boruta + random forest) on a "
            "config's data and splits",
            _command_arguments,
            _command,
        ),
    )
