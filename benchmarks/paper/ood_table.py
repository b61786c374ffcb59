"""Out-of-distribution tables within a wall-time budget: Fashion-MNIST -> MNIST (and KMNIST,
notMNIST, Omniglot) with the Bernoulli likelihood, CIFAR10 -> SVHN with the discretized
logistic mixture.

    python benchmarks/paper/ood_table.py --minutes 30                         # Fashion-MNIST, 2 CPU cores
    python benchmarks/paper/ood_table.py --in_dist CIFAR10Dequantized --minutes 60
    python benchmarks/paper/ood_table.py --minutes 600 --paper                # GPU: the seed's configuration

Trains a hierarchical VAE on the in-distribution set's train split (dynamically
binarised / dequantised) with the command line's run
(``hvae_detect.commands.train.train_run``), the number of epochs fitted to the
budget after the first epoch and the seed's schedules scaled with it (free nats
2 held for the first 20% of the epochs and annealed to 0 by 40%, KL warm-up over
the first 20%; the seed uses 1000 / 400 / 200 epochs; ``--free_nats_fraction``
changes the 40%). Then it scores the in-distribution test set against every OOD
set of the table that the data root holds (each preprocessed with ONE fixed
draw) and prints AUROC / AUPRC / FPR80 of L, every L>k and every LLR>k, writes
results.csv/json, roc.png and the learning curve (validation AUROC of L and of
the best LLR>k against training minutes).

The budget covers everything (data loading, training, validation, scoring): the
scoring time is estimated before training from a timed forward pass and kept
aside. The paper column quotes the paper's HVAE table (AUROC).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402
from paper import learning_curve  # noqa: E402

from hvae_detect.commands.results import collect_results, write_results
from hvae_detect.commands.run_config import make_run_config
from hvae_detect.commands.score import score_run
from hvae_detect.commands.train import train_run
from hvae_detect.data.dataset_names import BASES
from hvae_detect.data.datasets import DATA_ROOT_ENV, load_dataset
from hvae_detect.devices import resolve_device
from hvae_detect.models.architectures import with_family
from hvae_detect.models.config import ModelConfig
from hvae_detect.models.registry import make_model
from hvae_detect.persistence.atomic import atomic_write_text
from hvae_detect.precision import PRECISIONS, autocast
from hvae_detect.scoring.engine import importance_bounds
from hvae_detect.training.config import TrainingConfig
from hvae_detect.training.loop import training_loss

REPO = harness.REPO


def _conv(ch, k, s):
    return {
        "block": "ResBlockConv2d",
        "out_channels": ch,
        "kernel_size": k,
        "stride": s,
        "weightnorm": True,
        "gated": False,
    }


def _latent(block, n):
    return {"block": block, "latent_features": n, "weightnorm": True}


@dataclass(frozen=True)
class Table:
    """One in-distribution set and what it is scored against."""

    likelihood: str  # the seed's --likelihood name
    ood_sets: tuple  # scored when the data root holds them
    reduced: dict  # the architecture for CPUs
    paper_architecture: str  # the seed's preset (--paper)
    paper: dict  # {(OOD label, statistic): the paper's HVAE AUROC}
    n_test: int  # images in the in-distribution test set
    data_note: str = ""  # what a reader must know about the data behind the numbers


TABLES = {
    "FashionMNISTBinarized": Table(
        "BernoulliLikelihoodConv2d",
        (
            "MNISTBinarized",
            "KMNISTBinarized",
            "notMNISTBinarized",
            "Omniglot28x28Binarized",
            "Omniglot28x28InvertedBinarized",
        ),
        # The seed's three stages and latent layout (a convolutional z1, dense z2 and z3 of 16 and 8
        # units) with one residual block per stage instead of three, 3x3 kernels, 16/32/32 channels.
        {
            "config_deterministic": [[_conv(16, 3, 2)], [_conv(32, 3, 2)], [_conv(32, 3, 1)]],
            "config_stochastic": [
                _latent("GaussianConv2d", 8),
                _latent("GaussianDense", 16),
                _latent("GaussianDense", 8),
            ],
        },
        "paper-mnist",
        {
            ("MNIST test", "L"): 0.268,
            ("MNIST test", "L>1"): 0.593,
            ("MNIST test", "L>2"): 0.712,
            ("MNIST test", "LLR>1"): 0.964,
        },
        10000,
    ),
    "CIFAR10Dequantized": Table(
        "DiscretizedLogisticMixLikelihoodConv2d",
        tuple(f"{base}Dequantized" for base, info in BASES.items() if not info.grey and base != "CIFAR10"),
        # The seed's CIFAR10 layout (z1 and z2 convolutional at 16x16 and 8x8, a dense z3) with one
        # residual block per stage instead of three and 32/64/64 channels instead of 256.
        {
            "config_deterministic": [[_conv(32, 3, 2)], [_conv(64, 3, 2)], [_conv(64, 3, 2)]],
            "config_stochastic": [
                _latent("GaussianConv2d", 8),
                _latent("GaussianConv2d", 16),
                _latent("GaussianDense", 32),
            ],
        },
        "paper-cifar",
        {
            ("SVHN test", "L"): 0.083,
            ("SVHN test", "L>1"): 0.097,
            ("SVHN test", "L>2"): 0.693,
            ("SVHN test", "LLR>2"): 0.811,
        },
        10000,
        "data: CIFAR10 from ../shared/data is JPEG-decoded (quality 75, lossy; 20,000 training images), SVHN is "
        "10,000 test images recovered from renderings (its 'validation' reads test here: no extra split); "
        "see ../shared/data/SOURCES.md",
    ),
}


def default_data_root() -> Path:
    """$HVAE_DETECT_DATA_ROOT, else ../shared/data beside the repository, else ./data."""
    if os.environ.get(DATA_ROOT_ENV):
        return Path(os.environ[DATA_ROOT_ENV])
    shared = REPO.parent / "shared" / "data"
    return shared if (shared / "fashion_mnist.npz").is_file() else REPO / "data"


def available_sets(names, root) -> list[str]:
    """The names whose validation split loads from ``root`` without a download."""
    found = []
    for name in names:
        try:
            load_dataset(name, {"split": "validation"}, root, download=False, max_examples=1)
            found.append(name)
        except (OSError, ValueError) as e:
            print(f"skipping {name}: {str(e).splitlines()[0]}", flush=True)
    return found


def _time_per_image(model, x, steps, train, n_samples=1, precision="float32"):
    """Seconds per image of a training step (train=True) or of scoring L and every L>k (S samples)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4) if train else None
    times = []
    torch.manual_seed(0)
    for i in range(steps + 1):
        t = time.time()
        if train:
            model.train()
            with autocast(x.device, precision):
                loss, _, _ = training_loss(model, x, 1.0, 0.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:
            model.eval()
            importance_bounds(model, x, list(range(1, model.n_latents)), n_samples, n_samples)
        if i > 0:  # the first call warms up
            times.append(time.time() - t)
    return float(np.median(times)) / x.shape[0]


def main(argv=None) -> int:
    p = harness.parser(__doc__, seed=0)
    p.add_argument(
        "--in_dist",
        default="FashionMNISTBinarized",
        choices=sorted(TABLES),
        help="the in-distribution set (its table says what it is scored against)",
    )
    p.add_argument("--minutes", type=float, default=30.0, help="wall-time budget for the whole benchmark")
    p.add_argument("--paper", action="store_true", help="the seed's architecture for this set (for a GPU)")
    p.add_argument("--architecture", default=None, help="a preset name or JSON dict instead of the reduced one")
    p.add_argument(
        "--model",
        default=None,
        choices=("VAE", "HVAE", "LVAE", "BIVA"),
        help="the model family built on the architecture (default: the architecture's, else the VAE)",
    )
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument(
        "--iw_samples",
        type=int,
        default=16,
        help="importance samples S = S' for L and L>k (LLR>k is a difference of two bounds: "
        "S = 16 lowered its noise enough to add ~0.03 AUROC on MNIST over S = 1)",
    )
    p.add_argument(
        "--score_fraction",
        type=float,
        default=0.3,
        help="largest share of the budget kept for scoring (fewer images per set beyond it)",
    )
    p.add_argument(
        "--precision",
        default="bfloat16",
        choices=PRECISIONS,
        help="training arithmetic (bfloat16 mixed precision trained 2x faster on an AVX512-BF16 CPU)",
    )
    p.add_argument(
        "--n_eval",
        type=int,
        default=10000,
        help="images per evaluation set (all by default; fewer if scoring would take more than "
        "--score_fraction of the budget)",
    )
    p.add_argument(
        "--n_train",
        type=int,
        default=None,
        help="use only the first N training images (default: all when the budget allows at least 4 "
        "epochs, else the first N that make 4 epochs, at least 10,000)",
    )
    p.add_argument(
        "--epochs", type=int, default=None, help="train exactly this many epochs instead of fitting them to the budget"
    )
    p.add_argument("--n_val", type=int, default=1000, help="images per validation set during training")
    p.add_argument("--free_nats", type=float, default=2.0, help="the seed's free nats (per latent, see training.py)")
    p.add_argument(
        "--free_nats_fraction",
        type=float,
        default=0.4,
        help="the free-nats schedule's length as a fraction of the epochs: held for its first half, "
        "annealed to 0 by its end (the seed's 400 of 1000 epochs); 2 holds them for the whole run",
    )
    p.add_argument("--data_root", default=None, help="folder with the .npz files (default ../shared/data)")
    p.add_argument("--save_dir", default=None, help="where the run goes (default: a temporary folder)")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--objective",
        default="paper",
        choices=("paper", "previous"),
        help="paper: per-element free nats, data-dependent init, ReLU, the paper's likelihood head "
        "(the command line's defaults); previous: per-layer free nats, SiLU, 3x3 head "
        "(what the runs of 2026-11-27 used)",
    )
    p.add_argument(
        "--free_nats_mode",
        default=None,
        choices=("element", "layer"),
        help="override the objective's free nats alone (element: the paper's, layer: previous)",
    )
    p.add_argument(
        "--skip_stochastic",
        default="true",
        choices=("true", "false"),
        help="false: no skip connections around the latents (the paper's effective inference wiring; "
        "docs/differences.md)",
    )
    p.add_argument("--n_mix", type=int, default=10, help="components of the discretized logistic mixture")
    p.add_argument(
        "--log_scale_min",
        type=float,
        default=-7.0,
        help="floor on the mixture's log-scales (-7: PixelCNN++'s and the paper's)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for training (1: on the shared 2-core machine two threads were at best "
        "~25%% faster and at times 20x slower; 0 keeps torch's default)",
    )
    p.add_argument(
        "--score_threads",
        type=int,
        default=1,
        help="torch threads for scoring (two threads made every scoring call ~50x slower there)",
    )
    p.add_argument("--markdown", default=None, help="also write the table as markdown to this file")
    args = p.parse_args(argv)
    if args.free_nats_fraction < 0:
        p.error(f"--free_nats_fraction must be >= 0 (0: no free nats), got {args.free_nats_fraction}")

    t0 = time.time()
    table = TABLES[args.in_dist]
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    train_threads = torch.get_num_threads()
    dev = resolve_device(args.device)
    root = Path(args.data_root) if args.data_root else default_data_root()
    if args.architecture:
        arch = args.architecture if not args.architecture.lstrip().startswith("{") else json.loads(args.architecture)
    else:
        arch = table.paper_architecture if args.paper else table.reduced
    arch = with_family(arch, args.model)
    paper = args.objective == "paper"
    options = {
        "activation": "ReLU" if paper else "SiLU",
        "likelihood_head": "paper" if paper else "conv3x3",
        "skip_stochastic": args.skip_stochastic == "true",
        "n_mix": args.n_mix,
        "log_scale_min": args.log_scale_min,
    }
    save_dir = Path(args.save_dir) if args.save_dir else Path(tempfile.mkdtemp(prefix="hvae-ood-table-"))
    print(harness.header(), flush=True)
    print(
        f"device {dev}, {train_threads} threads, budget {args.minutes} min, data {root}, runs in {save_dir}", flush=True
    )
    ood_sets = available_sets(table.ood_sets, root)
    if not ood_sets:
        print(f"none of the OOD sets of {args.in_dist} ({', '.join(table.ood_sets)}) is in {root}", file=sys.stderr)
        return 2

    # Estimate the cost of training and scoring with an untrained copy of the model.
    probe_set = load_dataset(args.in_dist, {"split": "validation"}, root, max_examples=args.batch_size)
    probe_x = probe_set.fixed().to(dev)
    torch.manual_seed(args.seed)
    likelihood = "bernoulli" if table.likelihood.startswith("Bernoulli") else "dlogmix"
    probe = make_model(ModelConfig(tuple(probe_x.shape[1:]), arch, likelihood, **options)).to(dev)
    train_s = _time_per_image(probe, probe_x, 5, True, precision=args.precision)
    torch.set_num_threads(max(1, args.score_threads))
    score_s = _time_per_image(probe, probe_x, 3, False, n_samples=args.iw_samples)
    torch.set_num_threads(train_threads)
    n_train_all = len(load_dataset(args.in_dist, {"split": "train"}, root, download=False))
    # Scoring may take up to score_fraction of the budget: fewer images per set when it would take more
    # (the in-distribution test set, the OOD sets and the train split are scored).
    sizes = [table.n_test] * (1 + len(ood_sets)) + [n_train_all]
    n_eval = args.n_eval
    while n_eval > 500 and 1.3 * score_s * sum(min(n_eval, n) for n in sizes) > args.score_fraction * args.minutes * 60:
        n_eval = int(n_eval * 0.8)
    reserve_s = 1.3 * score_s * sum(min(n_eval, n) for n in sizes) + 30
    train_minutes = args.minutes - (time.time() - t0) / 60 - reserve_s / 60
    if train_minutes <= 0 and not args.epochs:
        print(f"the budget is too small: scoring alone needs about {reserve_s / 60:.1f} min", file=sys.stderr)
        return 2
    # Whole epochs are the unit of the schedules and of the time check, so keep at least ~4 of them
    # (the probe is one short measurement on a shared machine: allow for it being 50% optimistic).
    n_train = args.n_train or int(min(n_train_all, max(10000, train_minutes * 60 / (train_s * 1.5) / 4)))
    epoch_s = train_s * n_train
    guess = args.epochs or max(1, int(train_minutes * 60 / (epoch_s * 1.15)))
    print(
        f"probe: {train_s * 1e3:.2f} ms/image training, {score_s * 1e3:.2f} ms/image scoring; {n_train} "
        f"training images, {n_eval} per evaluation set; "
        f"{train_minutes:.1f} min for training (about {guess} epochs), {reserve_s / 60:.1f} min kept for scoring",
        flush=True,
    )
    del probe

    training = TrainingConfig(
        epochs=guess,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        free_nats=args.free_nats,
        free_nats_epochs=args.free_nats_fraction * guess,
        warmup_epochs=0.2 * guess,
        precision=args.precision,
        free_nats_mode=args.free_nats_mode or ("element" if paper else "layer"),
        data_init=paper,
    )
    val_ood = ood_sets[0]
    cfg = make_run_config(
        training,
        train_datasets={args.in_dist: {"dynamic": True, "split": "train"}},
        val_datasets={
            args.in_dist: {"dynamic": False, "split": "validation"},
            val_ood: {"dynamic": False, "split": "validation"},
        },
        architecture=arch,
        likelihood=table.likelihood,
        **options,
        test_every=max(1, guess // 8),
        seed=args.seed,
        data_root=root,
        n_train_examples=n_train if n_train < n_train_all else None,
        n_val_examples=args.n_val,
    )
    run = train_run(
        cfg,
        save_dir=save_dir,
        device=dev,
        max_minutes=None if args.epochs else train_minutes,
        fit_epochs_to_budget=not args.epochs,
        verbose=False,
    )
    t_train = time.time() - t0
    torch.set_num_threads(max(1, args.score_threads))
    n_latents = len(cfg["architecture"]["config_stochastic"])
    extra = {name: {"split": "validation"} for name in ood_sets[1:]}
    files = score_run(
        run,
        ks=list(range(1, n_latents)),
        iw_samples_elbo=args.iw_samples,
        iw_samples_lk=args.iw_samples,
        n_eval_examples=n_eval,
        device=dev,
        extra_val=extra,
        seed=args.seed,
    )
    rows, curves = collect_results([f.parent for f in files][:1])
    out = write_results(rows, curves, files[0].parent)
    val_label = load_dataset(val_ood, {"split": "validation"}, root, download=False, max_examples=1).label
    curve = learning_curve.learning_curve(run, val_label)
    learning_curve.write(curve, files[0].parent, val_label)
    total = time.time() - t0
    state = json.loads((run / "checkpoints" / "last" / "config.json").read_text())["training_state"]
    best = json.loads((run / "checkpoints" / "best" / "config.json").read_text())["training_state"]["epoch"]

    header = (
        f"{dt.date.today()} | {args.in_dist} | {arch.get('model', 'VAE')} | budget {args.minutes} min on {dev} "
        f"({harness.cpu_name()}, {os.cpu_count()} cores, {train_threads} threads "
        f"training, {args.score_threads} scoring) | trained {state['epoch']} epochs (scored checkpoint: epoch "
        f"{best}, best validation ELBO), train+val {t_train / 60:.1f} min, total {total / 60:.1f} min | "
        f"{n_train} training images, batch {args.batch_size}, lr {args.learning_rate}, {args.precision}, "
        f"objective {args.objective}, skip connections {args.skip_stochastic}, {args.n_mix} mixture components, "
        f"log-scale floor {args.log_scale_min}, free nats {args.free_nats} per {training.free_nats_mode} "
        f"over {args.free_nats_fraction:g} of the epochs | "
        f"S = S' = {args.iw_samples}, up to {n_eval} "
        f"images per set" + (f"\n\n{table.data_note}" if table.data_note else "")
    )
    stats = ["L"] + [f"L>{k}" for k in range(1, n_latents)] + [f"LLR>{k}" for k in range(1, n_latents)]
    lines = [
        header,
        "",
        "| OOD set | statistic | AUROC | AUPRC | FPR80 | paper's HVAE AUROC |",
        "|---|---|---|---|---|---|",
    ]
    for ood in dict.fromkeys(r["ood"] for r in rows if not r["ood"].endswith(" train")):
        for stat in stats:
            for r in rows:
                if r["ood"] == ood and r["statistic"] == stat:
                    paper_auroc = table.paper.get((ood, stat))
                    lines.append(
                        f"| {ood} | {stat} | {r['auroc']:.3f} | {r['auprc']:.3f} | {r['fpr80']:.3f} | "
                        f"{'' if paper_auroc is None else paper_auroc} |"
                    )
                    break
    text = "\n".join(lines) + "\n\n" + learning_curve.markdown(curve, val_label, args.n_val)
    print("\n" + text)
    print(f"\nrun {run}\nscores, results.csv/json, roc.png and learning_curve.png in {out['csv'].parent}")
    if args.markdown:
        atomic_write_text(args.markdown, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
