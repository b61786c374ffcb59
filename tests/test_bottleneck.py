"""The one-level bottleneck VAE (preset "bottleneck") through the registry, the estimator and the
statistics table; architecture="auto" picking the model by the images; a fused score that is two-sided."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hvae_detect import HVAEOutlierDetector
from hvae_detect.models.architectures import auto_preset, resolve_architecture
from hvae_detect.models.config import ModelConfig
from hvae_detect.models.registry import make_model
from hvae_detect.scoring import statistics
from hvae_detect.scoring.reference import Gaussian
from hvae_detect.training.config import AUTO_MAX_EPOCHS, AUTO_TRAINING_IMAGES, ONE_LEVEL, TrainingConfig, resolve_auto

# The bottleneck's shape (strided blocks down to a dense latent, nothing above it) at test size.
TINY_BOTTLENECK = {
    "config_deterministic": [
        [
            {"block": "ResBlockConv2d", "out_channels": 8, "kernel_size": 3, "stride": 2},
            {"block": "ResBlockConv2d", "out_channels": 8, "kernel_size": 3, "stride": 2},
        ]
    ],
    "config_stochastic": [{"block": "GaussianDense", "latent_features": 4}],
}
ONE_LATENT_KEYS = {"L", "IC", "T", "Fused", "Path", "PathCOPOD", "FusedECOD"}


def _images(likelihood, n, seed=0):
    shape = (1, 12, 12) if likelihood == "bernoulli" else (3, 8, 8)
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)])
def test_the_preset_is_one_narrow_dense_latent(shape):
    likelihood = "dlogmix" if shape[0] == 3 else "bernoulli"
    model = make_model(ModelConfig(shape, "bottleneck", likelihood))
    assert model.n_latents == 1 and model.latent_shapes == [(100,)]
    terms = model(torch.rand(2, *shape).round(), 0)
    assert terms.kl.shape == (1, 2) and torch.isfinite(terms.bound).all()


@pytest.fixture(scope="module", params=["bernoulli", "dlogmix"])
def fitted(request):
    det = HVAEOutlierDetector(
        architecture=TINY_BOTTLENECK, epochs=1, batch_size=8, n_mix=2, iw_samples=2, random_state=0, device="cpu"
    )
    return det.fit(_images(request.param, 60)), request.param


def test_every_statistic_of_one_latent_is_per_image(fitted):
    det, likelihood = fitted
    X = _images(likelihood, 9, seed=1)
    together = det.ood_scores(X)
    assert set(together) == ONE_LATENT_KEYS  # no L>k, no LLR>k without a hierarchy
    alone = [det.ood_scores(X[i : i + 1]) for i in range(len(X))]
    order = np.random.default_rng(0).permutation(len(X))
    permuted = det.ood_scores(X[order])
    for key, values in together.items():
        assert np.isfinite(values).all(), key
        np.testing.assert_array_equal(np.concatenate([a[key] for a in alone]), values, err_msg=key)
        np.testing.assert_array_equal(permuted[key], values[order], err_msg=key)


def test_save_and_load_keep_the_scores(fitted, tmp_path):
    det, likelihood = fitted
    X = _images(likelihood, 5, seed=2)
    det.save(tmp_path / "det")
    loaded = HVAEOutlierDetector.load(tmp_path / "det", device="cpu")
    assert loaded.n_latents_ == 1
    np.testing.assert_array_equal(loaded.score_samples(X), det.score_samples(X))
    np.testing.assert_array_equal(loaded.predict(X), det.predict(X))


def test_statistics_of_one_k_need_a_hierarchy(fitted):
    det, likelihood = fitted
    with pytest.raises(ValueError, match="at least 2 latents"):
        HVAEOutlierDetector(architecture=TINY_BOTTLENECK, statistic="llr", epochs=1).fit(_images(likelihood, 20))


def test_auto_picks_the_model_by_the_images():
    assert auto_preset((3, 32, 32)) == "bottleneck"
    assert auto_preset((1, 28, 28)) == "small"
    assert auto_preset((3, 32, 32), hierarchical=True) == "small"  # L>k and LLR>k need several latents
    colour = HVAEOutlierDetector(epochs=1, batch_size=16, random_state=0, device="cpu").fit(_images("dlogmix", 40))
    assert colour.model_.architecture == resolve_architecture("bottleneck") and colour.n_latents_ == 1
    paper = HVAEOutlierDetector(statistic="llr", epochs=1, batch_size=16, random_state=0, device="cpu")
    assert paper.fit(_images("dlogmix", 40)).n_latents_ == 3
    grey = HVAEOutlierDetector(epochs=1, batch_size=16, random_state=0, device="cpu").fit(_images("bernoulli", 40))
    assert grey.model_.architecture == resolve_architecture("small")


def test_auto_training_settings_follow_the_data_and_the_model():
    auto = dict.fromkeys(("epochs", "learning_rate", "warmup_epochs", "free_nats_epochs"), "auto")
    hierarchical = resolve_auto(auto, AUTO_TRAINING_IMAGES // 6, n_latents=3)
    assert hierarchical["epochs"] == 6 and hierarchical["learning_rate"] == TrainingConfig.learning_rate
    assert (hierarchical["warmup_epochs"], hierarchical["free_nats_epochs"]) == (5, 10)
    one_level = resolve_auto(auto, AUTO_TRAINING_IMAGES // 10, n_latents=1)
    assert one_level["learning_rate"] == ONE_LEVEL["learning_rate"]
    assert one_level["warmup_epochs"] == pytest.approx(2) and one_level["free_nats_epochs"] == pytest.approx(4)
    assert resolve_auto(auto, 10 * AUTO_TRAINING_IMAGES, 3)["epochs"] == 1
    assert resolve_auto(auto, 3, 3)["epochs"] == AUTO_MAX_EPOCHS
    assert resolve_auto({**auto, "epochs": 7, "learning_rate": 0.01}, 10, 1)["epochs"] == 7  # given values stay
    with pytest.raises(ValueError, match="epochs"):
        HVAEOutlierDetector(epochs="some").fit(_images("bernoulli", 20))


def test_the_fused_score_is_two_sided():
    """An image atypically LOW in one column is as far from the reference as one atypically high."""
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(500, 4)) * [1.0, 2.0, 0.5, 1.0] + [3.0, -1.0, 0.0, 10.0]
    gauss = Gaussian().fit(reference)
    typical = np.array([[3.0, -1.0, 0.0, 10.0]])
    low, high = typical.copy(), typical.copy()
    low[0, 2], high[0, 2] = -2.0, 2.0  # four standard deviations below / above in one column
    scores = gauss.score(np.vstack([typical, low, high]))
    assert scores[1] < scores[0] - 10 and scores[2] < scores[0] - 10
    assert scores[1] == pytest.approx(scores[2], rel=0.1)
    fused = statistics.get("fused")
    assert fused.reference == "gaussian" and fused.higher_is_normal
