"""The statistics table: its rows by hand, its orientation, and a statistic added through the table alone."""

import numpy as np
import pytest

from conftest import TINY

from hvae_detect import HVAEOutlierDetector
from hvae_detect.commands.results import collect_results, format_table
from hvae_detect.commands.score import score_run
from hvae_detect.reporting.metrics import detection_metrics
from hvae_detect.scoring import statistics

OUTPUTS = {"L": np.array([-10.0, -20.0]), "L>1": np.array([-12.0, -15.0]), "L>2": np.array([-11.0, -30.0])}


def test_rows_computed_by_hand():
    got = statistics.scores(OUTPUTS, [1, 2])
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
    statistic, k = statistics.of_key("LLR>12")
    assert (statistic.name, k) == ("llr", 12)
    assert statistics.of_key("L")[0].name == "elbo" and statistics.of_key("L>3") == (statistics.get("lk"), 3)
    needed = statistics.outputs_needed(["LLR>2", "L>1"])
    assert needed == {"L", "L>1", "L>2"} and statistics.bounds_needed(needed) == [0, 1, 2]
    assert not statistics.terms_needed(needed) and statistics.terms_needed({"L", "KL"})
    with pytest.raises(ValueError, match="not the key of a known statistic"):
        statistics.of_key("LLR>x")
    with pytest.raises(ValueError, match="statistic must be one of"):
        statistics.get("nll")
    with pytest.raises(ValueError, match="exists already"):
        statistics.register(statistics.get("llr"))


@pytest.fixture
def toy_statistic():
    """A statistic that only the table knows: L + L>k."""
    row = statistics.register(statistics.Statistic(
        "toy", "T>{k}", True, lambda k: ("L", f"L>{k}"), lambda out, k: out["L"] + out[f"L>{k}"],
        (statistics.IW_SAMPLES, statistics.IW_SAMPLES_LK), "L + L>k, for the test"))
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
        np.savez(tmp_path / f"{name}.npz", x_train=images[:16], y_train=np.zeros(16, np.int64), x_test=images[16:],
                 y_test=np.zeros(8, np.int64))
    files = score_run(tmp_path / "det", ks=[1], data_root=tmp_path, n_eval_examples=8, batch_size=8, device="cpu",
                      val_datasets='{"MNISTBinarized": {"split": "validation"}, '
                                   '"FashionMNISTBinarized": {"split": "validation"}}', download=False, quiet=True)
    rows, _ = collect_results(files)
    toy = [r for r in rows if r["statistic"] == "T>1"]
    assert len(toy) == 1 and toy[0]["iw_samples"] == 1 and toy[0]["iw_samples_lk"] == 1 and 0 <= toy[0]["auroc"] <= 1
    assert "T>1 (S=1, S'=1)" in format_table(rows)


def test_score_files_of_the_earlier_format_still_read(tmp_path):
    rng = np.random.default_rng(0)
    L = {i: rng.normal(-100, 5, 20) for i in range(2)}
    Lk = {i: L[i] - rng.normal(3, 1, 20) for i in range(2)}
    np.savez(tmp_path / "scores-old.npz", datasets=np.array(["A test", "B test"]), in_distribution=np.array("A test"),
             k=np.array(2), iw_elbo=np.array(4), iw_lk=np.array(1), checkpoint_epoch=np.array(7),
             **{f"L_{i}": L[i] for i in L}, **{f"Lk_{i}": Lk[i] for i in L}, **{f"LLR_{i}": L[i] - Lk[i] for i in L})
    rows, _ = collect_results(tmp_path)
    got = {(r["statistic"], r["iw_samples"], r["iw_samples_lk"]): r["auroc"] for r in rows}
    assert set(got) == {("L", 4, ""), ("L>2", "", 1), ("LLR>2", 4, 1)}
    expected = detection_metrics(-(L[0] - Lk[0]), -(L[1] - Lk[1]))["auroc"]
    assert got[("LLR>2", 4, 1)] == expected
