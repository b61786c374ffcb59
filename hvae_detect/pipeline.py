"""The paper's pipeline on the command line: ``hvae-detect train | score | results``.

train
    Takes the seed's flags with the seed's meaning (``--epochs --batch_size
    --free_nats --free_nats_epochs --warmup_epochs --test_every
    --train_datasets JSON --val_datasets JSON --model VAE --likelihood ...
    --config_deterministic JSON --config_stochastic JSON``) plus
    ``--learning_rate --seed --save_dir --device --data_root``. A run lives in
    ``<save_dir>/<FirstTrainDataset>-YYYY-MM-DD-hh-mm-ss.mmm/``:

        run.json                       everything needed to rebuild the model and data
        log.jsonl                      one JSON line per epoch / validation
        checkpoints/last/              model.safetensors, optimizer.safetensors, state.json
        checkpoints/best/              the same at the best validation ELBO of the first val set

    Every ``--test_every`` epochs (and after the last one) the validation sets
    are scored: ELBO, log p(x|z), KL per latent, and the AUROC of L of the first
    validation set (in-distribution) against each further one. ``--resume DIR``
    continues an interrupted run from its last checkpoint (model, Adam state,
    random-number generator, history); ``--epochs`` may extend it.

score
    ``--model DIR --iw_samples_elbo S --iw_samples_Lk S' --n_latents_skip k``
    scores the in-distribution test set (the first validation set), every
    validation set and the training set's train split, and writes
    ``<save_dir>/scores-<InDist>-k{k}-iw_elbo{S}-iw_lk{S'}.npz`` (numpy, loads
    with ``allow_pickle=False``) holding:

        datasets            (D,) str   set labels, e.g. "FashionMNIST test", "MNIST test"
        in_distribution     ()   str   the in-distribution label
        k, iw_elbo, iw_lk   ()   int
        L_<i>               (N_i,)     L (ELBO, S importance samples), nats per image
        Lk_<i>              (N_i,)     L>k (S' samples); for k = 0, L>0 is L itself
        LLR_<i>             (N_i,)     LLR>k = L - L>k (all zero for k = 0)

    with i indexing ``datasets``. Several k may be given at once
    (``--n_latents_skip 1 2``): L is computed once and one file is written per k.

results
    Reads one or more score folders and prints, per in-distribution set and per
    OOD set, AUROC, AUPRC, FPR80 and FPR95 of L, L>k and LLR>k for every k and
    sample count found; writes results.csv, results.json and roc.png.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from hvae_detect.atomic import atomic_write, atomic_write_text
from hvae_detect.config import PRESETS, resolve_architecture
from hvae_detect.datasets import (LoadedDataset, default_data_root, load_dataset, parse_dataset_name,
                                  parse_dataset_options)
from hvae_detect.estimator import resolve_device
from hvae_detect.metrics import detection_metrics, ood_direction
from hvae_detect.model import HierarchicalVAE
from hvae_detect.training import PRECISIONS, elbo_terms, resolve_precision, train_hvae

FORMAT_VERSION = 1
LIKELIHOOD_FLAGS = {"BernoulliLikelihoodConv2d": "bernoulli", "DiscretizedLogisticMixLikelihoodConv2d": "dlogmix",
                    "bernoulli": "bernoulli", "dlogmix": "dlogmix"}
MODELS = ("VAE", "HVAE")
SEED_TRAIN = '{"FashionMNISTBinarized": {"dynamic": true, "split": "train"}}'
SEED_VAL = ('{"FashionMNISTBinarized": {"dynamic": false, "split": "validation"}, '
            '"MNISTBinarized": {"dynamic": false, "split": "validation"}}')


def _log(msg, quiet=False):
    if not quiet:
        print(msg, flush=True)


# ============================================================================ configuration

def make_run_config(*, train_datasets=SEED_TRAIN, val_datasets=SEED_VAL, architecture=None,
                    config_deterministic=None, config_stochastic=None, likelihood=None, model="VAE", n_mix=10,
                    epochs=1000, batch_size=128, learning_rate=3e-4, free_nats=2.0, free_nats_epochs=400,
                    warmup_epochs=200, test_every=10, seed=0, data_root=None, n_train_examples=None,
                    n_val_examples=None, precision="float32") -> dict:
    """Validate the training options and return the run's configuration (saved as run.json)."""
    if model not in MODELS:
        raise ValueError(f"--model must be one of {MODELS} (the seed's hierarchical VAE is 'VAE'), got {model!r}")
    train = parse_dataset_options(train_datasets)
    val = parse_dataset_options(val_datasets)
    for name, opts in val.items():
        if opts["dynamic"]:
            raise ValueError(f"validation set {name} must have \"dynamic\": false (one fixed draw)")
    if (config_deterministic is None) != (config_stochastic is None):
        raise ValueError("give both --config_deterministic and --config_stochastic, or neither")
    if config_deterministic is not None:
        arch = resolve_architecture({"config_deterministic": _json(config_deterministic, "--config_deterministic"),
                                     "config_stochastic": _json(config_stochastic, "--config_stochastic")})
    else:
        arch = resolve_architecture(architecture or "paper-mnist")
    specs = [parse_dataset_name(n) for n in train]
    variants = {s.variant for s in specs}
    if len(variants) > 1:
        raise ValueError(f"all training datasets must share one variant, got {sorted(variants)}")
    variant = variants.pop()
    if likelihood is None:
        likelihood = "bernoulli" if variant == "Binarized" else "dlogmix"
    if likelihood not in LIKELIHOOD_FLAGS:
        raise ValueError(f"--likelihood must be one of {sorted(k for k in LIKELIHOOD_FLAGS if k[0].isupper())}, "
                         f"got {likelihood!r}")
    likelihood = LIKELIHOOD_FLAGS[likelihood]
    if likelihood == "bernoulli" and variant != "Binarized":
        raise ValueError(f"the Bernoulli likelihood needs Binarized data, got {variant} training data")
    for name, v in {"epochs": epochs, "batch_size": batch_size, "test_every": test_every}.items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"--{name} must be a positive integer, got {v!r}")
    if not learning_rate > 0:
        raise ValueError(f"--learning_rate must be positive, got {learning_rate}")
    for name, v in {"free_nats": free_nats, "free_nats_epochs": free_nats_epochs, "warmup_epochs": warmup_epochs}.items():
        if v < 0:
            raise ValueError(f"--{name} must be non-negative, got {v}")
    resolve_precision(precision, "cpu")
    return {
        "format_version": FORMAT_VERSION, "model": model, "train_datasets": train, "val_datasets": val,
        "architecture": arch, "likelihood": likelihood, "n_mix": n_mix, "epochs": epochs,
        "batch_size": batch_size, "learning_rate": learning_rate, "free_nats": free_nats,
        "free_nats_epochs": free_nats_epochs, "warmup_epochs": warmup_epochs, "test_every": test_every,
        "seed": seed, "data_root": str(data_root if data_root is not None else default_data_root()),
        "n_train_examples": n_train_examples, "n_val_examples": n_val_examples, "precision": precision,
    }


