"""The latent path's norms (Huang, He, Lui 2024): one pass with every latent at its posterior mean."""

import math

import numpy as np
import pytest
import torch
from conftest import TINY
from hypothesis import given, settings
from hypothesis import strategies as st

from hvae_detect.likelihoods import Bernoulli, DiscretizedLogisticMixture
from hvae_detect.models.config import ModelConfig
from hvae_detect.models.registry import make_model
from hvae_detect.models.vae import VAE
from hvae_detect.scoring import fitting, output_names, statistics
from hvae_detect.scoring.engine import latent_path_outputs

POSTERIORS = {"VAE": 3, "LVAE": 3, "BIVA": 5}  # TINY has 3 stages; BIVA draws z^BU and z^TD below the top


def _model(family, likelihood, seed=0):
    torch.manual_seed(seed)
    channels = 1 if likelihood == "bernoulli" else 3
    config = ModelConfig((channels, 12, 12), {"model": family, **TINY}, likelihood=likelihood, n_mix=3)
    return make_model(config).eval()


def _images(model, n, seed):
    x = torch.rand((n, *model.input_shape), generator=torch.Generator().manual_seed(seed))
    return (x > 0.5).float() if model.likelihood == "bernoulli" else torch.round(x * 255) / 255


@pytest.mark.parametrize("likelihood", ["bernoulli", "dlogmix"])
@pytest.mark.parametrize("family", sorted(POSTERIORS))
def test_every_norm_is_a_function_of_the_image(family, likelihood):
    model = _model(family, likelihood)
    x = _images(model, 7, seed=1)
    batch = latent_path_outputs(model, x, max_rows=4)
    n = POSTERIORS[family]
    assert set(batch) == {
        "recon error",
        "|sigma x|",
        *(f"|mu|{i}" for i in range(1, n + 1)),
        *(f"|sigma|{i}" for i in range(1, n + 1)),
    }
    order = torch.randperm(7, generator=torch.Generator().manual_seed(2))
    permuted = latent_path_outputs(model, x[order], max_rows=4)
    alone = latent_path_outputs(model, x[5:6], max_rows=4)
    for name, values in batch.items():
        assert values.shape == (7,) and torch.isfinite(values).all() and (values >= 0).all(), name
        assert torch.equal(permuted[name], values[order]), name
        assert torch.equal(alone[name], values[5:6]), name


def test_norms_by_hand_for_the_vae():
    model = _model("VAE", "dlogmix")
    x = _images(model, 4, seed=3)
    path = model.latent_path(x)
    q1 = model.q_z[0](model.encode_x(x))  # the lowest posterior reads only x
    torch.testing.assert_close(path["|mu|1"], q1.mean.flatten(1).norm(dim=1))
    torch.testing.assert_close(path["|sigma|1"], q1.std.flatten(1).norm(dim=1))
    torch.testing.assert_close(path["recon error"], (x - model.reconstruct(x)).flatten(1).square().sum(1))
    assert all(p.grad is None for p in model.parameters())


def test_a_family_that_samples_without_posterior_draw_says_so():
    class Opaque(VAE):
        def posterior_draw(self, q, noise, generator=None):  # samples, records nothing
            return q.mean if noise is None else q.mean + q.std * noise

    torch.manual_seed(0)
    model = Opaque(ModelConfig((1, 12, 12), {"model": "VAE", **TINY})).eval()
    with pytest.raises(ValueError, match="without posterior_draw"):
        model.latent_path(torch.zeros(2, 1, 12, 12))
    assert getattr(model, "_recorded_posteriors", None) is None  # the recording ended with the error


def test_bernoulli_std_by_hand():
    logits = torch.tensor([[[[-2.0, 0.0, 3.0]]]])
    p = torch.sigmoid(logits)
    torch.testing.assert_close(Bernoulli().std(logits, 1), (p * (1 - p)).sqrt())


@settings(max_examples=30, deadline=None)
@given(mean=st.floats(-0.9, 0.9), log_scale=st.floats(-6, 0))
def test_a_one_component_mixture_has_the_logistic_std(mean, log_scale):
    lik = DiscretizedLogisticMixture(1)
    params = torch.zeros(1, lik.param_channels(1), 1, 1)
    params[0, 1], params[0, 2] = mean, log_scale  # logit, mean, log-scale of the single component
    expected = math.exp(log_scale) * math.pi / math.sqrt(3) / 2  # halved: [-1, 1] -> [0, 1] units
    assert lik.std(params, 1).item() == pytest.approx(expected, rel=1e-5)


def test_a_two_component_mixture_std_matches_sampling():
    lik = DiscretizedLogisticMixture(2)
    params = torch.tensor([0.3, -0.4, -0.5, 0.4, -2.0, -1.5]).view(1, 6, 1, 1)  # logits, means, log-scales
    g = torch.Generator().manual_seed(0)
    w = torch.softmax(params[0, :2, 0, 0], 0)
    component = torch.multinomial(w, 400_000, replacement=True, generator=g)
    u = torch.rand(400_000, generator=g, dtype=torch.float64).clamp(1e-9, 1 - 1e-9)
    draws = params[0, 2:4, 0, 0].double()[component] + params[0, 4:6, 0, 0].double().exp()[component] * torch.log(
        u / (1 - u)
    )
    assert lik.std(params, 1).item() == pytest.approx(draws.std().item() / 2, rel=0.01)


def test_the_path_rows_read_the_log_norms():
    outputs = {
        "recon error": np.array([4.0, 9.0]),
        "|sigma x|": np.array([1.0, 2.0]),
        "|mu|2": np.array([3.0, 1.0]),
        "|mu|1": np.array([2.0, 2.0]),
        "|sigma|1": np.array([0.5, 0.25]),
        "|sigma|2": np.array([1.0, 1.0]),
    }
    expected = np.log([[4, 1, 2, 3, 0.5, 1], [9, 2, 2, 1, 0.25, 1]])
    np.testing.assert_allclose(output_names.path_vector(outputs), expected)
    assert output_names.path_needed(statistics.outputs_needed(["Path"]))
    assert output_names.path_needed(statistics.outputs_needed(["Fused"]))  # the default's vector holds them
    assert not output_names.path_needed(statistics.outputs_needed(["LLR>1", "IC", "T"]))
    references = fitting.fit_references({"L": np.zeros(3)})
    assert "were not computed" in references["latent_path"].reason
    assert not statistics.available("Path", outputs, references)
