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
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import time
from pathlib import Path

import torch

from hvae_detect.commands.common import log
from hvae_detect.commands.run_config import training_config_of
from hvae_detect.data.datasets import LoadedDataset, load_dataset
from hvae_detect.devices import resolve_device
from hvae_detect.models.config import ModelConfig
from hvae_detect.models.registry import make_model
from hvae_detect.persistence import checkpoints
from hvae_detect.persistence.atomic import atomic_write_text, recover_folder
from hvae_detect.reporting.metrics import detection_metrics
from hvae_detect.scoring import statistics
from hvae_detect.scoring.engine import importance_outputs
from hvae_detect.training import distributed
from hvae_detect.training.batches import LoaderBatches
from hvae_detect.training.loop import TrainingDiverged, make_optimizer, train_epochs


def run_name(cfg: dict, now: _dt.datetime | None = None) -> str:
    now = now or _dt.datetime.now()
    return f"{next(iter(cfg['train_datasets']))}-{now:%Y-%m-%d-%H-%M-%S}.{now.microsecond // 1000:03d}"


def load_training_data(cfg, device, download=True, train_device=None):
    """(train tensor x/255 on ``train_device`` (default ``device``), transform, [LoadedDataset for each
    validation set, on ``device``]); a dynamic set's transform is its first set's LoadedDataset.transform."""
    root = cfg["data_root"]
    train_device = device if train_device is None else train_device
    trains = [
        load_dataset(n, o, root, download, cfg.get("n_train_examples"), cfg["seed"])
        for n, o in cfg["train_datasets"].items()
    ]
    shapes = {d.image_shape for d in trains}
    if len(shapes) > 1:
        raise ValueError(f"training datasets have different image shapes {sorted(shapes)}")
    x = torch.cat([d.x for d in trains]).to(train_device)
    vals = [
        load_dataset(n, o, root, download, cfg.get("n_val_examples"), cfg["seed"]).to(device)
        for n, o in cfg["val_datasets"].items()
    ]
    for v in vals:
        if v.image_shape != trains[0].image_shape:
            raise ValueError(
                f"validation set {v.name} has images of shape {v.image_shape}, the training data "
                f"{trains[0].image_shape}"
            )
    first = trains[0]
    transform = first.transform if first.dynamic else None
    if not first.dynamic:  # one fixed draw for the whole training set
        x = torch.cat([d.to(train_device).fixed() for d in trains])
    return x, transform, vals


@torch.no_grad()
def evaluate_elbo(model, x, batch_size=500, seed=0):
    """Per-image ELBO, log p(x|z) and KL per latent with one posterior sample each."""
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    terms = [model(x[i : i + batch_size], 0, generator=gen) for i in range(0, x.shape[0], batch_size)]
    return (
        torch.cat([t.bound for t in terms]),
        torch.cat([t.log_px for t in terms]),
        torch.cat([t.kl for t in terms], dim=1),
    )


def validate(model, vals: list[LoadedDataset], batch_size=500, seed=0) -> dict:
    """ELBO, log p(x|z), KL per latent for each validation set, and, as the paper's validation, the
    AUROC of every statistic (``hvae_detect.scoring.statistics``) of the first set (in-distribution)
    against each other one (one importance sample each, keyed per image as in scoring)."""
    out, stats = {}, {}
    for d in vals:
        x = d.fixed()
        elbo, lp, kl = evaluate_elbo(model, x, batch_size, seed)
        out[d.label] = {"elbo": float(elbo.mean()), "log_px": float(lp.mean()), "kl": kl.mean(1).tolist()}
        if len(vals) > 1:
            parts = [
                importance_outputs(model, x[i : i + batch_size], seed=seed, with_terms=False)
                for i in range(0, len(x), batch_size)
            ]
            outputs = {name: torch.cat([p[name] for p in parts]).double().cpu().numpy() for name in parts[0]}
            stats[d.label] = statistics.scores(outputs, range(1, model.n_latents))
    first = vals[0].label
    for d in vals[1:]:
        for name, values in stats[d.label].items():
            key = "auroc_" + name.replace(">", "gt")
            out[d.label][key] = detection_metrics(
                statistics.normality(name, stats[first][name]), statistics.normality(name, values)
            )["auroc"]
    return out


class _OutOfTime(Exception):
    pass


