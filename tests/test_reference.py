"""Models of held-out statistics: hand-computed scores, per-image scores, saving without pickle."""

import json
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from hvae_detect.scoring.reference import COPOD, ECOD, MODELS, Gaussian, Typicality, from_state


def _held_out():
    rng = np.random.default_rng(0)
    V = rng.exponential(size=(300, 3)) * [1.0, -2.0, 50.0] + [-800.0, -790.0, 0.0]
    V[:, 1] += 0.5 * V[:, 0]  # correlated columns, on different scales, as L and L>k are
    return V


def _fitted(kind):
    V = _held_out()
    return MODELS[kind]().fit(V[:, :1] if kind == "typicality" else V)


def _rows(kind, n, seed=1):
    V = _fitted(kind).sorted_ if kind in ("ecod", "copod") else None
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(n, 3)) * [2.0, 3.0, 80.0] + [-799.0, -791.0, 40.0]
    if V is not None:  # some rows exactly on held-out values (ties)
        W[: n // 2] = V[rng.integers(0, len(V), n // 2)]
    return W[:, :1] if kind == "typicality" else W


def test_typicality_is_the_two_sided_distance_in_standard_deviations():
    model = Typicality().fit(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))  # mean 3, population std sqrt(2)
    np.testing.assert_allclose(model.score([3.0, 5.0, 0.0]), [0.0, -2 / math.sqrt(2), -3 / math.sqrt(2)])


def test_gaussian_of_uncorrelated_unit_columns_is_the_squared_distance():
    # standardised, these columns have mean 0, variance 1, no correlation: the shrinkage target is
    # the identity and so is the shrunk covariance, whatever the shrinkage
    V = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    model = Gaussian().fit(V)
    np.testing.assert_allclose(model.score([[2.0, 0.0], [1.0, 1.0], [0.0, 0.0]]), [-4.0, -2.0, 0.0], atol=1e-12)
    moved = Gaussian().fit(V * [10.0, 0.1] + [-800.0, 3.0])  # scale and location do not matter
    np.testing.assert_allclose(moved.score([[-780.0, 3.0], [-790.0, 3.1]]), [-4.0, -2.0], atol=1e-9)


def test_gaussian_matches_scikit_learn_on_the_standardised_columns():
    from sklearn.covariance import LedoitWolf

    model, W, V = _fitted("gaussian"), _rows("gaussian", 7), _held_out()
    mean, std = V.mean(0), V.std(0)
    reference = LedoitWolf(assume_centered=True).fit((V - mean) / std)
    np.testing.assert_allclose(model.score(W), -reference.mahalanobis((W - mean) / std), rtol=1e-10)


def test_empirical_tails_by_hand():
    # one right-skewed column 0, 0, 1, 5 (n = 4), one symmetric column 1, 2, 3, 4; the image counts
    # as a fifth sample: F_left(x) = (#{<= x} + 1) / 5, F_right(x) = (#{>= x} + 1) / 5
    V = np.array([[0.0, 1.0], [0.0, 2.0], [1.0, 3.0], [5.0, 4.0]])
    x = np.array([[5.0, 2.5], [-1.0, 2.5]])
    # column 0, x = 5: F_left = 1, F_right = 2/5; right-skewed: the skew tail is the right one
    #           x = -1: F_left = 1/5, F_right = 1; skew tail (right) -log 1 = 0
    # column 1, x = 2.5: both tails 3/5; symmetric: the skew tail is their sum, 2 log(5/3)
    symmetric = 2 * math.log(5 / 3)
    np.testing.assert_allclose(ECOD().fit(V).score(x), [-(math.log(5 / 2) + symmetric), -(math.log(5) + symmetric)])
    # COPOD: max(skew tail, mean of the two tails) per column
    np.testing.assert_allclose(
        COPOD().fit(V).score(x), [-(math.log(5 / 2) + symmetric), -(math.log(5) / 2 + symmetric)]
    )


@pytest.mark.parametrize("kind", ["ecod", "copod"])
def test_empirical_tails_equal_pyod_scoring_one_image_at_a_time(kind):
    pyod_models = {"ecod": "pyod.models.ecod", "copod": "pyod.models.copod"}
    module = pytest.importorskip(pyod_models[kind])
    rng = np.random.default_rng(0)
    V = rng.exponential(size=(200, 3)) * [1.0, -1.0, 3.0]  # clearly skewed columns, both signs
    ours = MODELS[kind]().fit(V)
    theirs = getattr(module, kind.upper())().fit(V)
    W = np.r_[rng.normal(size=(6, 3)) * 2, V[:3]]
    np.testing.assert_allclose(-ours.score(W), [theirs.decision_function(w[None])[0] for w in W], rtol=1e-12)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_typical_rows_score_higher_than_far_ones(kind):
    model = _fitted(kind)
    centre = model.sorted_[len(model.sorted_) // 2] if kind in ("ecod", "copod") else None
    if kind == "typicality":
        near, far = [[model.mean_]], [[model.mean_ - 10 * model.std_]]
    elif kind == "gaussian":
        near, far = [model.location_], [model.location_ + 10 * model.scale_]
    else:
        near, far = [centre], [centre - 1e4]
    assert model.score(near)[0] > model.score(far)[0]


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(sorted(MODELS)), n=st.integers(1, 40), order=st.randoms(use_true_random=False))
def test_a_row_gets_the_same_score_alone_in_a_batch_and_permuted(kind, n, order):
    model, W = _fitted(kind), _rows(kind, n)
    batch = model.score(W)
    np.testing.assert_array_equal(batch, np.concatenate([model.score(W[i : i + 1]) for i in range(n)]))
    permutation = list(range(n))
    order.shuffle(permutation)
    np.testing.assert_array_equal(model.score(W[permutation]), batch[permutation])