def _json(value, flag):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"{flag}: invalid JSON ({e})") from None
    return value


def run_name(cfg: dict, now: _dt.datetime | None = None) -> str:
    now = now or _dt.datetime.now()
    return f"{next(iter(cfg['train_datasets']))}-{now:%Y-%m-%d-%H-%M-%S}.{now.microsecond // 1000:03d}"


def build_model(cfg: dict, input_shape) -> HierarchicalVAE:
    return HierarchicalVAE(tuple(input_shape), cfg["architecture"], cfg["likelihood"], cfg.get("n_mix", 10))


# ============================================================================ data

def load_training_data(cfg, device, download=True):
    """(train tensor x/255 on device, transform, [LoadedDataset for each validation set])."""
    root = cfg["data_root"]
    trains = [load_dataset(n, o, root, download, cfg.get("n_train_examples"), cfg["seed"])
              for n, o in cfg["train_datasets"].items()]
    shapes = {d.image_shape for d in trains}
    if len(shapes) > 1:
        raise ValueError(f"training datasets have different image shapes {sorted(shapes)}")
    x = torch.cat([d.x for d in trains]).to(device)
    vals = [load_dataset(n, o, root, download, cfg.get("n_val_examples"), cfg["seed"]).to(device)
            for n, o in cfg["val_datasets"].items()]
    for v in vals:
        if v.image_shape != trains[0].image_shape:
            raise ValueError(f"validation set {v.name} has images of shape {v.image_shape}, the training data "
                             f"{trains[0].image_shape}")
    first = trains[0]
    transform = first.transform if first.dynamic else None
    if not first.dynamic:  # one fixed draw for the whole training set
        x = torch.cat([d.to(device).fixed() for d in trains])
    return x, transform, vals


# ============================================================================ checkpoints

