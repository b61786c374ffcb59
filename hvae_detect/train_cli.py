"""The flags of ``hvae-detect train`` (the paper's scripts/dvae_run.py's), added to the command line by
``hvae_detect.cli``. The work lives in ``hvae_detect.commands.train``, imported only when the command runs,
so that ``--help`` and usage errors are answered without torch.
"""

from __future__ import annotations

import argparse

from hvae_detect.commands import defaults
from hvae_detect.data.dataset_names import DATA_ROOT_ENV
from hvae_detect.image_cli import int_at_least
from hvae_detect.models.architectures import PRESETS
from hvae_detect.models.registry import model_names
from hvae_detect.precision import PRECISIONS
from hvae_detect.training.config import SEED_TRAINING, TrainingConfig

_positive_int = int_at_least(1, "a positive integer")
_non_negative_int = int_at_least(0, "a non-negative integer")


def _cmd_train(args) -> int:
    from hvae_detect.commands import run_config, train

    if args.resume:  # --epochs (or --epochs_override) extends the run to that many epochs in total
        extend = args.epochs_override if args.epochs_override is not None else args.epochs
        train.train_run(
            resume=args.resume,
            device=args.device,
            download=not args.no_download,
            max_minutes=args.max_minutes,
            epochs=extend,
            verbose=not args.quiet,
            quiet=args.quiet,
            data_workers=args.data_workers,
        )
        return 0
    if args.epochs is None:
        args.epochs = SEED_TRAINING.epochs
    training = TrainingConfig(**{name: getattr(args, name) for name in TrainingConfig.field_names()})
    if args.padded_shape is not None:
        raise ValueError(
            f"--padded_shape {args.padded_shape}: padding the input is not implemented here; leave the "
            "flag out (the paper's commands do not set it)"
        )
    # The paper's flags that are accepted but change nothing here, each with the reason (also in --help).
    not_applied = {
        flag: (getattr(args, dest), why) for flag, dest, why in _NOT_APPLIED if getattr(args, dest) is not None
    }
    if not_applied and not args.quiet:
        print(
            "accepted, not applied here: "
            + "; ".join(f"--{flag} {value!r} ({why})" for flag, (value, why) in not_applied.items()),
            flush=True,
        )
    cfg = run_config.make_run_config(
        training,
        train_datasets=args.train_datasets,
        val_datasets=args.val_datasets,
        architecture=args.architecture,
        config_deterministic=args.config_deterministic,
        config_stochastic=args.config_stochastic,
        likelihood=args.likelihood,
        model=args.model,
        n_mix=args.n_mix,
        test_every=args.test_every,
        seed=args.seed,
        data_root=args.data_root,
        n_train_examples=args.n_train_examples,
        n_val_examples=args.n_val_examples,
        activation=args.activation,
        likelihood_head=args.likelihood_head,
        skip_stochastic=args.skip_stochastic,
        q_dropout=args.q_dropout,
        p_dropout=args.p_dropout,
        log_scale_min=args.log_scale_min,
        test_samples=args.test_samples_given or 1,
        test_importance_weighted=bool(args.test_importance_weighted_given),
        dynamic=args.dynamic,
        not_applied={flag: value for flag, (value, _) in not_applied.items()},
    )
    train.train_run(
        cfg,
        save_dir=args.save_dir,
        device=args.device,
        download=not args.no_download,
        max_minutes=args.max_minutes,
        verbose=not args.quiet,
        quiet=args.quiet,
        data_workers=args.data_workers,
    )
    return 0


def _str2bool(text):
    """The paper's str2bool: yes/true/t/y/1 and no/false/f/n/0 (a bare flag means true)."""
    if isinstance(text, bool):
        return text
    value = text.strip().lower()
    if value in ("yes", "true", "t", "y", "1"):
        return True
    if value in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


# Flags of the paper's scripts/dvae_run.py that are accepted but have no effect here:
# (flag, argparse dest, why). _cmd_train prints the given ones in one line and records them in run.json.
_NOT_APPLIED = (
    (
        "test_samples",
        "test_samples_given",
        "validation here uses one posterior sample per image; score with hvae-detect score --iw_samples_elbo S",
    ),
    ("test_importance_weighted", "test_importance_weighted_given", "as --test_samples"),
    ("n_eval_samples", "n_eval_samples", "no sample-grid images are drawn during training here"),
    ("use_wandb", "use_wandb", "no Weights & Biases logging here; every epoch goes to log.jsonl in the run folder"),
    ("name", "name", "the wandb run name; the run folder is named <first train dataset>-<start time>"),
    ("test_batch_size", "test_batch_size", "the paper's dvae_run.py ignores it too (validation batches are fixed)"),
    (
        "test_datasets",
        "test_datasets",
        "not evaluated during training; score them afterwards with hvae-detect score --extra_val_datasets",
    ),
    ("input_shape", "input_shape", "taken from the data, as the paper's script also overwrites it"),
)


