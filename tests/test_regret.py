"""Likelihood regret (hvae_detect.scoring.regret): a function of the image, the model left alone,
every family, and >= 0 on average for a trained model."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY, gen, images_for, tiny_model

from hvae_detect.models.config import ModelConfig
from hvae_detect.models.registry import make_model
from hvae_detect.scoring import regret
from hvae_detect.scoring.engine import importance_bounds
from hvae_detect.scoring.regret import INFERENCE_MODULES, inference_parameters, likelihood_regret
from hvae_detect.training.config import TrainingConfig
from hvae_detect.training.loop import train_epochs

FAMILIES = {
    "VAE": TINY,
    "LVAE": {"model": "LVAE", **TINY},
    "BIVA": {"model": "BIVA", **TINY},
    "BIVA-cond": {"model": "BIVA", "conditional_bu": True, **TINY},
}
# Top-level modules of the generative side of each family: what the regret must leave fixed.
GENERATIVE = {"p_proj", "p_det", "p_z", "p_td_z", "p_bu_z", "bu_cond_proj", "bu_cond", "head"}
FAST = {"steps": 3, "learning_rate": 1e-2}  # large steps: few of them change the bound visibly


def _model(name, likelihood="bernoulli"):
    torch.manual_seed(0)
    shape = (1, 12, 12) if likelihood == "bernoulli" else (3, 8, 8)
    return make_model(ModelConfig(shape, FAMILIES[name], likelihood, n_mix=2)).eval()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_encoder_is_the_inference_side_and_nothing_else(name):
    model = _model(name)
    encoder = inference_parameters(model)
    tops = {n.split(".", 1)[0] for n, _ in model.named_parameters()}
    assert encoder and {n.split(".", 1)[0] for n in encoder} <= set(INFERENCE_MODULES[model.family])
    assert tops - {n.split(".", 1)[0] for n in encoder} <= GENERATIVE  # a new module must be classified


@pytest.mark.parametrize(
    "name,likelihood",
    [("VAE", "bernoulli"), ("VAE", "dlogmix"), ("LVAE", "bernoulli"), ("BIVA", "bernoulli"), ("BIVA-cond", "dlogmix")],
)
def test_a_function_of_the_image_alone(name, likelihood):
    model = _model(name, likelihood)
    x = images_for(model, 4)
    batch = likelihood_regret(model, x, **FAST)
    assert batch.shape == (4,) and batch.dtype == torch.float32 and torch.isfinite(batch).all()
    assert torch.equal(batch, likelihood_regret(model, x, **FAST))  # deterministic
    perm = torch.tensor([2, 0, 3, 1])
    assert torch.equal(likelihood_regret(model, x[perm], **FAST), batch[perm])  # position, neighbours
    assert torch.equal(likelihood_regret(model, x[2:3], **FAST), batch[2:3])  # alone
    assert not torch.equal(likelihood_regret(model, x, **FAST, seed=1), batch)  # the seed keys the draws
    assert (batch != 0).all()


@pytest.mark.parametrize("name", ["VAE", "LVAE", "BIVA"])
def test_no_steps_is_exactly_zero(name):
    model = _model(name)
    x = images_for(model, 3)
    assert torch.equal(likelihood_regret(model, x, steps=0, iw_samples=3), torch.zeros(3))
    assert likelihood_regret(model, x[:0], **FAST).shape == (0,)


def test_the_model_is_left_as_it_was():
    model = _model("BIVA", "dlogmix").train()  # train mode too: the regret works on an eval-mode copy
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    x = images_for(model, 2)
    likelihood_regret(model, x, **FAST)
    assert model.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())


def test_before_is_the_engines_bound(monkeypatch):
    """L before (and after) is the engine's L of the same seed and samples, image by image."""
    model = _model("LVAE")
    x = images_for(model, 3)
    seen = []

    def recorded(*args, **kwargs):
        seen.append(importance_bounds(*args, **kwargs)[0])
        return {0: seen[-1]}

    monkeypatch.setattr(regret, "importance_bounds", recorded)
    likelihood_regret(model, x, steps=0, iw_samples=5, seed=7)
    before = torch.cat(seen[::2])
    assert torch.allclose(before, importance_bounds(model, x, (), 5, seed=7)[0], rtol=0, atol=1e-4)
    assert torch.equal(before, torch.cat(seen[1::2]))


def _patterns(n, seed):
    """Binary 12x12 images of one horizontal and one vertical bar, 3% of pixels flipped."""
    g = gen(seed)
    x = torch.zeros(n, 1, 12, 12)
    rows, cols = torch.randint(0, 10, (n,), generator=g), torch.randint(0, 10, (n,), generator=g)
    for i in range(n):
        x[i, 0, rows[i] : rows[i] + 3, :] = 1
        x[i, 0, :, cols[i] : cols[i] + 2] = 1
    return torch.where(torch.rand(x.shape, generator=g) < 0.03, 1 - x, x)


def test_a_trained_models_regret_is_positive_on_average():
    """Fitting the encoder to one image can only be expected to help its bound: the mean regret of
    held-out inliers is >= 0 (single images may dip below: the steps climb a one-sample ELBO)."""
    model = tiny_model().train()
    config = TrainingConfig(epochs=4, batch_size=32, learning_rate=3e-3, free_nats=0, warmup_epochs=0)
    train_epochs(model, _patterns(384, 0), config, generator=gen(0))
    model.eval()
    values = likelihood_regret(model, _patterns(16, 1), steps=10, learning_rate=1e-3, iw_samples=4)
    assert values.mean() > 0, values


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"steps": -1}, r"steps .* integer >= 0, got -1"),
        ({"steps": 2.5}, r"steps .* integer >= 0, got 2.5"),
        ({"steps": True}, r"steps .* integer >= 0, got True"),
        ({"learning_rate": 0}, r"learning_rate .* > 0, got 0"),
        ({"learning_rate": -1e-3}, r"learning_rate .* > 0, got -0.001"),
        ({"learning_rate": math.nan}, r"learning_rate .* > 0, got nan"),
        ({"iw_samples": 0}, r"iw_samples .* >= 1, got 0"),
        ({"seed": 1.5}, r"seed must be an integer, got 1.5"),
    ],
)
def test_bad_arguments_say_what_was_expected(kwargs, match):
    model = _model("VAE")
    with pytest.raises(ValueError, match=match):
        likelihood_regret(model, images_for(model, 1), **kwargs)


def test_bad_images_and_unknown_families_are_refused():
    model = _model("VAE")
    with pytest.raises(ValueError, match=r"x must be \(N, 1, 12, 12\) images, got shape \(1, 12, 12\)"):
        likelihood_regret(model, images_for(model, 1)[0])
    model.family = "Custom"  # a family registered from outside, without an entry
    with pytest.raises(ValueError, match="'Custom' family has no entry in .*INFERENCE_MODULES"):
        likelihood_regret(model, images_for(model, 1))