def _optimizer_to_tensors(opt: torch.optim.Optimizer):
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{pid}.{key}"] = v.detach().cpu().contiguous().reshape(v.shape)
            else:
                scalars[f"{pid}.{key}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict, meta: dict):
    state: dict = {}
    for name, v in tensors.items():
        if not name.startswith("state."):
            continue
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = v
    for name, v in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(folder: Path, model, opt, generator, state: dict):
    """model.safetensors, optimizer.safetensors (Adam moments + RNG state) and state.json; no pickle."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_to_tensors(opt)
    opt_tensors["rng.generator"] = generator.get_state().cpu()
    atomic_write(folder / "model.safetensors", lambda tmp: save_file(weights, tmp))
    atomic_write(folder / "optimizer.safetensors", lambda tmp: save_file(opt_tensors, tmp))
    body = json.dumps({**state, "optimizer": opt_meta}, indent=1)
    atomic_write_text(folder / "state.json", body)


def load_checkpoint(folder: Path, model, opt=None, generator=None) -> dict:
    folder = Path(folder)
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"no checkpoint in {folder} (model.safetensors missing)")
    model.load_state_dict(load_file(folder / "model.safetensors"))
    state = json.loads((folder / "state.json").read_text())
    if opt is not None or generator is not None:
        tensors = load_file(folder / "optimizer.safetensors")
        if opt is not None:
            dev = next(model.parameters()).device
            _optimizer_from_tensors(opt, {k: v.to(dev) if k.endswith("exp_avg") or k.endswith("exp_avg_sq") else v
                                          for k, v in tensors.items()}, state["optimizer"])
        if generator is not None:
            generator.set_state(tensors["rng.generator"])
    return state


# ============================================================================ validation

@torch.no_grad()
def evaluate_elbo(model, x, batch_size=500, seed=0):
    """Per-image ELBO, log p(x|z) and KL per latent with one posterior sample each."""
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    elbo, log_px, kls = [], [], []
    for i in range(0, x.shape[0], batch_size):
        lp, kl = elbo_terms(model, x[i:i + batch_size], gen)
        kl = torch.stack(kl)
        elbo.append(lp - kl.sum(0))
        log_px.append(lp)
        kls.append(kl)
    return torch.cat(elbo), torch.cat(log_px), torch.cat(kls, dim=1)


def validate(model, vals: list[LoadedDataset], batch_size=500, seed=0) -> dict:
    """ELBO, log p(x|z), KL per latent for each validation set; AUROC of L of the first set vs each other."""
    out, elbos = {}, {}
    for d in vals:
        elbo, lp, kl = evaluate_elbo(model, d.fixed(), batch_size, seed)
        elbos[d.label] = elbo.double().cpu().numpy()
        out[d.label] = {"elbo": float(elbo.mean()), "log_px": float(lp.mean()), "kl": kl.mean(1).tolist()}
    first = vals[0].label
    for d in vals[1:]:
        out[d.label]["auroc_L"] = detection_metrics(-elbos[first], -elbos[d.label])["auroc"]
    return out


# ============================================================================ train

def train_run(cfg: dict | None = None, *, save_dir="./models", resume=None, device="auto", download=True,
              max_minutes=None, fit_epochs_to_budget=False, epochs=None, verbose=True, quiet=False) -> Path:
    """Train a run (new from ``cfg``, or ``resume``d from a run folder). Returns the run folder.

    ``max_minutes`` stops after the last epoch that fits the wall-time budget.
    ``fit_epochs_to_budget`` (with ``max_minutes``) re-plans ``epochs`` after the
    first epoch to what the budget allows, scaling ``free_nats_epochs`` and
    ``warmup_epochs`` in proportion, so the schedules complete within the budget.
    """
    t_start = time.time()
    dev = resolve_device(device)
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "run.json").is_file():
            raise FileNotFoundError(f"{run_dir} is not a run folder (run.json missing)")
        cfg = json.loads((run_dir / "run.json").read_text())
    else:
        if cfg is None:
            raise ValueError("give a configuration or a run folder to resume")
        run_dir = Path(save_dir) / run_name(cfg)
        run_dir.mkdir(parents=True, exist_ok=False)
    if epochs is not None:
        cfg["epochs"] = int(epochs)

    x, transform, vals = load_training_data(cfg, dev, download)
    torch.manual_seed(cfg["seed"])
    model = build_model(cfg, x.shape[1:]).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["learning_rate"])
    gen = torch.Generator(device=dev).manual_seed(cfg["seed"] + 1)
    start, history, val_history, best = 0, [], [], None
    if resume is not None and (run_dir / "checkpoints" / "last" / "model.safetensors").is_file():
        st = load_checkpoint(run_dir / "checkpoints" / "last", model, opt, gen)
        start, history, val_history, best = st["epoch"], st["history"], st["val_history"], st["best"]
        _log(f"resuming {run_dir} from epoch {start}", quiet)
    cfg["input_shape"] = list(x.shape[1:])
    atomic_write_text(run_dir / "run.json", json.dumps(cfg, indent=1))
    n_params = sum(p.numel() for p in model.parameters())
    _log(f"run {run_dir}  |  {x.shape[0]} training images {tuple(x.shape[1:])}, {n_params:,} parameters, "
         f"{cfg['likelihood']} likelihood, device {dev}", quiet)

    log_path = run_dir / "log.jsonl"
    timer = {"t": time.time(), "epoch_s": None}

    def log_line(rec):
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    class _Stop(Exception):
        pass

    def on_epoch_end(epoch, record):
        nonlocal best
        now = time.time()
        timer["epoch_s"] = now - timer["t"]
        record["seconds"] = round(timer["epoch_s"], 2)
        history.append(record)
        if fit_epochs_to_budget and max_minutes is not None and epoch == start + 1 and start == 0:
            left = max_minutes * 60 - (now - t_start)
            planned = max(1, epoch + int(left // timer["epoch_s"]))
            scale = planned / cfg["epochs"]
            cfg.update(epochs=planned, free_nats_epochs=cfg["free_nats_epochs"] * scale,
                       warmup_epochs=cfg["warmup_epochs"] * scale)
            cfg["test_every"] = min(cfg["test_every"], planned)
            atomic_write_text(run_dir / "run.json", json.dumps(cfg, indent=1))
            _log(f"budget {max_minutes} min, {timer['epoch_s']:.1f} s/epoch: planning {planned} epochs "
                 f"(free nats until {cfg['free_nats_epochs']:.1f}, warm-up {cfg['warmup_epochs']:.1f})", quiet)
        out_of_time = (max_minutes is not None
                       and now - t_start + timer["epoch_s"] > max_minutes * 60 and epoch < cfg["epochs"])
        last = epoch >= cfg["epochs"] or out_of_time
        line = {"epoch": epoch, "train_elbo": record["elbo"], "kl": record["kl"], "seconds": record["seconds"]}
        msg = (f"epoch {epoch}/{cfg['epochs']}  train ELBO {record['elbo']:.2f}  "
               f"KL {[round(v, 2) for v in record['kl']]}  {timer['epoch_s']:.1f} s")
        if epoch % cfg["test_every"] == 0 or last:
            v = validate(model, vals, seed=cfg["seed"] + 2)
            val_history.append({"epoch": epoch, **v})
            line["val"] = v
            first = vals[0].label
            msg += "\n  " + "  ".join(
                f"{lab}: ELBO {r['elbo']:.2f} log p(x|z) {r['log_px']:.2f}"
                + (f" AUROC(L) {r['auroc_L']:.3f}" if "auroc_L" in r else "") for lab, r in v.items())
            if best is None or v[first]["elbo"] > best["elbo"]:
                best = {"epoch": epoch, "elbo": v[first]["elbo"]}
                state = {"epoch": epoch, "history": history, "val_history": val_history, "best": best}
                save_checkpoint(run_dir / "checkpoints" / "best", model, opt, gen, state)
                msg += "  [best]"
            model.train()
        state = {"epoch": epoch, "history": history, "val_history": val_history, "best": best,
                 "stopped_early": bool(out_of_time)}
        save_checkpoint(run_dir / "checkpoints" / "last", model, opt, gen, state)
        log_line(line)
        _log(msg, quiet)
        timer["t"] = time.time()
        if out_of_time:
            _log(f"stopping after epoch {epoch}: the next epoch would exceed --max_minutes {max_minutes}", quiet)
            raise _Stop

    if start >= cfg["epochs"]:
        _log(f"{run_dir} already trained {start} of {cfg['epochs']} epochs", quiet)
        return run_dir
    # With fit_epochs_to_budget the first epoch runs alone: on_epoch_end re-plans ``epochs`` and the
    # schedules from its duration, and the second call trains the rest with the new values.
    replan = fit_epochs_to_budget and max_minutes is not None and start == 0
    try:
        while start < cfg["epochs"]:
            end = start + 1 if replan and start == 0 else cfg["epochs"]
            train_hvae(model, x, epochs=end, batch_size=cfg["batch_size"],
                       learning_rate=cfg["learning_rate"], free_nats=cfg["free_nats"],
                       free_nats_epochs=cfg["free_nats_epochs"], warmup_epochs=cfg["warmup_epochs"],
                       transform=transform, generator=gen, optimizer=opt, start_epoch=start,
                       on_epoch_end=on_epoch_end, verbose=verbose and not quiet,
                       precision=cfg.get("precision", "float32"))
            start = end
    except _Stop:
        pass
    _log(f"done: {run_dir} (best epoch {best['epoch'] if best else '-'}, {time.time() - t_start:.0f} s)", quiet)
    return run_dir


# ============================================================================ score

def load_run(run_dir, checkpoint="best", device="cpu"):
    """(cfg, model on device, checkpoint state) of a run folder; falls back to 'last' without a best."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (run.json missing)")
    cfg = json.loads((run_dir / "run.json").read_text())
    model = build_model(cfg, cfg["input_shape"]).to(device)
    folder = run_dir / "checkpoints" / checkpoint
    if not (folder / "model.safetensors").is_file():
        folder = run_dir / "checkpoints" / "last"
    state = load_checkpoint(folder, model)
    model.eval()
    return cfg, model, state


