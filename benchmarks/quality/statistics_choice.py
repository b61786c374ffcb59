"""Statistics of one trained model, compared on pairs kept for choosing (never the reported ones).

    OMP_NUM_THREADS=1 python benchmarks/quality/statistics_choice.py    # both data sets, about 12 min on 2 shared cores
    OMP_NUM_THREADS=1 python benchmarks/quality/statistics_choice.py --data fashion_mnist --n 300 --epochs 1

For each in-distribution set (Fashion-MNIST classes 0-4; CIFAR10 animals) it fits
``HVAEOutlierDetector(architecture="small")`` for a few minutes on part of the in-distribution
training images, keeps other training images aside (held out), and scores with ``ood_scores``:
- the held-out training images, on which every reference model is fitted;
- in-distribution test images (the inliers of every pair);
- OOD sets: the other classes' test images (Fashion-MNIST 5-9; CIFAR10 vehicles), and synthetic
  images made from other in-distribution test images: Gaussian noise with each image's channel
  means and stds, constant (each image's mean colour), inverted, erased (a square of half the side
  set to 0), shuffled 4x4 patches.
It prints the AUROC of L, every L>k and LLR>k; input complexity (-L/ln 2 - bits) with each codec
(for the Bernoulli model on the binarised draw it scored, and on the grey image); the typicality
distance of L; the Gaussian (Ledoit-Wolf Mahalanobis), ECOD and COPOD scores of the vector
(L, every L>k), of that vector with the compressed size appended, of the latent path's norms (their
logs, and the raw norms), and of the fused statistic's vector without the path's log-norms (the
default before they joined it).

The reported pairs (CIFAR10 -> SVHN, Fashion-MNIST -> MNIST) are not read here. Data:
../shared/data/{fashion_mnist,cifar10}.npz beside the repository, or $HVAE_DETECT_SHARED/data.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hvae_detect import HVAEOutlierDetector
from hvae_detect.reporting.metrics import detection_metrics
from hvae_detect.scoring import statistics
from hvae_detect.scoring.complexity import CODECS, compressed_bits, input_complexity
from hvae_detect.scoring.reference import COPOD, ECOD, Gaussian, Typicality

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402

SETS = {  # in-distribution classes, the other classes' label, and a note on the data
    "fashion_mnist": {
        "in": (0, 1, 2, 3, 4),
        "out": "classes 5-9",
        "train": 4000,
        "epochs": 2,
        "note": "Fashion-MNIST, lossless originals; the model sees one binarised draw per image",
    },
    "cifar10": {
        "in": (2, 3, 4, 5, 6, 7),
        "out": "vehicles",
        "train": 2500,
        "epochs": 3,
        "note": "CIFAR10 decoded from JPEG (lossy) in ../shared/data; animals in, vehicles out",
    },
}
FUSED = {"Gaussian": Gaussian, "ECOD": ECOD, "COPOD": COPOD}


def load(name: str) -> dict:
    with np.load(harness.data_root() / f"{name}.npz") as f:
        data = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    for k in ("x_train", "x_test"):
        data[k] = harness.channels_first(data[k])
    return data


def synthetic(base: np.ndarray, rng: np.random.Generator) -> dict:
    """OOD images made from in-distribution images base (n, C, H, W) uint8."""
    x = base.astype(np.float64)
    n, c, h, w = base.shape
    mean, std = x.mean(axis=(2, 3), keepdims=True), x.std(axis=(2, 3), keepdims=True)
    noise = np.clip(np.rint(mean + std * rng.standard_normal(base.shape)), 0, 255)
    erased = base.copy()
    for image, (top, left) in zip(erased, rng.integers(0, [h - h // 2 + 1, w - w // 2 + 1], (n, 2))):
        image[:, top : top + h // 2, left : left + w // 2] = 0
    patches = base.reshape(n, c, h // 4, 4, w // 4, 4).transpose(0, 2, 4, 1, 3, 5).reshape(n, -1, c, 4, 4)
    shuffled = np.stack([p[rng.permutation(len(p))] for p in patches])
    shuffled = shuffled.reshape(n, h // 4, w // 4, c, 4, 4).transpose(0, 3, 1, 4, 2, 5).reshape(base.shape)
    return {
        "noise": noise.astype(np.uint8),
        "constant": np.broadcast_to(np.rint(mean), base.shape).astype(np.uint8),
        "inverted": 255 - base,
        "erased": erased,
        "shuffled 4x4": shuffled,
    }


def scored_images(det: HVAEOutlierDetector, x: np.ndarray) -> np.ndarray:
    """The images the model scored: for a Bernoulli model its one binarised draw per image."""
    x01 = torch.from_numpy(x.astype(np.float32) / 255.0)
    return det.model_.observation.evaluation_draw(x01, det.scoring_seed_).numpy()


def statistics_of(det, x: np.ndarray, codecs) -> dict:
    """ood_scores of x, the engine outputs the vectors read (terms of L, latent-path norms), and the
    compressed sizes of the scored (and, if it differs, the original) images."""
    out = {key: np.asarray(v) for key, v in det.ood_scores(x).items()}
    engine = det._engine_outputs(x, {"L", "L>*", "log p(x|z)", "KL", "bits", statistics.LATENT_PATH})
    out.update({f"out:{name}": v for name, v in engine.items()})
    scored = scored_images(det, x)
    for codec in codecs:
        out[f"bits {codec}"] = compressed_bits(scored, codec)
        if det.likelihood_ == "bernoulli":
            out[f"bits {codec} (grey)"] = compressed_bits(x, codec)
    return out


def normality_rows(det, held: dict, sets: dict, codecs, fuse_codec: str) -> dict:
    """{row name: {set name: normality scores}}; every reference model fitted on the held-out values."""
    ks = range(1, det.n_latents_)
    vector = ["L"] + [f"L>{k}" for k in ks]
    rows = {key: {s: statistics.normality(key, v[key]) for s, v in sets.items()} for key in statistics.keys(ks)}
    for name in [key for key in held if key.startswith("bits ")]:
        label = "complexity " + name[len("bits ") :]
        rows[label] = {s: -input_complexity(v["L"], v[name]) for s, v in sets.items()}
    typical = Typicality().fit(held["L"])
    rows["typicality of L"] = {s: typical.score(v["L"]) for s, v in sets.items()}
    engine = {
        s: {name[4:]: v[name] for name in v if name.startswith("out:")} for s, v in {"held": held, **sets}.items()
    }

    def raw_path(out):
        return np.exp(statistics.path_vector(out))

    vectors = {
        "path": statistics.path_vector,
        "path (raw norms)": raw_path,
        "fused vector without the path": lambda out: statistics.statistic_vector(out)[
            :, : -statistics.path_vector(out).shape[1]
        ],
    }
    for label, columns_of in vectors.items():
        for name, cls in FUSED.items():
            model = cls().fit(columns_of(engine["held"]))
            rows[f"{name} {label}"] = {s: model.score(columns_of(engine[s])) for s in sets}
    for columns, suffix in ((vector, "(L, L>k)"), (vector + [f"bits {fuse_codec}"], f"(L, L>k, {fuse_codec} bits)")):

        def matrix(v):
            return np.stack([v[c] for c in columns], axis=1)

        for name, cls in FUSED.items():
            model = cls().fit(matrix(held))
            rows[f"{name} {suffix}"] = {s: model.score(matrix(v)) for s, v in sets.items()}
    return rows


def run(name: str, args) -> tuple[str, dict]:
    spec, rng, t0 = SETS[name], np.random.default_rng(args.seed), time.time()
    data = load(name)
    inside_train = np.flatnonzero(np.isin(data["y_train"], spec["in"]))
    inside_test = np.flatnonzero(np.isin(data["y_test"], spec["in"]))
    outside_test = np.flatnonzero(~np.isin(data["y_test"], spec["in"]))
    inside_train, inside_test = rng.permutation(inside_train), rng.permutation(inside_test)
    n_train = args.train if args.train else spec["train"]
    epochs = args.epochs if args.epochs else spec["epochs"]
    train, held = data["x_train"][inside_train[:n_train]], data["x_train"][inside_train[n_train : n_train + args.n]]
    inliers, base = data["x_test"][inside_test[: args.n]], data["x_test"][inside_test[args.n : 2 * args.n]]
    ood = {spec["out"]: data["x_test"][rng.permutation(outside_test)[: args.n]], **synthetic(base, rng)}
    # the seed's schedules scaled to a short run: free nats annealed by 40% of it, KL warm-up over 20%
    det = HVAEOutlierDetector(
        architecture="small",
        epochs=epochs,
        warmup_epochs=0.2 * epochs,
        free_nats_epochs=0.4 * epochs,
        random_state=args.seed,
    )
    det.fit(train)
    fit_minutes = (time.time() - t0) / 60
    codecs = [c for c in CODECS if c in args.codecs]
    held_values = statistics_of(det, held, codecs)
    sets = {"in": statistics_of(det, inliers, codecs)}
    sets.update({label: statistics_of(det, x, codecs) for label, x in ood.items()})
    rows = normality_rows(det, held_values, sets, codecs, args.fuse_codec)
    auroc = {row: {label: detection_metrics(v["in"], v[label])["auroc"] for label in ood} for row, v in rows.items()}
    minutes = (time.time() - t0) / 60
    head = (
        f"**{spec['note']}.** {n_train} training images x {epochs} epochs (fit {fit_minutes:.1f} min), "
        f"{len(held)} held-out training images for the reference models, {args.n} images per test set; "
        f"{minutes:.1f} min in all. AUROC, OOD positive:\n"
    )
    header = "| statistic | " + " | ".join(ood) + " | mean |\n|---|" + "---|" * (len(ood) + 1) + "\n"
    lines = [
        f"| {row} | " + " | ".join(f"{v[label]:.3f}" for label in ood) + f" | {np.mean(list(v.values())):.3f} |"
        for row, v in auroc.items()
    ]
    return head + "\n" + header + "\n".join(lines) + "\n", auroc


def main(argv=None):
    parser = harness.parser(__doc__, seed=0)
    parser.add_argument("--data", nargs="+", choices=sorted(SETS), default=sorted(SETS, reverse=True))
    parser.add_argument("--n", type=int, default=1000, help="images per test set and held-out images")
    parser.add_argument("--train", type=int, default=0, help="training images (0: the data set's default)")
    parser.add_argument("--epochs", type=int, default=0, help="training epochs (0: the data set's default)")
    parser.add_argument("--codecs", nargs="+", choices=CODECS, default=list(CODECS))
    parser.add_argument("--fuse_codec", choices=CODECS, default="png", help="codec whose bits join the fused vector")
    parser.add_argument("--json", type=Path, help="also write the AUROCs here")
    args = parser.parse_args(argv)
    if args.fuse_codec not in args.codecs:
        parser.error(f"--fuse_codec {args.fuse_codec} must be one of --codecs")
    harness.set_threads(None)
    start = time.time()
    print(f"    {harness.command(__file__, argv, env=['OMP_NUM_THREADS'])}\n\n{harness.header()}\n", flush=True)
    results = {}
    for name in args.data:
        table, results[name] = run(name, args)
        print(table, flush=True)
    print(f"Total: {(time.time() - start) / 60:.1f} min.")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
