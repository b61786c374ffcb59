"""The PyOD and pytorch-ood adapters (hvae_detect.integrations), each against its library's conventions;
each part skips when its optional extra is not installed."""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, SHARED_DATA, TINY, needs_shared_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hvae_detect import HVAEOutlierDetector

needs_pyod = pytest.mark.skipif(
    importlib.util.find_spec("pyod") is None, reason='PyOD is not installed (pip install "hvae-detect[pyod]")'
)
needs_pytorch_ood = pytest.mark.skipif(
    importlib.util.find_spec("pytorch_ood") is None,
    reason='pytorch-ood is not installed (pip install "hvae-detect[pytorch-ood]")',
)
SIDE = 12


def _bars(n, seed) -> np.ndarray:
    """n grey SIDE x SIDE uint8 images, each with two bright rows of random brightness (no two images alike)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, SIDE, SIDE), np.uint8)
    for image, lines, level in zip(x, rng.integers(0, SIDE, size=(n, 2)), rng.integers(128, 256, size=(n, 2))):
        image[lines] = level[:, None]
    return x


def _noise(n, seed) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, SIDE, SIDE), dtype=np.uint8)


def _estimator(**params) -> HVAEOutlierDetector:
    settings_ = dict(
        architecture=TINY, epochs=2, batch_size=32, learning_rate=3e-3, statistic="elbo", device="cpu", random_state=0
    )
    return HVAEOutlierDetector(**{**settings_, **params})


def _auroc(inlier_scores, outlier_scores) -> float:
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(
        np.r_[np.zeros(len(inlier_scores)), np.ones(len(outlier_scores))], np.r_[inlier_scores, outlier_scores]
    )


@pytest.mark.parametrize("module, extra", [("pyod", "pyod"), ("pytorch_ood", "pytorch-ood")])
def test_a_missing_extra_is_named(monkeypatch, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>` fail as if not installed
    monkeypatch.delitem(sys.modules, f"hvae_detect.integrations.{module}", raising=False)
    with pytest.raises(ImportError, match=rf'pip install "hvae-detect\[{extra}\]"'):
        importlib.import_module(f"hvae_detect.integrations.{module}")


def test_importing_the_package_pulls_in_no_extra():
    code = (
        "import sys, hvae_detect, hvae_detect.integrations; "
        "assert not {'pyod', 'pytorch_ood'} & set(sys.modules), sorted({'pyod', 'pytorch_ood'} & set(sys.modules))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ---- PyOD ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pyod_fitted():
    """A PyOD HVAE fitted on 160 flattened bar images (PyOD's (n, d) input, d a square: one grey channel)."""
    from hvae_detect.integrations.pyod import HVAE

    x_train = _bars(160, seed=0).reshape(160, -1)
    return HVAE(_estimator(), contamination=0.1).fit(x_train), x_train


@needs_pyod
def test_pyod_training_labels_follow_contamination(pyod_fitted):
    clf, x_train = pyod_fitted
    assert clf.decision_scores_.shape == clf.labels_.shape == (len(x_train),)
    assert set(np.unique(clf.labels_)) <= {0, 1}
    # the estimator's threshold, calibrated on its 16 held-out images (a quantile of so few spreads widely)
    assert clf.threshold_ == -clf.estimator_.offset_ and clf.estimator_.contamination == 0.1
    assert 0 < clf.labels_.sum() < 0.25 * len(x_train)
    np.testing.assert_array_equal(clf.labels_, (clf.decision_scores_ > clf.threshold_).astype(int))
    # a score is a function of the image: the training images score again as in fit
    np.testing.assert_allclose(clf.decision_function(x_train), clf.decision_scores_, rtol=1e-6)
    np.testing.assert_array_equal(clf.predict(x_train), clf.labels_)


@needs_pyod
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(contamination=st.floats(0.01, 0.5))
def test_pyod_labels_share_is_the_contamination(pyod_fitted, contamination):
    from hvae_detect.integrations.pyod import HVAE

    clf, x_train = pyod_fitted
    again = HVAE.from_fitted(clf.estimator_, x_train, contamination=contamination)
    n = len(x_train)
    assert len(np.unique(again.decision_scores_)) == n  # no ties, so that the share can be met to one image
    assert abs(again.labels_.sum() - contamination * n) <= 1
    np.testing.assert_allclose(again.decision_scores_, clf.decision_scores_, rtol=1e-6)


@needs_pyod
def test_pyod_decision_function_is_higher_for_outliers(pyod_fitted):
    clf, _ = pyod_fitted
    inliers, outliers = _bars(60, seed=1).reshape(60, -1), _noise(60, seed=2).reshape(60, -1)
    scores_in, scores_out = clf.decision_function(inliers), clf.decision_function(outliers)
    np.testing.assert_allclose(scores_in, -clf.estimator_.score_samples(inliers), rtol=1e-6)
    assert _auroc(scores_in, scores_out) > 0.9
    assert clf.predict(outliers).mean() > clf.predict(inliers).mean()
    # the estimator's own threshold came from the same contamination: the same verdicts
    both = np.r_[inliers, outliers]
    np.testing.assert_array_equal(clf.predict(both) == 1, clf.estimator_.predict(both) == -1)


@needs_pyod
@pytest.mark.parametrize("method", ["linear", "unify"])
def test_pyod_predict_proba_and_confidence_are_probabilities(pyod_fitted, method):
    clf, _ = pyod_fitted
    x = np.r_[_bars(20, seed=3), _noise(20, seed=4)].reshape(40, -1)
    proba, confidence = clf.predict_proba(x, method=method, return_confidence=True)
    assert proba.shape == (40, 2) and np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert proba[20:, 1].mean() > proba[:20, 1].mean()
    assert confidence.shape == (40,) and np.all((confidence >= 0) & (confidence <= 1))
    labels, confidence_again = clf.predict(x, return_confidence=True)
    np.testing.assert_allclose(confidence_again, clf.predict_confidence(x))


@needs_pyod
def test_pyod_score_combination_and_evaluation(pyod_fitted, capsys):
    pytest.importorskip("combo", reason='PyOD\'s combination needs combo (in the extra: "hvae-detect[pyod]")')
    from pyod.models.combination import aom, average, maximization, moa
    from pyod.models.iforest import IForest
    from pyod.utils.data import evaluate_print
    from pyod.utils.utility import precision_n_scores, standardizer

    clf, x_train = pyod_fitted
    x_test = np.r_[_bars(60, seed=5), _noise(20, seed=6)].reshape(80, -1)
    y_test = np.r_[np.zeros(60), np.ones(20)]
    forest = IForest(random_state=0).fit(x_train)
    train_scores = np.column_stack([d.decision_scores_ for d in (clf, forest)])
    test_scores = np.column_stack([d.decision_function(x_test) for d in (clf, forest)])
    _, test_norm = standardizer(train_scores, test_scores)
    for combine in (average, maximization):
        combined = combine(test_norm)
        assert combined.shape == (80,) and _auroc(combined[:60], combined[60:]) > 0.9
    for combine in (aom, moa):
        assert combine(test_norm, n_buckets=2).shape == (80,)
    assert precision_n_scores(y_test, clf.decision_function(x_test)) > 0.5
    evaluate_print("HVAE", y_test, clf.decision_function(x_test))
    assert capsys.readouterr().out.startswith("HVAE ROC:")


@needs_pyod
def test_pyod_parameters_clone_pickle_and_saved_estimator(pyod_fitted, tmp_path):
    from sklearn.base import clone

    from hvae_detect.integrations.pyod import HVAE

    clf, x_train = pyod_fitted
    params = clf.get_params()
    assert params["contamination"] == 0.1 and params["estimator__epochs"] == 2
    copy = clone(clf).set_params(estimator__epochs=1)
    assert copy.estimator.epochs == 1 and clf.estimator.epochs == 2 and not hasattr(copy, "estimator_")
    x = x_train[:16]
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).decision_function(x), clf.decision_function(x))
    clf.estimator_.save(tmp_path / "det")
    again = HVAE.from_fitted(HVAEOutlierDetector.load(tmp_path / "det", device="cpu"), x_train, contamination=0.1)
    np.testing.assert_allclose(again.decision_scores_, clf.decision_scores_, rtol=1e-6)
    assert again.estimator_.offset_ == clf.estimator_.offset_  # the calibrated threshold kept
    assert abs(again.labels_.sum() - 0.1 * len(x_train)) <= 1  # from_fitted: PyOD's share of the X given