def score_sets(cfg, extra_val=None, n_eval_examples=None, data_root=None, download=True, device="cpu"):
    """The sets a run is scored on: every validation set (the first is in-distribution), the extra
    validation sets, and the training set's train split, all with one fixed draw."""
    root = data_root if data_root is not None else cfg["data_root"]
    sets = {}
    for name, opts in cfg["val_datasets"].items():
        sets[name] = {"dynamic": False, "split": opts["split"]}
    if extra_val:
        extra = _json(extra_val, "--extra_val_datasets")
        extra = {n: {"split": "validation", **(o or {}), "dynamic": False} for n, o in extra.items()}
        for name, opts in parse_dataset_options(extra).items():
            sets.setdefault(name, opts)
    out = [load_dataset(n, o, root, download, n_eval_examples, cfg["seed"]).to(device) for n, o in sets.items()]
    train_name = next(iter(cfg["train_datasets"]))
    out.append(load_dataset(train_name, {"dynamic": False, "split": "train"}, root, download,
                            n_eval_examples, cfg["seed"]).to(device))
    return out


def score_file_name(in_dist: str, k: int, iw_elbo: int, iw_lk: int) -> str:
    return f"scores-{in_dist.replace(' ', '-')}-k{k}-iw_elbo{iw_elbo}-iw_lk{iw_lk}.npz"


