"""Precision and compilation: scoring in float32 by default and unchanged, bfloat16 on request (close to
float32, its own threshold; its per-image contracts are in test_sklearn_contract), saves from before the
setting existed load as float32; compiled training takes the eager loop's steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY, gen, images_for, tiny_model

from hvae_detect import HVAEOutlierDetector
from hvae_detect.scoring import statistics
from hvae_detect.scoring.engine import importance_outputs, latent_path_outputs
from hvae_detect.training.config import TrainingConfig
from hvae_detect.training.loop import train_epochs


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 1, 12, 12), dtype=np.uint8)


@pytest.fixture(scope="module")
def fitted():
    det = HVAEOutlierDetector(
        architecture=TINY, epochs=1, batch_size=8, random_state=0, device="cpu", iw_samples=2
    ).fit(_images(24))
    return det, _images(10, seed=1)


def test_the_float32_default_is_the_engine_without_autocast(fitted):
    det, X = fitted
    assert det.scoring_precision == "float32"
    x = det.model_.observation.evaluation_draw(torch.from_numpy(X).float() / 255, det.scoring_seed_)
    with torch.autocast("cpu", enabled=False):
        want = importance_outputs(det.model_, x, None, 2, 1, seed=det.scoring_seed_)
        want.update(latent_path_outputs(det.model_, x))
    got = det._engine_outputs(X, statistics.outputs_needed(statistics.keys(range(1, det.n_latents_))))
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value.double().numpy(), err_msg=name)


def test_bfloat16_scores_are_close_to_float32_but_not_the_same(fitted):
    det, X = fitted
    f32 = det.ood_scores(X)
    bf16 = det.set_params(scoring_precision="bfloat16").ood_scores(X)
    det.set_params(scoring_precision="float32")
    assert not np.array_equal(bf16["L"], f32["L"])  # the passes did run in bfloat16
    for name in ("L", "L>1", "L>2"):  # nats per image of a 144-pixel image: within bfloat16 rounding
        np.testing.assert_allclose(bf16[name], f32[name], rtol=0.02, atol=0.5, err_msg=name)


def test_a_threshold_holds_for_its_precision_only(fitted):
    det, X = fitted
    other = HVAEOutlierDetector(**{**det.get_params(), "scoring_precision": "bfloat16"})
    other.__dict__.update({k: v for k, v in det.__dict__.items() if k.endswith("_")})
    with pytest.raises(ValueError, match="'scoring_precision': 'float32'.*'scoring_precision': 'bfloat16'"):
        other.predict(X)
    with pytest.raises(ValueError, match="'scoring_precision' parameter .* among .*'bfloat16'.* Got 'float16'"):
        HVAEOutlierDetector(scoring_precision="float16").fit(_images(8))


def test_a_save_from_before_scoring_precision_loads_as_float32(fitted, tmp_path, monkeypatch):
    det, X = fitted
    old = HVAEOutlierDetector(**det.get_params())
    old.__dict__.update({k: v for k, v in det.__dict__.items() if k.endswith("_")})
    old.threshold_params_ = {k: v for k, v in det.threshold_params_.items() if k != "scoring_precision"}
    params = HVAEOutlierDetector.get_params
    monkeypatch.setattr(
        HVAEOutlierDetector,
        "get_params",
        lambda self, deep=True: {k: v for k, v in params(self, deep).items() if k != "scoring_precision"},
    )
    old.save(tmp_path / "old")
    monkeypatch.undo()
    loaded = HVAEOutlierDetector.load(tmp_path / "old")
    assert loaded.scoring_precision == "float32" and loaded.threshold_params_ == det.threshold_params_
    np.testing.assert_array_equal(loaded.decision_function(X), det.decision_function(X))


def _fresh_compiler():
    """torch keeps a few graphs per function and process, then runs it eagerly: start from none, so that
    the compiled path is the one tested; returns the count of graphs compiled so far."""
    torch._dynamo.reset()
    return lambda: torch._dynamo.utils.counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("likelihood", ["bernoulli", "dlogmix"])
def test_compiled_training_takes_the_eager_steps(likelihood):
    """compile=True: the same posterior draws (made before the pass from the same generator) and the same
    updates as the eager loop, up to float rounding; the float32 eager default is left as it was."""
    assert TrainingConfig().compile is False
    graphs = _fresh_compiler()
    before = graphs()
    out = {}
    for compiled in (False, True):
        model = tiny_model(likelihood)
        history = train_epochs(
            model, images_for(model, 16), TrainingConfig(epochs=2, batch_size=8, compile=compiled), generator=gen()
        )
        out[compiled] = ([h["elbo"] for h in history], torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert graphs() > before  # the compiled pass did run
    np.testing.assert_allclose(out[True][0], out[False][0], rtol=1e-4)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-3, atol=1e-4)
