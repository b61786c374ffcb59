"""Thresholds from scores the references did not see (hvae_detect.scoring.calibration): on synthetic
statistics, no model trained."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvae_detect.scoring import calibration, fitting, output_names, reference, statistics

PATH_NAMES = ("recon error", "|sigma x|", "|mu|1", "|mu|2", "|mu|3", "|sigma|1", "|sigma|2", "|sigma|3")


def path_outputs(n, rng):
    """Engine outputs of n images for the latent path (d = 8 log-norms, correlated Gaussians) and L."""
    d = len(PATH_NAMES)
    logs = rng.standard_normal((n, d)) @ np.linalg.cholesky(0.5 * np.eye(d) + 0.5).T
    return {**{name: np.exp(logs[:, i]) for i, name in enumerate(PATH_NAMES)}, "L": rng.standard_normal(n)}


def fresh_share(stat, held_seed, method, n=40, contamination=0.05):
    """Share of fresh images of the same distribution flagged by the threshold set on n held-out ones."""
    held = path_outputs(n, np.random.default_rng(held_seed))
    offset, info = calibration.threshold(stat, held, 1, contamination, held_seed, method=method)
    fresh = path_outputs(4000, np.random.default_rng(10_000 + held_seed))
    return np.mean(stat.normality(stat.value(fresh, 1, info["references"])) < offset)


@pytest.mark.parametrize("name, n", [("latent_path", 40), ("latent_path_copod", 20)])
def test_out_of_sample_thresholds_flag_contamination_of_fresh_images_and_in_sample_ones_do_not(name, n):
    stat = statistics.get(name)
    loo = np.mean([fresh_share(stat, seed, "loo", n) for seed in range(20)])
    in_sample = np.mean([fresh_share(stat, seed, "in-sample", n) for seed in range(20)])
    assert 0.03 <= loo <= 0.075, loo
    assert in_sample > loo + 0.04, (in_sample, loo)


def test_the_default_is_leave_one_out_and_its_scores_are_each_images_out_of_sample_score():
    stat, held = statistics.get("latent_path"), path_outputs(12, np.random.default_rng(0))
    offset, info = calibration.threshold(stat, held, 1, 0.1, seed=0)
    assert info["method"] == calibration.DEFAULT == "loo" and info["d"] == 8 and info["n"] == 12
    without_first = {k: v[1:] for k, v in held.items()}
    first = stat.normality(
        stat.value({k: v[:1] for k, v in held.items()}, 1, {stat.name: fitting.fit_reference(stat, without_first)})
    )
    assert info["scores"][0] == pytest.approx(first[0], rel=1e-12)
    assert offset == calibration.quantile(info["scores"], 0.1)
    assert info["references"]["latent_path"].score(stat.columns(held)).shape == (12,)  # fitted on all 12


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=60),
    st.floats(0.01, 0.5),
    st.sampled_from(["linear", "weibull"]),
)
def test_a_statistic_without_a_reference_takes_the_plain_quantile(llr, contamination, rule):
    llr = np.array(llr)
    outputs = {"L": llr + 5.0, "L>1": np.full_like(llr, 5.0)}
    offset, info = calibration.threshold("llr", outputs, 1, contamination, seed=0, rule=rule)
    assert info["method"] == "plain" and info["d"] == 1
    assert offset == float(np.percentile(-((llr + 5.0) - 5.0), 100 * contamination, method=rule))


@pytest.mark.parametrize("method", calibration.METHODS)
def test_the_threshold_is_a_function_of_the_images_and_the_seed(method):
    stat = statistics.get("fused_ecod" if method == "analytic" else "latent_path")
    rng = np.random.default_rng(3)
    held = path_outputs(30, rng)
    held.update(
        {
            "L>1": rng.normal(size=30),
            "L>2": rng.normal(size=30),
            "log p(x|z)": rng.normal(size=30),
            "KL1": rng.gamma(2, size=30),
            "KL2": rng.gamma(2, size=30),
            "KL3": rng.gamma(2, size=30),
            "bits": rng.normal(800, 30, size=30),
        }
    )
    a, info_a = calibration.threshold(stat, held, 1, 0.05, seed=7, method=method)
    b, info_b = calibration.threshold(stat, dict(held), 1, 0.05, seed=7, method=method)
    assert a == b and np.array_equal(info_a["scores"], info_b["scores"])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(-10_000, 10_000), min_size=4, max_size=30, unique=True), st.floats(1e-3, 1e3))
def test_typicalitys_closed_form_is_leave_one_out_exactly(values, scale):
    stat, outputs = statistics.get("typicality"), {"L": scale * np.array(values, dtype=np.float64)}
    fitted = fitting.fit_reference(stat, outputs)
    refitted = calibration.out_of_fold(stat, outputs, 0, len(values), seed=0)
    np.testing.assert_allclose(calibration.analytic_loo(stat, outputs, 0, fitted), refitted, rtol=1e-7, atol=1e-9)


def test_the_closed_forms_of_ecod_and_copod_are_leave_one_out_exactly():
    outputs = path_outputs(60, np.random.default_rng(1))
    for name in ("latent_path_copod",):
        stat = statistics.get(name)
        closed = calibration.analytic_loo(stat, outputs, 0, fitting.fit_reference(stat, outputs))
        np.testing.assert_allclose(closed, calibration.out_of_fold(stat, outputs, 0, 60, seed=0), rtol=1e-12)
    ecod = statistics.Statistic(
        name="test_ecod",
        key="TestECOD",
        description="",
        higher_is_normal=True,
        needs=lambda k: ("path",),
        samples=(),
        reference="ecod",
        columns=output_names.path_vector,
    )
    closed = calibration.analytic_loo(ecod, outputs, 0, fitting.fit_reference(ecod, outputs))
    np.testing.assert_allclose(closed, calibration.out_of_fold(ecod, outputs, 0, 60, seed=0), rtol=1e-12)


def test_the_gaussians_closed_form_approaches_refitted_leave_one_out():
    """Exact for a plain covariance; Ledoit-Wolf's shrinkage and the standardisation make it approximate."""
    stat, outputs = statistics.get("latent_path"), path_outputs(400, np.random.default_rng(1))
    closed = calibration.analytic_loo(stat, outputs, 0, fitting.fit_reference(stat, outputs))
    refitted = calibration.out_of_fold(stat, outputs, 0, 400, seed=0)
    assert np.corrcoef(closed, refitted)[0, 1] > 0.999
    assert abs(calibration.quantile(closed, 0.05) / calibration.quantile(refitted, 0.05) - 1) < 0.02