@needs_pyod
def test_pyod_flattened_colour_images_and_bad_input():
    from hvae_detect.integrations.pyod import HVAE

    x = np.random.default_rng(0).integers(0, 256, size=(40, 3 * 8 * 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="image_shape"):
        HVAE(_estimator(epochs=1)).fit(x)  # 192 is not a square: the shape must be given
    clf = HVAE(_estimator(epochs=1, image_shape=(3, 8, 8), n_mix=2), contamination=0.2).fit(x)
    assert clf.estimator_.likelihood_ == "dlogmix" and clf.decision_function(x[:5]).shape == (5,)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        clf.decision_function((x[:5] - 128.0) / 64.0)  # standardised features are not images
    with pytest.raises(ValueError, match="HVAEOutlierDetector"):
        HVAE(estimator="small").fit(x)


# ---- pytorch-ood -----------------------------------------------------------------------------------------


def _loader(x, y, batch_size=50):
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(torch.as_tensor(x), torch.as_tensor(y)), batch_size=batch_size)


def _as_tensor_images(x: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W) as torchvision's ToTensor() gives them: float (n, 1, H, W) in [0, 1]."""
    return torch.from_numpy(x).float().div(255).unsqueeze(1)


@needs_pytorch_ood
@needs_shared_data
def test_pytorch_ood_detector_through_ood_metrics_fashion_mnist_to_mnist():
    """A short fit on real Fashion-MNIST: LLR>1 ranks MNIST as OOD above chance, the ELBO below it
    (the paper's observation), both read through pytorch-ood's OODMetrics."""
    from pytorch_ood.metrics import OODMetrics

    from hvae_detect.integrations.pytorch_ood import HVAE

    fashion, mnist = np.load(SHARED_DATA / "fashion_mnist.npz"), np.load(SHARED_DATA / "mnist.npz")
    train = _loader(_as_tensor_images(fashion["x_train"][:2000]), fashion["y_train"][:2000])
    detector = HVAE(_estimator(epochs=3, batch_size=64, learning_rate=1e-3, statistic="llr"))
    assert detector.fit(train) is detector
    n = 500
    test = _loader(
        torch.cat([_as_tensor_images(fashion["x_test"][:n]), _as_tensor_images(mnist["x_test"][:n])]),
        np.r_[fashion["y_test"][:n], -np.ones(n, np.int64)],
    )
    auroc = {}
    for statistic in ("llr", "elbo"):
        detector.set_hyperparameters(statistic=statistic)
        metrics = OODMetrics()
        for x, y in test:
            scores = detector(x)
            assert scores.shape == (len(x),) and scores.device == x.device and scores.dtype == torch.float32
            metrics.update(scores, y)
        auroc[statistic] = metrics.compute()["AUROC"]
    assert auroc["llr"] > 0.6 and auroc["elbo"] < 0.5, auroc


