"""Command line: ``hvae-detect demo | train | score | results``.

Every flag is declared here; each command's work lives in ``hvae_detect.commands``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hvae_detect.architectures import PRESETS
from hvae_detect.commands import demo, results, score, train
from hvae_detect.datasets import DATA_ROOT_ENV
from hvae_detect.training import PRECISIONS, SEED_TRAINING, TrainingConfig


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _cmd_demo(args) -> int:
    return demo.run(args)


def _cmd_train(args) -> int:
    if args.resume:
        train.train_run(resume=args.resume, device=args.device, download=not args.no_download,
                        max_minutes=args.max_minutes, epochs=args.epochs_override, verbose=not args.quiet,
                        quiet=args.quiet)
        return 0
    training = TrainingConfig(**{name: getattr(args, name) for name in TrainingConfig.field_names()})
    cfg = train.make_run_config(
        training, train_datasets=args.train_datasets, val_datasets=args.val_datasets, architecture=args.architecture,
        config_deterministic=args.config_deterministic, config_stochastic=args.config_stochastic,
        likelihood=args.likelihood, model=args.model, n_mix=args.n_mix, test_every=args.test_every, seed=args.seed,
        data_root=args.data_root, n_train_examples=args.n_train_examples, n_val_examples=args.n_val_examples)
    train.train_run(cfg, save_dir=args.save_dir, device=args.device, download=not args.no_download,
                    max_minutes=args.max_minutes, verbose=not args.quiet, quiet=args.quiet)
    return 0


def _cmd_score(args) -> int:
    score.score_run(args.model, ks=args.n_latents_skip, iw_samples_elbo=args.iw_samples_elbo,
                    iw_samples_lk=args.iw_samples_Lk, batch_size=args.batch_size,
                    n_eval_examples=args.n_eval_examples, save_dir=args.save_dir, device=args.device,
                    data_root=args.data_root, checkpoint=args.checkpoint, val_datasets=args.val_datasets,
                    extra_val=args.extra_val_datasets, download=not args.no_download, seed=args.seed,
                    quiet=args.quiet)
    return 0


def _cmd_results(args) -> int:
    rows, curves = results.collect_results(args.scores_dir)
    print(results.format_table(rows))
    first = Path(args.scores_dir[0])
    out = results.write_results(rows, curves, args.output_dir or (first if first.is_dir() else first.parent))
    print(f"\nwrote {out['csv']}, {out['json']}, {out['roc']}")
    return 0


def _add_demo(sub):
    p = sub.add_parser("demo", help="train on bundled MNIST digits 0-4 and detect 5-9 as out-of-distribution",
                       description=demo.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=_positive_int, default=20, help="training epochs (default 20)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--architecture", default="small", help="small, paper-mnist or paper-cifar (default small)")
    p.add_argument("--iw-samples", type=_positive_int, default=1, help="importance samples for L and L>k")
    p.add_argument("--seed", type=int, default=0, help="random seed for the split, training and scoring")
    p.add_argument("--output", default="hvae-demo-output", help="folder for the plots (default ./hvae-demo-output)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the table as JSON to PATH")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_demo)


def _add_train(sub, fmt):
    d = SEED_TRAINING
    p = sub.add_parser("train", help="train a hierarchical VAE with the seed's flags", formatter_class=fmt,
                       description="Train a hierarchical VAE (the seed's scripts/dvae_run.py flags).")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch_size", type=int, default=d.batch_size)
    p.add_argument("--learning_rate", "--lr", type=float, default=d.learning_rate)
    p.add_argument("--free_nats", type=float, default=d.free_nats, help="free nats per latent layer")
    p.add_argument("--free_nats_epochs", type=float, default=d.free_nats_epochs,
                   help="free nats held for the first half, then annealed to 0 by this epoch")
    p.add_argument("--warmup_epochs", type=float, default=d.warmup_epochs,
                   help="KL weight rises from 0 to 1 over these epochs")
    p.add_argument("--precision", default=d.precision, choices=PRECISIONS,
                   help="training arithmetic: bfloat16 mixed precision (float32 bound) or auto (bfloat16 on CUDA)")
    p.add_argument("--test_every", type=int, default=10, help="validate every this many epochs")
    p.add_argument("--train_datasets", default=train.SEED_TRAIN, help='JSON {"Name": {"dynamic": bool, "split": ...}}')
    p.add_argument("--val_datasets", default=train.SEED_VAL,
                   help="JSON like --train_datasets; the first is in-distribution")
    p.add_argument("--model", default="VAE", choices=train.MODELS, help="the seed's hierarchical VAE")
    p.add_argument("--likelihood", default=None, choices=sorted(train.LIKELIHOOD_FLAGS),
                   help="default: Bernoulli for Binarized data, discretized logistic mixture otherwise")
    p.add_argument("--config_deterministic", default=None, help="the seed's JSON list of block lists")
    p.add_argument("--config_stochastic", default=None, help="the seed's JSON list of latent layers")
    p.add_argument("--architecture", default=None, choices=sorted(PRESETS),
                   help="preset used when no --config_* is given (default paper-mnist)")
    p.add_argument("--n_mix", type=int, default=10, help="mixture components of the discretized logistic mixture")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save_dir", default="./models", help="runs go to SAVE_DIR/<dataset>-<start time>/")
    p.add_argument("--device", default="auto")
    p.add_argument("--data_root", default=None,
                   help=f"folder with <dataset>.npz files (default ${{{DATA_ROOT_ENV}}} or ./data)")
    p.add_argument("--no_download", action="store_true", help="never download with torchvision")
    p.add_argument("--n_train_examples", type=int, default=None, help="use only the first N training images")
    p.add_argument("--n_val_examples", type=int, default=None, help="use only the first N images of each val set")
    p.add_argument("--max_minutes", type=float, default=None, help="stop after the last epoch that fits")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--epochs_override", type=int, default=None,
                   help="with --resume: train up to this many epochs in total")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_cmd_train)


def _add_score(sub, fmt):
    s = sub.add_parser("score", help="compute L, L>k and LLR>k for a trained run", formatter_class=fmt,
                       description="Score a run or a saved detector (the seed's scripts/ood-llr.py).")
    s.add_argument("--model", required=True, metavar="DIR",
                   help="run folder written by hvae-detect train, or a folder written by HVAEOutlierDetector.save")
    s.add_argument("--iw_samples_elbo", type=int, default=1, help="importance samples S for L")
    s.add_argument("--iw_samples_Lk", type=int, default=1, help="importance samples S' for L>k")
    s.add_argument("--n_latents_skip", type=int, nargs="+", default=[1], help="k (one or more)")
    s.add_argument("--batch_size", type=int, default=500)
    s.add_argument("--n_eval_examples", type=int, default=None, help="cap on the images per set")
    s.add_argument("--save_dir", default=None, help="default: DIR/scores")
    s.add_argument("--checkpoint", default="best", choices=("best", "last"), help="of a run folder")
    s.add_argument("--val_datasets", default=None,
                   help="JSON of the sets to score, the first in-distribution (default: the run's validation sets; "
                        "required for a detector folder)")
    s.add_argument("--extra_val_datasets", default=None,
                   help='JSON of further OOD sets, e.g. {"KMNISTBinarized": {"split": "validation"}}')
    s.add_argument("--device", default="auto")
    s.add_argument("--data_root", default=None, help="default: the run's data_root")
    s.add_argument("--no_download", action="store_true")
    s.add_argument("--seed", type=int, default=None, help="seed of the importance samples (default: the model's)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(run=_cmd_score)


def _add_results(sub, fmt):
    r = sub.add_parser("results", help="AUROC / AUPRC / FPR80 / FPR95 tables from saved scores",
                       formatter_class=fmt, description="Tables and ROC curves (the seed's ood-llr-results.py).")
    r.add_argument("scores_dir", nargs="+", help="folders with scores-*.npz (or the files)")
    r.add_argument("--output_dir", default=None, help="default: the first scores folder")
    r.set_defaults(run=_cmd_results)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hvae-detect", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    _add_demo(sub)
    _add_train(sub, fmt)
    _add_score(sub, fmt)
    _add_results(sub, fmt)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"hvae-detect {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
