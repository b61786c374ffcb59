"""Properties of the observation models (PyTorch reference path) and of the likelihood objects:
their input draws, the mixture's floor, and the one decision of "auto"."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from hvae_detect.data import randomness
from hvae_detect.data.inputs import binarize
from hvae_detect.likelihoods import (
    Bernoulli,
    DiscretizedLogisticMixture,
    bernoulli_log_prob,
    discretized_logistic_mixture_log_prob,
    discretized_logistic_mixture_log_prob_reference,
    make_likelihood,
    resolve_likelihood,
)

GRID = torch.arange(256, dtype=torch.float32) / 255


def _params_1ch(logits, means, log_scales):
    """(256, 3M, 1, 1) params of one pixel, repeated for each of the 256 values."""
    p = torch.tensor(logits + means + log_scales, dtype=torch.float32).view(1, -1, 1, 1)
    return p.expand(256, -1, -1, -1)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 5), data=st.data())
def test_one_channel_mixture_sums_to_one_over_256_values(m, data):
    floats = lambda lo, hi: st.lists(st.floats(lo, hi), min_size=m, max_size=m)  # noqa: E731
    params = _params_1ch(data.draw(floats(-3, 3)), data.draw(floats(-1.2, 1.2)), data.draw(floats(-4, 1)))
    logp = discretized_logistic_mixture_log_prob_reference(GRID.view(256, 1, 1, 1), params)
    assert abs(torch.logsumexp(logp, 0).item()) < 2e-3


def test_three_channel_mixture_factorises_channel_by_channel():
    # With one component, p(r, g, b) = p(r) p(g | r) p(b | r, g), each a 1-channel discretized
    # logistic whose mean is shifted by tanh(coefficient) times the earlier channels (in [-1, 1]).
    torch.manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 5, 5)).float() / 255
    p = torch.randn(4, 10, 5, 5)
    p[:, 2::3] = p[:, 2::3].clamp(-3, 1)  # log-scales in a sensible range
    logits, rest = p[:, :1], p[:, 1:].view(4, 3, 3, 5, 5)
    means, log_scales, c = rest[:, :, 0], rest[:, :, 1], torch.tanh(rest[:, :, 2])
    xs = 2 * x - 1
    shifted = torch.stack(
        [means[:, 0], means[:, 1] + c[:, 0] * xs[:, 0], means[:, 2] + c[:, 1] * xs[:, 0] + c[:, 2] * xs[:, 1]], 1
    )
    per_channel = sum(
        discretized_logistic_mixture_log_prob_reference(
            x[:, ch : ch + 1], torch.cat([logits, shifted[:, ch : ch + 1], log_scales[:, ch : ch + 1]], 1)
        )
        for ch in range(3)
    )
    torch.testing.assert_close(discretized_logistic_mixture_log_prob_reference(x, p), per_channel)


def test_edges_and_extreme_parameters_are_finite():
    x = torch.tensor([0.0, 1.0, 0.5, 0.0, 1.0]).view(5, 1, 1, 1)
    extreme = torch.tensor(
        [
            [1e4, -1e4, 1e3, -1e3, -50.0],  # logits
            [-1e3, 1e3, 0.0, 1.0, -1.0],  # means
            [-100.0, 50.0, -7.0, -20.0, 30.0],
        ]
    )  # log-scales, below the -7 clamp too
    params = extreme.T.reshape(5, 3, 1, 1)
    logp = discretized_logistic_mixture_log_prob_reference(x, params)
    assert torch.isfinite(logp).all()
    # A pixel at 0 with its mean far below -1 has all its mass in the edge bin.
    edge = discretized_logistic_mixture_log_prob_reference(
        torch.zeros(1, 1, 1, 1), torch.tensor([0.0, -5.0, -3.0]).view(1, 3, 1, 1)
    )
    assert edge.item() > -1e-3


def test_log_scales_are_clamped_at_minus_seven():
    x = torch.full((1, 1, 2, 2), 128 / 255)
    p = torch.zeros(1, 3, 2, 2)
    p[:, 2] = -7.0
    q = p.clone()
    q[:, 2] = -30.0
    torch.testing.assert_close(
        discretized_logistic_mixture_log_prob_reference(x, p), discretized_logistic_mixture_log_prob_reference(x, q)
    )


def test_public_entry_point_validates_shapes():
    import pytest

    with pytest.raises(ValueError, match="parameter channels"):
        discretized_logistic_mixture_log_prob(torch.zeros(1, 1, 2, 2), torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        discretized_logistic_mixture_log_prob(torch.zeros(1, 2, 2, 2), torch.zeros(1, 6, 2, 2))
    with pytest.raises(ValueError, match="do not match"):
        discretized_logistic_mixture_log_prob(torch.zeros(1, 1, 2, 2), torch.zeros(2, 3, 2, 2))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 4), h=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_bernoulli_matches_binary_cross_entropy(n, h, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 1, h, h, generator=g) * 5
    x = torch.bernoulli(torch.full((n, 1, h, h), 0.5), generator=g)
    expected = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
    torch.testing.assert_close(bernoulli_log_prob(x, logits), expected)
    assert math.isclose(
        torch.exp(bernoulli_log_prob(torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1))).item(), 0.5, rel_tol=1e-6
    )


@settings(max_examples=30, deadline=None)
@given(channels=st.sampled_from([1, 3]), m=st.integers(1, 4), floor=st.floats(-7.0, -0.5), seed=st.integers(0, 10**6))
def test_log_scale_floor_changes_only_the_log_scales(channels, m, floor, seed):
    from hvae_detect.kernels.layout import clamp_log_scales, split_dlogmix_params

    g = torch.Generator().manual_seed(seed)
    per = 3 if channels == 1 else 10
    params = torch.randn(2, per * m, 3, 3, generator=g) * 4
    clamped = clamp_log_scales(params, channels, floor)
    before, after = split_dlogmix_params(params, channels), split_dlogmix_params(clamped, channels)
    for i, (a, b) in enumerate(zip(before, after)):
        if a is None:
            assert b is None
        elif i == 2:  # the log-scales
            assert torch.equal(b, a.clamp(min=floor))
        else:
            assert torch.equal(a, b)


def test_a_log_scale_floor_caps_how_sharp_a_pixel_can_be():
    # One component centred on the pixel: its bin's mass is sigmoid(d / s) - sigmoid(-d / s) with
    # d = 1 / 255 (half a bin in [-1, 1]) and s the scale at the floor, whatever log-scale asks for less.
    from hvae_detect.kernels.layout import clamp_log_scales

    x = torch.full((1, 1, 1, 1), 128 / 255)
    params = torch.tensor([0.0, 2 * 128 / 255 - 1, -30.0]).view(1, 3, 1, 1)
    floor = -4.0
    got = discretized_logistic_mixture_log_prob(x, clamp_log_scales(params, 1, floor))
    d = 1 / 255 / math.exp(floor)
    expected = math.log(1 / (1 + math.exp(-d)) - 1 / (1 + math.exp(d)))
    assert got.item() == pytest.approx(expected, rel=1e-4)
    # At PixelCNN++'s -7 the same component puts 97% of its mass in the pixel's bin.
    d7 = 1 / 255 / math.exp(-7.0)
    sharp = math.log(1 / (1 + math.exp(-d7)) - 1 / (1 + math.exp(d7)))
    assert sharp > math.log(0.97)
    assert discretized_logistic_mixture_log_prob(x, params).item() == pytest.approx(sharp, rel=1e-4)


# ---- the likelihood objects ---------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 4), h=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_bernoulli_draws_from_a_generator_or_from_uniforms(n, h, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, h, h, generator=g)
    expected = torch.bernoulli(x, generator=torch.Generator().manual_seed(seed + 1))
    assert torch.equal(Bernoulli().training_draw(x, torch.Generator().manual_seed(seed + 1)), expected)
    u = torch.rand(x.shape, generator=g)
    assert torch.equal(Bernoulli().keyed_draw(x, u), (u < x).float())
    with pytest.raises(ValueError, match="not both"):
        binarize(x, torch.Generator(), uniforms=u)


def test_bernoulli_evaluation_draw_is_a_function_of_the_image_and_the_seed():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 8, 8, generator=g)
    one = Bernoulli().evaluation_draw(x, 7)
    assert set(one.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(Bernoulli().evaluation_draw(x.flip(0), 7), one.flip(0))  # not the batch or the order
    assert torch.equal(Bernoulli().evaluation_draw(x[2:3], 7), one[2:3])
    assert not torch.equal(Bernoulli().evaluation_draw(x, 8), one)
    keys = randomness.image_keys(x, 7)
    assert torch.equal(one, (randomness.uniform(keys, randomness.BINARIZE_STREAM, x.shape[1:]) < x).float())
    # A pixel is 1 with its grey level as probability.
    grey = torch.full((4000, 1, 1, 1), 0.3) + torch.arange(4000).view(-1, 1, 1, 1) * 1e-7  # distinct images
    assert abs(Bernoulli().evaluation_draw(grey, 0).mean().item() - 0.3) < 0.03


def test_the_mixture_reads_images_as_they_are_and_floors_its_log_scales():
    x = torch.randint(0, 256, (3, 3, 4, 4)).float() / 255
    mixture = DiscretizedLogisticMixture(n_mix=2, log_scale_min=-2.0)
    assert not mixture.draws_input and Bernoulli().draws_input
    for draw in (
        mixture.training_draw(x, torch.Generator()),
        mixture.keyed_draw(x, torch.rand(x.shape)),
        mixture.evaluation_draw(x, 0),
    ):
        assert draw is x
    assert mixture.param_channels(3) == 20 and mixture.param_channels(1) == 6 and Bernoulli().param_channels(3) == 3
    from hvae_detect.kernels.layout import clamp_log_scales

    params = torch.randn(3, 20, 4, 4) * 4
    torch.testing.assert_close(
        mixture.log_prob(x, params), discretized_logistic_mixture_log_prob(x, clamp_log_scales(params, 3, -2.0))
    )
    assert torch.equal(
        DiscretizedLogisticMixture(2).log_prob(x, params), discretized_logistic_mixture_log_prob(x, params)
    )
    mean = mixture.mean(params, 3)
    assert mean.shape == x.shape and mean.min() >= 0 and mean.max() <= 1
    for bad in ({"n_mix": 0}, {"n_mix": 2.5}, {"log_scale_min": -9.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DiscretizedLogisticMixture(**bad)


def test_make_and_resolve_likelihoods():
    assert isinstance(make_likelihood("bernoulli"), Bernoulli)
    mixture = make_likelihood("dlogmix", n_mix=3, log_scale_min=-4.0)
    assert (mixture.name, mixture.n_mix, mixture.log_scale_min) == ("dlogmix", 3, -4.0)
    with pytest.raises(ValueError, match="likelihood must be one of"):
        make_likelihood("gaussian")
    # "auto": the data set's variant decides when it is known, else the images' channels.
    assert (
        resolve_likelihood("auto", n_channels=1) == "bernoulli"
        and resolve_likelihood("auto", n_channels=3) == "dlogmix"
    )
    assert resolve_likelihood("auto", variant="Binarized") == "bernoulli"
    assert resolve_likelihood("auto", n_channels=1, variant="Quantized") == "dlogmix"
    assert resolve_likelihood("dlogmix", n_channels=1) == "dlogmix"
    with pytest.raises(ValueError, match="variant or the images' channels"):
        resolve_likelihood("auto")
    with pytest.raises(ValueError, match="likelihood must be one of"):
        resolve_likelihood("Gaussian", n_channels=1)
