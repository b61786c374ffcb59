"""The scoring engine (hvae_detect.scoring.engine.importance_bounds) against the paper's way, and its memory bound.

The naive reference (tests/reference_scoring.py, also what the scoring benchmark times):
one full pass of the model per importance sample and per statistic.
"""

import math

import pytest
import torch
from conftest import TINY, _conv, gen, images_for, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st
from peak_memory import peak_memory_mib
from reference_scoring import naive_ood_scores

from hvae_detect.models.config import ModelConfig
from hvae_detect.models.vae import VAE
from hvae_detect.precision import autocast, resolve_precision
from hvae_detect.scoring.engine import default_max_rows, importance_bounds
from hvae_detect.training.config import TrainingConfig
from hvae_detect.training.loop import TrainingDiverged, train_epochs, training_loss

_model, _images, _gen = tiny_model, images_for, gen


@pytest.mark.parametrize("likelihood", ["bernoulli", "dlogmix"])
@pytest.mark.parametrize("max_rows", [None, 1, 3, 5, 12, 1000])  # sub-batched images, 1 and many samples per pass
def test_engine_equals_naive_for_the_same_random_numbers(likelihood, max_rows):
    model = _model(likelihood)
    x = _images(model, 5)
    naive = naive_ood_scores(model, x, [1, 2], 6, seed=3)
    fast = importance_bounds(model, x, [1, 2], 6, seed=3, max_rows=max_rows)
    assert sorted(fast) == [0, 1, 2]
    for k in (0, 1, 2):
        torch.testing.assert_close(fast[k], naive[k], rtol=1e-5, atol=1e-3)
        if k:  # LLR>k = L - L>k follows, checked as the estimator forms it
            torch.testing.assert_close(fast[0] - fast[k], naive[0] - naive[k], rtol=1e-4, atol=2e-3)


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 6),
    s=st.integers(1, 9),
    s_lk=st.integers(1, 4),
    max_rows=st.integers(1, 40),
    ks=st.sets(st.integers(0, 2)),
)
def test_engine_equals_naive_property(n, s, s_lk, max_rows, ks):
    model = _model()
    x = _images(model, n)
    fast = importance_bounds(model, x, ks, s, s_lk, seed=3, max_rows=max_rows)
    naive = naive_ood_scores(model, x, ks, s, seed=3, n_samples_lk=s_lk)
    for k in sorted({0, *ks}):
        torch.testing.assert_close(fast[k], naive[k], rtol=1e-5, atol=1e-3)


def test_every_pass_has_exactly_the_row_budget():
    model = _model()
    x = _images(model, 7)
    seen = {"encode_x": [], "forward": []}
    for name in seen:
        inner = getattr(model, name)

        def spy(x_, *args, _inner=inner, _name=name, **kwargs):
            out = _inner(x_, *args, **kwargs)
            seen[_name].append(out.shape[0] if _name == "encode_x" else out[0].shape[0])
            return out

        setattr(model, name, spy)
    for max_rows, s in [(3, 12), (7, 12), (20, 12), (100, 1)]:
        for v in seen.values():
            v.clear()
        importance_bounds(model, x, [1, 2], s, seed=3, max_rows=max_rows)
        assert set(seen["forward"]) == {max_rows} and set(seen["encode_x"]) == {max_rows}  # padded passes
        assert len(seen["forward"]) == 3 * math.ceil(s * 7 / max_rows)  # every (image, sample) once, no more