@torch.no_grad()
def score_run(run_dir, *, ks=(1,), iw_samples_elbo=1, iw_samples_lk=1, batch_size=500, n_eval_examples=None,
              save_dir=None, device="auto", data_root=None, checkpoint="best", extra_val=None, download=True,
              seed=0, quiet=False) -> list[Path]:
    """Score a run's sets with L and L>k (k in ``ks``) and write one .npz per k. Returns the files."""
    dev = resolve_device(device)
    cfg, model, state = load_run(run_dir, checkpoint, dev)
    ks = [int(k) for k in ks]
    for k in ks:
        if not 0 <= k < model.n_latents:
            raise ValueError(f"--n_latents_skip must be in 0..{model.n_latents - 1} for this model, got {k}")
    save_dir = Path(save_dir) if save_dir is not None else Path(run_dir) / "scores"
    save_dir.mkdir(parents=True, exist_ok=True)
    sets = score_sets(cfg, extra_val, n_eval_examples, data_root, download, dev)
    in_dist = sets[0].label
    _log(f"scoring {run_dir} (checkpoint epoch {state['epoch']}) with k={ks}, S={iw_samples_elbo}, "
         f"S'={iw_samples_lk} on {[s.label for s in sets]}", quiet)
    pos_ks = [k for k in ks if k > 0]
    results = {}
    for i, d in enumerate(sets):
        t0 = time.time()
        x = d.fixed()
        gen = torch.Generator(device=dev).manual_seed(seed * 7919 + i)
        parts = []
        for j in range(0, x.shape[0], batch_size):
            b = model.ood_scores(x[j:j + batch_size], ks=pos_ks, n_samples=iw_samples_elbo,
                                 n_samples_lk=iw_samples_lk, generator=gen)
            parts.append({k: v.double().cpu() for k, v in b.items()})
        results[d.label] = {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}
        _log(f"  {d.label}: {x.shape[0]} images, mean L {results[d.label][0].mean():.2f} nats, "
             f"{time.time() - t0:.1f} s", quiet)
    files = []
    labels = [d.label for d in sets]
    for k in ks:
        arrays = {"datasets": np.array(labels), "in_distribution": np.array(in_dist), "k": np.array(k),
                  "iw_elbo": np.array(iw_samples_elbo), "iw_lk": np.array(iw_samples_lk if k > 0 else iw_samples_elbo),
                  "checkpoint_epoch": np.array(state["epoch"])}
        for i, lab in enumerate(labels):
            L = results[lab][0]
            Lk = results[lab][k] if k > 0 else L
            arrays[f"L_{i}"], arrays[f"Lk_{i}"], arrays[f"LLR_{i}"] = L, Lk, L - Lk
        path = save_dir / score_file_name(in_dist, k, iw_samples_elbo, iw_samples_lk if k > 0 else iw_samples_elbo)
        atomic_write(path, lambda tmp: _savez(tmp, arrays))
        files.append(path)
        _log(f"wrote {path}", quiet)
    return files


