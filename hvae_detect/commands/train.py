"""``hvae-detect train``: the paper's training run, with the paper's flags.

A run lives in ``<save_dir>/<FirstTrainDataset>-YYYY-MM-DD-hh-mm-ss.mmm/``:

    run.json              the data sets, architecture and training settings
    log.jsonl             one JSON line per epoch (and its validation)
    checkpoints/last/     a model folder (hvae_detect.persistence.checkpoints) plus optimizer.safetensors
    checkpoints/best/     the same at the best validation ELBO of the first validation set

Every ``test_every`` epochs (and after the last one) the validation sets are scored:
ELBO, log p(x|z), KL per latent, and the AUROC of L of the first validation set
(in-distribution) against each further one. ``resume`` continues an interrupted run
from its last checkpoint (model, Adam state, random-number generator, history).

``train_run`` reads as the run goes: a ``TrainingRun`` starts (or resumes), trains span after span of
epochs (``TrainingRun.train_span``), and ends each epoch with ``TrainingRun.end_epoch``: time it,
re-plan the epochs once for the budget, validate, log, checkpoint, and say whether the run goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import math
import time
from pathlib import Path

import torch

from hvae_detect.commands.common import log
from hvae_detect.commands.run_config import RunConfig, auroc_key, read_auroc_key
from hvae_detect.data.datasets import LoadedDataset
from hvae_detect.models.registry import make_model
from hvae_detect.persistence.run_folder import RunFolder
from hvae_detect.reporting.metrics import detection_metrics
from hvae_detect.scoring import statistics
from hvae_detect.scoring.output_names import ELBO, EVERY_BOUND
from hvae_detect.scoring.outputs import image_outputs
from hvae_detect.training import distributed
from hvae_detect.training.batches import LoaderBatches, load_training_data
from hvae_detect.training.loop import TrainingDiverged, epoch_records, evaluate_elbo, make_optimizer


def run_name(config: RunConfig, now: _dt.datetime | None = None) -> str:
    now = now or _dt.datetime.now()
    return f"{next(iter(config.train_datasets))}-{now:%Y-%m-%d-%H-%M-%S}.{now.microsecond // 1000:03d}"


def validate(model, vals: list[LoadedDataset], batch_size=500, seed=0) -> dict:
    """ELBO, log p(x|z), KL per latent for each validation set, and, as the paper's validation, the
    AUROC (keyed by ``auroc_key``) of every statistic of the bounds (L, L>k, LLR>k, as ``hvae-detect
    score`` computes them) of the first set (in-distribution) against each other one."""
    out, stats = {}, {}
    for d in vals:
        x = d.fixed()
        elbo, lp, kl = evaluate_elbo(model, x, batch_size, seed)
        out[d.label] = {"elbo": float(elbo.mean()), "log_px": float(lp.mean()), "kl": kl.mean(1).tolist()}
        if len(vals) > 1:  # the statistics that the bounds alone give (one importance sample each)
            needed, ks = {ELBO, EVERY_BOUND}, range(1, model.n_latents)
            outputs = image_outputs(model, x, needed, seed=seed, iw_samples=1, iw_samples_lk=1, batch_size=batch_size)
            stats[d.label] = statistics.ood_scores(outputs, ks)
    first = stats.get(vals[0].label)
    for d in vals[1:]:
        for key, values in stats[d.label].items():
            inliers, outliers = statistics.normality(key, first[key]), statistics.normality(key, values)
            out[d.label][auroc_key(key)] = detection_metrics(inliers, outliers)["auroc"]
    return out


def _epoch_line(record: dict) -> dict:
    """log.jsonl's line of an epoch (its validation comes under "val")."""
    line = {"epoch": record["epoch"], "train_elbo": record["elbo"], "kl": record["kl"]}
    return {**line, "seconds": record["seconds"], "images_per_s": record["images_per_s"]}


def _epoch_message(record: dict, epochs: int, seconds: float) -> str:
    return (
        f"epoch {record['epoch']}/{epochs}  train ELBO {record['elbo']:.2f}  "
        f"KL {[round(v, 2) for v in record['kl']]}  {seconds:.1f} s  images/s per rank {record['images_per_s']}"
    )


