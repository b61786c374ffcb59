"""Command line: ``hvae-detect demo | train | score | results | fit | detect``.

Every flag is declared here (fit's and detect's in ``hvae_detect.image_cli``); each command's work lives
in ``hvae_detect.commands``, imported only when that command runs, so that ``--help`` and usage errors
are answered without torch.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
from pathlib import Path

from hvae_detect.commands import defaults
from hvae_detect.data.dataset_names import DATA_ROOT_ENV
from hvae_detect.image_cli import add_detect as _add_detect
from hvae_detect.image_cli import add_fit as _add_fit
from hvae_detect.image_cli import int_at_least
from hvae_detect.models.architectures import PRESETS
from hvae_detect.models.registry import model_names
from hvae_detect.precision import PRECISIONS
from hvae_detect.training.config import SEED_TRAINING, TrainingConfig


class _Parser(argparse.ArgumentParser):
    """argparse with the package's usage errors: one line on stderr, exit status 2 (README)."""

    def error(self, message, prog=None):
        self.exit(2, f"{prog or self.prog}: error: {message} (see --help)\n")

    def parse_args(self, args=None, namespace=None):
        args, extras = self.parse_known_args(args, namespace)
        if extras:  # argparse reports them from the top parser: name the command they were given to
            command = getattr(args, "command", None)
            self.error(f"unrecognized arguments: {' '.join(extras)}", f"{self.prog} {command}" if command else None)
        return args


_positive_int = int_at_least(1, "a positive integer")
_non_negative_int = int_at_least(0, "a non-negative integer")


def _module_doc(name: str) -> str | None:
    """The docstring of module ``name``, read from its source without running it."""
    try:
        return ast.get_docstring(ast.parse(Path(importlib.util.find_spec(name).origin).read_text()))
    except (OSError, TypeError, SyntaxError):  # no source (a byte-compiled install): no description
        return None


def _cmd_demo(args) -> int:
    from hvae_detect.commands import demo

    return demo.run(args)


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


def _cmd_score(args) -> int:
    from hvae_detect.commands import score

    score.score_run(
        args.model,
        ks=args.n_latents_skip,
        iw_samples_elbo=args.iw_samples_elbo,
        iw_samples_lk=args.iw_samples_Lk,
        batch_size=args.batch_size,
        n_eval_examples=args.n_eval_examples,
        save_dir=args.save_dir,
        device=args.device,
        data_root=args.data_root,
        checkpoint=args.checkpoint,
        val_datasets=args.val_datasets,
        extra_val=args.extra_val_datasets,
        download=not args.no_download,
        seed=args.seed,
        overwrite=args.overwrite,
        quiet=args.quiet,
    )
    return 0


def _cmd_results(args) -> int:
    args.scores_dir = [*args.scores_dir, *args.source_dir]
    if not args.scores_dir:
        raise ValueError("name at least one folder of score files (positionally or with --source_dir)")
    from hvae_detect.commands import results

    rows, curves = results.collect_results(args.scores_dir)
    print(results.format_table(rows))
    first = Path(args.scores_dir[0])
    out = results.write_results(
        rows, curves, args.output_dir or (first if first.is_dir() else first.parent), overwrite=args.overwrite
    )
    print(f"\nwrote {out['csv']}, {out['json']}, {out['roc']}")
    return 0