# ============================================================================ results

def _savez(path, arrays):
    with open(path, "wb") as f:  # a file object, so numpy does not append ".npz" to the temporary name
        np.savez(f, **arrays)


def read_scores(path) -> dict:
    """One score file as {"in_distribution", "k", "iw_elbo", "iw_lk", "sets": {label: {"L", "L>k", "LLR>k"}}}."""
    with np.load(path, allow_pickle=False) as f:
        k = int(f["k"])
        sets = {str(lab): {"L": f[f"L_{i}"], f"L>{k}": f[f"Lk_{i}"], f"LLR>{k}": f[f"LLR_{i}"]}
                for i, lab in enumerate(f["datasets"])}
        return {"in_distribution": str(f["in_distribution"]), "k": k, "iw_elbo": int(f["iw_elbo"]),
                "iw_lk": int(f["iw_lk"]), "sets": sets}


def collect_results(score_dirs) -> tuple[list[dict], dict]:
    """Metric rows for every (in-dist, OOD set, statistic, sample counts) and the ROC inputs."""
    files = []
    for d in ([score_dirs] if isinstance(score_dirs, (str, Path)) else score_dirs):
        d = Path(d)
        files += sorted(d.glob("scores-*.npz")) if d.is_dir() else [d]
    if not files:
        raise FileNotFoundError(f"no scores-*.npz files in {score_dirs}")
    rows, curves, seen = [], {}, set()
    for path in files:
        s = read_scores(path)
        ind, k = s["in_distribution"], s["k"]
        stats = [("L", s["iw_elbo"], None)]
        if k > 0:
            stats += [(f"L>{k}", None, s["iw_lk"]), (f"LLR>{k}", s["iw_elbo"], s["iw_lk"])]
        for ood, vals in s["sets"].items():
            if ood == ind:
                continue
            for stat, iw_e, iw_k in stats:
                key = (ind, ood, stat, iw_e, iw_k)
                if key in seen:
                    continue
                seen.add(key)
                sign = ood_direction(stat)
                s_in, s_out = sign * s["sets"][ind][stat], sign * vals[stat]
                m = detection_metrics(s_in, s_out)
                rows.append({"in_distribution": ind, "ood": ood, "statistic": stat,
                             "iw_elbo": iw_e if iw_e is not None else "", "iw_lk": iw_k if iw_k is not None else "",
                             "n_in": int(s_in.size), "n_out": int(s_out.size), **m})
                curves[key] = (s_in, s_out)
    order = {"L": 0}
    rows.sort(key=lambda r: (r["in_distribution"], r["ood"].endswith(" train"), r["ood"],
                             order.get(r["statistic"], 1 if r["statistic"].startswith("LLR") else 2),
                             r["statistic"], str(r["iw_elbo"]), str(r["iw_lk"])))
    return rows, curves


def _stat_label(r):
    parts = []
    if r["iw_elbo"] != "":
        parts.append(f"S={r['iw_elbo']}")
    if r["iw_lk"] != "":
        parts.append(f"S'={r['iw_lk']}")
    return f"{r['statistic']} ({', '.join(parts)})"