def _validation_message(scores: dict) -> str:
    return "  ".join(
        f"{label}: ELBO {r['elbo']:.2f} log p(x|z) {r['log_px']:.2f}"
        + "".join(f" AUROC({read_auroc_key(key)}) {v:.3f}" for key, v in r.items() if read_auroc_key(key) is not None)
        for label, r in scores.items()
    )


@dataclasses.dataclass
class RunState:
    """What a checkpoint holds of a run beside its weights: the last epoch trained, every epoch's
    record and validation, and the best validation ELBO of the first set."""

    epoch: int = 0
    history: list = dataclasses.field(default_factory=list)
    val_history: list = dataclasses.field(default_factory=list)
    best: dict | None = None

    @classmethod
    def of(cls, saved: dict) -> RunState:
        return cls(**{field.name: saved[field.name] for field in dataclasses.fields(cls)})

    def saved(self, **more) -> dict:
        return {**dataclasses.asdict(self), **more}


@dataclasses.dataclass(frozen=True)
class Budget:
    """``--max_minutes`` of wall time from the run's start (None: no limit); ``fit_epochs``: re-plan the
    epochs (and the schedules) after the first one of a new run to what the budget allows."""

    started: float
    max_minutes: float | None = None
    fit_epochs: bool = False

    def exceeded_by(self, elapsed: float, epoch_seconds: float) -> bool:
        """Whether one more epoch (as long as the last) would run past the budget."""
        return self.max_minutes is not None and elapsed + epoch_seconds > self.max_minutes * 60


