"""``hvae-detect score``: L, L>k and LLR>k of a trained model on its evaluation sets.

``--model DIR`` is a run folder written by ``hvae-detect train`` (its best or last
checkpoint) or a detector folder written by ``HVAEOutlierDetector.save``; both are
opened with ``HVAEOutlierDetector.load`` and scored by its ``ood_scores``, so the
command and the estimator give the same numbers. A run is scored on every validation
set (the first is in-distribution), the extra sets, and its training set's train
split; a detector folder on the sets given with ``--val_datasets``. One file per k:

    <save_dir>/scores-<InDist>-k{k}-iw_elbo{S}-iw_lk{S'}.npz   (loads with allow_pickle=False)

        datasets                     (D,) str   set labels, e.g. "FashionMNIST test", "MNIST test"
        in_distribution              ()   str   the in-distribution label
        k, iw_samples, iw_samples_lk ()   int   k, S and S'
        checkpoint_epoch             ()   int   (-1 for a detector folder)
        set<i>:<key>                 (N_i,)     every statistic of ``hvae_detect.scoring.statistics`` for
                                                this k (and those of no k), as ``ood_scores`` keys them:
                                                set0:L, set0:L>2, set0:LLR>2, ... (k = 0: those of no k)

    ``hvae-detect results`` also reads the earlier format (L_<i>, Lk_<i>, LLR_<i>, iw_elbo, iw_lk).

Sets are scored in shards (at most ``SHARD_IMAGES`` images, at least one per rank), each
written atomically to ``<save_dir>/.shards-<settings>/`` as it completes; a rerun of a killed
``score`` reads the shards already there instead of scoring them again. Under torchrun the
shards are dealt round-robin to the ranks and rank 0 gathers them (through the process group:
no shared file system is needed) and writes the files; a score is a function of the image
(``hvae_detect.scoring.engine``), so they hold exactly what one process writes.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from hvae_detect.commands.common import log, parse_json
from hvae_detect.data.datasets import default_data_root, load_dataset, parse_dataset_options
from hvae_detect.estimator import HVAEOutlierDetector
from hvae_detect.persistence import checkpoints
from hvae_detect.persistence.atomic import MANIFEST, atomic_write
from hvae_detect.scoring import statistics
from hvae_detect.training import distributed


def score_sets(
    datasets: dict, train_name=None, extra_val=None, n_eval_examples=None, data_root=None, download=True, seed=0
):
    """The sets to score, each with one fixed draw: ``datasets`` (the first is in-distribution), the
    extra validation sets, and ``train_name``'s train split when given."""
    sets = {name: {"dynamic": False, "split": opts["split"]} for name, opts in datasets.items()}
    if extra_val:
        extra = parse_json(extra_val, "--extra_val_datasets")
        extra = {n: {"split": "validation", **(o or {}), "dynamic": False} for n, o in extra.items()}
        for name, opts in parse_dataset_options(extra).items():
            sets.setdefault(name, opts)
    out = [load_dataset(n, o, data_root, download, n_eval_examples, seed) for n, o in sets.items()]
    if train_name is not None:
        out.append(
            load_dataset(train_name, {"dynamic": False, "split": "train"}, data_root, download, n_eval_examples, seed)
        )
    return out


def score_file_name(in_dist: str, k: int, iw_elbo: int, iw_lk: int, checkpoint: str = "best", n=None) -> str:
    """One name per (set, checkpoint, images per set, k, S, S'), so no run of ``score`` replaces another's."""
    return (
        f"scores-{in_dist.replace(' ', '-')}-{checkpoint}-n{'all' if n is None else n}"
        f"-k{k}-iw_elbo{iw_elbo}-iw_lk{iw_lk}.npz"
    )


SHARD_IMAGES = 10_000