def format_table(rows) -> str:
    lines = []
    for ind in dict.fromkeys(r["in_distribution"] for r in rows):
        lines.append(f"\nIn-distribution: {ind}")
        for ood in dict.fromkeys(r["ood"] for r in rows if r["in_distribution"] == ind):
            lines.append(f"  OOD: {ood}")
            lines.append(f"    {'statistic':<24} {'AUROC':>7} {'AUPRC':>7} {'FPR80':>7} {'FPR95':>7}")
            for r in rows:
                if r["in_distribution"] == ind and r["ood"] == ood:
                    lines.append(f"    {_stat_label(r):<24} {r['auroc']:7.3f} {r['auprc']:7.3f} "
                                 f"{r['fpr80']:7.3f} {r['fpr95']:7.3f}")
    return "\n".join(lines)


def plot_roc(curves, path):
    """One panel per (in-distribution, OOD) pair, one curve per statistic and sample count."""
    import matplotlib.pyplot as plt

    from hvae_detect.plots import draw_roc_curves, save_figure

    pairs = list(dict.fromkeys((k[0], k[1]) for k in curves))
    n = len(pairs)
    cols = min(3, n)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(4.2 * cols, 4 * math.ceil(n / cols)), squeeze=False)
    for ax, (ind, ood) in zip(axes.flat, pairs):
        panel = {key[2] + (f" S={key[3]}" if key[3] else "") + (f" S'={key[4]}" if key[4] else ""): scores
                 for key, scores in curves.items() if key[:2] == (ind, ood)}
        draw_roc_curves(ax, panel, f"{ind} vs {ood}")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    save_figure(fig, path)


