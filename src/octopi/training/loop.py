"""One training run's state and its epoch loop (used by :func:`octopi.training.trainer.
train_model`).

Each epoch: reseed from (seed, epoch), train on the epoch's crops (LR per step from the
schedule, EMA update after each step), validate when due, then write the checkpoint,
``epochs.csv``, ``curves.png`` and MLflow metrics, and only then call ``on_validation``.

A stop request (:mod:`octopi.training.stop`: Slurm's warning before the time limit, or
preemption) ends the run after the current step with a checkpoint of that step
(``partial_epoch``: steps done, running loss, the RNG state); the resumed run trains the rest
of that epoch bit-exactly as if it had not stopped. ``attempts`` records where each run of
the loop started and ended, so that a study can show that no step was trained twice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from octopi import __version__, tracking
from octopi.config import TrainingConfig
from octopi.data.patches import CropLoader, SampleKey, TomogramCache, load_sample
from octopi.io_utils import atomic_write_json
from octopi.runtime import autocast, autocast_dtype, needs_grad_scaler
from octopi.training.checkpoint import (
    CHECKPOINT_FORMAT,
    capture_rng_state,
    cpu_state_dict,
    restore_rng_state,
    save_torch,
    seed_epoch,
)
from octopi.training.losses import build_loss
from octopi.training.outputs import VALIDATION_PREFIX, plot_curves, write_epochs_csv
from octopi.training.plan import TrainingPlan
from octopi.training.schedule import ModelEMA, WarmupCosineSchedule
from octopi.training.stop import TrainingStopped, stop_requested
from octopi.training.validation import Validator

ValidationCallback = Callable[[int, dict], None]


class TrainingLoop:
    """The state of one training run: network, EMA, optimiser, data, history."""

    def __init__(
        self, plan: TrainingPlan, training: TrainingConfig, device: torch.device, paths: dict
    ):
        self.plan, self.training, self.device, self.paths = plan, training, device, paths
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop size: pick the fastest kernels
        self.model = plan.model.to(device)
        self.ema = ModelEMA(self.model, training.ema_decay) if training.ema_decay else None
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=training.lr, weight_decay=training.weight_decay
        )
        self.schedule = WarmupCosineSchedule(
            training.lr, training.warmup_epochs, training.num_epochs, training.lr_decay
        )
        self.amp_dtype = autocast_dtype(device, training.amp)
        self.scaler = (
            torch.amp.GradScaler("cuda") if needs_grad_scaler(device, self.amp_dtype) else None
        )
        self.loss_fn = build_loss(training.loss).to(device)
        self.epoch = 0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.bad_validations = 0
        self.stopped_early = False
        self.history: list[dict] = []
        self.tracking_run_id: str | None = None
        # Progress inside epoch self.epoch + 1 of a run stopped mid-epoch (None: none), the
        # RNG state to continue it with, and where each run of the loop started and ended.
        self.partial: dict | None = None
        self._resume_rng: dict | None = None
        self.attempts: list[dict] = []
        if plan.checkpoint is not None:
            self._restore(plan.checkpoint)
        self.resumed_from = self.epoch
        self._open_data()

    def _open_data(self) -> None:
        """The validator (its volumes read now), the training tomogram cache and the crop
        loader. The validation volumes are read before the cache's background reader starts:
        copick is used from one thread."""
        plan, training = self.plan, self.training
        data = plan.config.data
        self.validator = Validator(
            plan.projects,
            plan.split.validate,
            data.tomo_algorithms[0],
            plan.card,
            plan.ground_truth,
            plan.config.inference,
            plan.config.localize,
            plan.config.evaluation,
            training.best_metric,
            self.device,
        )
        self.validator.volumes  # noqa: B018 - read the validation volumes now
        keys = [SampleKey(run, alg) for run in plan.split.train for alg in data.tomo_algorithms]
        self.cache = TomogramCache(
            keys,
            lambda key: load_sample(
                plan.projects, key, data.voxel_size_angstrom, data.target, plan.card.normalisation
            ),
            capacity=training.ncache_tomos,
            seed=training.seed,
        )
        self.loader = CropLoader(
            self.cache,
            training.batch_size,
            training.dim_in,
            training.background_ratio,
            training.augmentation,
            training.seed,
            num_workers=training.num_workers,
        )

    @property
    def eval_model(self) -> torch.nn.Module:
        """The network that is validated and saved as best: the EMA when on."""
        return self.ema.module if self.ema is not None else self.model

    # ------------------------------------------------------------------ checkpoint

    def summary(self) -> dict:
        """The progress fields of the checkpoint (no tensors)."""
        return {
            "epoch": self.epoch,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "history": self.history,
            "tracking_run_id": self.tracking_run_id,
            "attempts": self.attempts,
        }

    def position(self) -> dict:
        """Where training stands: epochs finished and steps done in the next one."""
        return {"epoch": self.epoch, "step": self.partial["steps_done"] if self.partial else 0}

    def state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "model": cpu_state_dict(self.model),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "bad_validations": self.bad_validations,
            "stopped_early": self.stopped_early,
            "finished": self.stopped_early or self.epoch >= self.training.num_epochs,
            "history": self.history,
            "partial_epoch": self.partial,
            "attempts": self.attempts,
            "config": self.plan.resolved,
            "tracking_run_id": self.tracking_run_id,
            "octopi_version": __version__,
        }

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.best_metric, self.best_epoch = state["best_metric"], state["best_epoch"]
        self.bad_validations = int(state["bad_validations"])
        self.stopped_early = bool(state["stopped_early"])
        self.history = list(state["history"])
        self.tracking_run_id = state.get("tracking_run_id")
        self.partial = state.get("partial_epoch")
        self._resume_rng = state["rng"] if self.partial else None
        self.attempts = list(state.get("attempts") or [])

    # ------------------------------------------------------------------ loop

    def run(
        self, run: tracking.NullRun, on_validation: ValidationCallback | None, show_progress: bool
    ) -> None:
        from tqdm.auto import tqdm

        training = self.training
        metric_name = training.best_metric
        bar = tqdm(
            total=training.num_epochs,
            initial=self.epoch,
            desc="train",
            unit="epoch",
            disable=not show_progress,
            dynamic_ncols=True,
        )
        last_metric = self.best_metric
        self.attempts.append({"start": self.position(), "end": self.position(), "stopped_by": None})
        try:
            for epoch in range(self.epoch + 1, training.num_epochs + 1):
                start = time.perf_counter()
                if self.partial is None:
                    seed_epoch(training.seed, epoch)
                else:  # continue the epoch a stop cut short, with the RNG state of that step
                    restore_rng_state(self._resume_rng)
                row = self._train_epoch(epoch, bar, last_metric)
                metrics = None
                if epoch % training.val_interval == 0 or epoch == training.num_epochs:
                    metrics, _ = self.validator.score(self.eval_model)
                    last_metric = metrics[metric_name]
                    self._update_best(epoch, last_metric)
                    row.update({f"{VALIDATION_PREFIX}{k}": v for k, v in metrics.items()})
                row["seconds"] = time.perf_counter() - start + row.pop("seconds_before_stop")
                self.history.append(row)
                self.epoch, self.partial = epoch, None
                self.attempts[-1]["end"] = self.position()
                save_torch(self.paths["checkpoint"], self.state())
                write_epochs_csv(self.paths["epochs"], self.history)
                plot_curves(self.paths["curves"], self.history, metric_name)
                run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
                bar.update(1)
                bar.set_postfix_str(_postfix(row, metric_name, last_metric))
                if metrics is not None and show_progress:
                    bar.write(_validation_line(epoch, metrics, metric_name, self.best_epoch))
                if metrics is not None and on_validation is not None:
                    on_validation(epoch, dict(metrics))
                if stop_requested() and epoch < training.num_epochs and not self.stopped_early:
                    self._stop(bar)  # the epoch's checkpoint is written already
                if self.stopped_early:
                    if show_progress:
                        bar.write(
                            f"early stop at epoch {epoch}: no better {metric_name} in "
                            f"{self.bad_validations} validations (best at epoch {self.best_epoch})"
                        )
                    break
        finally:
            bar.close()

    def _train_epoch(self, epoch: int, bar: Any, last_metric: float | None) -> dict:
        self.model.train()
        index = epoch - 1  # the loader, cache and schedule count epochs from 0
        steps = self.loader.steps_per_epoch(index)
        done = self.partial or {"steps_done": 0, "total_loss": 0.0, "patches": 0, "seconds": 0.0}
        total_loss, patches, lr = done["total_loss"], done["patches"], self.training.lr
        first = done["steps_done"]
        start = time.perf_counter() - done["seconds"]
        batches = self.loader.epoch(index, start_step=first)
        for step, (images, labels) in enumerate(batches, start=first):
            lr = self.schedule.apply(self.optimizer, index, step, steps)
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with autocast(self.device, self.amp_dtype):
                logits = self.model(images)
            loss = self.loss_fn(logits, labels)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"training loss is {value} at epoch {epoch}, step {step + 1}; lower --lr, "
                    "or train without mixed precision (--amp off)"
                )
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
            total_loss += value * len(images)
            patches += len(images)
            running = {
                "train_loss": total_loss / patches,
                "patches_per_s": patches / (time.perf_counter() - start),
            }
            metric = _postfix(running, self.training.best_metric, last_metric)
            bar.set_postfix_str(f"epoch {epoch} step {step + 1}/{steps} {metric}")
            if stop_requested():  # also after the last step: validation may be long
                seconds = time.perf_counter() - start
                self.partial = {"epoch": epoch, "steps_done": step + 1, "total_loss": total_loss}
                self.partial.update(patches=patches, seconds=seconds)
                self._stop(bar)
        seconds = time.perf_counter() - start
        return {
            "epoch": epoch,
            "train_loss": total_loss / max(patches, 1),
            "lr": lr,
            "patches_per_s": patches / seconds if seconds > 0 else 0.0,
            "train_seconds": seconds,
            "seconds_before_stop": done["seconds"],
        }

    def _stop(self, bar: Any) -> None:
        """Checkpoint where training stands (``self.partial``: inside an epoch) and raise
        :class:`TrainingStopped`."""
        reason = stop_requested()
        self.attempts[-1].update(end=self.position(), stopped_by=reason)
        save_torch(self.paths["checkpoint"], self.state())
        where = self.position()
        message = (
            f"stopped on {reason} after epoch {where['epoch']}, step {where['step']} of the next; "
            f"checkpoint {self.paths['checkpoint']} continues from there"
        )
        bar.write(message)
        raise TrainingStopped(message)

    def _update_best(self, epoch: int, value: float) -> None:
        if self.best_metric is None or value > self.best_metric:
            self.best_metric, self.best_epoch = float(value), epoch
            self.bad_validations = 0
            save_torch(self.paths["best_weights"], cpu_state_dict(self.eval_model))
            self._save_best_calibration(epoch)
            return
        self.bad_validations += 1
        patience = self.training.early_stopping_patience
        if patience is not None and self.bad_validations >= patience:
            self.stopped_early = True

    def _save_best_calibration(self, epoch: int) -> None:
        """Keep the calibration the best weights were validated with (epoch-stamped, so that
        weights and calibration from different epochs are never taken as a pair)."""
        calibration = self.validator.last_calibration
        path = self.paths["best_calibration"]
        if calibration is None:
            path.unlink(missing_ok=True)
            return
        atomic_write_json(path, {"epoch": epoch, "calibration": calibration.model_dump()})

    def close(self) -> None:
        self.loader.close()
        self.cache.close()


def _postfix(row: dict, metric_name: str, last_metric: float | None) -> str:
    text = f"loss {row['train_loss']:.4f} {row['patches_per_s']:.1f} patches/s"
    return text + (f" {metric_name} {last_metric:.3f}" if last_metric is not None else "")


def _validation_line(epoch: int, metrics: dict, metric_name: str, best_epoch: int | None) -> str:
    parts = [
        f"{metric_name} {metrics[metric_name]:.4f}" + (" (best)" if best_epoch == epoch else "")
    ]
    if metric_name != "avg_f1":
        parts.append(f"avg_f1 {metrics['avg_f1']:.4f}")
    parts.append(f"weighted F-beta {metrics['weighted_fbeta']:.4f}")
    return f"epoch {epoch}: {', '.join(parts)} (validation {metrics['seconds']:.1f} s)"
