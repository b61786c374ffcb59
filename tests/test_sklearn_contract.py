"""A score is a function of the image, and the detector behaves like any scikit-learn estimator:
per-image invariances, pickling, scikit-learn's own checks and model-selection tools."""

from __future__ import annotations

import pickle

import joblib
import numpy as np
import pytest
import torch
from conftest import TINY
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import make_scorer, roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from hvae_detect import HVAEOutlierDetector

IMAGES = "image input: scikit-learn's tabular data (negative floats, 1-20 features) are not images"
# Checks that fit on scikit-learn's random tables: this estimator rejects them by contract
# (ValueError naming the expected shape or range); the same behaviours are tested on images below.
EXPECTED_FAILED = {
    name: IMAGES
    for name in (
        "check_classifier_data_not_an_array",
        "check_dict_unchanged",
        "check_dont_overwrite_parameters",
        "check_dtype_object",
        "check_estimators_dtypes",
        "check_estimators_fit_returns_self",
        "check_estimators_nan_inf",
        "check_estimators_overwrite_params",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_fit2d_1feature",
        "check_fit2d_predict1d",
        "check_fit_check_is_fitted",
        "check_fit_idempotent",
        "check_fit_score_takes_y",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_n_features_in",
        "check_n_features_in_after_fitting",
        "check_outliers_fit_predict",
        "check_outliers_train",
        "check_pipeline_consistency",
        "check_positive_only_tag_during_fit",
        "check_readonly_memmap_input",
    )
}


def _tiny(**kw):
    return HVAEOutlierDetector(
        **{**dict(architecture=TINY, epochs=1, batch_size=8, random_state=0, device="cpu"), **kw}
    )


def _grey(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 1, 12, 12), dtype=np.uint8)


def _colour(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, 8, 8), dtype=np.uint8)


@parametrize_with_checks([_tiny()], expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(
    scope="module",
    params=[("bernoulli", "float32"), ("dlogmix", "float32"), ("bernoulli", "bfloat16"), ("dlogmix", "bfloat16")],
    ids=lambda p: "-".join(p),
)
def detector(request):
    likelihood, precision = request.param  # bfloat16 scoring keeps every contract of float32's
    images = _grey if likelihood == "bernoulli" else _colour
    det = _tiny(iw_samples=3, iw_samples_lk=2, n_mix=2, scoring_precision=precision)
    return det.fit(images(24)), images(16, seed=1)


@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_a_score_does_not_depend_on_the_rest_of_the_call(detector, data):
    det, X = detector
    ref = det.ood_scores(X)
    order = data.draw(st.permutations(range(len(X))))
    subset = data.draw(st.lists(st.integers(0, len(X) - 1), min_size=1, max_size=20))  # duplicates too
    batch = data.draw(st.integers(1, 17))
    for idx, kw in ((list(order), {}), (subset, {}), (list(range(len(X))), {"batch_size": batch})):
        got = det.ood_scores(X[idx], **kw)
        for key in ref:
            np.testing.assert_array_equal(got[key], ref[key][idx], err_msg=key)
    chunks = [X[i : i + batch] for i in range(0, len(X), batch)]  # an iterable of batches
    np.testing.assert_array_equal(det.ood_scores(iter(chunks))["L"], ref["L"])


def test_one_image_alone_scores_as_in_a_batch(detector):
    det, X = detector
    s = det.score_samples(X)
    for i in (0, 7, 15):
        assert det.score_samples(X[i : i + 1])[0] == s[i]
    np.testing.assert_array_equal(det.score_samples(torch.from_numpy(X)), s)  # tensors alike
    np.testing.assert_array_equal(det.score_samples(X[[3, 3]]), s[[3, 3]])  # identical images alike


def test_pickle_and_joblib_round_trips_give_identical_scores(detector, tmp_path):
    det, X = detector
    again = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(again.score_samples(X), det.score_samples(X))
    joblib.dump(det, tmp_path / "det.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "det.joblib").predict(X), det.predict(X))
    assert again.get_params() == det.get_params() and again.offset_ == det.offset_


def test_score_is_the_mean_elbo_and_model_selection_works():
    X = _grey(24)
    det = _tiny().fit(X)
    assert det.score(X) == pytest.approx(np.mean(det.ood_scores(X)["L"]))
    pipe = Pipeline([("identity", FunctionTransformer()), ("det", _tiny())]).fit(X.reshape(24, -1).astype(float) / 255)
    assert np.isfinite(pipe.score(X.reshape(24, -1).astype(float) / 255))
    assert np.isfinite(cross_val_score(_tiny(), X, cv=2)).all()
    out = cross_validate(_tiny(), X, cv=2, n_jobs=2, return_estimator=True)
    assert np.isfinite(out["test_score"]).all() and all(hasattr(e, "model_") for e in out["estimator"])
    y = np.r_[np.ones(24), np.zeros(8)]  # inliers 1, blank images 0
    Xy = np.concatenate([X, np.zeros((8, 1, 12, 12), np.uint8)])
    search = GridSearchCV(
        _tiny(),
        {"k": [1, 2]},
        cv=StratifiedKFold(2, shuffle=True, random_state=0),
        scoring=make_scorer(roc_auc_score, response_method="decision_function"),
    )
    search.fit(Xy, y)
    assert search.best_params_["k"] in (1, 2) and np.isfinite(search.best_score_)


def test_the_threshold_follows_the_statistic():
    X = _grey(24)
    det = _tiny(contamination=0.25).fit(X)
    np.testing.assert_array_equal(det.train_score_samples_, det.score_samples(X))
    assert det.threshold_params_ == {
        "statistic": "fused",
        "k": 1,
        "iw_samples": 1,
        "iw_samples_lk": 1,
        "scoring_precision": "float32",
    }
    det.set_params(statistic="elbo")
    with pytest.raises(ValueError, match="offset_ was set for .*'statistic': 'fused'.*set_threshold"):
        det.predict(X)
    held_out = _grey(40, seed=5)
    det.set_threshold(held_out, fpr=0.1)
    assert np.mean(det.predict(held_out) == -1) == pytest.approx(0.1, abs=1 / 40)
    with pytest.raises(ValueError, match="fpr"):
        det.set_threshold(held_out, fpr=1.5)


@pytest.mark.parametrize("epochs, batch_size", [(2, 8), (1, 32)])  # a NaN loss mid-run, NaN weights after the last step
def test_divergence_fails_closed(epochs, batch_size):
    with pytest.raises((FloatingPointError, ValueError), match="(?i)nan"):
        _tiny(learning_rate=1e6, epochs=epochs, batch_size=batch_size).fit(_grey(24))