def test_split_keeps_the_reference_of_its_first_part():
    stat, held = statistics.get("latent_path"), path_outputs(40, np.random.default_rng(2))
    offset, info = calibration.threshold(stat, held, 1, 0.05, seed=0, method="split")
    whole = fitting.fit_reference(stat, held)
    assert len(info["scores"]) == 20
    assert not np.allclose(info["references"]["latent_path"].precision_, whole.precision_)


def test_a_held_out_set_below_the_bound_gets_a_warning_that_says_what_to_do():
    stat = statistics.get("fused")
    need = calibration.min_images(15, 0.05)
    assert need == max(40, calibration.REFERENCE_FACTOR * 15)
    message = calibration.warning(stat, 12, 15, 0.05)
    for part in ("'fused'", "12 held-out images", "d=15", f"{need}", "holdout", '"llr"', "set_threshold"):
        assert part in message, part
    assert calibration.warning(stat, need, 15, 0.05) is None
    assert "quantile" in calibration.warning(statistics.get("llr"), 12, 1, 0.05)
    assert calibration.warning(statistics.get("llr"), 40, 1, 0.05) is None
    _, info = calibration.threshold(
        statistics.get("latent_path"), path_outputs(12, np.random.default_rng(0)), 1, 0.05, seed=0
    )
    assert "'latent_path'" in info["warning"] and "d=8" in info["warning"]
    # Inliers the reference was not fitted on (set_threshold): only the quantile's bound.
    assert "30 inliers" in calibration.warning(stat, 30, 0, 0.05, images="inliers")
    assert calibration.warning(stat, 40, 0, 0.05, images="inliers") is None


def test_a_reference_that_could_not_be_fitted_raises_the_statistics_own_error():
    with pytest.raises(ValueError, match="reads a reference fitted on held-out training images"):
        calibration.threshold(
            "latent_path",
            path_outputs(20, np.random.default_rng(0)),
            1,
            0.05,
            seed=0,
            references={"latent_path": reference.Unfitted("its reference could not be fitted: a reason")},
        )


def test_a_fold_that_cannot_be_fitted_falls_back_with_a_warning():
    # Leaving out the 2 leaves two equal values: no spread to fit a typicality reference on.
    offset, info = calibration.threshold("typicality", {"L": np.array([1.0, 1.0, 2.0])}, 0, 0.05, seed=0)
    assert info["method"] == "in-sample" and "calibration failed" in info["warning"]
    assert np.isfinite(offset)


def test_bad_arguments_are_refused():
    held = path_outputs(20, np.random.default_rng(0))
    with pytest.raises(ValueError, match="method must be one of"):
        calibration.threshold("latent_path", held, 1, 0.05, seed=0, method="bootstrap")
    with pytest.raises(ValueError, match="contamination must be in"):
        calibration.threshold("latent_path", held, 1, 0.0, seed=0)
