"""The engine: builds the model from a config and trains, evaluates and predicts.

"What to compute" lives in the plugins (backbone, heads, losses, constraints); this module
is "how to run it".
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from mtlkit.components.host import PluginHost
from mtlkit.components.resolve import Components, call_component, resolve_components
from mtlkit.config.loading import load_config
from mtlkit.config.schema import ExternalSetConfig, RunConfig
from mtlkit.data.inspection import prepare_data, prepare_external, roi_for
from mtlkit.data.prepared import PreparedData, RoiDataset
from mtlkit.data.samples import SampleSet
from mtlkit.data.transforms import normalize_batch, train_transform
from mtlkit.errors import DataError, MtlError, TrainingError, UsageError
from mtlkit.evaluation.metrics import score_split, selection_score
from mtlkit.progress import Progress
from mtlkit.results import EpochLog, EvalResult, FitResult
from mtlkit.training.averaging import WeightAverage
from mtlkit.training.checkpoint import load_weights, read_metadata, save_weights
from mtlkit.training.losses import masked_task_loss
from mtlkit.training.model import MultiTaskModel
from mtlkit.training.seeding import seed_everything, seed_worker
from mtlkit.training.state import TrainingState, capture_rng, load_state, restore_rng, save_state

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
        self.device = resolve_device(config.training.device)
        self._data = data
        self.model: MultiTaskModel | None = None
        self.weighting = self.components.weighting
        self.checkpoint_dir: Path | None = None

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = (), **kwargs: Any) -> Engine:
        """Build an engine from a YAML file with optional ``KEY.PATH=VALUE`` overrides."""
        return cls(load_config(path, list(overrides)), **kwargs)

    # --- building ------------------------------------------------------------------------

    @property
    def heads(self):
        return self.components.heads

    @property
    def data(self) -> PreparedData:
        """Targets, splits and cached RoIs; loaded from the data source on first use."""
        if self._data is None:
            self._data = self.load_data()
        return self._data

    def load_data(self) -> PreparedData:
        """Read the configured data source, check it and prepare it for training."""
        sample_set = self._read_source(
            self.components.source_entry, self.components.source_options, "data.source"
        )
        return prepare_data(
            sample_set,
            self.components.heads,
            self.config.data,
            self.config.evaluation.reference_columns,
            progress=self._image_progress,
        )

    def load_external(self, external: ExternalSetConfig, where: str = "") -> PreparedData:
        """An extra test set (``evaluation.external``), read and checked with this run's
        preprocessing; every image is in one split named after the set."""
        where = where or f"external set {external.name}"
        entry, options = self.host.data_sources.resolve(external.source, f"{where}.source")
        sample_set = self._read_source(entry, options, f"{where}.source")
        return prepare_external(
            sample_set,
            self.components.heads,
            roi_for(self.config.data, external.roi),
            external.name,
            progress=self._image_progress,
        )

    def _read_source(self, entry, options, where: str) -> SampleSet:
        with self.progress.status(f"listing images ({where})"):
            sample_set = call_component(entry, options, where)
        if not isinstance(sample_set, SampleSet):
            raise DataError(
                f"data source {entry.name!r} returned {type(sample_set).__name__}, not a SampleSet"
            )
        return sample_set

    def _image_progress(self, total: int):
        task = self.progress.task("reading images", total=total)
        return lambda: self.progress.advance(task)

    def build_model(self) -> MultiTaskModel:
        """A freshly initialised model for this engine's seed, on its device."""
        seed_everything(self.seed)
        model = MultiTaskModel(self.components.build_backbone(), self.components.heads)
        self.model = model.to(self.device)
        return self.model

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
            return self._fit(resume)
        finally:
            torch.set_num_threads(threads)  # leave the process as it was

    @property
    def state_path(self) -> Path | None:
        """Where the training state is saved (None without a checkpoint directory)."""
        return self.checkpoint_dir / STATE_FILE if self.checkpoint_dir is not None else None

    def _fit(self, resume: bool) -> FitResult:
        cfg = self.config.training
        data = self.data
        model = self.build_model()
        # Fresh weighting and constraints per fit: a learned weighting must not carry over.
        self.weighting = weighting = self.components.build_weighting().to(self.device)
        constraints = [c.to(self.device) for c in self.components.build_constraints()]
        params = list(model.parameters()) + list(weighting.parameters())
        # With training.ema the average is the model that is validated, selected and saved.
        average = WeightAverage(model, cfg.ema) if cfg.ema else None
        evaluated = average.model if average is not None else model
        optimizer = make_optimizer(params, cfg)
        scheduler = make_scheduler(optimizer, cfg)
        generator = torch.Generator().manual_seed(self.seed)
        loader = self._train_loader(data, generator)
        targets = data.targets.to(self.device)
        has_val = len(data.indices("val")) > 0
        amp = cfg.amp and self.device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=amp)

        history: list[EpochLog] = []
        best_score, best_epoch, best_state = math.nan, 0, None
        train_seconds, train_images = 0.0, 0
        first_epoch = 1
        saved = load_state(self.state_path) if resume and self._has_state() else None
        if saved is not None:
            self._check_state(saved)
            model.load_state_dict(saved.model)
            weighting.load_state_dict(saved.weighting)
            optimizer.load_state_dict(saved.optimizer)
            scheduler.load_state_dict(saved.scheduler)
            if saved.scaler:
                scaler.load_state_dict(saved.scaler)
            if average is not None:
                average.load_state_dict(saved.average)
            generator.set_state(saved.loader_generator)
            restore_rng(saved.rng)
            history = [EpochLog(**log) for log in saved.history]
            best_score, best_epoch = _nan_if_none(saved.best["score"]), saved.best["epoch"]
            best_state = (saved.best["model"], saved.best["weighting"])
            train_seconds, train_images = saved.totals["seconds"], int(saved.totals["images"])
            first_epoch = saved.epoch + 1

        self.model = evaluated
        self.host.fit_start(self)
        epochs = self.progress.task("epochs", total=cfg.epochs)
        for _ in range(first_epoch - 1):
            self.progress.advance(epochs)
        for epoch in range(first_epoch, cfg.epochs + 1):
            model.train()
            weighting.train()
            started = time.perf_counter()
            # Loss parts are summed on the device: one host sync per step (the total), not one
            # per task.
            part_sums = torch.zeros(len(self.heads) + 1, device=self.device)
            loss_sum = 0.0
            steps = seen = 0
            batches = self.progress.task(f"epoch {epoch}", total=len(loader))
            for step, (images, index) in enumerate(loader, start=1):
                images = images.to(self.device, non_blocking=True)
                batch_targets = targets[index.to(self.device)]
                with torch.autocast(self.device.type, enabled=amp):
                    outputs = model(images)
                    losses = self._task_losses(outputs, batch_targets)
                    constraint_loss = self._constraint_loss(outputs, constraints)
                    loss = weighting(losses) + constraint_loss
                value = loss.item()
                if not math.isfinite(value):  # checked before the step corrupts the weights
                    raise TrainingError(self._non_finite(epoch, step, losses, constraint_loss))
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                if average is not None:
                    average.update()
                loss_sum += value
                part_sums += torch.stack([*losses.values(), constraint_loss]).detach().float()
                steps += 1
                seen += images.shape[0]
                self.progress.advance(batches, description=f"epoch {epoch} loss {value:.4f}")
            self.progress.remove(batches)
            seconds = time.perf_counter() - started
            parts = (part_sums / max(steps, 1)).tolist()
            train_seconds += seconds
            train_images += seen

            # The per-epoch choice of the best epoch does without test-time augmentation:
            # it would double the validation cost of every epoch. Reported metrics use it.
            val_metrics = (
                self._evaluate(data, data.indices("val"), "val", tta=False).tasks if has_val else {}
            )
            score = self._selection_score(val_metrics) if has_val else math.nan
            log = EpochLog(
                epoch=epoch,
                lr=optimizer.param_groups[0]["lr"],
                train_loss=loss_sum / max(steps, 1),
                task_losses={h.name: parts[i] for i, h in enumerate(self.heads)},
                constraint_loss=parts[-1],
                val_score=score,
                val_metrics=val_metrics,
                seconds=seconds,
                train_images_per_second=seen / seconds if seconds else math.nan,
            )
            history.append(log)
            # Until a finite score is seen (no validation split, or a metric undefined on it)
            # the latest epoch counts as best.
            if math.isnan(best_score) or (not math.isnan(score) and score > best_score):
                best_score, best_epoch = score, epoch
                best_state = copy.deepcopy((evaluated.state_dict(), weighting.state_dict()))
                self._save("best", epoch)
            scheduler.step()
            if (
                self.state_path is not None
                and cfg.state_every
                and (epoch % cfg.state_every == 0 or epoch == cfg.epochs)
            ):
                save_state(
                    self.state_path,
                    TrainingState(
                        epoch=epoch,
                        model=model.state_dict(),
                        weighting=weighting.state_dict(),
                        optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(),
                        scaler=scaler.state_dict(),
                        average=average.state_dict() if average is not None else {},
                        loader_generator=generator.get_state(),
                        rng=capture_rng(),
                        best={
                            "epoch": best_epoch,
                            "score": best_score,
                            "model": best_state[0],
                            "weighting": best_state[1],
                        },
                        history=[_logs(h) for h in history],
                        totals={"seconds": train_seconds, "images": train_images},
                        config_fingerprint=self._fingerprint(),
                    ),
                )
            self.host.epoch_end(self, epoch, _logs(log))
            self.progress.advance(
                epochs,
                description=f"epochs (val {self.config.evaluation.select} "
                f"{score:.3f}, best {best_epoch})",
            )
        if first_epoch <= cfg.epochs or not self._has_checkpoint("last"):
            self._save("last", cfg.epochs)
        self.progress.remove(epochs)
        self.model = model
        model.load_state_dict(best_state[0])
        weighting.load_state_dict(best_state[1])
        result = FitResult(
            best_epoch=best_epoch,
            best_score=self._signed(best_score),
            history=history,
            train_seconds=train_seconds,
            train_images_per_second=train_images / train_seconds if train_seconds else math.nan,
            resumed_from=first_epoch - 1,
        )
        self.host.fit_end(self, result)
        return result

    def _has_state(self) -> bool:
        return self.state_path is not None and self.state_path.is_file()

    def _has_checkpoint(self, tag: str) -> bool:
        return (
            self.checkpoint_dir is not None
            and (self.checkpoint_dir / f"{tag}.safetensors").is_file()
        )

    def _fingerprint(self) -> str:
        """The config and seed a training state belongs to."""
        text = self.config.model_dump_json() + f"|seed={self.seed}|fold={self.data.fold}"
        return hashlib.sha256(text.encode()).hexdigest()

    def _check_state(self, saved: TrainingState) -> None:
        if saved.config_fingerprint != self._fingerprint():
            raise UsageError(
                f"{self.state_path} was saved by a run with another config, seed or fold; "
                "it cannot be resumed with this one"
            )
        if saved.epoch > self.config.training.epochs:
            raise UsageError(
                f"{self.state_path} is at epoch {saved.epoch}, beyond training.epochs "
                f"({self.config.training.epochs})"
            )

    def _selection_score(self, val_metrics: dict[str, dict[str, float]]) -> float:
        """The validation score, negated for metrics where lower is better (higher = better)."""
        return self._signed(selection_score(val_metrics, self.config.evaluation.select))

    def _signed(self, score: float) -> float:
        metric = self.config.evaluation.select.split(".")[1]
        higher_is_better = getattr(self.components.metrics[metric], "higher_is_better", True)
        return score if higher_is_better else -score

    def _task_losses(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor):
        fns = self.components.task_losses
        return {
            head.name: masked_task_loss(fns[head.name], outputs[head.name], targets[:, column])
            for column, head in enumerate(self.heads)
        }

    def _constraint_loss(self, outputs: dict[str, torch.Tensor], constraints) -> torch.Tensor:
        if not constraints:
            return torch.zeros((), device=self.device)
        probabilities = {h.name: h.probabilities(outputs[h.name].float()) for h in self.heads}
        return sum(c(probabilities) for c in constraints)

    def _non_finite(self, epoch: int, step: int, losses: dict, constraint_loss) -> str:
        bad = [name for name, v in losses.items() if not math.isfinite(float(v.detach()))]
        if not math.isfinite(float(constraint_loss.detach())):
            bad.append("constraints")
        where = ", ".join(bad) or "the task weighting"
        return (
            f"the training loss became non-finite at epoch {epoch}, step {step} (in: {where}); "
            "try a lower learning rate. The last good checkpoint is kept."
        )

    def _train_loader(self, data: PreparedData, generator: torch.Generator) -> DataLoader:
        """Shuffled training batches; ``generator`` decides the order (saved for resume)."""
        cfg = self.config.training
        indices = data.indices("train")
        dataset = RoiDataset(
            data.cache, indices, train_transform(cfg.augmentation, self.config.data.image_size)
        )
        return DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            shuffle=True,
            drop_last=len(indices) > cfg.batch_size,  # a batch of one breaks batch norm
            num_workers=cfg.num_workers,
            worker_init_fn=seed_worker,
            generator=generator,
            persistent_workers=cfg.num_workers > 0,
            pin_memory=self.device.type == "cuda",
        )

    def _save(self, tag: str, epoch: int) -> None:
        if self.checkpoint_dir is not None and self.model is not None:
            save_weights(
                self.model,
                self.checkpoint_dir / f"{tag}.safetensors",
                self.config,
                {"epoch": epoch, "seed": self.seed},
            )

    # --- evaluation and prediction ------------------------------------------------------

    def evaluate(self, split: str = "test") -> EvalResult:
        """Metrics of the current model on ``split`` (``train``, ``val`` or ``test``)."""
        if split not in ("train", "val", "test"):
            raise UsageError(f"unknown split {split!r}; choices: train, val, test")
        if self.model is None:
            raise UsageError("the engine has no model yet: call fit() or load_checkpoint() first")
        return self._evaluate_split(split)

    def evaluate_external(self, data: PreparedData) -> EvalResult:
        """Metrics of the current model on an external set from :meth:`load_external`."""
        if self.model is None:
            raise UsageError("the engine has no model yet: call fit() or load_checkpoint() first")
        name = data.splits[0] if data.splits else "external"
        return self._evaluate(data, np.arange(len(data.samples)), name)

    def _evaluate_split(self, split: str) -> EvalResult:
        return self._evaluate(self.data, self.data.indices(split), split)

    def _evaluate(
        self, data: PreparedData, indices: np.ndarray, split: str, tta: bool = True
    ) -> EvalResult:
        probabilities = self._infer(data.cache[torch.from_numpy(indices)], tta)
        return score_split(
            data,
            indices,
            split,
            self.heads,
            probabilities,
            self.components.metrics,
            self.components.constraints,
            self.config.evaluation.threshold,
        )

    @torch.no_grad()
    def _infer(self, rois: torch.Tensor, tta: bool = True) -> dict[str, np.ndarray]:
        """Probabilities per task for uint8 RoIs of shape (N, 1, S, S); with
        ``evaluation.tta: hflip`` (and ``tta``) the mean over each image and its mirror."""
        model = self.model
        model.eval()
        parts: dict[str, list[np.ndarray]] = {h.name: [] for h in self.heads}
        batch = max(self.config.training.batch_size, 64)
        views = [lambda x: x]
        if tta and self.config.evaluation.tta == "hflip":  # mirror images: the same lesion
            views.append(lambda x: torch.flip(x, dims=[3]))
        for start in range(0, len(rois), batch):
            images = normalize_batch(rois[start : start + batch]).to(self.device)
            probs: dict[str, torch.Tensor] = {}
            for view in views:
                outputs = model(view(images))
                for head in self.heads:
                    p = head.probabilities(outputs[head.name].float())
                    probs[head.name] = probs[head.name] + p if head.name in probs else p
            for head in self.heads:
                parts[head.name].append((probs[head.name] / len(views)).cpu().numpy())
        return {
            name: np.concatenate(chunks) if chunks else np.zeros((0,), dtype=np.float32)
            for name, chunks in parts.items()
        }

    def predict(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Probabilities per task for RoI images (2-D uint8 grayscale arrays, any size).

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
        return self._infer(rois)

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


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an unavailable device is a usage error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"training.device is {name!r} but CUDA is not available here")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise UsageError(
            f"training.device is {name!r} but this machine has {torch.cuda.device_count()} "
            "CUDA device(s)"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError("training.device is 'mps' but MPS is not available here")
    return torch.device(name)


def make_optimizer(params: list[torch.nn.Parameter], cfg) -> torch.optim.Optimizer:
    opt = cfg.optimizer
    if opt.name == "adam":
        return torch.optim.Adam(params, lr=opt.lr, weight_decay=opt.weight_decay)
    if opt.name == "adamw":
        return torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)
    return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg):
    sched = cfg.scheduler
    if sched.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, sched.step_size, sched.gamma)
    if sched.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


def _logs(log: EpochLog) -> dict[str, Any]:
    return json.loads(json.dumps(log.__dict__, default=float))
