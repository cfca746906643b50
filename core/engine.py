"""The engine: builds the model from a config and trains, evaluates and predicts.

"What to compute" lives in the plugins (backbone, heads, losses, constraints); this module
is "how to run it".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mtlkit.background_writer import BackgroundWriter
from mtlkit.components.host import PluginHost
from mtlkit.components.interfaces import Constraint, TaskWeighting
from mtlkit.components.resolve import (
    Components,
    read_sample_set,
    resolve_components,
    resolve_source,
)
from mtlkit.components.usage import components_used
from mtlkit.config.loading import load_config
from mtlkit.config.schema import ExternalSetConfig, RoiConfig, RunConfig
from mtlkit.data.inspection import prepare_data, prepare_external, roi_for
from mtlkit.data.prepared import PreparedData, RoiDataset, keep_batch
from mtlkit.data.roi import Box, Locator, with_margin
from mtlkit.data.samples import SampleSet
from mtlkit.data.transforms import draws_nothing, normalize_batch, train_transform
from mtlkit.errors import MtlError, UsageError
from mtlkit.evaluation.bn_adaptation import MIN_IMAGES, adapted_to
from mtlkit.evaluation.metrics import score_split
from mtlkit.evaluation.segmentation import segmentation_metrics
from mtlkit.files import atomic_write_bytes
from mtlkit.inference.paths import InferencePaths, check_inference
from mtlkit.progress import Progress
from mtlkit.results import EpochLog, EvalResult, FitResult, RoiOutputs
from mtlkit.training import distributed
from mtlkit.training.checkpoint import load_weights, read_metadata, save_weights
from mtlkit.training.device import resolve_device
from mtlkit.training.fit import (
    FitObjects,
    FitRecord,
    build_fit_objects,
    train_epoch,
)
from mtlkit.training.localizer import check_localizer_split, load_localizer
from mtlkit.training.losses import Objective
from mtlkit.training.model import MultiTaskModel
from mtlkit.training.resume import capture_state, check_resumable, fingerprint, restore_state
from mtlkit.training.seeding import algorithm_choice, seed_everything, seed_worker
from mtlkit.training.selection import BestEpoch
from mtlkit.training.state import load_state, save_state

STATE_FILE = "state.safetensors"


class Engine:
    """Train and use one multi-task model.

    ``Engine(config)`` resolves every component through a fresh plugin manager (installed
    plugins plus ``plugins``, objects or modules registered in-process). Data is loaded on
    first use; ``fit`` trains and keeps the best validation epoch; ``evaluate`` measures a
    split; ``predict`` scores new images.
    """

    def __init__(
        self,
        config: RunConfig,
        *,
        plugins: Iterable[Any] = (),
        host: PluginHost | None = None,
        seed: int | None = None,
        progress: Progress | None = None,
        data: PreparedData | None = None,
    ):
        self.config = config
        self.host = host if host is not None else PluginHost(plugins)
        self.components: Components = resolve_components(config, self.host)
        self.seed = config.seeds[0] if seed is None else seed
        self.progress = progress or Progress(enabled=False)
        # Under torchrun each rank of a machine takes its own GPU (cuda:LOCAL_RANK).
        self.device = distributed.rank_device(resolve_device(config.training.device))
        check_inference(config.evaluation.inference, self.device)
        # The path evaluation and prediction run, with its copy of the model (never the
        # live one, which may be training).
        self.inference = InferencePaths(config.evaluation.inference, self.device)
        self._data = data
        self.model: MultiTaskModel | None = None
        self.checkpoint_dir: Path | None = None
        # The task weighting and constraints of the last fit, trained with the model.
        self._weighting: TaskWeighting | None = None
        self._constraints: nn.ModuleList | None = None
        self._locators: dict[tuple[str | None, bool], Locator] = {}
        # The epochs the last fit restored from its saved state (see mtl_fit_start).
        self.restored_epochs: list[EpochLog] = []
        # During a fit: writes checkpoints and states while training goes on.
        self._writer: BackgroundWriter | None = None
        self._plugins_used: list[dict] | None = None  # the checkpoints' plugin metadata

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = (), **kwargs: Any) -> Engine:
        """Build an engine from a YAML file with optional ``KEY.PATH=VALUE`` overrides."""
        return cls(load_config(path, list(overrides)), **kwargs)

    # --- building ------------------------------------------------------------------------

    @property
    def heads(self):
        """The heads that predict one value per image (binary, multiclass)."""
        return self.components.heads

    @property
    def dense_heads(self):
        """The heads that predict a mask per image (segmentation)."""
        return self.components.dense_heads

    @property
    def data(self) -> PreparedData:
        """Targets, splits and cached RoIs; loaded from the data source on first use."""
        if self._data is None:
            self._data = self.load_data()
        return self._data

    def load_data(self) -> PreparedData:
        """Read the configured data source, check it and prepare it for training."""
        components = self.components
        sample_set = self._read_source(
            components.source_entry,
            components.source_options,
            "data.source",
            components.source_columns,
        )
        data = prepare_data(
            sample_set,
            self.components.heads,
            self.config.data,
            self.config.evaluation.reference_columns,
            progress=self._image_progress,
            masks=bool(self.dense_heads),
            locate=self.locator(self.config.data.roi),
        )
        if self.config.data.roi.mode == "auto":
            check_localizer_split(self.config.data.roi.localizer, data)
        self._localized(data, self.config.data.roi)
        return data

    def load_external(self, external: ExternalSetConfig, where: str = "") -> PreparedData:
        """An extra test set (``evaluation.external``), read and checked with this run's
        preprocessing; every image is in one split named after the set."""
        where = where or f"external set {external.name}"
        entry, options, columns = resolve_source(self.host, external.source, f"{where}.source")
        sample_set = self._read_source(entry, options, f"{where}.source", columns)
        data = roi_for(self.config.data, external.roi)
        prepared = prepare_external(
            sample_set,
            self.components.heads,
            data,
            external.name,
            progress=self._image_progress,
            masks=bool(self.dense_heads),
            locate=self.locator(data.roi),
        )
        self._localized(prepared, data.roi)
        if len(prepared.samples) < MIN_IMAGES:  # checked before training
            if external.adapt_bn:
                raise UsageError(
                    f"{where}: adapt_bn needs at least {MIN_IMAGES} images for batch-norm "
                    f"statistics, the set has {len(prepared.samples)}"
                )
            if self.adapts_batch_norm(external):
                prepared.warnings.append(
                    f"{where}: {len(prepared.samples)} images are too few for batch-norm "
                    f"statistics ({MIN_IMAGES} at least); scored with the trained ones "
                    "despite evaluation.adapt_bn"
                )
        return prepared

    def adapts_batch_norm(
        self, external: ExternalSetConfig, data: PreparedData | None = None
    ) -> bool:
        """Whether ``external`` is scored with its own batch-norm statistics: its
        ``adapt_bn``, else the run's ``evaluation.adapt_bn``; with its ``data``, never for
        a set too small to adapt to."""
        wanted = self.config.evaluation.adapt_bn if external.adapt_bn is None else external.adapt_bn
        return wanted and (data is None or len(data.samples) >= MIN_IMAGES)

    def locator(self, roi: RoiConfig) -> Locator | None:
        """The localiser of ``roi.mode: auto`` (loaded once per engine), else None."""
        if roi.mode != "auto":
            return None
        key = (roi.localizer, roi.refine)
        if self._locators.get(key) is None:
            self._locators[key] = load_localizer(
                roi.localizer, self.host, self.device, refine=roi.refine
            )
        return self._locators[key]

    def _localized(self, data: PreparedData, roi: RoiConfig) -> None:
        """``roi.blend``: the localiser's own probabilities of each whole image, kept in
        ``data`` for every evaluation to blend with the classifier's."""
        if roi.mode != "auto" or not roi.blend:
            return
        shared = self.blended_tasks(roi)
        with self.progress.status("the localiser's probabilities of the whole images"):
            found = self.locator(roi).task_probabilities(s.image() for s in data.samples)
        data.localized = {name: found[name] for name in shared}
        data.blend = roi.blend

    def blended_tasks(self, roi: RoiConfig) -> list[str]:
        """The tasks whose probabilities ``roi.blend`` mixes: the classifier's that the
        localiser predicts too, alike (binary, or the same classes); :class:`UsageError`
        when there is none."""
        localizer = {head.name: head for head in self.locator(roi).heads}
        shared = [
            head.name
            for head in self.heads
            if head.name in localizer and _same_outputs(head, localizer[head.name])
        ]
        if not shared:
            raise UsageError(
                f"roi.blend: the localiser {roi.localizer} predicts none of this model's "
                f"tasks ({', '.join(h.name for h in self.heads)}) alike; its tasks: "
                f"{', '.join(localizer) or 'none'}. Set roi.blend: 0 or train a localiser "
                "with these heads beside its segmentation head"
            )
        return shared

    def _read_source(self, entry, options, where: str, columns=None) -> SampleSet:
        with self.progress.status(f"listing images ({where})"):
            sample_set = read_sample_set(entry, options, where, columns)
        return sample_set

    def _image_progress(self, total: int):
        task = self.progress.task("reading images", total=total)
        return lambda: self.progress.advance(task)

    def build_model(self) -> MultiTaskModel:
        """A freshly initialised model for this engine's seed, on its device."""
        seed_everything(self.seed)
        model = MultiTaskModel(
            self.components.build_backbone(), self.components.heads, self.dense_heads
        )
        self.model = model.to(self.device)
        return self.model

    @property
    def weighting(self) -> TaskWeighting:
        """The task weighting trained by the last (or current) fit; a fresh one before any."""
        if self._weighting is None:
            self._weighting = self.components.build_weighting().to(self.device)
        return self._weighting

    @property
    def constraints(self) -> list[Constraint]:
        """The constraints trained by the last (or current) fit, which evaluation reports the
        violations of; freshly built ones before any fit (e.g. after load_checkpoint)."""
        if self._constraints is None:
            self._constraints = nn.ModuleList(self.components.build_constraints()).to(self.device)
        return list(self._constraints)

    # --- training ------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> FitResult:
        """Train for ``training.epochs``; afterwards the model holds the best epoch's weights.

        The best epoch has the highest ``evaluation.select`` score on the validation split
        (the last epoch when there is no validation split). With a ``checkpoint_dir`` the
        complete training state is saved every ``training.state_every`` epochs;
        ``resume=True`` continues from that state when there is one, and on a CPU with the
        same settings ends exactly where an uninterrupted fit would.
        """
        threads = torch.get_num_threads()
        if self.config.training.threads:
            torch.set_num_threads(self.config.training.threads)
        try:
            # Checkpoints and states reach the disk in the background (in order, each
            # atomically); every one is on disk before fit returns or raises.
            with (
                algorithm_choice(self.config.training.deterministic, self.device),
                BackgroundWriter() as self._writer,
            ):
                return self._fit(resume)
        finally:
            self._writer = None
            torch.set_num_threads(threads)  # leave the process as it was

    @property
    def state_path(self) -> Path | None:
        """Where the training state is saved (None without a checkpoint directory)."""
        return self.checkpoint_dir / STATE_FILE if self.checkpoint_dir is not None else None

    def _fit(self, resume: bool) -> FitResult:
        cfg = self.config.training
        data = self.data
        if distributed.is_main():  # only rank 0 writes files
            data.save_cache()  # a fit means the data was accepted (mtl run saves it earlier)
        objects = build_fit_objects(
            self.build_model(), self.components, cfg, self.seed, self.device
        )
        self._distribute(objects)
        self._weighting, self._constraints = objects.weighting, objects.constraints
        loader = self._train_loader(data, objects.generator)
        targets = data.targets.to(self.device)
        objective = Objective(
            self.heads,
            self.components.task_losses,
            objects.weighting,
            objects.constraints,
            self.dense_heads,
        )
        record = FitRecord(BestEpoch(self.config.evaluation.select, self.components.metrics))
        done = self._resume(objects, record) if resume else 0

        self.model = objects.evaluated
        self.restored_epochs = list(record.history)
        self.host.fit_start(self)
        epochs = self.progress.task("epochs", total=cfg.epochs)
        for _ in range(done):
            self.progress.advance(epochs)
        for epoch in range(done + 1, cfg.epochs + 1):
            log = self._epoch(epoch, objects, objective, loader, targets, record)
            self.progress.advance(
                epochs,
                description=f"epochs (val {self.config.evaluation.select} "
                f"{log.val_score:.3f}, best {record.best.epoch})",
            )
        if done < cfg.epochs or not self._has_checkpoint("last"):
            self._save("last", cfg.epochs)
        self.progress.remove(epochs)
        self.model = objects.model
        # The live model takes the best epoch's weights (the average's, with training.ema).
        record.best.restore({**objects.selected(), "model": objects.model})
        result = record.result(resumed_from=done)
        if self._writer is not None:
            self._writer.flush()  # mtl_fit_end may read the checkpoints
        self.host.fit_end(self, result)
        return result

    def _distribute(self, objects: FitObjects) -> None:
        """Under torchrun: the model trained as DDP and the weighting's and constraints'
        learned parameters averaged over the ranks like the model's (nothing otherwise)."""
        if not distributed.active():
            return
        sync = self.config.training.distributed.sync_batchnorm
        objects.wrapped = distributed.wrap_model(objects.model, self.device, sync)
        others = [*objects.weighting.parameters(), *objects.constraints.parameters()]
        distributed.average_other_gradients(objects.optimizer, others)

    def _epoch(
        self,
        epoch: int,
        objects: FitObjects,
        objective: Objective,
        loader: DataLoader,
        targets: torch.Tensor,
        record: FitRecord,
    ) -> EpochLog:
        """Train, validate and record one epoch; saves the best weights, steps the scheduler
        and saves the training state when it is due. Returns the epoch's log."""
        known = self.data.mask_targets() if self.dense_heads else None
        if distributed.world_size() > 1:  # each rank its own augmentation draws
            seed_everything(distributed.rank_seed(self.seed, epoch))
        trained = train_epoch(
            objects,
            objective,
            loader,
            targets,
            epoch,
            self.progress,
            known.to(targets.device) if known is not None else None,
        )
        trained = trained.over_ranks()
        # The ranks validate (and rank 0 saves) with rank 0's batch-norm statistics.
        distributed.broadcast_buffers(
            {id(m): m for m in (objects.model, objects.evaluated)}.values()
        )
        val_metrics = self._validation_metrics()
        lr = objects.optimizer.param_groups[0]["lr"]
        log = trained.log(epoch, lr, record.best.score_of(val_metrics), val_metrics)
        record.add(log, trained.images)
        if record.best.offer(epoch, log.val_score, objects.selected()):
            self._save("best", epoch)
        objects.scheduler.step()
        if self._state_due(epoch):
            state = capture_state(epoch, objects, record, self._fingerprint())
            save_state(self.state_path, state, self._write)
        self.host.epoch_end(self, epoch, log.as_dict())
        return log

    def _validation_metrics(self) -> dict[str, dict[str, float]]:
        """Per-task metrics on the validation split; empty without one."""
        indices = self.data.indices("val")
        if not len(indices):
            return {}
        # The per-epoch choice of the best epoch does without test-time augmentation:
        # it would double the validation cost of every epoch. Reported metrics use it.
        with self.inference.validating():
            return self._evaluate(
                self.data, indices, "val", tta=False, statistics=False, blend=False
            ).tasks

    def _resume(self, objects: FitObjects, record: FitRecord) -> int:
        """Continue from the saved training state, if there is one; returns the epochs done.
        Under torchrun rank 0 reads it and sends it to the others, whose machines may not
        see the run directory."""
        saved = distributed.from_main(
            lambda: load_state(self.state_path) if self._has_state() else None
        )
        if saved is None:
            return 0
        check_resumable(saved, self.state_path, self._fingerprint(), self.config.training.epochs)
        try:
            return restore_state(saved, objects, record)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise UsageError(
                f"{self.state_path} does not fit this run ({type(exc).__name__}: "
                f"{str(exc)[:500]}); delete it to train this fold and seed from the start"
            ) from None

    def _state_due(self, epoch: int) -> bool:
        """Whether the training state is saved after ``epoch``."""
        every, last = self.config.training.state_every, self.config.training.epochs
        due = every > 0 and (epoch % every == 0 or epoch == last)
        return self.state_path is not None and due and distributed.is_main()

    def _has_state(self) -> bool:
        return self.state_path is not None and self.state_path.is_file()

    def _has_checkpoint(self, tag: str) -> bool:
        return (
            self.checkpoint_dir is not None
            and (self.checkpoint_dir / f"{tag}.safetensors").is_file()
        )

    def _fingerprint(self) -> str:
        return fingerprint(self.config, self.seed, self.data.fold)

    def _train_loader(self, data: PreparedData, generator: torch.Generator) -> DataLoader:
        """Shuffled training batches; ``generator`` decides the order (saved for resume).

        The dataset hands over whole batches (:meth:`RoiDataset.__getitems__`), so the
        loader neither fetches nor collates image by image; any sampler fits. Under
        torchrun each rank takes its shard of the epoch's order (its batches hold
        ``training.batch_size`` images each)."""
        cfg = self.config.training
        indices = data.indices("train")
        order: dict[str, Any] = {"shuffle": True}
        shard = len(indices)
        if distributed.active():
            sampler = distributed.ShardedSampler(
                len(indices), distributed.rank(), distributed.world_size(), generator
            )
            order, shard = {"sampler": sampler}, len(sampler)
        dataset = RoiDataset(
            data.training_rois,
            indices,
            train_transform(cfg.augmentation, self.config.data.image_size),
            data.training_masks if self.dense_heads else None,
            batchwise=draws_nothing(cfg.augmentation),
        )
        return DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            collate_fn=keep_batch,
            **order,
            drop_last=shard > cfg.batch_size,  # a batch of one breaks batch norm
            num_workers=cfg.num_workers,
            worker_init_fn=seed_worker,
            generator=generator,
            persistent_workers=cfg.num_workers > 0,
            pin_memory=self.device.type == "cuda",
        )

    def _save(self, tag: str, epoch: int) -> None:
        if self.checkpoint_dir is not None and self.model is not None and distributed.is_main():
            if self._plugins_used is None:  # the same for every checkpoint of the engine
                self._plugins_used = components_used(self.config, self.components, self.host)
            save_weights(
                self.model,
                self.checkpoint_dir / f"{tag}.safetensors",
                self.config,
                {"epoch": epoch, "seed": self.seed},
                self._plugins_used,
                self._write,
            )

    def _write(self, path: Path, data: bytes) -> None:
        """An atomic write: in the background during a fit, at once otherwise."""
        if self._writer is not None:
            self._writer.write(path, data)
        else:
            atomic_write_bytes(path, data)

    # --- evaluation and prediction ------------------------------------------------------

    def evaluate(self, split: str = "test") -> EvalResult:
        """Metrics of the current model on ``split`` (``train``, ``val`` or ``test``)."""
        if split not in ("train", "val", "test"):
            raise UsageError(f"unknown split {split!r}; choices: train, val, test")
        if self.model is None:
            raise UsageError("the engine has no model yet: call fit() or load_checkpoint() first")
        return self._evaluate_split(split)

    def evaluate_external(self, data: PreparedData, adapt_bn: bool = False) -> EvalResult:
        """Metrics of the current model on an external set from :meth:`load_external`;
        ``adapt_bn``: with batch-norm statistics recomputed on the set's own images first
        (:meth:`batch_norm_adapted`)."""
        if self.model is None:
            raise UsageError("the engine has no model yet: call fit() or load_checkpoint() first")
        name = data.splits[0] if data.splits else "external"
        rows = np.arange(len(data.samples))
        if not adapt_bn:
            return self._evaluate(data, rows, name)
        batch = max(self.config.training.batch_size, 64)
        batches = (data.rois_of(rows[i : i + batch]) for i in range(0, len(rows), batch))
        with self.batch_norm_adapted(batches):
            result = self._evaluate(data, rows, name)
        result.extra["batch_norm"] = f"statistics of this set's {len(rows)} images"
        return result

    @contextlib.contextmanager
    def batch_norm_adapted(self, batches: Iterable[torch.Tensor]) -> Iterator[nn.Module]:
        """Within the block the engine predicts with a copy of its model whose batch-norm
        statistics are those of ``batches`` (uint8 RoIs N x 1 x S x S at the input size):
        test-time adaptation to another site's scanner, no labels used
        (:mod:`mtlkit.evaluation.bn_adaptation`). The trained model is back after it."""
        if self.model is None:
            raise UsageError("the engine has no model yet: call fit() or load_checkpoint() first")
        trained = self.model
        self.model = adapted_to(trained, batches, self.device)
        try:
            yield self.model
        finally:
            self.model = trained

    def _evaluate_split(self, split: str) -> EvalResult:
        return self._evaluate(self.data, self.data.indices(split), split)

    def _evaluate(
        self,
        data: PreparedData,
        indices: np.ndarray,
        split: str,
        tta: bool = True,
        statistics: bool = True,
        blend: bool = True,
    ) -> EvalResult:
        """``statistics``: with the intervals and calibration of ``evaluation.statistics``;
        ``blend``: mixed with the localiser's probabilities (``roi.blend``). The per-epoch
        validation does without both: it picks the classifier's best epoch."""
        rows = torch.from_numpy(indices)
        # Under torchrun each rank runs its share of the rows and every rank gets all of
        # them back in row order, so that the metrics are computed once over all of them.
        # A cache on disk is read a batch at a time (rois_of), never as a whole split.
        probabilities, raw, maps = distributed.gathered(
            lambda shard: self._forward_all(data.rois_of(shard.numpy()), tta), rows
        )
        if data.localized is not None and blend:
            whole = {name: p[indices] for name, p in data.localized.items()}
            probabilities = blend_probabilities(probabilities, whole, data.blend)
            raw = blend_probabilities(raw, whole, data.blend) if raw is not None else None
        result = score_split(
            data,
            indices,
            split,
            self.heads,
            probabilities,
            self.components.metrics,
            self.constraints,
            self.config.evaluation.threshold,
            self.device,
            relations=self.components.consistency,
            margin=self.config.evaluation.consistency_margin,
            raw_probabilities=raw,
            statistics=self.config.evaluation.statistics if statistics else None,
        )
        if data.whole_image:  # roi.mode auto: the images the localiser found no lesion in
            fallback = set(data.whole_image)
            result.extra["roi_whole_image"] = [
                data.samples[i].image_id for i in indices.tolist() if i in fallback
            ]
        if self.dense_heads:
            masks, known = data.masks[rows, 0].numpy(), data.has_mask[rows].numpy()
            for head in self.dense_heads:
                result.tasks[head.name] = segmentation_metrics(
                    maps[head.name], masks, known, head.threshold
                )
        return result

    def _infer(
        self, rois: torch.Tensor, tta: bool = True
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        """Probabilities per task for uint8 RoIs of shape (N, 1, S, S), as the model predicts
        them (every constraint's ``adjust`` applied, in config order), and the raw ones when
        a constraint adjusts outputs (None otherwise). With ``evaluation.tta: hflip`` (and
        ``tta``) the raw probabilities are the mean over each image and its mirror, and
        the adjustment is applied to that mean."""
        probabilities, raw, _ = self._forward_all(rois, tta)
        return probabilities, raw

    def predict_rois(self, rois: torch.Tensor) -> RoiOutputs:
        """Everything the model predicts for uint8 RoIs (N, 1, S, S) already cut and resized
        to its input size (:func:`~mtlkit.crop_and_resize`), computed exactly as evaluation
        computes it (``evaluation.tta`` included): adjusted and raw probabilities and the
        segmentation tasks' lesion maps."""
        if self.model is None:
            raise UsageError("the engine has no model yet: call fit() or load_checkpoint() first")
        size = self.config.data.image_size
        if rois.dtype != torch.uint8 or rois.ndim != 4 or tuple(rois.shape[1:]) != (1, size, size):
            raise UsageError(
                f"expected uint8 RoIs of shape (N, 1, {size}, {size}), got {rois.dtype} "
                f"{tuple(rois.shape)}"
            )
        probabilities, raw, masks = self._forward_all(rois)
        return RoiOutputs(probabilities, raw, masks)

    def predict_masks(self, rois: torch.Tensor) -> dict[str, np.ndarray]:
        """Per-pixel lesion probabilities (N, S, S) of every segmentation task for uint8
        RoIs (N, 1, S, S) (empty without segmentation heads)."""
        if self.model is None:
            raise UsageError("the engine has no model yet: call fit() or load_checkpoint() first")
        return self._forward_all(rois, tta=True)[2]

    def _forward_all(
        self, rois: torch.Tensor, tta: bool = True
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None, dict[str, np.ndarray]]:
        """:meth:`_infer`'s probabilities and raw probabilities, and each segmentation
        task's per-pixel probabilities (N, S, S) as float16, from one pass of the model
        (the mirrored view's maps are mirrored back before they are averaged), through the
        ``evaluation.inference`` path (``mtlkit.inference.paths``)."""
        model = self.model
        adjusting = [c for c in self.constraints if c.adjusts_outputs]
        parts: dict[str, list[np.ndarray]] = {h.name: [] for h in self.heads}
        raw_parts: dict[str, list[np.ndarray]] = {h.name: [] for h in self.heads}
        map_parts: dict[str, list[np.ndarray]] = {h.name: [] for h in self.dense_heads}
        batch = max(self.config.training.batch_size, 64)
        mirror = tta and self.config.evaluation.tta == "hflip"
        path = self.inference.choose(model, len(rois) * (2 if mirror else 1))
        for start in range(0, len(rois), batch):
            images = normalize_batch(rois[start : start + batch]).to(self.device)
            run = self.inference.prepared(path, model, images)
            adjusted, probs, maps = run.outputs(
                images, self.heads, self.dense_heads, adjusting, mirror
            )
            for head in self.heads:
                parts[head.name].append(adjusted[head.name].cpu().numpy())
                if adjusting:
                    raw_parts[head.name].append(probs[head.name].cpu().numpy())
            for name, m in maps.items():
                map_parts[name].append(m.half().cpu().numpy())
        self.inference.scored(len(rois) * (2 if mirror else 1))
        final = _joined(parts)
        return final, (_joined(raw_parts) if adjusting else None), _joined(map_parts)

    def predict(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Probabilities per task for RoI images (2-D uint8 grayscale arrays, any size), as
        the model predicts them (adjusted by the constraints that adjust outputs).

        Each image is resized to the model's input size exactly as cached RoIs are.
        """
        from PIL import Image

        if self.model is None:
            raise UsageError("the engine has no model yet: call fit() or load_checkpoint() first")
        size = self.config.data.image_size
        rois = torch.empty((len(images), 1, size, size), dtype=torch.uint8)
        for i, image in enumerate(images):
            if image.ndim != 2 or image.dtype != np.uint8:
                raise UsageError(
                    f"image {i}: expected a 2-D uint8 array, got {image.dtype} {image.shape}"
                )
            resized = Image.fromarray(image).resize((size, size), Image.BILINEAR)
            rois[i, 0] = torch.tensor(np.asarray(resized))
        return self._infer(rois)[0]

    def whole_image_roi(self, image: np.ndarray) -> tuple[Box, bool]:
        """The RoI of a whole image without a drawn box, and whether a lesion was found:
        with ``data.roi.mode: auto`` the localiser's box plus the margin, else (or where
        it finds nothing) the whole image."""
        height, width = image.shape[:2]
        roi = self.config.data.roi
        found = self.locator(roi)(image) if roi.mode == "auto" else None
        if found is None:
            return (0, 0, width, height), False
        return with_margin(found, width, height, roi.margin, roi.shape), True

    def predict_whole(
        self, images: Sequence[np.ndarray]
    ) -> tuple[dict[str, np.ndarray], list[Box | None]]:
        """Probabilities per task for whole images (2-D uint8 arrays) without a drawn box,
        each cut to :meth:`whole_image_roi`. Returns the probabilities and each image's
        RoI box (None where the whole image was used)."""
        rois, boxes = [], []
        for i, image in enumerate(images):
            if image.ndim != 2 or image.dtype != np.uint8:
                raise UsageError(
                    f"image {i}: expected a 2-D uint8 array, got {image.dtype} {image.shape}"
                )
            (x0, y0, x1, y1), found = self.whole_image_roi(image)
            rois.append(np.ascontiguousarray(image[y0:y1, x0:x1]))
            boxes.append((x0, y0, x1, y1) if found else None)
        return self.blended(self.predict(rois), images), boxes

    def blended(
        self, probabilities: dict[str, np.ndarray], images: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        """``probabilities`` of the crops of ``images`` (whole 2-D uint8 images), mixed
        with the localiser's own of the whole images (``roi.blend``); as they are without
        a blend."""
        whole = self._localizer_probabilities(images)
        if whole is None:
            return probabilities
        return blend_probabilities(probabilities, whole, self.config.data.roi.blend)

    def blended_outputs(self, outputs: RoiOutputs, images: Sequence[np.ndarray]) -> RoiOutputs:
        """:meth:`predict_rois`'s ``outputs`` for the crops of ``images``, blended as
        :meth:`blended` blends (the raw probabilities too)."""
        whole = self._localizer_probabilities(images)
        if whole is None:
            return outputs
        weight = self.config.data.roi.blend
        raw = blend_probabilities(outputs.raw, whole, weight) if outputs.raw else outputs.raw
        return RoiOutputs(
            blend_probabilities(outputs.probabilities, whole, weight), raw, outputs.masks
        )

    def _localizer_probabilities(
        self, images: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray] | None:
        """The localiser's own probabilities of whole ``images`` in the tasks ``roi.blend``
        mixes; None without a blend."""
        roi = self.config.data.roi
        if roi.mode != "auto" or not roi.blend:
            return None
        shared = self.blended_tasks(roi)
        found = self.locator(roi).task_probabilities(images)
        return {name: found[name] for name in shared}

    def load_checkpoint(self, path: str | Path) -> None:
        """Load weights saved by a run into a model built from this engine's config.

        Only safetensors files written by mtlkit are read (never a pickle); a checkpoint of
        another model names the tasks and tensors that differ.
        """
        path = Path(path)
        trained = read_metadata(path)["config"]
        model = self.model if self.model is not None else self.build_model()
        try:
            load_weights(model, path)
        except UsageError as exc:
            raise UsageError(f"{exc}\n{self._describe_difference(trained)}") from None

    def _describe_difference(self, trained: dict[str, Any]) -> str:
        """Which tasks and backbone the checkpoint was trained with, beside this config's."""
        try:
            theirs = resolve_components(load_config(trained), self.host).task_names
        except MtlError:  # a plugin of the training run is missing here: show raw specs
            theirs = [str(h.get("name") or h.get("type")) for h in trained.get("heads", [])]
        ours = self.components.task_names
        lines = [f"the checkpoint's tasks: {', '.join(theirs)}; this config's: {', '.join(ours)}"]
        if set(theirs) != set(ours):
            lines.append(
                f"  only in the checkpoint: {', '.join(sorted(set(theirs) - set(ours))) or '-'}; "
                f"only in this config: {', '.join(sorted(set(ours) - set(theirs))) or '-'}"
            )
        if trained.get("backbone") != self.config.model_dump(mode="json")["backbone"]:
            lines.append(
                f"  backbone: checkpoint {trained.get('backbone')}, config "
                f"{self.config.model_dump(mode='json')['backbone']}"
            )
        return "\n".join(lines)


def blend_probabilities(
    crop: dict[str, np.ndarray], whole: dict[str, np.ndarray], weight: float
) -> dict[str, np.ndarray]:
    """``roi.blend``: each task of ``whole`` (the localiser's, on whole images) mixed into
    the classifier's ``crop`` probabilities with ``weight``; the other tasks as they are."""
    return {
        name: (1 - weight) * p + weight * whole[name] if name in whole else p
        for name, p in crop.items()
    }


def _same_outputs(head, other) -> bool:
    """Whether two heads' probabilities mean the same: both binary, or the same classes."""
    return head.kind == other.kind and head.classes == other.classes


def _joined(parts: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """Each task's batches as one array (an empty one without any)."""
    return {
        name: np.concatenate(chunks) if chunks else np.zeros((0,), dtype=np.float32)
        for name, chunks in parts.items()
    }
