"""The statistics table: its rows by hand, its orientation, and a statistic added through the table alone."""

import numpy as np
import pytest
import torch
from conftest import TINY

from hvae_detect import HVAEOutlierDetector
from hvae_detect.commands.results import collect_results, format_table
from hvae_detect.commands.score import score_run
from hvae_detect.reporting.metrics import detection_metrics
from hvae_detect.scoring import fitting, output_names, reference, statistics
from hvae_detect.scoring.complexity import compressed_bits

OUTPUTS = {"L": np.array([-10.0, -20.0]), "L>1": np.array([-12.0, -15.0]), "L>2": np.array([-11.0, -30.0])}


def test_rows_computed_by_hand():
    got = statistics.ood_scores(OUTPUTS, [1, 2])
    assert list(got) == ["L", "L>1", "LLR>1", "L>2", "LLR>2"]
    np.testing.assert_array_equal(got["LLR>1"], [2.0, -5.0])
    np.testing.assert_array_equal(got["LLR>2"], [1.0, 10.0])
    np.testing.assert_array_equal(got["L>2"], OUTPUTS["L>2"])


def test_one_orientation_inside_higher_is_more_normal():
    # LLR>k is large for outliers: its normality is its negation; the bounds are normality scores already.
    np.testing.assert_array_equal(statistics.normality("LLR>1", np.array([2.0, -5.0])), [-2.0, 5.0])
    np.testing.assert_array_equal(statistics.normality("L", OUTPUTS["L"]), OUTPUTS["L"])
    # The metrics take normality scores: an outlier scoring lower than every inlier gives AUROC 1.
    assert detection_metrics(np.array([0.0, 1.0]), np.array([-1.0]))["auroc"] == 1.0


def test_keys_name_their_row_and_k():
    statistic, k = statistics.read_key("LLR>12")
    assert (statistic.name, k) == ("llr", 12)
    assert statistics.output_key("llr", 12) == "LLR>12" and statistics.output_key("elbo", 12) == "L"
    assert statistics.read_key("L")[0].name == "elbo" and statistics.read_key("L>3") == (statistics.get("lk"), 3)
    needed = statistics.outputs_needed(["LLR>2", "L>1"])
    assert needed == {"L", "L>1", "L>2"} and output_names.bounds_needed(needed, 3) == [0, 1, 2]
    assert not output_names.terms_needed(needed) and output_names.terms_needed({"L", "KL"})
    with pytest.raises(ValueError, match="not the key of a known statistic"):
        statistics.read_key("LLR>x")
    with pytest.raises(ValueError, match="statistic must be one of"):
        statistics.get("nll")
    with pytest.raises(ValueError, match="exists already"):
        statistics.register(statistics.get("llr"))


@pytest.fixture
def toy_statistic():
    """A statistic that only the table knows: L + L>k."""
    row = statistics.register(
        statistics.Statistic(
            name="toy",
            key="T>{k}",
            description="L + L>k, for the test",
            higher_is_normal=True,
            needs=lambda k: ("L", f"L>{k}"),
            samples=(statistics.IW_SAMPLES, statistics.IW_SAMPLES_LK),
            formula=lambda out, k: out["L"] + out[f"L>{k}"],
        )
    )
    yield row
    statistics.unregister("toy")


@pytest.mark.slow
def test_a_statistic_added_to_the_table_reaches_every_surface(toy_statistic, noise_mnist_root, tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (32, 28, 28), dtype=np.uint8)
    det = HVAEOutlierDetector(architecture=TINY, epochs=1, batch_size=16, random_state=0, device="cpu").fit(x)
    scores = det.ood_scores(x[:8])
    np.testing.assert_array_equal(scores["T>2"], scores["L"] + scores["L>2"])
    np.testing.assert_array_equal(det.set_params(statistic="toy", k=2).score_samples(x[:8]), scores["T>2"])

    det.save(tmp_path / "det")
    rng = np.random.default_rng(1)
    for name in ("mnist", "fashion_mnist"):  # two sets of noise images, the second brighter
        images = rng.integers(0, 128 if name == "mnist" else 256, (24, 28, 28), dtype=np.uint8)
        np.savez(
            tmp_path / f"{name}.npz",
            x_train=images[:16],
            y_train=np.zeros(16, np.int64),
            x_test=images[16:],
            y_test=np.zeros(8, np.int64),
        )
    files = score_run(
        tmp_path / "det",
        ks=[1],
        data_root=tmp_path,
        n_eval_examples=8,
        batch_size=8,
        device="cpu",
        val_datasets='{"MNISTBinarized": {"split": "validation"}, "FashionMNISTBinarized": {"split": "validation"}}',
        download=False,
        quiet=True,
    )
    rows, _ = collect_results(files)
    toy = [r for r in rows if r["statistic"] == "T>1"]
    assert len(toy) == 1 and toy[0]["iw_samples"] == 1 and toy[0]["iw_samples_lk"] == 1 and 0 <= toy[0]["auroc"] <= 1
    assert "T>1 (S=1, S'=1)" in format_table(rows)