def shard_bounds(n: int, world_size: int = 1) -> list[tuple[int, int]]:
    """(start, end) of each shard of a set of ``n`` images: at most SHARD_IMAGES each, at least one per rank."""
    count = min(n, max(world_size, -(-n // SHARD_IMAGES)))
    return [(i * n // count, (i + 1) * n // count) for i in range(count)]


@distributed.in_session
def score_run(
    model_dir,
    *,
    ks=(1,),
    iw_samples_elbo=1,
    iw_samples_lk=1,
    batch_size=500,
    n_eval_examples=None,
    save_dir=None,
    device="auto",
    data_root=None,
    checkpoint="best",
    val_datasets=None,
    extra_val=None,
    download=True,
    seed=None,
    overwrite=False,
    quiet=False,
) -> list[Path]:
    """Score a run or detector folder with L and L>k (k in ``ks``) and write one .npz per k.

    A score file that exists already is an error unless ``overwrite``. Under torchrun each rank
    scores its shards and rank 0 writes the files (see the module docstring).
    """
    ctx = distributed.current()
    quiet = quiet or not ctx.is_main
    for name, value in (
        ("--batch_size", batch_size),
        ("--iw_samples_elbo", iw_samples_elbo),
        ("--iw_samples_Lk", iw_samples_lk),
        ("--n_eval_examples", n_eval_examples),
    ):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    folder = checkpoints.resolve_model_dir(model_dir, checkpoint)
    run = checkpoints.run_config_of(folder)
    det = HVAEOutlierDetector.load(model_dir, device=device, checkpoint=checkpoint)
    if seed is not None:
        det.scoring_seed_ = int(seed)
    ks = [int(k) for k in ks]
    for k in ks:
        if not 0 <= k < det.n_latents_:
            raise ValueError(f"--n_latents_skip must be in 0..{det.n_latents_ - 1} for this model, got {k}")
    if val_datasets is None and run is None:
        raise ValueError(
            f"{model_dir} is a detector folder, not a run: name the sets to score with --val_datasets "
            "(JSON, the first is in-distribution)"
        )
    datasets = parse_dataset_options(val_datasets if val_datasets is not None else run["val_datasets"])
    root = data_root if data_root is not None else (run["data_root"] if run else default_data_root())
    train_name = next(iter(run["train_datasets"])) if run else None
    sets = score_sets(datasets, train_name, extra_val, n_eval_examples, root, download, run["seed"] if run else 0)
    state = checkpoints.read_config(folder).get("training_state") or {}
    epoch = int(state.get("epoch", -1))
    in_dist = sets[0].label
    save_dir = Path(save_dir) if save_dir is not None else Path(model_dir) / "scores"
    label = checkpoint if run is not None else "detector"
    names = [
        score_file_name(
            in_dist, k, iw_samples_elbo, iw_samples_lk if k > 0 else iw_samples_elbo, label, n_eval_examples
        )
        for k in ks
    ]
    existing = [n for n in names if (save_dir / n).exists()]
    if existing and not overwrite:
        raise ValueError(f"{save_dir / existing[0]} exists; pass --overwrite to replace it")
    log(
        f"scoring {model_dir} (checkpoint epoch {epoch}) with k={ks}, S={iw_samples_elbo}, "
        f"S'={iw_samples_lk} on {[s.label for s in sets]}",
        quiet,
    )
    shard_dir = (
        save_dir / f".shards-{label}-{_model_tag(folder, epoch)}-S{iw_samples_elbo}-Sk{iw_samples_lk}"
        f"-seed{det.scoring_seed_}-n{'all' if n_eval_examples is None else n_eval_examples}"
    )
    counts = {"iw_samples": iw_samples_elbo, "iw_samples_lk": iw_samples_lk}
    results = _score_sets(det, sets, shard_dir, batch_size, counts, ctx, quiet)
    if not ctx.is_main:
        return []
    save_dir.mkdir(parents=True, exist_ok=True)
    labels = [d.label for d in sets]
    files = []
    for k in ks:
        arrays = {
            "datasets": np.array(labels),
            "in_distribution": np.array(in_dist),
            "k": np.array(k),
            "iw_samples": np.array(iw_samples_elbo),
            "iw_samples_lk": np.array(iw_samples_lk),
            "checkpoint_epoch": np.array(epoch),
        }
        for i, lab in enumerate(labels):
            for key in statistics.keys([k] if k else []):
                if key in results[lab]:  # a run's checkpoint has no references: no typicality or fused score
                    arrays[f"set{i}:{key}"] = results[lab][key]
        path = save_dir / names[ks.index(k)]
        atomic_write(path, lambda tmp: _savez(tmp, arrays))
        files.append(path)
        log(f"wrote {path}", quiet)
    shutil.rmtree(shard_dir, ignore_errors=True)  # every score is in the files now
    return files


def _model_tag(folder: Path, epoch: int) -> str:
    """Names the weights that were scored (their checksum), so shards of other weights are never reused."""
    try:
        return json.loads((folder / MANIFEST).read_text())["files"]["model.safetensors"][:12]
    except (OSError, ValueError, KeyError, TypeError):
        return f"epoch{epoch}"


def _score_sets(det, sets, shard_dir: Path, batch_size, counts, ctx, quiet) -> dict:
    """{label: ood_scores} of every set, on rank 0 (None on the others); this rank's shards are read
    from ``shard_dir`` when a previous run wrote them, else scored and written there."""
    jobs = [(j, start, end) for j, d in enumerate(sets) for start, end in shard_bounds(len(d), ctx.world_size)]
    mine = jobs[ctx.rank :: ctx.world_size]
    done, reused, scored, seconds = {}, 0, 0, 0.0
    with tqdm(total=len(mine), desc="scoring shards", disable=quiet, leave=False) as bar:
        for j, start, end in mine:
            d = sets[j]
            path = shard_dir / f"set{j}-{start}-{end}.npz"
            # Shards of another statistics table are scored again, not read.
            meta = {"set": d.label, "start": start, "end": end, "n": len(d), "statistics": list(statistics.TABLE)}
            arrays = _read_shard(path, meta)
            if arrays is None:
                t0 = time.time()
                arrays = det.ood_scores(d.fixed()[start:end], batch_size=batch_size, **counts)
                seconds += time.time() - t0
                scored += end - start
                atomic_write(path, lambda tmp: _savez(tmp, {**arrays, "meta": np.array(json.dumps(meta))}))
            else:
                reused += 1
            done[(j, start)] = arrays
            bar.update(1)
    rates = distributed.gather_to_main(round(scored / seconds, 1) if seconds else None, ctx)
    reused_all = distributed.gather_to_main(reused, ctx)
    parts = distributed.gather_to_main(done, ctx)
    if not ctx.is_main:
        return {}
    log(
        f"  {sum(len(d) for d in sets)} images in {len(jobs)} shards ({sum(reused_all)} read from {shard_dir}); "
        f"images/s per rank {rates}",
        quiet,
    )
    merged = {key: value for part in parts for key, value in part.items()}
    results = {}
    for j, d in enumerate(sets):
        pieces = [merged[(j, start)] for start, _ in shard_bounds(len(d), ctx.world_size)]
        results[d.label] = {name: np.concatenate([p[name] for p in pieces]) for name in pieces[0]}
        log(f"  {d.label}: {len(d)} images, mean L {results[d.label]['L'].mean():.2f} nats", quiet)
    return results


def _read_shard(path: Path, meta: dict) -> dict | None:
    """The scores of a shard written by an earlier run with the same settings, or None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if json.loads(str(f["meta"])) != meta:
                return None
            return {name: f[name] for name in f.files if name != "meta"}
    except (OSError, ValueError, KeyError):  # a damaged shard is scored again
        return None


def _savez(path, arrays):
    with open(path, "wb") as f:  # a file object, so numpy does not append ".npz" to the temporary name
        np.savez(f, **arrays)
