"""Models and fused statistics for colour images, compared on the pairs kept for choosing.

    OMP_NUM_THREADS=1 python benchmarks/quality/colour_choice.py --architecture bottleneck --epochs 8 --save runs/bn.npz
    python benchmarks/quality/colour_choice.py --compare runs/bn.npz runs/small.npz     # fuse saved runs side by side

Fits ``HVAEOutlierDetector`` (``--architecture``, ``--epochs``, ...) on ``--train`` in-distribution
training images (holdout=0) and computes the engine outputs that the statistics read (L, every L>k,
log p(x|z), the KLs, compressed bits, the latent path's norms, and the reconstruction error along the
top latent's path with the lower latents at their prior means) for other training images held out
(``--n``; every reference is fitted on them), in-distribution test images and the OOD sets of the
choosing pairs only:
- cifar10: CIFAR10 -> GTSRB, CIFAR10 -> Tiny ImageNet (resized), and synthetic sets made from CIFAR10
  test images (benchmarks/quality/statistics_choice.py: noise, constant, inverted, erased, shuffled patches);
- cifar10_animals: CIFAR10 animals in, vehicles out, and the synthetic sets;
- fashion_mnist_0-4: classes 0-4 in, 5-9 out, and the synthetic sets.
The reported pairs (CIFAR10 -> SVHN, Fashion-MNIST -> MNIST, ...) are never read here.

It prints the AUROC of each candidate statistic per set, and with ``--save`` keeps the outputs, so
that ``--compare`` can fuse the statistic vectors of models fitted side by side on the same images
(Huang et al. 2024's LPath-2M) without refitting. Data: ../shared/data beside the repository, or
$HVAE_DETECT_SHARED/data.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hvae_detect import HVAEOutlierDetector
from hvae_detect.data.image_sources import image_batches
from hvae_detect.reporting.metrics import detection_metrics
from hvae_detect.scoring import statistics
from hvae_detect.scoring.complexity import input_complexity
from hvae_detect.scoring.reference import COPOD, ECOD, Gaussian

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402
from quality.statistics_choice import synthetic  # noqa: E402

NEEDS = {"L", "L>*", "log p(x|z)", "KL", "bits", statistics.LATENT_PATH}
PAIRS = {  # in-distribution data and classes; OOD files (test split) or the other classes
    "cifar10": {"data": "cifar10", "in": None, "ood_files": ("gtsrb", "tinyimagenet_resize")},
    "cifar10_animals": {"data": "cifar10", "in": (2, 3, 4, 5, 6, 7), "ood_files": ()},
    "fashion_mnist_0-4": {"data": "fashion_mnist", "in": (0, 1, 2, 3, 4), "ood_files": ()},
}


def read(name: str, split: str):
    with np.load(harness.data_root() / f"{name}.npz") as f:
        x, y = f[f"x_{split}"], f[f"y_{split}"]
    return harness.channels_first(x), y


def image_sets(pair: str, n_train: int, n: int, seed: int):
    """(training images, held-out training images, {set: test images}) of a choosing pair."""
    spec, rng = PAIRS[pair], np.random.default_rng(seed)
    x_train, y_train = read(spec["data"], "train")
    x_test, y_test = read(spec["data"], "test")

    def is_in(y):
        return np.ones(len(y), bool) if spec["in"] is None else np.isin(y, spec["in"])

    inside = is_in(y_test)
    train_idx = rng.permutation(np.flatnonzero(is_in(y_train)))
    if len(train_idx) < n_train + n:
        raise ValueError(f"{pair} has {len(train_idx)} training images, fewer than --train + --n = {n_train + n}")
    test_in = rng.permutation(np.flatnonzero(inside))
    sets = {"in": x_test[test_in[:n]]}
    if spec["in"] is not None:
        sets["other classes"] = x_test[rng.permutation(np.flatnonzero(~inside))[:n]]
    for name in spec["ood_files"]:
        sets[name] = read(name, "test")[0][rng.permutation(10_000)[:n]]
    sets.update(synthetic(x_test[test_in[n : 2 * n]], rng))
    return x_train[train_idx[:n_train]], x_train[train_idx[n_train : n_train + n]], sets


@torch.no_grad()
def top_path_recon(det, X) -> np.ndarray:
    """Squared reconstruction error with the top latent at its posterior mean and every lower latent at
    its conditional prior's mean (the bound L>k's pass at k = n_latents - 1, zero noise)."""
    model, out = det.model_, []
    k = model.n_latents - 1
    for x in image_batches(X, None, model.input_shape, 256, "cpu"):
        x = model.observation.evaluation_draw(x, det.scoring_seed_)
        zeros = [torch.zeros((x.shape[0], *model.latent_shapes[-1]))]
        params = model(x, k, noise=zeros).params
        out.append((x - model.observation.mean(params, x.shape[1])).flatten(1).square().sum(1).double().numpy())
    return np.concatenate(out)


def outputs_of(det, X) -> dict:
    out = det._engine_outputs(X, NEEDS)
    if det.n_latents_ > 1:
        out["top recon error"] = top_path_recon(det, X)
    return out


def log_columns(out: dict, names) -> np.ndarray:
    return np.log(np.maximum(np.stack([out[name] for name in names], axis=1), 1e-300))


def candidates(out: dict) -> dict:
    """{name: (n, d) columns} of every fused candidate: each is scored by a Gaussian, ECOD and COPOD."""
    vector = statistics.statistic_vector(out)
    path = statistics.path_vector(out)
    rows = {
        "fused vector": vector,
        "path": path,
        "recon error": log_columns(out, ["recon error"]),
        "recon + |mu| + |sigma|": np.hstack([log_columns(out, ["recon error"]), path[:, 2:]]),
        "bits + log p(x|z) + KL": vector[:, : vector.shape[1] - path.shape[1]],
    }
    if "top recon error" in out:
        rows["fused vector + top recon"] = np.hstack([vector, log_columns(out, ["top recon error"])])
        rows["top recon"] = log_columns(out, ["top recon error"])
    return rows


def normality_rows(held: dict, sets: dict) -> dict:
    """{row: {set: normality}}: the single statistics, and each candidate vector under each reference."""
    rows = {
        "L": {s: v["L"] for s, v in sets.items()},
        "IC": {s: -input_complexity(v["L"], v["bits"]) for s, v in sets.items()},
    }
    ks = sorted(int(n[2:]) for n in held if n.startswith("L>"))
    for k in ks:
        rows[f"LLR>{k}"] = {s: -(v["L"] - v[f"L>{k}"]) for s, v in sets.items()}
    held_columns = candidates(held)
    set_columns = {s: candidates(v) for s, v in sets.items()}
    for name, columns in held_columns.items():
        for label, cls in (("Gaussian", Gaussian), ("ECOD", ECOD), ("COPOD", COPOD)):
            model = cls().fit(columns)
            rows[f"{label} {name}"] = {s: model.score(c[name]) for s, c in set_columns.items()}
    return rows


def auroc_table(rows: dict) -> dict:
    return {row: {s: detection_metrics(v["in"], v[s])["auroc"] for s in v if s != "in"} for row, v in rows.items()}


def print_table(title: str, aurocs: dict) -> None:
    sets = list(next(iter(aurocs.values())))
    print(f"\n{title}\n\n| statistic | " + " | ".join(sets) + " | mean |\n|---|" + "---|" * (len(sets) + 1))
    for row, v in aurocs.items():
        print(f"| {row} | " + " | ".join(f"{v[s]:.3f}" for s in sets) + f" | {np.mean(list(v.values())):.3f} |")


def save(path: Path, meta: dict, held: dict, sets: dict) -> None:
    arrays = {f"held:{k}": v for k, v in held.items()}
    arrays.update({f"{s}:{k}": v for s, out in sets.items() for k, v in out.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, meta=json.dumps(meta), **arrays)


def load(path: Path):
    with np.load(path) as f:
        meta, out = json.loads(str(f["meta"])), {}
        for name in f.files:
            if name != "meta":
                s, k = name.split(":", 1)
                out.setdefault(s, {})[k] = f[name]
    return meta, out.pop("held"), out


def compare(paths) -> None:
    """Fuse saved runs side by side: each run's candidate columns concatenated, prefixed by run."""
    runs = [load(Path(p)) for p in paths]
    for meta, _, _ in runs:
        print(f"- {meta['label']}: fit {meta['fit_minutes']:.1f} min")
    rows = {}
    for name in ("fused vector", "path", "recon + |mu| + |sigma|"):
        held = np.hstack([candidates(h)[name] for _, h, _ in runs])
        for label, cls in (("Gaussian", Gaussian), ("ECOD", ECOD), ("COPOD", COPOD)):
            model = cls().fit(held)
            rows[f"{label} {name}, side by side"] = {
                s: model.score(np.hstack([candidates(sets[s])[name] for _, _, sets in runs])) for s in runs[0][2]
            }
    print_table("Side by side: AUROC, OOD positive", auroc_table(rows))


