"""The hierarchical VAE: seed configurations, shapes, and the bounds' properties."""

import json
import math

import pytest
import torch
from conftest import tiny_model

from hvae_detect.models.architectures import PRESETS, resolve_architecture
from hvae_detect.models.vae import HierarchicalVAE
from hvae_detect.data import randomness
from hvae_detect.scoring.engine import importance_bounds, importance_noise
from hvae_detect.training.config import TrainingConfig
from hvae_detect.training.loop import TrainingDiverged, free_nats_at, kl_weight_at, train_epochs

# The seed's FashionMNIST command, pasted verbatim.
SEED_MNIST_DETERMINISTIC = """[
[
{"block": "ResBlockConv2d", "out_channels": 64, "kernel_size": 5, "stride": 1, "weightnorm": true, "gated": false},
{"block": "ResBlockConv2d", "out_channels": 64, "kernel_size": 5, "stride": 1, "weightnorm": true, "gated": false},
{"block": "ResBlockConv2d", "out_channels": 64, "kernel_size": 5, "stride": 2, "weightnorm": true, "gated": false}
],
[
{"block": "ResBlockConv2d", "out_channels": 64, "kernel_size": 3, "stride": 1, "weightnorm": true, "gated": false},
{"block": "ResBlockConv2d", "out_channels": 64, "kernel_size": 3, "stride": 1, "weightnorm": true, "gated": false},
{"block": "ResBlockConv2d", "out_channels": 64, "kernel_size": 3, "stride": 2, "weightnorm": true, "gated": false}
],
[
{"block": "ResBlockConv2d", "out_channels": 64, "kernel_size": 3, "stride": 1, "weightnorm": true, "gated": false},
{"block": "ResBlockConv2d", "out_channels": 64, "kernel_size": 3, "stride": 1, "weightnorm": true, "gated": false},
{"block": "ResBlockConv2d", "out_channels": 64, "kernel_size": 3, "stride": 1, "weightnorm": true, "gated": false}
]
]"""
SEED_MNIST_STOCHASTIC = """[
{"block": "GaussianConv2d", "latent_features": 8, "weightnorm": true},
{"block": "GaussianDense", "latent_features": 16, "weightnorm": true},
{"block": "GaussianDense", "latent_features": 8, "weightnorm": true}
]"""
SEED_CIFAR_STOCHASTIC = """[
{"block": "GaussianConv2d", "latent_features": 128, "weightnorm": true},
{"block": "GaussianConv2d", "latent_features": 64, "weightnorm": true},
{"block": "GaussianDense", "latent_features": 32, "weightnorm": true}
]"""


def _seed_cifar_deterministic():
    text = SEED_MNIST_DETERMINISTIC.replace('"out_channels": 64', '"out_channels": 256')
    det = json.loads(text)
    det[2][2]["stride"] = 2
    return det


def test_presets_are_the_seed_configurations_verbatim():
    assert PRESETS["paper-mnist"] == {"config_deterministic": json.loads(SEED_MNIST_DETERMINISTIC),
                                      "config_stochastic": json.loads(SEED_MNIST_STOCHASTIC)}
    assert PRESETS["paper-cifar"] == {"config_deterministic": _seed_cifar_deterministic(),
                                      "config_stochastic": json.loads(SEED_CIFAR_STOCHASTIC)}


def test_seed_mnist_configuration_builds_the_right_shapes():
    arch = {"config_deterministic": json.loads(SEED_MNIST_DETERMINISTIC),
            "config_stochastic": json.loads(SEED_MNIST_STOCHASTIC)}
    model = HierarchicalVAE((1, 28, 28), arch, "bernoulli")
    assert model.latent_shapes == [(8, 14, 14), (16,), (8,)]
    x = torch.bernoulli(torch.full((2, 1, 28, 28), 0.3))
    log_px, kls, params = model(x, 0)
    assert params.shape == (2, 1, 28, 28)
    assert log_px.shape == (2,) and len(kls) == 3 and all(kl.shape == (2,) for kl in kls)


def test_seed_cifar_configuration_builds_the_right_shapes():
    arch = {"config_deterministic": _seed_cifar_deterministic(),
            "config_stochastic": json.loads(SEED_CIFAR_STOCHASTIC)}
    model = HierarchicalVAE((3, 32, 32), arch, "dlogmix", n_mix=10)
    assert model.latent_shapes == [(128, 16, 16), (64, 8, 8), (32,)]
    x = torch.randint(0, 256, (1, 3, 32, 32)).float() / 255
    with torch.no_grad():
        log_px, _, params = model(x, 0)
    assert params.shape == (1, 100, 32, 32)
    assert torch.isfinite(log_px).all()


