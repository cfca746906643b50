"""The built-in synthetic data: a data source and the ``mtl data synth`` command."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pydantic import Field, ValidationError, model_validator
from rich.table import Table

from mtlkit import (
    Command,
    CommandContext,
    OptionsModel,
    Sample,
    SampleSet,
    UsageError,
    hookimpl,
    shown,
    validation_problems,
)
from mtlkit.plugins.synthetic.phantoms import (
    SUBTYPES,
    Phantom,
    PhantomSettings,
    generate_phantoms,
    oracle_aucs,
    oracle_subtype_auc,
    write_phantom_set,
)

ORACLE_TASKS = ("bm", "alnm", "alnm_ge2", "alnm_ge3", "alnm_ge4")


class SyntheticOptions(OptionsModel):
    patients: int = Field(300, ge=3, le=1_000_000, description="number of patients")
    images_min: int = Field(2, ge=1, le=50, description="images per patient, at least")
    images_max: int = Field(4, ge=1, le=50, description="images per patient, at most")
    image_size: int = Field(128, ge=32, le=1024, description="square side of generated images")
    malignant_fraction: float = Field(0.5, ge=0, le=1, description="share of malignant patients")
    difficulty: float = Field(1.0, gt=0, description="> 1 harder, < 1 easier")
    alnm_missing_fraction: float = Field(
        0.1, ge=0, le=1, description="share of malignant patients with an unknown node count"
    )
    subtype_missing_fraction: float = Field(
        0.1, ge=0, le=1, description="share of malignant patients with an unknown subtype"
    )
    seed: int = Field(
        0, ge=0, le=2**32 - 1, description="generator seed (independent of the training seed)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> SyntheticOptions:
        self.settings()  # PhantomSettings checks the combinations (images_min <= images_max)
        return self

    def settings(self) -> PhantomSettings:
        return PhantomSettings(**self.model_dump(exclude={"seed"}))


def to_samples(phantoms: list[Phantom]) -> list[Sample]:
    """Phantoms as engine samples; the oracle probabilities travel as ``oracle_*`` columns.
    ``subtype`` is None (unknown) for benign lesions and untyped malignant ones."""
    samples = []
    for p in phantoms:
        labels = {
            "bm": p.bm,
            "alnm_count": p.alnm_count,
            "subtype": p.subtype,
            **{f"oracle_{task}": p.oracle[task] for task in ORACLE_TASKS},
        }
        samples.append(
            Sample(
                image_id=p.image_id,
                patient_id=p.patient_id,
                labels=labels,
                image=lambda pixels=p.pixels: pixels,
                mask=lambda mask=p.mask: mask,
                box=p.box,
            )
        )
    return samples


def synthetic_source(options: SyntheticOptions) -> SampleSet:
    """Synthetic B-mode phantoms with BM, ALNM, node-count and molecular-subtype labels and
    oracle probabilities."""
    settings = options.settings()
    phantoms = generate_phantoms(settings, seed=options.seed)
    return SampleSet(
        samples=to_samples(phantoms),
        description=f"synthetic phantoms: {settings.patients} patients, seed {options.seed}",
        columns=("bm", "alnm_count", "subtype", *(f"oracle_{t}" for t in ORACLE_TASKS)),
    )


def _synth_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="new or empty folder for images + manifest")
    # One flag per option of the `synthetic` data source, so both accept the same values.
    for name, field in SyntheticOptions.model_fields.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=type(field.default),
            default=field.default,
            help=f"{field.description or name} (default {field.default})",
        )


def _synth(args: argparse.Namespace, ctx: CommandContext) -> int:
    values = {name: getattr(args, name) for name in SyntheticOptions.model_fields}
    try:
        options = SyntheticOptions.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"--{p.replace('_', '-')}: {m}" for p, m in validation_problems(exc))
        raise UsageError(f"invalid phantom settings: {problems}") from None
    settings = options.settings()
    phantoms = generate_phantoms(settings, seed=options.seed)
    out = Path(os.path.abspath(args.out))  # "." or "dir/.." name a real folder
    try:
        manifest = write_phantom_set(phantoms, out)
    except FileExistsError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write phantoms into {out}: {exc.strerror or exc}") from None
    table = Table(
        title=f"{len(phantoms)} images of {settings.patients} patients -> {shown(manifest)}"
    )
    table.add_column("task")
    table.add_column("positive images", justify="right")
    table.add_column("labelled", justify="right")
    table.add_column("oracle AUC", justify="right")
    aucs = oracle_aucs(phantoms)
    for task in ORACLE_TASKS:
        positives, labelled = _prevalence(phantoms, task)
        table.add_row(task, str(positives), str(labelled), f"{aucs[task]:.3f}")
    ctx.console.print(table)
    typed = [p.subtype for p in phantoms if p.subtype is not None]
    shares = ", ".join(f"{s} {typed.count(s)}" for s in SUBTYPES)
    ctx.console.print(
        f"subtype: {len(typed)} typed images ({shares}), "
        f"oracle macro AUC {oracle_subtype_auc(phantoms):.3f}"
    )
    return 0


def _prevalence(phantoms: list[Phantom], task: str) -> tuple[int, int]:
    if task == "bm":
        return sum(p.bm == "malignant" for p in phantoms), len(phantoms)
    k = 1 if task == "alnm" else int(task.removeprefix("alnm_ge"))
    known = [p for p in phantoms if p.alnm_count is not None]
    return sum(p.alnm_count >= k for p in known), len(known)


@hookimpl
def mtl_register_data_sources(registry):
    registry.register("synthetic", synthetic_source, options=SyntheticOptions)


@hookimpl
def mtl_register_commands(registry):
    registry.register(
        "data synth",
        Command(
            "write a synthetic phantom data set (PNGs + manifest.csv)", _synth_arguments, _synth
        ),
    )