def main(argv=None):
    parser = harness.parser(__doc__, seed=0)
    parser.add_argument("--pair", choices=sorted(PAIRS), default="cifar10")
    parser.add_argument("--architecture", default="bottleneck", help="a preset name or architecture JSON")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--n_mix", type=int, default=10)
    parser.add_argument("--likelihood", default="auto")
    parser.add_argument("--train", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=1000, help="images per test set and held-out images")
    parser.add_argument("--save", type=Path, help="keep the outputs here (an .npz) for --compare")
    parser.add_argument("--compare", nargs="+", type=Path, help="fuse these saved runs side by side, and exit")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(args.compare)
    harness.set_threads(None)
    print(f"    {harness.command(__file__, argv, env=['OMP_NUM_THREADS'])}\n\n{harness.header()}", flush=True)
    train, held_images, test_sets = image_sets(args.pair, args.train, args.n, args.seed)
    architecture = args.architecture if not args.architecture.startswith("{") else json.loads(args.architecture)
    det = HVAEOutlierDetector(
        architecture=architecture,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        warmup_epochs=0.2 * args.epochs,
        free_nats_epochs=0.4 * args.epochs,
        n_mix=args.n_mix,
        likelihood=args.likelihood,
        holdout=0,
        statistic="elbo",
        random_state=args.seed,
    )
    t0 = time.time()
    det.fit(train)
    fit_minutes = (time.time() - t0) / 60
    held = outputs_of(det, held_images)
    sets = {s: outputs_of(det, x) for s, x in test_sets.items()}
    label = f"{args.pair}, {args.architecture}, {args.train} images x {args.epochs} epochs, lr {args.learning_rate}"
    print(
        f"\n{label}: fit {fit_minutes:.1f} min ({args.train * args.epochs / (fit_minutes * 60):.0f} images/s), "
        f"{args.n} images per set; scored in {(time.time() - t0) / 60 - fit_minutes:.1f} min"
    )
    print_table("AUROC, OOD positive", auroc_table(normality_rows(held, sets)))
    if args.save:
        save(
            args.save,
            {"label": label, "fit_minutes": fit_minutes, **vars(args) | {"save": str(args.save), "compare": None}},
            held,
            sets,
        )


if __name__ == "__main__":
    main()