@pytest.fixture(scope="module")
def ood_fitted():
    """A pytorch-ood HVAE fitted on bar images, from a loader that also holds noise labelled OOD (-1)."""
    from hvae_detect.integrations.pytorch_ood import HVAE

    x = _as_tensor_images(np.r_[_bars(120, seed=0), _noise(30, seed=1)])
    y = np.r_[np.zeros(120, np.int64), -np.ones(30, np.int64)]
    return HVAE(_estimator()).fit(_loader(x, y))


@needs_pytorch_ood
def test_pytorch_ood_fit_uses_only_in_distribution_images(ood_fitted):
    assert len(ood_fitted.estimator.train_score_samples_) == 120
    inliers, outliers = _as_tensor_images(_bars(40, seed=2)), _as_tensor_images(_noise(40, seed=3))
    scores_in, scores_out = ood_fitted.predict(inliers), ood_fitted.predict(outliers)
    assert _auroc(scores_in.numpy(), scores_out.numpy()) > 0.9
    np.testing.assert_allclose(scores_in.numpy(), -ood_fitted.estimator.score_samples(inliers), rtol=1e-6)


@needs_pytorch_ood
def test_pytorch_ood_requires_fit_and_checks_its_input():
    from pytorch_ood.api import RequiresFittingException

    from hvae_detect.integrations.pytorch_ood import HVAE

    detector = HVAE(_estimator())
    assert detector.requires_fit and detector.device is None
    with pytest.raises(RequiresFittingException):
        detector.predict(torch.zeros(2, 1, SIDE, SIDE))
    with pytest.raises(ValueError, match="HVAEOutlierDetector"):
        HVAE(estimator="small")
    with pytest.raises(ValueError, match="no in-distribution images"):
        detector.fit(_loader(torch.zeros(4, 1, SIDE, SIDE), -np.ones(4, np.int64)))