@pytest.mark.parametrize("bad, match", [
    ({"config_deterministic": [[]], "config_stochastic": []}, "non-empty"),
    ({"config_deterministic": [[], []], "config_stochastic": [{"block": "GaussianDense", "latent_features": 2}]},
     "one deterministic stack per stochastic layer"),
    ({"config_deterministic": [[{"block": "Conv"}]],
      "config_stochastic": [{"block": "GaussianDense", "latent_features": 2}]}, "block must be"),
    ({"config_deterministic": [[{"block": "ResBlockConv2d", "out_channels": 4, "kernel_size": 3, "stride": 3}]],
      "config_stochastic": [{"block": "GaussianDense", "latent_features": 2}]}, "stride"),
    ({"config_deterministic": [[]], "config_stochastic": [{"block": "GaussianDense", "latent_features": 0}]},
     "positive integer"),
    ("no-such-preset", "preset|architecture must be"),
])
def test_bad_architectures_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        resolve_architecture(bad)


def _tiny_model(likelihood="bernoulli", shape=(1, 12, 12)):
    return tiny_model(likelihood, shape)


def _binary_images(n, shape=(1, 12, 12), seed=0):
    return torch.bernoulli(torch.full((n, *shape), 0.3), generator=torch.Generator().manual_seed(seed))


def test_l_greater_than_zero_is_l_with_the_same_samples():
    # The engine's L and a direct evaluation of the k = 0 bound with the same standard-normal
    # draws agree, so LLR>0 = L - L>0 is exactly 0.
    model = _tiny_model()
    x = _binary_images(5)
    engine = importance_bounds(model, x, ks=[], n_samples=3, seed=7)[0]
    keys = randomness.image_keys(x, 7).repeat(3)
    noise = importance_noise(model, keys, 0, torch.arange(3).repeat_interleave(5))  # sample-major rows
    with torch.no_grad():
        direct = model(x, 0, 3, noise=noise).bound.view(3, 5)
    torch.testing.assert_close(engine, torch.logsumexp(direct, 0) - math.log(3), rtol=1e-5, atol=1e-4)


def test_llr_greater_than_zero_is_zero_in_expectation():
    # L and L>0 are the same estimator: with independent samples their difference averages to 0.
    model = _tiny_model()
    x = _binary_images(200)
    with torch.no_grad():
        a = model(x, 0, generator=torch.Generator().manual_seed(1)).bound
        b = model(x, 0, generator=torch.Generator().manual_seed(2)).bound
    diff = a - b
    assert abs(diff.mean().item()) < 4 * diff.std().item() / math.sqrt(len(diff))


def test_importance_weighted_bound_grows_with_samples_on_average():
    model = _tiny_model()
    x = _binary_images(64)
    means = [importance_bounds(model, x, ks=[], n_samples=s, seed=s)[0].mean().item() for s in (1, 8, 64)]
    assert means[0] <= means[1] <= means[2]


def test_l_k_uses_only_the_upper_kl_terms_and_is_deterministic_below_k():
    model = _tiny_model()
    x = _binary_images(3)
    assert model(x, 2).kl.shape == (1, 3)  # only z_3 is sampled
    scores = importance_bounds(model, x, ks=[1, 2], n_samples=2, seed=0)
    assert set(scores) == {0, 1, 2} and all(torch.isfinite(v).all() for v in scores.values())
    with pytest.raises(ValueError, match="k must be in"):
        importance_bounds(model, x, ks=[3])


def test_dlogmix_model_bounds_are_finite_for_colour_images():
    model = _tiny_model("dlogmix", (3, 12, 12))
    x = torch.randint(0, 256, (2, 3, 12, 12)).float() / 255
    scores = importance_bounds(model, x, n_samples=2, seed=0)
    assert all(torch.isfinite(v).all() for v in scores.values())
    assert model.reconstruct(x).shape == x.shape


def test_schedules_follow_the_seed():
    assert free_nats_at(0, 2.0, 400) == 2.0 and free_nats_at(199, 2.0, 400) == 2.0
    assert free_nats_at(300, 2.0, 400) == pytest.approx(1.0) and free_nats_at(400, 2.0, 400) == 0.0
    assert free_nats_at(1000, 2.0, 400) == 0.0 and free_nats_at(5, 2.0, 0) == 0.0
    assert kl_weight_at(0, 200) == 0.0 and kl_weight_at(100, 200) == 0.5 and kl_weight_at(300, 200) == 1.0
    assert kl_weight_at(0, 0) == 1.0


def test_training_improves_the_elbo_and_stops_on_nan():
    model = _tiny_model().train()
    data = _binary_images(32)
    config = TrainingConfig(epochs=3, batch_size=16, learning_rate=3e-3, free_nats=0, warmup_epochs=0)
    history = train_epochs(model, data, config, generator=torch.Generator().manual_seed(0))
    assert history[-1]["elbo"] > history[0]["elbo"]
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        train_epochs(model, data, TrainingConfig(epochs=1, batch_size=16))
