"""One flag style on the command line: --help shows every flag with dashes (``--data-root``), while the
paper's spellings with underscores (``--data_root``) are still accepted, verbatim, and parse to the same
arguments; ``--flag=value`` and abbreviations included."""

from __future__ import annotations

import argparse
import re

import pytest

from hvae_detect import cli

COMMANDS = ("demo", "train", "score", "results", "fit", "detect")


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    return sub.choices[name]


def _argv(command: str, spell, with_equals: bool = False) -> list[str]:
    """A command line giving every flag of ``command`` (a value of the right kind where it takes one), each
    spelled by ``spell`` from the flag --help shows."""
    argv = [command]
    for action in _subparser(command)._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if not action.option_strings:  # a positional
            argv.append("x")
            continue
        flag = spell(action.option_strings[0])
        if action.nargs == 0:
            argv.append(flag)
            continue
        value = str(action.choices[0] if action.choices else "1")
        argv += [f"{flag}={value}"] if with_equals else [flag, value]
    return argv


def _underscored(flag: str) -> str:
    return "--" + flag[2:].replace("-", "_")


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_no_flag_with_an_underscore(command, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"] if command else ["--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert "usage: hvae-detect" in shown
    assert re.findall(r"--[\w-]*_[\w-]*", shown) == []  # in the usage, the option list and the help texts
    if command:
        for action in _subparser(command)._actions:
            assert not any("_" in flag for flag in action.option_strings), action.option_strings


@pytest.mark.parametrize("command", COMMANDS)
def test_both_spellings_of_every_flag_parse_the_same(command):
    parser = cli.build_parser()
    dashes = vars(parser.parse_args(_argv(command, str)))
    assert vars(parser.parse_args(_argv(command, _underscored))) == dashes
    assert vars(parser.parse_args(_argv(command, _underscored, with_equals=True))) == dashes
    assert vars(parser.parse_args(_argv(command, str, with_equals=True))) == dashes


def test_the_papers_flags_are_accepted_verbatim_with_their_names():
    parse = cli.build_parser().parse_args
    papers = parse(
        "score --model_dir m --iw_samples_elbo 10 --iw_samples_Lk=5 --n_latents_skip 1 2 --batch_size 7 "
        "--n_eval_examples 30 --save_dir s --val_datasets {} --extra_val_datasets {} --data_root d "
        "--no_download".split()
    )
    dashes = parse(
        "score --model-dir m --iw-samples-elbo=10 --iw-samples-Lk 5 --n-latents-skip 1 2 --batch-size=7 "
        "--n-eval-examples 30 --save-dir s --val-datasets {} --extra-val-datasets {} --data-root d "
        "--no-download".split()
    )
    assert papers == dashes
    assert (papers.model, papers.iw_samples_Lk, papers.n_latents_skip, papers.batch_size) == ("m", 5, [1, 2], 7)
    assert (papers.extra_val_datasets, papers.data_root, papers.no_download) == ("{}", "d", True)

    train = parse(
        "train --batch_size 64 --free_nats_epochs=3 --config_deterministic [] --config_stochastic [] "
        "--learning_rate 1e-3 --likelihood_module bernoulli --no-data_init --test_samples 4".split()
    )
    assert (train.batch_size, train.free_nats_epochs, train.config_deterministic, train.learning_rate) == (
        64,
        3.0,
        "[]",
        1e-3,
    )
    assert (train.likelihood, train.data_init, train.test_samples_given) == ("bernoulli", False, 4)
    assert parse(["train", "--no_data_init"]).data_init is False
    assert parse(["train", "--free_nats_e", "5"]).free_nats_epochs == 5.0  # an abbreviation, as argparse allows

    demo = parse("demo --iw_samples 3 --iw_samples_lk=4 --data_root d --n_train 9".split())
    assert (demo.iw_samples, demo.iw_samples_lk, demo.data_root, demo.n_train) == (3, 4, "d", 9)
    fit = parse("fit imgs --out d --image_size 8x6 --batch_size=5".split())
    assert (fit.image_size, fit.batch_size) == ((8, 6), 5)


def test_after_a_double_dash_nothing_is_read_as_a_flag():
    assert cli.build_parser().parse_args(["results", "--", "--odd_name"]).scores_dir == ["--odd_name"]


@pytest.mark.parametrize(
    "argv, prog, what",
    [
        (["demo", "--no_such_flag"], "hvae-detect demo", "unrecognized arguments: --no_such_flag"),
        (["score", "--model", "m", "--no-such=3"], "hvae-detect score", "unrecognized arguments: --no-such=3"),
        (["train", "--batch_size", "x"], "hvae-detect train", "argument --batch-size: invalid int value: 'x'"),
        (["score", "--model", "m", "--iw_samples", "3"], "hvae-detect score", "ambiguous option: --iw-samples"),
    ],
)
def test_a_bad_flag_is_still_a_one_line_usage_error(argv, prog, what, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert captured.err.startswith(f"{prog}: error: ") and what in captured.err
    assert captured.err.endswith(" (see --help)\n")
