"""The natural-image path end to end: CIFAR10 (in) against SVHN with the discretized logistic
mixture, through the table benchmark (train, score every k, results table, learning curve)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import SHARED_DATA, load_benchmark, needs_shared_data


def _conv(ch):
    return {"block": "ResBlockConv2d", "out_channels": ch, "kernel_size": 3, "stride": 2}


# Three latents as the natural-image preset (two convolutional, one dense), a few thousand weights.
TINY_NATURAL = {
    "config_deterministic": [[_conv(8)], [_conv(8)], [_conv(8)]],
    "config_stochastic": [
        {"block": "GaussianConv2d", "latent_features": 2},
        {"block": "GaussianConv2d", "latent_features": 2},
        {"block": "GaussianDense", "latent_features": 4},
    ],
}


@needs_shared_data
@pytest.mark.filterwarnings("ignore:.*has no x_extra:UserWarning")  # SVHN validation reads test here; the table says so
def test_cifar10_against_svhn_table_end_to_end(tmp_path, capsys):
    if not (SHARED_DATA / "cifar10.npz").is_file() or not (SHARED_DATA / "svhn.npz").is_file():
        pytest.skip("cifar10.npz / svhn.npz are not in the shared data")
    table = tmp_path / "table.md"
    threads = torch.get_num_threads()  # the benchmark sets its own thread counts
    try:
        rc = load_benchmark("ood_table").main(
            [
                "--in_dist",
                "CIFAR10Dequantized",
                "--epochs",
                "1",
                "--n_train",
                "300",
                "--n_eval",
                "200",
                "--n_val",
                "100",
                "--iw_samples",
                "2",
                "--batch_size",
                "50",
                "--architecture",
                json.dumps(TINY_NATURAL),
                "--log_scale_min",
                "-4",
                "--free_nats_fraction",
                "2",
                "--data_root",
                str(SHARED_DATA),
                "--save_dir",
                str(tmp_path / "runs"),
                "--markdown",
                str(table),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    text = table.read_text()
    assert "JPEG" in text and "validation' reads test" in text  # the data caveats travel with the numbers
    rows = dict(re.findall(r"^\| SVHN test \| (\S+) \| ([0-9.]+) \|", text, flags=re.M))
    assert set(rows) == {"L", "L>1", "L>2", "LLR>1", "LLR>2"}
    assert all(0.0 <= float(v) <= 1.0 for v in rows.values())
    assert "log-scale floor -4.0" in text
    run = next((tmp_path / "runs").glob("*/run.json"))
    assert "over 2 of the epochs" in text
    config = json.loads(run.read_text())
    assert config["log_scale_min"] == -4.0
    assert config["free_nats_epochs"] == 2.0  # free nats held for the whole (one-epoch) run
    scores = next((tmp_path / "runs").glob("*/scores"))
    assert {"results.csv", "results.json", "roc.png", "learning_curve.json", "learning_curve.png"} <= {
        p.name for p in scores.iterdir()
    }
    curve = json.loads((scores / "learning_curve.json").read_text())
    assert [r["epoch"] for r in curve] == [1]
    assert 0.0 <= curve[0]["auroc_L"] <= 1.0 and curve[0]["best_llr_k"] in (1, 2)

    # The decomposition of LLR>k into reconstruction gain and KL removed, on the same run.
    capsys.readouterr()
    assert (
        load_benchmark("llr_terms").main(
            ["--model", str(run.parent), "--n", "40", "--data_root", str(SHARED_DATA), "--threads", str(threads)]
        )
        == 0
    )
    out = capsys.readouterr().out
    rows = re.findall(r"^\| ([12]) \| (CIFAR10 test|SVHN test) \| (-?\d+) \| (-?\d+) \| (-?\d+) \|", out, flags=re.M)
    assert len(rows) == 4
    assert all(int(gain) - int(kl) - int(llr) in (-1, 0, 1) for _, _, gain, kl, llr in rows)  # rounded means


def test_table_refuses_a_negative_free_nats_fraction(capsys):
    with pytest.raises(SystemExit) as stop:
        load_benchmark("ood_table").main(["--in_dist", "CIFAR10Dequantized", "--free_nats_fraction", "-0.5"])
    assert stop.value.code == 2
    assert "--free_nats_fraction must be >= 0" in capsys.readouterr().err


def test_estimator_keeps_its_log_scale_floor_through_save_and_load(tmp_path):
    from hvae_detect import HVAEOutlierDetector

    x = torch.Generator().manual_seed(0)
    images = (torch.rand((40, 3, 8, 8), generator=x) * 255).round().to(torch.uint8).numpy()
    det = HVAEOutlierDetector(
        architecture=TINY_NATURAL, epochs=1, batch_size=20, log_scale_min=-4.0, random_state=0, device="cpu"
    ).fit(images)
    assert det.model_.log_scale_min == -4.0
    det.save(tmp_path / "det")
    loaded = HVAEOutlierDetector.load(tmp_path / "det")
    assert loaded.log_scale_min == -4.0 and loaded.model_.log_scale_min == -4.0
    assert (loaded.score_samples(images[:5]) == det.score_samples(images[:5])).all()
    with pytest.raises(ValueError, match="log_scale_min"):
        HVAEOutlierDetector(architecture=TINY_NATURAL, epochs=1, log_scale_min=-9.0).fit(images)