class TrainingRun:
    """One run on one rank: its configuration (replaced, never changed, when the run re-plans), its
    folder, model and progress; ``train_run`` takes its steps."""

    def __init__(self, config: RunConfig, folder: RunFolder, data, budget: Budget, *, resumed, device, workers, quiet):
        """Build the model (seeded by the run), restore the last checkpoint when ``resumed``, and write
        run.json. ``data``: ``load_training_data``'s; ``workers``: of a streamed run's DataLoader. The
        ranks of a torchrun train one model (``hvae_detect.training.distributed.current``)."""
        self.folder, self.budget, self.device, self.workers, self.quiet = folder, budget, device, workers, quiet
        self.ctx = ctx = distributed.current()
        self.x, self.transform, self.vals = data
        self.config = dataclasses.replace(config, input_shape=tuple(self.x.shape[1:]))
        run_json, model_config = self.config.to_json(), self.config.model_config(self.x.shape[1:])
        torch.manual_seed(config.seed)
        self.model = make_model(model_config).to(device)
        self.optimizer = make_optimizer(self.model, config.training.learning_rate)
        self.generator = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.parts = (self.model, self.optimizer, self.generator)  # what a checkpoint holds beside the state
        self.state = RunState()
        if resumed:
            self.state = RunState.of(folder.load_last(*self.parts, ctx))
            folder.drop_log_after(self.state.epoch)
            log(f"resuming {folder.path} from epoch {self.state.epoch}", quiet)
        folder.write_config(run_json)
        self.replan_pending = budget.fit_epochs and budget.max_minutes is not None and self.state.epoch == 0
        n_params = sum(p.numel() for p in self.model.parameters())
        log(
            f"run {folder.path}  |  {self.x.shape[0]} training images {tuple(self.x.shape[1:])}, {n_params:,} "
            f"parameters, {self.model.config.likelihood} likelihood, device {device}"
            + (f", {ctx.world_size} processes" if ctx.world_size > 1 else ""),
            quiet,
        )
        self.epoch_started = time.time()

    def finished(self) -> bool:
        return self.state.epoch >= self.config.training.epochs

    def train_span(self, verbose: bool) -> bool:
        """Train the next span of epochs: to the end, or the first epoch alone when it re-plans the
        rest; each ends with ``end_epoch``. False when the budget stopped the run."""
        start = self.state.epoch
        end = start + 1 if self.replan_pending else self.config.training.epochs
        batches = self._batches()
        records = epoch_records(
            self.model,
            batches,
            self.config.training,
            transform=self.transform,
            generator=self.generator,
            optimizer=self.optimizer,
            start_epoch=start,
            end_epoch=end,
            verbose=verbose,
        )
        with contextlib.closing(records):  # a stop leaves the loop's contexts at once
            for record in records:
                if not self.end_epoch(record):
                    return False
        return True

    def _batches(self):
        """The training set in memory, or streamed (the draws keyed by image: ``LoaderBatches``)."""
        if self.config.batches != "loader":
            return self.x
        prepare = self.transform.__self__.prepare if self.transform is not None else None
        return LoaderBatches(
            self.x,
            self.config.training.batch_size,
            prepare=prepare,
            seed=self.config.seed,
            ctx=self.ctx,
            device=self.device,
            workers=self.workers,
        )

    def end_epoch(self, record: dict) -> bool:
        """Time the epoch, re-plan once, validate when due, log and checkpoint; False when the budget
        leaves no time for another epoch (the last checkpoint says the run stopped early)."""
        epoch = self.state.epoch = record["epoch"]
        epoch_s, elapsed = self._clock()
        record["seconds"] = round(epoch_s, 2)
        self.state.history.append(record)
        if self.replan_pending:
            self._replan(epoch, self.budget.max_minutes * 60 - elapsed, epoch_s)
        epochs = self.config.training.epochs
        out_of_time = self.budget.exceeded_by(elapsed, epoch_s) and epoch < epochs
        line, msg = _epoch_line(record), _epoch_message(record, epochs, epoch_s)
        validates = epoch % self.config.test_every == 0 or epoch >= epochs or out_of_time
        if validates:
            line["val"] = self.validate_epoch(epoch)
            msg += "\n  " + _validation_message(line["val"])
        self.folder.append_log(line)  # before the checkpoints: a resume drops the lines after its own
        if validates:
            msg += "  [best]" if self._keep_if_best(line["val"]) else ""
            self.model.train()
        self.folder.save("last", *self.parts, self.state.saved(stopped_early=out_of_time))
        log(msg, self.quiet)
        self.epoch_started = time.time()
        if out_of_time:
            minutes = self.budget.max_minutes
            log(f"stopping after epoch {epoch}: the next epoch would exceed --max_minutes {minutes}", self.quiet)
        return not out_of_time

    def _clock(self) -> tuple[float, float]:
        """(seconds of this epoch, seconds since the run started), by rank 0's clock on every rank."""
        now = time.time()
        return distributed.broadcast_object((now - self.epoch_started, now - self.budget.started), self.ctx)

    def validate_epoch(self, epoch: int) -> dict:
        """``validate`` the model, recorded in the history; a non-finite ELBO stops the run unsaved."""
        scores = validate(self.model, self.vals, seed=self.config.seed + 2)
        elbo = scores[self.vals[0].label]["elbo"]
        if not math.isfinite(elbo):
            raise TrainingDiverged(
                f"the validation ELBO became {elbo} at epoch {epoch}; "
                "nothing was saved for this epoch (try a lower --learning_rate)"
            )
        self.state.val_history.append({"epoch": epoch, **scores})
        return scores

    def _keep_if_best(self, scores: dict) -> bool:
        """Save the best checkpoint when the first set's ELBO is the best yet."""
        elbo = scores[self.vals[0].label]["elbo"]
        if self.state.best is not None and not elbo > self.state.best["elbo"]:
            return False
        self.state.best = {"epoch": self.state.epoch, "elbo": elbo}
        self.folder.save("best", *self.parts, self.state.saved())
        return True

    def _replan(self, epoch: int, seconds_left: float, epoch_seconds: float) -> None:
        """Fit the epochs (and the schedules, in proportion) to the time left after the first epoch."""
        self.replan_pending = False
        training = self.config.training
        planned = max(1, epoch + int(seconds_left // epoch_seconds))
        scale = planned / training.epochs
        self.config = dataclasses.replace(
            self.config.with_training(
                epochs=planned,
                free_nats_epochs=training.free_nats_epochs * scale,
                warmup_epochs=training.warmup_epochs * scale,
            ),
            test_every=min(self.config.test_every, planned),
        )
        self.folder.write_config(self.config.to_json())
        log(
            f"budget {seconds_left / 60:.1f} min left, {epoch_seconds:.1f} s/epoch: planning {planned} epochs "
            f"(free nats until {self.config.training.free_nats_epochs:.1f}, "
            f"warm-up {self.config.training.warmup_epochs:.1f})",
            self.quiet,
        )


def _run_config(cfg, folder: RunFolder | None, epochs, data_workers, ctx, quiet) -> RunConfig:
    """The run's configuration: ``cfg``'s for a new run, the ``folder``'s for a resumed one (extended to
    ``epochs``), with how its batches come ("memory", or "loader": streamed)."""
    if folder is not None:
        config = RunConfig.from_json(folder.read_config())
    elif cfg is None:
        raise ValueError("give a configuration or a run folder to resume")
    else:
        config = cfg if isinstance(cfg, RunConfig) else RunConfig.from_json(cfg)
    if epochs is not None:
        if folder is None or int(epochs) < 1:
            raise ValueError(f"epochs={epochs!r}: extending applies to a resumed run, to a positive total")
        config = config.with_training(epochs=int(epochs))
    if folder is None:
        streamed = distributed.launched_by_torchrun() or data_workers is not None
        return dataclasses.replace(config, batches="loader" if streamed else "memory")
    if ctx.world_size > 1 and config.batches != "loader":
        log(f"resuming on {ctx.world_size} processes: batches now stream (draws keyed by image)", quiet)
        return dataclasses.replace(config, batches="loader")
    return config


@distributed.in_session
def train_run(
    cfg: RunConfig | dict | None = None,
    *,
    save_dir="./models",
    resume=None,
    device="auto",
    download=True,
    max_minutes=None,
    fit_epochs_to_budget=False,
    epochs=None,
    verbose=True,
    quiet=False,
    data_workers=None,
) -> Path:
    """Train a run (new from ``cfg``: ``make_run_config``'s dict or a ``RunConfig``; or ``resume``d from a
    run folder). Returns the run folder.

    ``epochs`` (with ``resume``) extends the run to that many epochs in total.
    ``max_minutes`` stops after the last epoch that fits the wall-time budget.
    ``fit_epochs_to_budget`` (with ``max_minutes``) re-plans ``epochs`` after the
    first epoch to what the budget allows, scaling ``free_nats_epochs`` and
    ``warmup_epochs`` in proportion, so the schedules complete within the budget.

    Under torchrun the ranks train one model (``hvae_detect.training.distributed``; ``batch_size`` is the
    global batch) and rank 0 alone writes and logs. Such a run, or one given ``data_workers``
    (DataLoader worker processes), streams its batches (run.json "batches": "loader", with draws keyed
    by image: ``hvae_detect.training.batches``) and resumes that way at any world size; a plain run keeps
    its training set on the device ("memory").
    """
    started = time.time()
    ctx = distributed.current()
    quiet, verbose = quiet or not ctx.is_main, verbose and ctx.is_main
    folder = None if resume is None else RunFolder(resume, ctx.is_main)
    config = _run_config(cfg, folder, epochs, data_workers, ctx, quiet)
    streamed = config.batches == "loader"
    data = load_training_data(config, device, download, torch.device("cpu") if streamed else None)
    if folder is None:  # made once the data loaded: a failed start leaves no empty run folder
        folder = RunFolder.create(Path(save_dir) / distributed.broadcast_object(run_name(config), ctx), ctx)
    budget = Budget(started, max_minutes, fit_epochs_to_budget)
    run = TrainingRun(
        config, folder, data, budget, resumed=resume is not None, device=device, workers=data_workers or 0, quiet=quiet
    )
    if run.finished():
        log(f"{folder.path} already trained {run.state.epoch} of {run.config.training.epochs} epochs", quiet)
        return folder.path
    while not run.finished():
        if not run.train_span(verbose and not quiet):  # the budget leaves no time for another epoch
            break
    best = run.state.best
    log(f"done: {folder.path} (best epoch {best['epoch'] if best else '-'}, {time.time() - started:.0f} s)", quiet)
    return folder.path