def test_peak_memory_does_not_grow_with_samples():
    """The bound's mechanism, measured: peak RSS of S=64 stays under 2x that of S=1, while the
    same S without a row budget (all samples of a chunk in one pass) is several times larger."""
    try:
        open("/proc/self/clear_refs", "w").close()
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    arch = {
        "config_deterministic": [[_conv(32, 3, 1)], [_conv(32, 3, 2)], [_conv(32, 3, 1)]],
        "config_stochastic": TINY["config_stochastic"],
    }
    model = _model(arch=arch)
    x = _images(model, 200)  # 200 rows x 32 x 12 x 12 floats = 3.7 MB per feature map
    one, _ = peak_memory_mib(model, x, 1, max_rows=200)
    many, passes = peak_memory_mib(model, x, 64, max_passes=6, max_rows=200)
    unbounded, _ = peak_memory_mib(model, x, 8, max_passes=1, max_rows=8 * 200)
    assert passes == 6
    assert many < 2 * one, (one, many)
    assert unbounded > 3 * one, (one, unbounded)  # the measurement does see activation memory


def test_scoring_leaves_the_model_as_it_was():
    model = _model()
    keys = set(model.state_dict())
    with pytest.raises(RuntimeError):
        with model.channels_last_weights():
            raise RuntimeError("boom")
    importance_bounds(model, _images(model, 3), None, 2, seed=3)
    for m in model.modules():
        if hasattr(m, "parametrizations"):
            assert len(m.parametrizations.weight) == 1
            assert m.weight.is_contiguous()
    assert set(model.state_dict()) == keys


def test_engine_rejects_bad_arguments():
    model = _model()
    x = _images(model, 2)
    with pytest.raises(ValueError, match="k must be in"):
        importance_bounds(model, x, [3])
    with pytest.raises(ValueError, match="max_rows"):
        importance_bounds(model, x, [1], max_rows=0)


def test_default_row_budget_scales_with_the_architecture():
    mnist = VAE(ModelConfig((1, 28, 28), "paper-mnist", "bernoulli"))
    assert mnist.row_elements == 64 * 28 * 28
    assert 100 <= default_max_rows(mnist, "cpu") < 500  # batch 500 is sub-batched whatever S is
    assert default_max_rows(mnist, "cuda") > default_max_rows(mnist, "cpu")


# ---- training ------------------------------------------------------------------------------
def test_channels_last_training_step_computes_the_same_loss_and_gradients():
    model = _model().train()
    x = _images(model, 6)
    grads = []
    for ctx in (torch.enable_grad, model.channels_last_weights):
        model.zero_grad()
        with ctx():
            loss, elbo, kl = training_loss(model, x, 0.5, 0.1, _gen())
            loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_training_still_stops_on_a_nan_loss():
    model = _model().train()
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 1, step 1"):
        train_epochs(model, _images(model, 8), TrainingConfig(epochs=1, batch_size=4))
    assert all(len(m.parametrizations.weight) == 1 for m in model.modules() if hasattr(m, "parametrizations"))


def test_mixed_precision_keeps_the_bound_in_float32_and_close():
    """bfloat16 autocast (run on CPU here; CUDA is what uses it) changes convolutions only:
    the loss, ELBO and KLs stay float32 and within bfloat16 rounding of the float32 values."""
    model = _model().train()
    x = _images(model, 6)
    out = {}
    for precision in ("float32", "bfloat16"):
        model.zero_grad()
        with autocast("cpu", precision):
            loss, elbo, kl = training_loss(model, x, 0.5, 0.1, _gen())
        loss.backward()
        out[precision] = (loss.detach(), elbo, kl, torch.cat([p.grad.flatten() for p in model.parameters()]))
    for a, b in zip(out["float32"][:3], out["bfloat16"][:3]):
        assert b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=2e-2, atol=0.5)
    g32, g16 = out["float32"][3], out["bfloat16"][3]
    assert torch.isfinite(g16).all()
    assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.99


def test_precision_choices(monkeypatch):
    from hvae_detect import precision

    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: False)
    assert resolve_precision("auto", "cpu") == "float32"
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bfloat16"
    assert resolve_precision("auto", "cuda") == "bfloat16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("float16", "cpu")
    model = _model()
    history = train_epochs(model, _images(model, 8), TrainingConfig(epochs=1, batch_size=4, precision="bfloat16"))
    assert math.isfinite(history[0]["elbo"])
    assert all(p.dtype == torch.float32 for p in model.parameters())