@distributed.in_session
def train_run(
    cfg: dict | None = None,
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
    """Train a run (new from ``cfg``, or ``resume``d from a run folder). Returns the run folder.

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
    t_start = time.time()
    ctx, dev = distributed.current(), resolve_device(device)
    quiet, verbose = quiet or not ctx.is_main, verbose and ctx.is_main
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "run.json").is_file():
            raise FileNotFoundError(f"{run_dir} is not a run folder (run.json missing)")
        cfg = json.loads((run_dir / "run.json").read_text())
    elif cfg is None:
        raise ValueError("give a configuration or a run folder to resume")
    if epochs is not None:
        if not resume or int(epochs) < 1:
            raise ValueError(f"epochs={epochs!r}: extending applies to a resumed run, to a positive total")
        cfg["epochs"] = int(epochs)

    if resume is None:
        cfg["batches"] = "loader" if distributed.launched_by_torchrun() or data_workers is not None else "memory"
    elif ctx.world_size > 1 and cfg.get("batches") != "loader":
        log(f"resuming on {ctx.world_size} processes: batches now stream (draws keyed by image)", quiet)
        cfg["batches"] = "loader"
    streamed = cfg.get("batches") == "loader"
    x, transform, vals = load_training_data(cfg, dev, download, torch.device("cpu") if streamed else None)
    if resume is None:  # created once the data loaded: a failed start leaves no empty run folder
        run_dir = Path(save_dir) / distributed.broadcast_object(run_name(cfg), ctx)
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=False)
    torch.manual_seed(cfg["seed"])
    model = make_model(ModelConfig.from_json({**cfg, "input_shape": list(x.shape[1:])})).to(dev)
    opt = make_optimizer(model, cfg["learning_rate"])
    gen = torch.Generator(device=dev).manual_seed(cfg["seed"] + 1)
    start, history, val_history, best = 0, [], [], None
    last_dir, best_dir = run_dir / "checkpoints" / "last", run_dir / "checkpoints" / "best"
    if resume is not None:
        st = _load_last(run_dir, model, opt, gen, ctx)
        start, history, val_history, best = st["epoch"], st["history"], st["val_history"], st["best"]
        if ctx.is_main:
            _truncate_log(run_dir / "log.jsonl", start)
        log(f"resuming {run_dir} from epoch {start}", quiet)
    cfg["input_shape"] = list(x.shape[1:])
    if ctx.is_main:
        atomic_write_text(run_dir / "run.json", json.dumps(cfg, indent=1))
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"run {run_dir}  |  {x.shape[0]} training images {tuple(x.shape[1:])}, {n_params:,} parameters, "
        f"{cfg['likelihood']} likelihood, device {dev}"
        + (f", {ctx.world_size} processes" if ctx.world_size > 1 else ""),
        quiet,
    )
    timer = {"t": time.time(), "epoch_s": None}

    def on_epoch_end(epoch, record):
        nonlocal best
        now = time.time()  # rank 0's clock decides for every rank (budget, re-plan)
        timer["epoch_s"], elapsed = distributed.broadcast_object((now - timer["t"], now - t_start), ctx)
        record["seconds"] = round(timer["epoch_s"], 2)
        history.append(record)
        if fit_epochs_to_budget and max_minutes is not None and epoch == start + 1 and start == 0:
            _replan(cfg, run_dir, epoch, max_minutes * 60 - elapsed, timer["epoch_s"], quiet, ctx.is_main)
        out_of_time = (
            max_minutes is not None and elapsed + timer["epoch_s"] > max_minutes * 60 and epoch < cfg["epochs"]
        )
        line = {
            "epoch": epoch,
            "train_elbo": record["elbo"],
            "kl": record["kl"],
            "seconds": record["seconds"],
            "images_per_s": record["images_per_s"],
        }
        msg = (
            f"epoch {epoch}/{cfg['epochs']}  train ELBO {record['elbo']:.2f}  "
            f"KL {[round(v, 2) for v in record['kl']]}  {timer['epoch_s']:.1f} s  "
            f"images/s per rank {record['images_per_s']}"
        )
        if epoch % cfg["test_every"] == 0 or epoch >= cfg["epochs"] or out_of_time:
            v = validate(model, vals, seed=cfg["seed"] + 2)
            if not math.isfinite(v[vals[0].label]["elbo"]):
                raise TrainingDiverged(
                    f"the validation ELBO became {v[vals[0].label]['elbo']} at epoch {epoch}; "
                    "nothing was saved for this epoch (try a lower --learning_rate)"
                )
            val_history.append({"epoch": epoch, **v})
            line["val"] = v
            msg += "\n  " + "  ".join(
                f"{lab}: ELBO {r['elbo']:.2f} log p(x|z) {r['log_px']:.2f}"
                + "".join(
                    f" AUROC({key[6:].replace('gt', '>')}) {value:.3f}"
                    for key, value in r.items()
                    if key.startswith("auroc_")
                )
                for lab, r in v.items()
            )
            first = vals[0].label
            # The log line goes first: a resume starts from the last checkpoint and drops later lines.
            if ctx.is_main:
                _append_log(run_dir / "log.jsonl", line)
            if best is None or v[first]["elbo"] > best["elbo"]:
                best = {"epoch": epoch, "elbo": v[first]["elbo"]}
                state = {"epoch": epoch, "history": history, "val_history": val_history, "best": best}
                if ctx.is_main:
                    checkpoints.save_checkpoint(best_dir, model, opt, gen, state)
                msg += "  [best]"
            model.train()
        state = {
            "epoch": epoch,
            "history": history,
            "val_history": val_history,
            "best": best,
            "stopped_early": bool(out_of_time),
        }
        if "val" not in line and ctx.is_main:
            _append_log(run_dir / "log.jsonl", line)
        if ctx.is_main:
            checkpoints.save_checkpoint(last_dir, model, opt, gen, state)
        log(msg, quiet)
        timer["t"] = time.time()
        if out_of_time:
            log(f"stopping after epoch {epoch}: the next epoch would exceed --max_minutes {max_minutes}", quiet)
            raise _OutOfTime

    if start >= cfg["epochs"]:
        log(f"{run_dir} already trained {start} of {cfg['epochs']} epochs", quiet)
        return run_dir
    # With fit_epochs_to_budget the first epoch runs alone: on_epoch_end re-plans ``epochs`` and the
    # schedules from its duration, and the second call trains the rest with the new values.
    replan = fit_epochs_to_budget and max_minutes is not None and start == 0
    try:
        while start < cfg["epochs"]:
            end = start + 1 if replan and start == 0 else cfg["epochs"]
            # A dynamic set's transform is its LoadedDataset's; streamed, the draw comes keyed (``prepare``).
            prepare = transform.__self__.prepare if transform is not None else None
            data = (
                x
                if not streamed
                else LoaderBatches(
                    x,
                    cfg["batch_size"],
                    prepare=prepare,
                    seed=cfg["seed"],
                    ctx=ctx,
                    device=dev,
                    workers=data_workers or 0,
                )
            )
            train_epochs(
                model,
                data,
                training_config_of(cfg),
                transform=transform,
                generator=gen,
                optimizer=opt,
                start_epoch=start,
                end_epoch=end,
                on_epoch_end=on_epoch_end,
                verbose=verbose and not quiet,
            )
            start = end
    except _OutOfTime:
        pass
    log(f"done: {run_dir} (best epoch {best['epoch'] if best else '-'}, {time.time() - t_start:.0f} s)", quiet)
    return run_dir


def _load_last(run_dir, model, opt, gen, ctx=distributed.SINGLE) -> dict:
    """The state of a run's last checkpoint, loaded into place; a run without a complete one is refused."""
    last_dir = run_dir / "checkpoints" / "last"
    if ctx.is_main:
        for folder in (last_dir, run_dir / "checkpoints" / "best"):  # finish or clear a write a kill interrupted
            recover_folder(folder, cleanup=True)
    distributed.barrier(ctx, "the recovery of the last checkpoint")
    try:
        return checkpoints.load_checkpoint(last_dir, model, opt, gen)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise ValueError(
            f"cannot resume {run_dir}: its last checkpoint is not complete ({e}); nothing was changed. "
            "Start a new run, or score its best checkpoint"
        ) from None


def _append_log(path: Path, line: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _truncate_log(path: Path, epoch: int) -> None:
    """Drop log lines past ``epoch`` (written before a kill, after the checkpoint a resume starts
    from) and a line a kill cut short."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    keep = []
    for line in lines:
        try:
            if json.loads(line).get("epoch", 0) <= epoch:
                keep.append(line)
        except json.JSONDecodeError:
            pass
    if len(keep) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in keep))


def _replan(cfg, run_dir, epoch, seconds_left, epoch_seconds, quiet, write=True):
    """Fit ``epochs`` (and the schedules, in proportion) to the time left after the first epoch."""
    planned = max(1, epoch + int(seconds_left // epoch_seconds))
    scale = planned / cfg["epochs"]
    cfg.update(
        epochs=planned, free_nats_epochs=cfg["free_nats_epochs"] * scale, warmup_epochs=cfg["warmup_epochs"] * scale
    )
    cfg["test_every"] = min(cfg["test_every"], planned)
    if write:
        atomic_write_text(run_dir / "run.json", json.dumps(cfg, indent=1))
    log(
        f"budget {seconds_left / 60:.1f} min left, {epoch_seconds:.1f} s/epoch: planning {planned} epochs "
        f"(free nats until {cfg['free_nats_epochs']:.1f}, warm-up {cfg['warmup_epochs']:.1f})",
        quiet,
    )