def test_score_files_of_the_earlier_format_still_read(tmp_path):
    rng = np.random.default_rng(0)
    L = {i: rng.normal(-100, 5, 20) for i in range(2)}
    Lk = {i: L[i] - rng.normal(3, 1, 20) for i in range(2)}
    np.savez(
        tmp_path / "scores-old.npz",
        datasets=np.array(["A test", "B test"]),
        in_distribution=np.array("A test"),
        k=np.array(2),
        iw_elbo=np.array(4),
        iw_lk=np.array(1),
        checkpoint_epoch=np.array(7),
        **{f"L_{i}": L[i] for i in L},
        **{f"Lk_{i}": Lk[i] for i in L},
        **{f"LLR_{i}": L[i] - Lk[i] for i in L},
    )
    rows, _ = collect_results(tmp_path)
    got = {(r["statistic"], r["iw_samples"], r["iw_samples_lk"]): r["auroc"] for r in rows}
    assert set(got) == {("L", 4, ""), ("L>2", "", 1), ("LLR>2", 4, 1)}
    expected = detection_metrics(-(L[0] - Lk[0]), -(L[1] - Lk[1]))["auroc"]
    assert got[("LLR>2", 4, 1)] == expected


@pytest.fixture(scope="module")
def fitted_detector():
    """A tiny detector fitted on 60 noise images, 6 of them held out for the references."""
    x = np.random.default_rng(0).integers(0, 256, (60, 1, 12, 12), dtype=np.uint8)
    return HVAEOutlierDetector(architecture=TINY, epochs=1, batch_size=16, random_state=0, device="cpu").fit(x)


def test_every_statistic_is_a_function_of_the_image(fitted_detector):
    x = np.random.default_rng(2).integers(0, 256, (7, 1, 12, 12), dtype=np.uint8)
    batch = fitted_detector.ood_scores(x)
    assert {"IC", "T", "Fused", "FusedECOD"} <= set(batch)
    order = np.random.default_rng(3).permutation(7)
    permuted = fitted_detector.ood_scores(x[order])
    for key, values in batch.items():
        np.testing.assert_array_equal(permuted[key], values[order], err_msg=key)
        np.testing.assert_array_equal(fitted_detector.ood_scores(x[4:5], batch_size=1)[key], values[4:5], err_msg=key)


def test_rows_that_read_the_image_or_a_reference_by_hand(fitted_detector):
    x = np.random.default_rng(4).integers(0, 256, (5, 1, 12, 12), dtype=np.uint8)
    scores = fitted_detector.ood_scores(x)
    drawn = fitted_detector.model_.observation.evaluation_draw(
        torch.from_numpy(x.astype(np.float32) / 255), fitted_detector.scoring_seed_
    ).numpy()
    bits = compressed_bits(drawn, statistics.COMPLEXITY_CODEC)
    np.testing.assert_allclose(scores["IC"], -scores["L"] / np.log(2) - bits)
    typical = fitted_detector.references_["typicality"]
    np.testing.assert_allclose(scores["T"], np.abs(scores["L"] - typical.mean_) / typical.std_)


def test_every_statistic_scores_the_same_after_save_and_load(fitted_detector, tmp_path):
    x = np.random.default_rng(5).integers(0, 256, (6, 1, 12, 12), dtype=np.uint8)
    fitted_detector.save(tmp_path / "det")
    assert "pickle" not in (tmp_path / "det" / "config.json").read_text()
    loaded = HVAEOutlierDetector.load(tmp_path / "det", device="cpu")
    before, after = fitted_detector.ood_scores(x), loaded.ood_scores(x)
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    for name in [n for n in statistics.names() if not statistics.get(n).on_request]:  # regret: its own test
        mine = fitted_detector.set_params(statistic=name).score_samples(x)
        np.testing.assert_array_equal(loaded.set_params(statistic=name).score_samples(x), mine, err_msg=name)
    fitted_detector.set_params(statistic="llr")


def test_a_reference_that_cannot_be_fitted_says_why():
    flat = {
        "L": np.full(5, -3.0),
        "L>1": np.full(5, -4.0),
        "log p(x|z)": np.full(5, -2.0),
        "KL1": np.ones(5),
        "KL2": np.ones(5),
        "bits": np.full(5, 800.0),
    }
    references = fitting.fit_references(flat)
    assert set(references) == {s.name for s in statistics.with_references()}
    assert isinstance(references["typicality"], reference.Unfitted) and not statistics.available("T", flat, references)
    with pytest.raises(ValueError, match="could not be fitted"):
        statistics.get("typicality").value(flat, 0, references)


def test_a_row_on_request_stays_out_of_ood_scores_and_statistic_computes_it(fitted_detector):
    from hvae_detect.scoring.regret import likelihood_regret

    x = np.random.default_rng(6).integers(0, 256, (1, 1, 12, 12), dtype=np.uint8)
    assert "Regret" not in fitted_detector.ood_scores(x) and "Regret" not in statistics.keys([1, 2])
    drawn = fitted_detector.model_.observation.evaluation_draw(
        torch.from_numpy(x.astype(np.float32) / 255), fitted_detector.scoring_seed_
    )
    expected = likelihood_regret(fitted_detector.model_, drawn, seed=fitted_detector.scoring_seed_, iw_samples=1)
    try:
        got = fitted_detector.set_params(statistic="likelihood_regret").score_samples(x)
    finally:
        fitted_detector.set_params(statistic="fused")
    np.testing.assert_allclose(got, -expected.double().numpy())