@needs_pytorch_ood
def test_pytorch_ood_hyperparameters_are_the_estimators(ood_fitted):
    x = _as_tensor_images(_noise(8, seed=4))
    assert ood_fitted.get_hyperparameters() == {"statistic": "elbo", "k": 1}
    try:
        ood_fitted.set_hyperparameters(statistic="llr", k=2)
        assert ood_fitted.estimator.get_params()["statistic"] == "llr" and ood_fitted.estimator.k == 2
        llr = ood_fitted.predict(x).numpy()
        expected = ood_fitted.estimator.ood_scores(x)["LLR>2"]
        np.testing.assert_allclose(llr, expected, rtol=1e-5, atol=1e-4)
        with pytest.raises(ValueError, match="unknown hyperparameters"):
            ood_fitted.set_hyperparameters(epochs=3)
    finally:
        ood_fitted.set_hyperparameters(statistic="elbo", k=1)


@needs_pytorch_ood
def test_pytorch_ood_grid_search_and_device(ood_fitted):
    from pytorch_ood.utils import GridSearch

    from hvae_detect.integrations.pytorch_ood import HVAE

    assert ood_fitted.device == torch.device("cpu") and ood_fitted.to("cpu") is ood_fitted
    detector = HVAE(_estimator(epochs=1))
    x_fit = _as_tensor_images(_bars(64, seed=5))
    x_val = torch.cat([_as_tensor_images(_bars(30, seed=6)), _as_tensor_images(_noise(30, seed=7))])
    y_val = np.r_[np.zeros(30, np.int64), -np.ones(30, np.int64)]
    search = GridSearch(
        detector,
        _loader(x_fit, np.zeros(64, np.int64)),
        _loader(x_val, y_val),
        hyperparameter_space={"statistic": ["llr", "elbo"]},
    )
    best = search.run()
    assert best in ({"statistic": "llr"}, {"statistic": "elbo"}) and len(search.results_) == 2
    assert detector.get_hyperparameters() == best and detector.predict(x_val).shape == (60,)


@needs_pytorch_ood
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pytorch_ood_scores_come_back_on_the_inputs_device():
    from hvae_detect.integrations.pytorch_ood import HVAE

    x = _as_tensor_images(np.r_[_bars(40, seed=0), _noise(8, seed=8)])
    detector = HVAE(_estimator(epochs=1)).fit(_loader(x[:40], np.zeros(40, np.int64)))
    on_cpu = detector.predict(x)
    on_gpu = detector.predict(x.cuda())  # the model stays where it is; the scores follow the input
    assert on_gpu.device.type == "cuda" and on_cpu.device.type == "cpu"
    assert detector.to("cuda").device.type == "cuda"
    moved = detector.predict(x)
    assert moved.device.type == "cpu"
    np.testing.assert_allclose(on_gpu.cpu().numpy(), on_cpu.numpy(), rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(moved.numpy(), on_cpu.numpy(), rtol=1e-4, atol=1e-2)
    detector.fit(_loader(x[:40], np.zeros(40, np.int64)))  # fits on the device it was moved to
    assert detector.device.type == "cuda"