def write_results(rows, curves, output_dir) -> dict:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0])
    def write_csv(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    atomic_write(output_dir / "results.csv", write_csv)
    atomic_write_text(output_dir / "results.json", json.dumps(rows, indent=1))
    plot_roc(curves, output_dir / "roc.png")
    return {"csv": output_dir / "results.csv", "json": output_dir / "results.json", "roc": output_dir / "roc.png"}


# ============================================================================ command line

def _cmd_train(args) -> int:
    if args.resume:
        train_run(resume=args.resume, device=args.device, download=not args.no_download,
                  max_minutes=args.max_minutes, epochs=args.epochs_override, verbose=not args.quiet,
                  quiet=args.quiet)
        return 0
    cfg = make_run_config(
        train_datasets=args.train_datasets, val_datasets=args.val_datasets, architecture=args.architecture,
        config_deterministic=args.config_deterministic, config_stochastic=args.config_stochastic,
        likelihood=args.likelihood, model=args.model, n_mix=args.n_mix, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate, free_nats=args.free_nats,
        free_nats_epochs=args.free_nats_epochs, warmup_epochs=args.warmup_epochs, test_every=args.test_every,
        seed=args.seed, data_root=args.data_root, n_train_examples=args.n_train_examples,
        n_val_examples=args.n_val_examples, precision=args.precision)
    train_run(cfg, save_dir=args.save_dir, device=args.device, download=not args.no_download,
              max_minutes=args.max_minutes, verbose=not args.quiet, quiet=args.quiet)
    return 0


def _cmd_score(args) -> int:
    score_run(args.model, ks=args.n_latents_skip, iw_samples_elbo=args.iw_samples_elbo,
              iw_samples_lk=args.iw_samples_Lk, batch_size=args.batch_size, n_eval_examples=args.n_eval_examples,
              save_dir=args.save_dir, device=args.device, data_root=args.data_root, checkpoint=args.checkpoint,
              extra_val=args.extra_val_datasets, download=not args.no_download, seed=args.seed, quiet=args.quiet)
    return 0


def _cmd_results(args) -> int:
    rows, curves = collect_results(args.scores_dir)
    print(format_table(rows))
    out = write_results(rows, curves, args.output_dir or (args.scores_dir[0] if Path(args.scores_dir[0]).is_dir()
                                                          else Path(args.scores_dir[0]).parent))
    print(f"\nwrote {out['csv']}, {out['json']}, {out['roc']}")
    return 0


def _wrap(fn):
    def run(args):
        try:
            return fn(args)
        except (ValueError, FileNotFoundError) as e:
            print(f"hvae-detect {args.command}: error: {e}", file=sys.stderr)
            return 2
    return run


def add_parsers(subparsers) -> None:
    """Add ``train``, ``score`` and ``results`` to the ``hvae-detect`` command line."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = subparsers.add_parser("train", help="train a hierarchical VAE with the seed's flags", formatter_class=fmt,
                              description="Train a hierarchical VAE (the seed's scripts/dvae_run.py flags).")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--learning_rate", "--lr", type=float, default=3e-4)
    p.add_argument("--free_nats", type=float, default=2.0, help="free nats per latent layer")
    p.add_argument("--free_nats_epochs", type=float, default=400,
                   help="free nats held for the first half, then annealed to 0 by this epoch")
    p.add_argument("--warmup_epochs", type=float, default=200, help="KL weight rises from 0 to 1 over these epochs")
    p.add_argument("--test_every", type=int, default=10, help="validate every this many epochs")
    p.add_argument("--train_datasets", default=SEED_TRAIN, help='JSON {"Name": {"dynamic": bool, "split": ...}}')
    p.add_argument("--val_datasets", default=SEED_VAL, help="JSON like --train_datasets; the first is in-distribution")
    p.add_argument("--model", default="VAE", choices=MODELS, help="the seed's hierarchical VAE")
    p.add_argument("--likelihood", default=None, choices=sorted(LIKELIHOOD_FLAGS),
                   help="default: Bernoulli for Binarized data, discretized logistic mixture otherwise")
    p.add_argument("--config_deterministic", default=None, help="the seed's JSON list of block lists")
    p.add_argument("--config_stochastic", default=None, help="the seed's JSON list of latent layers")
    p.add_argument("--architecture", default=None, choices=sorted(PRESETS),
                   help="preset used when no --config_* is given (default paper-mnist)")
    p.add_argument("--n_mix", type=int, default=10, help="mixture components of the discretized logistic mixture")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save_dir", default="./models", help="runs go to SAVE_DIR/<dataset>-<start time>/")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="float32", choices=PRECISIONS,
                   help="training arithmetic: bfloat16 mixed precision (float32 bound) or auto (bfloat16 on CUDA)")
    p.add_argument("--data_root", default=None, help=f"folder with <dataset>.npz files (default ${'{'}"
                                                     f"HVAE_DETECT_DATA_ROOT{'}'} or ./data)")
    p.add_argument("--no_download", action="store_true", help="never download with torchvision")
    p.add_argument("--n_train_examples", type=int, default=None, help="use only the first N training images")
    p.add_argument("--n_val_examples", type=int, default=None, help="use only the first N images of each val set")
    p.add_argument("--max_minutes", type=float, default=None, help="stop after the last epoch that fits")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--epochs_override", type=int, default=None,
                   help="with --resume: train up to this many epochs in total")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_wrap(_cmd_train))

    s = subparsers.add_parser("score", help="compute L, L>k and LLR>k for a trained run", formatter_class=fmt,
                              description="Score a run (the seed's scripts/ood-llr.py).")
    s.add_argument("--model", required=True, metavar="DIR", help="run folder written by hvae-detect train")
    s.add_argument("--iw_samples_elbo", type=int, default=1, help="importance samples S for L")
    s.add_argument("--iw_samples_Lk", type=int, default=1, help="importance samples S' for L>k")
    s.add_argument("--n_latents_skip", type=int, nargs="+", default=[1], help="k (one or more)")
    s.add_argument("--batch_size", type=int, default=500)
    s.add_argument("--n_eval_examples", type=int, default=None, help="cap on the images per set")
    s.add_argument("--save_dir", default=None, help="default: DIR/scores")
    s.add_argument("--checkpoint", default="best", choices=("best", "last"))
    s.add_argument("--extra_val_datasets", default=None,
                   help='JSON of further OOD sets, e.g. {"KMNISTBinarized": {"split": "validation"}}')
    s.add_argument("--device", default="auto")
    s.add_argument("--data_root", default=None, help="default: the run's data_root")
    s.add_argument("--no_download", action="store_true")
    s.add_argument("--seed", type=int, default=0, help="seed of the importance samples")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(run=_wrap(_cmd_score))

    r = subparsers.add_parser("results", help="AUROC / AUPRC / FPR80 / FPR95 tables from saved scores",
                              formatter_class=fmt, description="Tables and ROC curves (the seed's ood-llr-results.py).")
    r.add_argument("scores_dir", nargs="+", help="folders with scores-*.npz (or the files)")
    r.add_argument("--output_dir", default=None, help="default: the first scores folder")
    r.set_defaults(run=_wrap(_cmd_results))


def main(argv=None) -> int:
    """``python -m hvae_detect.pipeline train|score|results ...`` without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="hvae-detect")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
