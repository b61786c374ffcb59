"""Command line: ``hvae-detect demo | train | score | results``."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hvae-detect", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from hvae_detect import demo, pipeline

    demo.add_parser(sub)
    pipeline.add_parsers(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