@settings(max_examples=25, deadline=None)
@given(
    V=arrays(
        np.float64, st.tuples(st.integers(3, 30), st.integers(1, 4)), elements=st.floats(-1e3, 1e3, allow_nan=False)
    )
)
def test_scores_are_finite_for_any_finite_fitting_set(V):
    for kind, cls in MODELS.items():
        columns = V[:, :1] if kind == "typicality" else V
        try:
            model = cls().fit(columns)
        except ValueError as refusal:  # only a typicality without spread
            assert kind == "typicality" and re.search("all equal", str(refusal))
            continue
        assert np.all(np.isfinite(model.score(columns)))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_saved_and_loaded_through_safetensors_and_json(kind):
    model, W = _fitted(kind), _rows(kind, 9)
    arrays_, meta = model.to_state()
    blob, text = save_safetensors({k: np.ascontiguousarray(v) for k, v in arrays_.items()}), json.dumps(meta)
    loaded = from_state(load_safetensors(blob), json.loads(text))
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.score(W), model.score(W))
    np.testing.assert_array_equal(type(model).from_state(arrays_, meta).score(W), model.score(W))


def test_bad_input_is_refused_with_what_was_expected():
    with pytest.raises(ValueError, match="not fitted"):
        ECOD().score(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="fitted on 3"):
        _fitted("gaussian").score(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="finite"):
        Gaussian().fit(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        ECOD().fit(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="one statistic"):
        Typicality().fit(np.zeros((5, 2)))
    refused = Typicality()
    with pytest.raises(ValueError, match="all equal"):
        refused.fit(np.ones(5))
    with pytest.raises(ValueError, match="not fitted"):  # a refused fit leaves no half-fitted model
        refused.score(np.ones(2))
    # A constant column is measured in its own units: a departure from it scores lower.
    constant = Gaussian().fit(np.array([[0.0, 2.0], [1.0, 2.0], [3.0, 2.0]]))
    on, off = constant.score(np.array([[1.0, 2.0], [1.0, 2.5]]))
    assert np.isfinite(off) and off < on
    with pytest.raises(ValueError, match="at least 2"):
        Gaussian().fit(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="nothing to save"):
        COPOD().to_state()


def test_bad_states_are_refused():
    arrays_, meta = _fitted("gaussian").to_state()
    with pytest.raises(ValueError, match="must be one of"):
        from_state(arrays_, {**meta, "kind": "pickle"})
    with pytest.raises(ValueError, match=r"\['ecod'\]"):
        ECOD.from_state(arrays_, meta)
    with pytest.raises(ValueError, match="lacks"):
        from_state({k: v for k, v in arrays_.items() if k != "precision"}, meta)
    with pytest.raises(ValueError, match="expected"):
        from_state({**arrays_, "precision": np.eye(2)}, meta)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 50))
def test_the_batch_typicality_test_by_hand(seed, m):
    rng = np.random.default_rng(seed)
    typical = Typicality().fit(rng.normal(-100.0, 4.0, 200))
    batch = rng.normal(-100.0, 4.0, m)
    z = abs(batch.mean() - typical.mean_) / (typical.std_ / np.sqrt(m))
    assert typical.batch_p_value(batch) == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert 0.0 <= typical.batch_p_value(batch) <= 1.0
    assert typical.batch_p_value(np.full(m, typical.mean_)) == pytest.approx(1.0)


def test_the_batch_typicality_test_finds_a_shifted_batch_no_image_of_which_stands_out():
    rng = np.random.default_rng(0)
    typical = Typicality().fit(rng.normal(0.0, 1.0, 1000))
    shifted = rng.normal(0.5, 1.0, 200)  # each image within a std or two, the batch far from typical
    assert typical.batch_p_value(shifted) < 1e-6 and typical.batch_p_value(rng.normal(0.0, 1.0, 200)) > 1e-3
    with pytest.raises(ValueError, match="not fitted"):
        Typicality().batch_p_value(shifted)


def test_unfitted_references_round_trip_through_a_saved_detector_as_their_reason():
    from hvae_detect import HVAEOutlierDetector
    from hvae_detect.persistence.detectors import references_from_json, references_to_json
    from hvae_detect.scoring.reference import Unfitted, is_fitted

    fitted = Gaussian().fit(np.random.default_rng(0).normal(size=(20, 3)))
    held = {"fused": fitted, "typicality": Unfitted("too few images")}
    saved = json.loads(json.dumps(references_to_json(held)))
    assert saved["typicality"] == "too few images"
    loaded = references_from_json(saved)
    assert loaded["typicality"] == Unfitted("too few images")
    assert is_fitted(loaded["fused"]) and not is_fitted(loaded["typicality"]) and not is_fitted(None)
    V = np.random.default_rng(1).normal(size=(5, 3))
    np.testing.assert_array_equal(loaded["fused"].score(V), fitted.score(V))
    # a detector pickled before reasons were Unfitted held them as strings: unpickled, they are Unfitted
    old = HVAEOutlierDetector.__new__(HVAEOutlierDetector)
    old.__setstate__({"references_": {"fused": fitted, "old": "a reason of an older pickle"}})
    assert old.references_["old"] == Unfitted("a reason of an older pickle") and old.references_["fused"] is fitted
    assert references_to_json(old.references_)["old"] == "a reason of an older pickle"