def add_train(sub, fmt):
    """Add ``train`` and its flags (the paper's scripts/dvae_run.py's) to the subparsers ``sub``."""
    d = SEED_TRAINING
    p = sub.add_parser(
        "train",
        help="train a hierarchical VAE with the paper's flags",
        formatter_class=fmt,
        description="Train a hierarchical VAE (the paper's scripts/dvae_run.py flags).",
    )
    p.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help=f"epochs in total (default {d.epochs}); with --resume, extends the run to this many",
    )
    p.add_argument(
        "--batch_size",
        type=int,
        default=d.batch_size,
        help="the global batch: under torchrun each of N processes reads batch_size / N of it",
    )
    p.add_argument("--learning_rate", "--lr", type=float, default=d.learning_rate)
    p.add_argument("--free_nats", type=float, default=d.free_nats, help="free nats per latent layer")
    p.add_argument(
        "--free_nats_epochs",
        type=float,
        default=d.free_nats_epochs,
        help="free nats held for the first half, then annealed to 0 by this epoch",
    )
    p.add_argument(
        "--warmup_epochs", type=float, default=d.warmup_epochs, help="KL weight rises from 0 to 1 over these epochs"
    )
    p.add_argument(
        "--precision",
        default=d.precision,
        choices=PRECISIONS,
        help="training arithmetic: bfloat16 mixed precision (float32 bound) or auto (bfloat16 on CUDA "
        "and on CPUs with bfloat16 instructions)",
    )
    p.add_argument(
        "--compile",
        default=d.compile,
        action=argparse.BooleanOptionalAction,
        help="torch.compile the training pass: faster steps after a compilation of about a minute "
        "(benchmarks/results/2026-12-06-bfloat16-training-cpu.md), so for long runs",
    )
    p.add_argument("--test_every", type=int, default=10, help="validate every this many epochs")
    p.add_argument(
        "--train_datasets", default=defaults.SEED_TRAIN, help='JSON {"Name": {"dynamic": bool, "split": ...}}'
    )
    p.add_argument(
        "--val_datasets", default=defaults.SEED_VAL, help="JSON like --train_datasets; the first is in-distribution"
    )
    p.add_argument(
        "--model",
        default=None,
        type=str.upper,
        help=f"one of {model_names()}, the model family (HVAE = VAE, the paper's bottom-up hierarchical VAE; "
        "LVAE the ladder VAE; BIVA bidirectional inference); default: the --architecture preset's "
        "(VAE for the paper-* presets, BIVA for biva-*)",
    )
    p.add_argument(
        "--likelihood",
        "--likelihood_module",
        default=None,
        choices=sorted(defaults.LIKELIHOOD_FLAGS),
        help="default: Bernoulli for Binarized data, discretized logistic mixture otherwise",
    )
    p.add_argument(
        "--config_deterministic",
        default=None,
        help="the paper's JSON list of block lists, as JSON text or the path of a JSON file",
    )
    p.add_argument(
        "--config_stochastic",
        default=None,
        help="the paper's JSON list of latent layers, as JSON text or the path of a JSON file",
    )
    # The paper's objective and model (scripts/dvae_run.py; see docs/differences.md).
    p.add_argument(
        "--free_nats_mode",
        default=d.free_nats_mode,
        choices=("element", "layer"),
        help="element: the paper's FreeNats (each KL element floored at free_nats / channels); "
        "layer: each latent's summed KL floored at free_nats",
    )
    p.add_argument(
        "--data_init",
        default=d.data_init,
        action=argparse.BooleanOptionalAction,
        help="data-dependent weight-norm initialisation on the first batch (the paper's)",
    )
    p.add_argument(
        "--activation",
        default="ReLU",
        help="activation of every block and Gaussian layer: ReLU (the paper's default), SiLU/Swish, "
        "LeakyReLU, SELU, ELU, SoftPlus, Tanh, Identity",
    )
    p.add_argument(
        "--likelihood_head",
        default="paper",
        choices=("paper", "conv3x3"),
        help="paper: 3x3 convolution after the activation for Bernoulli, 1x1 convolution for the "
        "mixture; conv3x3: this package's earlier head",
    )
    p.add_argument(
        "--skip_stochastic",
        type=_str2bool,
        nargs="?",
        const=True,
        default=True,
        help="skip connections around each latent (false: each stage sees only the latent)",
    )
    p.add_argument(
        "--log_scale_min",
        type=float,
        default=-7.0,
        help="floor on the discretized logistic mixture's log-scales (-7: PixelCNN++'s and the paper's; "
        "benchmarks/results/2026-12-01-cifar10-log-scale-floor.md measures -4 and -3 for CIFAR10)",
    )
    p.add_argument("--q_dropout", type=float, default=0.0, help="dropout in the inference residual blocks")
    p.add_argument("--p_dropout", type=float, default=0.0, help="dropout in the generative residual blocks")
    p.add_argument(
        "--train_samples", type=_positive_int, default=d.train_samples, help="posterior samples per training image"
    )
    p.add_argument(
        "--train_importance_weighted",
        type=_str2bool,
        nargs="?",
        const=True,
        default=d.train_importance_weighted,
        help="combine the training samples by log-mean-exp (importance-weighted bound), not the mean",
    )
    p.add_argument(
        "--dynamic",
        type=_str2bool,
        nargs="?",
        const=True,
        default=None,
        help='"dynamic" for training sets whose JSON does not set it (true: a fresh binarisation / '
        "dequantisation draw every epoch; see docs/differences.md for the paper's inverted flag)",
    )
    p.add_argument(
        "--padded_shape",
        default=None,
        help="the paper's input padding: not implemented here, refused with a message when given",
    )
    # Accepted for the paper's scripts, recorded in run.json, but not applied (reasons in _NOT_APPLIED):
    p.add_argument(
        "--test_samples",
        dest="test_samples_given",
        type=_positive_int,
        default=None,
        help="posterior samples in validation: not applied, validation uses 1 (recorded in run.json)",
    )
    p.add_argument(
        "--test_importance_weighted",
        dest="test_importance_weighted_given",
        type=_str2bool,
        nargs="?",
        const=True,
        default=None,
        help="not applied, as --test_samples (recorded in run.json)",
    )
    p.add_argument("--n_eval_samples", type=int, default=None, help="not applied: no sample grids are drawn here")
    p.add_argument(
        "--use_wandb",
        type=_str2bool,
        nargs="?",
        const=True,
        default=None,
        help="not applied: no wandb logging here (log.jsonl in the run folder)",
    )
    p.add_argument("--name", default=None, help="not applied: the wandb run name")
    p.add_argument("--test_batch_size", type=int, default=None, help="not applied (the paper's script ignores it too)")
    p.add_argument(
        "--data_workers",
        type=_non_negative_int,
        default=None,
        help="DataLoader worker processes: batches stream through a DataLoader (always under torchrun); "
        "without it a plain run keeps its training set on the device",
    )
    p.add_argument(
        "--test_datasets",
        default=None,
        help="not applied: score these after training (hvae-detect score --extra_val_datasets)",
    )
    p.add_argument("--input_shape", default=None, help="not applied: taken from the data (as in the paper)")
    p.add_argument(
        "--architecture",
        default=None,
        choices=sorted(PRESETS),
        help="preset used when no --config_* is given (default paper-mnist)",
    )
    p.add_argument(
        "--n_mix", type=_positive_int, default=10, help="mixture components of the discretized logistic mixture"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save_dir", default="./models", help="runs go to SAVE_DIR/<dataset>-<start time>/")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--data_root",
        "--root",
        default=None,
        help=f"folder with <dataset>.npz files (default ${{{DATA_ROOT_ENV}}} or ./data)",
    )
    p.add_argument("--no_download", action="store_true", help="never download with torchvision")
    p.add_argument("--n_train_examples", type=_positive_int, default=None, help="use only the first N training images")
    p.add_argument(
        "--n_val_examples", type=_positive_int, default=None, help="use only the first N images of each val set"
    )
    p.add_argument("--max_minutes", type=float, default=None, help="stop after the last epoch that fits")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument(
        "--epochs_override",
        type=_positive_int,
        default=None,
        help="with --resume: train up to this many epochs in total",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_cmd_train)
