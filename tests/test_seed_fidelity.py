"""Seed fidelity (issue 11): the paper's free nats, activation, data-dependent initialisation,
likelihood head and command-line flags."""

import json

import pytest
import torch
from conftest import TINY, images_for, tiny_model

from hvae_detect.models.base import init_from_data
from hvae_detect.models.config import ModelConfig
from hvae_detect.models.layers import weight_normed_layers
from hvae_detect.models.vae import VAE
from hvae_detect.training.config import SEED_TRAINING, TrainingConfig
from hvae_detect.training.loop import elbo_loss, free_nats_kl, train_epochs, training_loss

# ---- 1. free nats ---------------------------------------------------------------------


def test_free_nats_per_element_hand_computed():
    # The spec's example: KL of shape (N=1, C=2, H=1, W=2), free nats 2 -> each element floored at 2 / C = 1.
    kl = torch.tensor([[[[0.5, 3.0]], [[-0.2, 1.5]]]])
    assert kl.shape == (1, 2, 1, 2)
    floored = free_nats_kl([kl], 2.0)
    assert floored.tolist() == [6.5]  # [[1, 3], [1, 1.5]]
    assert free_nats_kl([kl], 0.0).item() == pytest.approx(4.8)  # 0 free nats: the KL unchanged
    loss = elbo_loss(torch.tensor([-100.0]), floored, 0.5)
    assert loss.tolist() == [103.25]  # 100 + 0.5 * 6.5
    # A zero conv KL (1, 2, 2, 2) gets fn * H * W; a dense one (1, 4) gets fn / 4 per element.
    assert free_nats_kl([torch.zeros(1, 2, 2, 2)], 2.0).item() == 8.0
    dense = torch.tensor([[0.1, 0.2, 0.9, -0.3]])
    assert free_nats_kl([dense], 2.0).item() == pytest.approx(0.5 + 0.5 + 0.9 + 0.5)
    # Several latents: their floored sums add up.
    assert free_nats_kl([kl, dense], 2.0).item() == pytest.approx(6.5 + 2.4)