def _add_demo(sub):
    p = sub.add_parser(
        "demo",
        help="train on bundled MNIST digits 0-4; detect erased digits and digits 5-9 as OOD",
        description=_module_doc("hvae_detect.commands.demo"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help=f"training epochs (default {defaults.DEMO_EPOCHS}; with --paper {defaults.PAPER_EPOCHS})",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--architecture", default="small", help="small, paper-mnist or paper-cifar (default small)")
    p.add_argument(
        "--iw-samples",
        type=_positive_int,
        default=defaults.DEMO_IW_SAMPLES,
        help=f"importance samples S for L (default {defaults.DEMO_IW_SAMPLES})",
    )
    p.add_argument(
        "--iw-samples-lk",
        type=_positive_int,
        default=defaults.DEMO_IW_SAMPLES_LK,
        help=f"importance samples S' for L>k (default {defaults.DEMO_IW_SAMPLES_LK})",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed for the split, training and scoring")
    p.add_argument(
        "--n-train",
        type=_positive_int,
        default=None,
        metavar="N",
        help="train on only the first N images (quick checks)",
    )
    p.add_argument(
        "--n-test", type=_positive_int, default=None, metavar="N", help="score at most N images per set (quick checks)"
    )
    p.add_argument("--output", default="hvae-demo-output", help="folder for the plots (default ./hvae-demo-output)")
    p.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help='also write the tables to PATH: {set: {statistic: {"auroc", "auprc", "fpr80"}}}',
    )
    p.add_argument(
        "--paper",
        action="store_true",
        help="run the paper's Fashion-MNIST -> MNIST pair instead (longer; needs --data_root)",
    )
    p.add_argument(
        "--data_root",
        default=None,
        help=f"with --paper: folder with fashion_mnist.npz and mnist.npz (default ${DATA_ROOT_ENV} or ./data)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_demo)


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


def _add_train(sub, fmt):
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
        "(benchmarks/RESULTS.md), so for long runs",
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
        "benchmarks/RESULTS.md measures -4 and -3 for CIFAR10)",
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


def _add_score(sub, fmt):
    s = sub.add_parser(
        "score",
        help="compute L, L>k and LLR>k for a trained run",
        formatter_class=fmt,
        description="Score a run or a saved detector (the paper's scripts/ood-llr.py).",
    )
    s.add_argument(
        "--model",
        "--model_dir",
        dest="model",
        required=True,
        metavar="DIR",
        help="run folder written by hvae-detect train, or a folder written by HVAEOutlierDetector.save",
    )
    s.add_argument("--iw_samples_elbo", type=_positive_int, default=1, help="importance samples S for L")
    s.add_argument("--iw_samples_Lk", type=_positive_int, default=1, help="importance samples S' for L>k")
    s.add_argument("--n_latents_skip", type=int, nargs="+", default=[1], help="k (one or more)")
    s.add_argument("--batch_size", type=_positive_int, default=500)
    s.add_argument("--n_eval_examples", type=_positive_int, default=None, help="cap on the images per set")
    s.add_argument("--save_dir", default=None, help="default: DIR/scores")
    s.add_argument("--checkpoint", default="best", choices=("best", "last"), help="of a run folder")
    s.add_argument(
        "--val_datasets",
        default=None,
        help="JSON of the sets to score, the first in-distribution (default: the run's validation sets; "
        "required for a detector folder)",
    )
    s.add_argument(
        "--extra_val_datasets",
        default=None,
        help='JSON of further OOD sets, e.g. {"KMNISTBinarized": {"split": "validation"}}',
    )
    s.add_argument("--device", default="auto")
    s.add_argument("--data_root", default=None, help="default: the run's data_root")
    s.add_argument("--no_download", action="store_true")
    s.add_argument("--seed", type=int, default=None, help="seed of the importance samples (default: the model's)")
    s.add_argument("--overwrite", action="store_true", help="replace score files that exist already")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(run=_cmd_score)


def _add_results(sub, fmt):
    r = sub.add_parser(
        "results",
        help="AUROC / AUPRC / FPR80 / FPR95 tables from saved scores",
        formatter_class=fmt,
        description="Tables and ROC curves (the paper's ood-llr-results.py).",
    )
    r.add_argument("scores_dir", nargs="*", help="folders with scores-*.npz (or the files)")
    r.add_argument(
        "--source_dir",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of score files, as the paper's ood-llr-results.py takes it (repeatable)",
    )
    r.add_argument("--output_dir", default=None, help="default: the first scores folder")
    r.add_argument("--overwrite", action="store_true", help="replace results.csv/json and roc.png that exist")
    r.set_defaults(run=_cmd_results)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hvae-detect", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    _add_demo(sub)
    _add_train(sub, fmt)
    _add_score(sub, fmt)
    _add_results(sub, fmt)
    _add_fit(sub)
    _add_detect(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError) as e:  # what the user asked for cannot be done: a usage error
        print(f"hvae-detect {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (FloatingPointError, OSError) as e:  # training diverged, a disk error: the run failed
        print(f"hvae-detect {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
