"""Command line: ``hvae-detect demo | train | score | results | fit | detect``.

Every flag is declared here (train's in ``hvae_detect.train_cli``, fit's and detect's in
``hvae_detect.image_cli``); each command's work lives in ``hvae_detect.commands``, imported only when that
command runs, so that ``--help`` and usage errors are answered without torch.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import sys
from pathlib import Path

from hvae_detect.commands import defaults
from hvae_detect.data.dataset_names import DATA_ROOT_ENV
from hvae_detect.image_cli import add_detect as _add_detect
from hvae_detect.image_cli import add_fit as _add_fit
from hvae_detect.image_cli import int_at_least
from hvae_detect.train_cli import add_train as _add_train

_LONG_FLAG = re.compile(r"--[A-Za-z0-9][\w-]*")  # --name: the part of --name=value that names the flag
_FLAG_IN_TEXT = re.compile(r"(?<![\w-])" + _LONG_FLAG.pattern)


def _dashed(flag: str) -> str:
    """``--iw_samples_Lk`` as ``--iw-samples-Lk``, the one spelling that --help shows; other strings as given."""
    return "--" + flag[2:].replace("_", "-") if _LONG_FLAG.fullmatch(flag) else flag


def _dashed_text(text):
    """A help text or description with every flag it names spelled as --help shows it."""
    return _FLAG_IN_TEXT.sub(lambda m: _dashed(m.group()), text) if isinstance(text, str) else text


class _Parser(argparse.ArgumentParser):
    """argparse with the package's usage errors (one line on stderr, exit status 2, README) and one flag
    style: every long flag is declared, and shown in --help, with dashes (``--data-root``), and every flag is
    also accepted with underscores (``--data_root``, the paper's spelling): the command line's flag names are
    read with dashes before parsing, ``--flag=value`` and abbreviations included. ``dest`` is what argparse
    makes of either spelling (``data_root``). Subparsers are of this class, so every command gets both."""

    def __init__(self, *args, description=None, epilog=None, **kwargs):
        super().__init__(*args, description=_dashed_text(description), epilog=_dashed_text(epilog), **kwargs)

    def add_argument(self, *names, **kwargs):
        if "help" in kwargs:
            kwargs["help"] = _dashed_text(kwargs["help"])
        return super().add_argument(*map(_dashed, names), **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        given = sys.argv[1:] if args is None else list(args)
        read, spelled = [], {}
        for i, token in enumerate(given):
            if token == "--":  # what follows is positional
                read += given[i:]
                break
            name, eq, value = token.partition("=")
            read.append(_dashed(name) + eq + value)
            spelled[read[-1]] = token
        parsed, extras = super().parse_known_args(read, namespace)
        return parsed, [spelled.get(token, token) for token in extras]  # unrecognised: as the user wrote them

    def error(self, message, prog=None):
        self.exit(2, f"{prog or self.prog}: error: {message} (see --help)\n")

    def parse_args(self, args=None, namespace=None):
        args, extras = self.parse_known_args(args, namespace)
        if extras:  # argparse reports them from the top parser: name the command they were given to
            command = getattr(args, "command", None)
            self.error(f"unrecognized arguments: {' '.join(extras)}", f"{self.prog} {command}" if command else None)
        return args


_positive_int = int_at_least(1, "a positive integer")


def _module_doc(name: str) -> str | None:
    """The docstring of module ``name``, read from its source without running it."""
    try:
        return ast.get_docstring(ast.parse(Path(importlib.util.find_spec(name).origin).read_text()))
    except (OSError, TypeError, SyntaxError):  # no source (a byte-compiled install): no description
        return None


def _cmd_demo(args) -> int:
    from hvae_detect.commands import demo

    return demo.run(args)


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
        raise ValueError("name at least one folder of score files (positionally or with --source-dir)")
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
        help="run the paper's Fashion-MNIST -> MNIST pair instead (longer; needs --data-root)",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help=f"with --paper: folder with fashion_mnist.npz and mnist.npz (default ${DATA_ROOT_ENV} or ./data)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_demo)


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