def test_elementwise_kl_sums_to_the_bound_terms_kl():
    model = tiny_model()
    x = images_for(model, 4)
    with torch.no_grad():
        plain = model(x, 0, generator=torch.Generator().manual_seed(5))
        terms = model(x, 0, generator=torch.Generator().manual_seed(5), kl_elements=True)
    assert [tuple(e.shape[1:]) for e in terms.kl_elements] == [tuple(s) for s in model.latent_shapes]
    assert plain.kl_elements is None
    torch.testing.assert_close(terms.kl, plain.kl, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(terms.log_px, plain.log_px)


def test_training_loss_modes():
    model = tiny_model().train()
    x = images_for(model, 4)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    with torch.no_grad():
        terms = model(x, 0, generator=g(), kl_elements=True)
        expect_el = (-terms.log_px + 0.5 * free_nats_kl(terms.kl_elements, 2.0)).mean()
        expect_layer = (-terms.log_px + 0.5 * terms.kl.clamp(min=2.0).sum(0)).mean()
        el, _, _ = training_loss(model, x, 0.5, 2.0, g(), "element")
        layer, _, _ = training_loss(model, x, 0.5, 2.0, g(), "layer")
    torch.testing.assert_close(el, expect_el)
    torch.testing.assert_close(layer, expect_layer)
    assert TrainingConfig().free_nats_mode == "layer" and SEED_TRAINING.free_nats_mode == "element"
    with pytest.raises(ValueError, match="free_nats_mode"):
        TrainingConfig(free_nats_mode="batch")


def test_importance_weighted_training_loss():
    model = tiny_model().train()
    x = images_for(model, 3)
    with torch.no_grad():
        mean_loss, bound, kl = training_loss(model, x, 1.0, 0.0, torch.Generator().manual_seed(1), "element", 4)
        iw_loss, iw_bound, _ = training_loss(model, x, 1.0, 0.0, torch.Generator().manual_seed(1), "element", 4, True)
    assert bound.shape == (3,) and kl.shape == (3,)
    assert iw_loss <= mean_loss + 1e-4  # Jensen: the IW bound is the tighter one
    assert (iw_bound >= bound - 1e-4).all()


# ---- 2. activation ------------------------------------------------------------------------


def test_activation_option_reaches_every_layer_and_is_saved(tmp_path):
    from hvae_detect.models.layers import ACTIVATIONS
    from hvae_detect.persistence import checkpoints

    torch.manual_seed(0)
    relu = VAE(ModelConfig((1, 12, 12), TINY, "bernoulli", activation="ReLU"))
    torch.manual_seed(0)
    silu = VAE(ModelConfig((1, 12, 12), TINY, "bernoulli"))
    acts = {m.act for m in relu.modules() if hasattr(m, "act")}
    assert acts == {ACTIVATIONS["ReLU"]} and {m.act for m in silu.modules() if hasattr(m, "act")} == {
        ACTIVATIONS["SiLU"]
    }
    x = images_for(relu, 3)
    with torch.no_grad():
        a = relu.eval()(x, 0, generator=torch.Generator().manual_seed(0)).bound
        b = silu.eval()(x, 0, generator=torch.Generator().manual_seed(0)).bound
    assert not torch.allclose(a, b)  # same weights, different activation
    checkpoints.write_model_dir(tmp_path / "m", relu, {})
    model, config = checkpoints.read_model_dir(tmp_path / "m")
    assert config["model"]["activation"] == "ReLU" and model.activation == "ReLU"
    with torch.no_grad():
        torch.testing.assert_close(model(x, 0, generator=torch.Generator().manual_seed(0)).bound, a)
    with pytest.raises(ValueError, match="activation must be one of"):
        ModelConfig((1, 12, 12), TINY, "bernoulli", activation="Mish")


def test_model_configs_without_the_new_keys_build_silu_conv3x3():
    # What config.json of a folder written before these keys existed holds.
    from hvae_detect.persistence import checkpoints

    model = tiny_model()
    old = {
        k: v
        for k, v in checkpoints.model_config(model).items()
        if k not in ("activation", "likelihood_head", "skip_stochastic", "q_dropout", "p_dropout", "log_scale_min")
    }
    assert set(old) == {"input_shape", "architecture", "likelihood", "n_mix"}
    loaded = checkpoints.build_model({"model": old})
    assert (loaded.activation, loaded.likelihood_head, loaded.skip_stochastic) == ("SiLU", "conv3x3", True)
    loaded.load_state_dict(model.state_dict())  # the old state dict's shapes


# ---- 3. data-dependent initialisation -------------------------------------------------------


@pytest.mark.parametrize("likelihood, head", [("bernoulli", "paper"), ("dlogmix", "paper"), ("bernoulli", "conv3x3")])
def test_data_dependent_init_normalises_the_first_batch(likelihood, head):
    torch.manual_seed(0)
    shape = (1, 12, 12) if likelihood == "bernoulli" else (3, 8, 8)
    model = VAE(ModelConfig(shape, TINY, likelihood, n_mix=2, activation="ReLU", likelihood_head=head)).train()
    x = images_for(model, 32)
    layers = weight_normed_layers(model)
    kinds = {
        kind
        for m in layers
        for kind in (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
        if type(m).__mro__[1] is kind
    }
    assert len(kinds) == 3  # convolutions, transposed convolutions and linear layers
    assert (model.head in layers) == (head == "paper")
    init_from_data(model, x, torch.Generator().manual_seed(4))
    outputs = {}
    hooks = [m.register_forward_hook(lambda m, a, out: outputs.__setitem__(m, out)) for m in layers]
    with torch.no_grad():
        model(x, 0, generator=torch.Generator().manual_seed(4))  # the same pass: the same latent samples
    for h in hooks:
        h.remove()
    assert set(outputs) == set(layers)
    for m, out in outputs.items():
        dims = [d for d in range(out.dim()) if d != 1]
        torch.testing.assert_close(out.mean(dims), torch.zeros(out.shape[1]), atol=1e-4, rtol=0, msg=str(m))
        torch.testing.assert_close(out.var(dims), torch.ones(out.shape[1]), atol=2e-3, rtol=0, msg=str(m))


def test_training_runs_the_data_init_on_the_first_batch_only():
    model = tiny_model().train()
    data = images_for(model, 16)
    calls = []
    model.init_from_data = lambda x, generator=None: calls.append(x.shape[0])
    config = TrainingConfig(epochs=2, batch_size=8, data_init=True, free_nats_mode="element")
    train_epochs(model, data, config, generator=torch.Generator().manual_seed(0))
    assert calls == [8]
    train_epochs(model, data, config, generator=torch.Generator().manual_seed(0), start_epoch=1)  # a resumed run
    assert calls == [8]


# ---- 4. likelihood head ----------------------------------------------------------------------


def test_paper_likelihood_head_kernels():
    bern = VAE(ModelConfig((1, 12, 12), TINY, "bernoulli", likelihood_head="paper"))
    mix = VAE(ModelConfig((3, 8, 8), TINY, "dlogmix", n_mix=2, likelihood_head="paper"))
    old = VAE(ModelConfig((3, 8, 8), TINY, "dlogmix", n_mix=2))
    assert bern.head.kernel_size == (3, 3) and bern.head_activation
    assert mix.head.kernel_size == (1, 1) and not mix.head_activation
    assert old.head.kernel_size == (3, 3) and not old.head_activation and old.likelihood_head == "conv3x3"
    x = images_for(mix, 2)
    with torch.no_grad():
        assert mix(x, 0).params.shape == (2, 20, 8, 8)


# ---- 5. every flag of the paper's scripts/dvae_run.py -------------------------------------------

SEED_DVAE_RUN_FLAGS = {  # flag -> a value (None: given bare); the paper's meaning in hvae-detect train --help
    "--model": "VAE",
    "--epochs": "3",
    "--learning_rate": "3e-4",
    "--train_samples": "2",
    "--test_samples": "4",
    "--train_importance_weighted": "true",
    "--test_importance_weighted": None,
    "--warmup_epochs": "2",
    "--free_nats_epochs": "2",
    "--free_nats": "2",
    "--n_eval_samples": "32",
    "--seed": "1",
    "--test_every": "1",
    "--save_dir": "SAVE",
    "--use_wandb": "False",
    "--name": "run",
    "--batch_size": "8",
    "--test_batch_size": "250",
    "--data_workers": "2",
    "--train_datasets": '{"FashionMNISTBinarized": {"split": "train"}}',
    "--val_datasets": '{"FashionMNISTBinarized": {"dynamic": false, "split": "validation"}}',
    "--test_datasets": '{"MNISTBinarized": {"dynamic": false, "split": "validation"}}',
    "--input_shape": "[1, 28, 28]",
    "--likelihood_module": "BernoulliLikelihoodConv2d",
    "--config_deterministic": "ARCH_DET",
    "--config_stochastic": "ARCH_STO",
    "--q_dropout": "0.1",
    "--p_dropout": "0.2",
    "--activation": "ReLU",
    "--skip_stochastic": "false",
    "--root": "ROOT",
    "--dynamic": "true",
}


def test_every_flag_of_dvae_run_parses_with_the_papers_meaning(tmp_path, monkeypatch, capsys):
    from hvae_detect import cli
    from hvae_detect.commands import train

    (tmp_path / "det.json").write_text(json.dumps(TINY["config_deterministic"]))  # a path for one of them
    values = {
        **SEED_DVAE_RUN_FLAGS,
        "--save_dir": str(tmp_path / "runs"),
        "--root": str(tmp_path),
        "--config_deterministic": str(tmp_path / "det.json"),
        "--config_stochastic": json.dumps(TINY["config_stochastic"]),
    }
    argv = ["train"]
    for flag, value in values.items():
        argv += [flag] if value is None else [flag, value]
    seen = {}
    monkeypatch.setattr(train, "train_run", lambda cfg, **kw: seen.update(cfg=cfg, kw=kw))
    assert cli.main(argv) == 0
    cfg = seen["cfg"]
    assert cfg["architecture"]["config_deterministic"] == json.loads(json.dumps(TINY["config_deterministic"]))
    assert (
        cfg["train_samples"],
        cfg["train_importance_weighted"],
        cfg["test_samples"],
        cfg["test_importance_weighted"],
    ) == (2, True, 4, True)
    assert (cfg["q_dropout"], cfg["p_dropout"], cfg["skip_stochastic"], cfg["activation"]) == (0.1, 0.2, False, "ReLU")
    assert cfg["likelihood"] == "bernoulli" and cfg["seed"] == 1 and cfg["data_root"] == str(tmp_path)
    assert cfg["train_datasets"]["FashionMNISTBinarized"]["dynamic"] is True  # from --dynamic
    assert (cfg["free_nats_mode"], cfg["data_init"], cfg["likelihood_head"]) == ("element", True, "paper")
    assert seen["kw"]["save_dir"] == str(tmp_path / "runs")
    out = capsys.readouterr().out
    line = [ln for ln in out.splitlines() if ln.startswith("accepted, not applied here")]
    assert len(line) == 1
    for flag in (
        "n_eval_samples",
        "use_wandb",
        "name",
        "test_batch_size",
        "test_datasets",
        "input_shape",
        "test_samples",
        "test_importance_weighted",
    ):
        assert f"--{flag} " in line[0] and flag in cfg["not_applied"]
    assert seen["kw"]["data_workers"] == 2 and "data_workers" not in cfg["not_applied"]  # applied: DataLoader workers
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for flag in SEED_DVAE_RUN_FLAGS:  # --help shows one spelling, dashes (the paper's is an alias)
        assert "--" + flag[2:].replace("_", "-") in help_text, flag


def test_refused_paper_flags_say_why(tmp_path, capsys):
    from hvae_detect import cli

    assert cli.main(["train", "--model", "NVAE", "--save_dir", str(tmp_path)]) == 2
    assert "NVAE" in capsys.readouterr().err
    assert cli.main(["train", "--padded_shape", "[1, 32, 32]", "--save_dir", str(tmp_path)]) == 2
    assert "padded_shape" in capsys.readouterr().err
    assert cli.main(["train", "--activation", "PSwish", "--save_dir", str(tmp_path)]) == 2
    assert "activation must be one of" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "train",
                "--config_deterministic",
                "no/such/file.json",
                "--config_stochastic",
                "[]",
                "--save_dir",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "nor the path of a JSON file" in capsys.readouterr().err


def test_command_line_defaults_are_the_papers():
    from hvae_detect import cli

    args = cli.build_parser().parse_args(["train"])
    assert (args.activation, args.free_nats_mode, args.data_init, args.likelihood_head, args.skip_stochastic) == (
        "ReLU",
        "element",
        True,
        "paper",
        True,
    )
    assert cli.build_parser().parse_args(["train", "--no-data_init"]).data_init is False


# ---- the mixture's log-scale floor --------------------------------------------------------


def test_log_scale_floor_is_applied_checked_saved_and_defaults_to_pixelcnn(tmp_path):
    from hvae_detect.persistence import checkpoints

    torch.manual_seed(0)
    sharp = VAE(ModelConfig((3, 8, 8), TINY, "dlogmix", n_mix=2))
    torch.manual_seed(0)
    floored = VAE(ModelConfig((3, 8, 8), TINY, "dlogmix", n_mix=2, log_scale_min=-2.0))
    assert sharp.log_scale_min == -7.0
    with torch.no_grad():  # every parameter channel, log-scales included, well below the floor
        for model in (sharp, floored):
            model.head.bias.fill_(-6.0)
    x = images_for(sharp, 3)
    with torch.no_grad():
        a = sharp.eval()(x, 0, generator=torch.Generator().manual_seed(0))
        b = floored.eval()(x, 0, generator=torch.Generator().manual_seed(0))
    from hvae_detect.kernels.layout import clamp_log_scales
    from hvae_detect.likelihoods import discretized_logistic_mixture_log_prob

    torch.testing.assert_close(a.params, b.params)  # the head's output; the likelihood floors its log-scales
    torch.testing.assert_close(b.log_px, discretized_logistic_mixture_log_prob(x, clamp_log_scales(b.params, 3, -2.0)))
    assert not torch.allclose(a.log_px, b.log_px)  # same weights, another floor
    checkpoints.write_model_dir(tmp_path / "m", floored, {})
    model, config = checkpoints.read_model_dir(tmp_path / "m")
    assert config["model"]["log_scale_min"] == -2.0 and model.log_scale_min == -2.0
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x, 0, generator=torch.Generator().manual_seed(0)).log_px, b.log_px)
    old = {k: v for k, v in config["model"].items() if k != "log_scale_min"}  # folders written before the option
    assert checkpoints.build_model({"model": old}).log_scale_min == -7.0
    for bad in (-8.0, 0.0, float("nan"), "-4", True):
        with pytest.raises(ValueError, match="log_scale_min must be a number in"):
            ModelConfig((3, 8, 8), TINY, "dlogmix", n_mix=2, log_scale_min=bad)


def test_log_scale_floor_reaches_the_run_config_and_the_command_line(tmp_path):
    from hvae_detect.cli import build_parser
    from hvae_detect.commands.run_config import make_run_config

    cfg = make_run_config(TrainingConfig(epochs=1), log_scale_min=-4.0)
    assert cfg["log_scale_min"] == -4.0
    assert make_run_config(TrainingConfig(epochs=1))["log_scale_min"] == -7.0
    with pytest.raises(ValueError, match="--log_scale_min must be a number in"):
        make_run_config(TrainingConfig(epochs=1), log_scale_min=1.0)
    args = build_parser().parse_args(["train", "--log_scale_min", "-4"])
    assert args.log_scale_min == -4.0
