"""The model families (VAE, LVAE, BIVA) through one interface: shapes, bounds, gradients, the
scoring engine, saving, a short fit on real images, and a family added through the registry alone."""

import pickle

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, TINY, gen, images_for, needs_shared_data
from reference_scoring import naive_family_scores

from hvae_detect.estimator import HVAEOutlierDetector
from hvae_detect.models import registry
from hvae_detect.models.architectures import PRESETS, family_of, resolve_architecture, with_family
from hvae_detect.models.biva import BIVA
from hvae_detect.models.config import ModelConfig
from hvae_detect.models.lvae import LVAE
from hvae_detect.models.registry import make_model
from hvae_detect.models.vae import VAE
from hvae_detect.persistence import checkpoints
from hvae_detect.scoring.engine import importance_bounds
from hvae_detect.training.loop import training_loss

# Every family, BIVA with and without the conditional bottom-up prior.
ARCHS = {
    "VAE": TINY,
    "LVAE": {"model": "LVAE", **TINY},
    "BIVA": {"model": "BIVA", **TINY},
    "BIVA-cond": {"model": "BIVA", "conditional_bu": True, **TINY},
}
families = pytest.mark.parametrize("name", sorted(ARCHS))


def _model(name, likelihood="bernoulli", seed=0, **options):
    torch.manual_seed(seed)
    shape = (1, 12, 12) if likelihood == "bernoulli" else (3, 8, 8)
    return make_model(ModelConfig(shape, ARCHS[name], likelihood, n_mix=2, **options)).eval()


def _noise(model, x, k, n_samples=1, seed=5):
    g = gen(seed)
    return [torch.randn((n_samples * x.shape[0], *s), generator=g) for s in model.latent_shapes[k:]]


@families
@pytest.mark.parametrize("likelihood", ["bernoulli", "dlogmix"])
def test_shapes_and_finiteness(name, likelihood):
    model = _model(name, likelihood)
    x = images_for(model, 3)
    assert model.family == family_of(resolve_architecture(ARCHS[name]))
    for k in range(model.n_latents):
        with torch.no_grad():
            terms = model(x, k, n_samples=2, generator=gen())
        assert terms.log_px.shape == (6,) and terms.kl.shape == (model.n_latents - k, 6)
        assert terms.params.shape[0] == 6 and terms.params.shape[2:] == model.input_shape[1:]
        assert torch.isfinite(terms.bound).all()


def test_biva_stage_latents_hold_both_directions():
    model = _model("BIVA")
    assert model.latent_shapes == [(4, 6, 6), (8,), (2,)]  # [z_TD, z_BU] per stage below the top
    x = images_for(model, 2)
    elements = model(x, 0, generator=gen(), kl_elements=True).kl_elements
    assert [tuple(e.shape[1:]) for e in elements] == [(2, 6, 6), (2, 6, 6), (4,), (4,), (2,)]


@families
def test_prefix_and_repeats_give_the_full_pass(name):
    """The engine's shortcuts (a shared prefix, samples as repeated rows) change no bound."""
    model = _model(name)
    x = images_for(model, 3)
    with torch.no_grad():
        for k in range(model.n_latents):
            noise = _noise(model, x, k, n_samples=2)
            full = model(x, k, n_samples=2, noise=noise).bound
            start = model.prefix(model.encode_x(x), k)
            shared = model(x, k, n_samples=2, noise=noise, start=start).bound
            torch.testing.assert_close(shared, full, rtol=1e-6, atol=1e-5)
            one = model(x, k, noise=[n[3:] for n in noise]).bound  # the second sample alone
            torch.testing.assert_close(full[3:], one, rtol=1e-6, atol=1e-5)


@families
def test_l_above_zero_is_l(name):
    """L>0 (no latent taken from the prior) is L: the bound with the same noise, all KL rows, and the
    zero-noise pass is the posterior-mean reconstruction."""
    model = _model(name)
    x = images_for(model, 4)
    noise = _noise(model, x, 0)
    with torch.no_grad():
        terms = model(x, 0, noise=noise)
        again = model(x, 0, noise=noise, start=model.prefix(model.encode_x(x), 0))
    assert terms.kl.shape[0] == model.n_latents
    torch.testing.assert_close(terms.bound, terms.log_px - terms.kl.sum(0))
    torch.testing.assert_close(again.bound, terms.bound, rtol=0, atol=0)
    engine = importance_bounds(model, x, [], 1, seed=3)[0]
    assert torch.isfinite(engine).all() and engine.shape == (4,)


@families
@pytest.mark.parametrize("mode", ["element", "layer"])
def test_gradients_reach_every_parameter(name, mode):
    model = _model(name).train()
    x = images_for(model, 4)
    loss, _, kl = training_loss(model, x, kl_weight=0.5, free_nats=0.1, generator=gen(), free_nats_mode=mode)
    loss.backward()
    assert kl.shape == (model.n_latents,)
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


@families
@pytest.mark.parametrize("max_rows", [None, 1, 5, 1000])
def test_engine_equals_full_passes_for_the_same_random_numbers(name, max_rows):
    model = _model(name, "dlogmix" if name == "LVAE" else "bernoulli")
    x = images_for(model, 5)
    naive = naive_family_scores(model, x, [1, 2], 4, seed=3, n_samples_lk=2)
    fast = importance_bounds(model, x, [1, 2], 4, 2, seed=3, max_rows=max_rows)
    for k in (0, 1, 2):
        torch.testing.assert_close(fast[k], naive[k], rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("name", ["LVAE", "BIVA-cond"])
def test_a_score_depends_only_on_the_image(name):
    model = _model(name)
    x = images_for(model, 7)
    batch = importance_bounds(model, x, None, 3, seed=11, max_rows=4)
    for i in (0, 4, 6):
        alone = importance_bounds(model, x[i : i + 1], None, 3, seed=11, max_rows=4)
        for k in batch:
            assert torch.equal(alone[k], batch[k][i : i + 1])
    shuffled = importance_bounds(model, x.flip(0), None, 3, seed=11, max_rows=4)
    assert all(torch.equal(shuffled[k].flip(0), batch[k]) for k in batch)


def test_lower_latents_from_the_prior_change_the_bound():
    """L>k is not L: with z_{<=k} decoded from the prior, a BIVA bound differs (the k lowest
    stages' two latents are both decoded from the prior)."""
    model = _model("BIVA")
    x = images_for(model, 4)
    b = importance_bounds(model, x, None, 1, seed=0)
    assert not torch.allclose(b[0], b[1]) and not torch.allclose(b[1], b[2])


@families
def test_checkpoint_round_trip_keeps_the_family(name, tmp_path):
    model = _model(name, "dlogmix", activation="ReLU", likelihood_head="paper", skip_stochastic=False)
    checkpoints.write_model_dir(tmp_path / "m", model, {})
    loaded, config = checkpoints.read_model_dir(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.skip_stochastic is False
    x = images_for(model, 3)
    a, b = (importance_bounds(m, x, None, 2, seed=1) for m in (model, loaded))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_estimator_fits_saves_and_loads_biva(tmp_path):
    x = (np.random.default_rng(0).random((24, 12, 12)) * 255).astype(np.uint8)
    det = HVAEOutlierDetector(
        architecture={"model": "biva", **TINY}, epochs=1, batch_size=8, device="cpu", random_state=0
    ).fit(x)
    assert isinstance(det.model_, BIVA)
    det.save(tmp_path / "det")
    loaded = HVAEOutlierDetector.load(tmp_path / "det", device="cpu")
    assert isinstance(loaded.model_, BIVA) and loaded.offset_ == det.offset_
    np.testing.assert_array_equal(loaded.score_samples(x), det.score_samples(x))
    unpickled = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(unpickled.score_samples(x[:5]), det.score_samples(x[:5]))


def test_choosing_a_family():
    assert type(make_model(ModelConfig((1, 12, 12), {"model": "HVAE", **TINY}))) is VAE
    assert type(make_model(ModelConfig((1, 12, 12), {"model": "lvae", **TINY}))) is LVAE
    assert resolve_architecture({"model": "hvae", **TINY})["model"] == "VAE"  # the alias on input only
    assert registry.model_names() == ("VAE", "HVAE", "LVAE", "BIVA")
    assert resolve_architecture("biva-mnist")["model"] == "BIVA"
    assert {k: v for k, v in PRESETS["biva-cifar"].items() if k != "model"} == PRESETS["paper-cifar"]
    assert "model" not in resolve_architecture("paper-mnist")  # saved VAEs keep their architecture
    assert with_family("paper-mnist", "BIVA")["model"] == "BIVA"
    with pytest.raises(ValueError, match="model must be one of"):
        resolve_architecture({"model": "NVAE", **TINY})
    with pytest.raises(ValueError, match="conditional_bu"):
        resolve_architecture({"model": "LVAE", "conditional_bu": True, **TINY})
    with pytest.raises(ValueError, match="BIVA model but the model asked for is LVAE"):
        with_family("biva-small", "LVAE")
    with pytest.raises(ValueError, match="make_model"):
        VAE(ModelConfig((1, 12, 12), {"model": "BIVA", **TINY}))
    with pytest.raises(ValueError, match="at least one block"):
        ModelConfig(
            (1, 12, 12),
            {"model": "LVAE", "config_deterministic": [[], [], []], "config_stochastic": TINY["config_stochastic"]},
        )


class Toy(VAE):
    """A family added from outside: the VAE with its top latent's KL counted twice (a different bound)."""

    def stage_terms(self, x, k, start, noise, generator, elements):
        log_px, params, stages = super().stage_terms(x, k, start, noise, generator, elements)
        return log_px, params, [*stages[:-1], (*stages[-1], stages[-1][0])]


@pytest.fixture
def toy_family():
    registry.register_family("Toy", Toy)
    try:
        yield Toy
    finally:
        registry.unregister_family("Toy")


def test_a_family_added_through_the_registry_alone_fits_scores_saves_and_loads(toy_family, tmp_path):
    assert "Toy" in registry.model_names() and Toy.family == "Toy"
    x = (np.random.default_rng(0).random((24, 12, 12)) * 255).astype(np.uint8)
    det = HVAEOutlierDetector(
        architecture={"model": "toy", **TINY}, epochs=1, batch_size=8, device="cpu", random_state=0
    ).fit(x)
    assert type(det.model_) is Toy and det.model_.architecture["model"] == "Toy"
    vae = HVAEOutlierDetector(architecture=TINY, epochs=1, batch_size=8, device="cpu", random_state=0).fit(x)
    assert not np.array_equal(det.score_samples(x), vae.score_samples(x))  # its own bound
    det.save(tmp_path / "toy")
    loaded = HVAEOutlierDetector.load(tmp_path / "toy", device="cpu")
    assert type(loaded.model_) is Toy
    np.testing.assert_array_equal(loaded.ood_scores(x)["LLR>1"], det.ood_scores(x)["LLR>1"])
    with pytest.raises(ValueError, match="taken"):
        registry.register_family("TOY", Toy)


def test_the_registry_refuses_what_is_not_a_family():
    with pytest.raises(ValueError, match="subclass of HierarchicalModel"):
        registry.register_family("Thing", object)
    with pytest.raises(ValueError, match="taken"):
        registry.register_family("hvae", type("Other", (VAE,), {}))
    with pytest.raises(ValueError, match="stays registered"):
        registry.unregister_family("BIVA")
    with pytest.raises(ValueError, match="model must be one of"):
        registry.family_class("Toy")  # not registered outside the fixture


def test_train_command_builds_the_family():
    from hvae_detect.commands.run_config import make_run_config

    cfg = make_run_config(model="BIVA")
    assert cfg["model"] == "BIVA" and cfg["architecture"]["model"] == "BIVA"
    assert make_run_config(architecture="biva-small")["model"] == "BIVA"
    assert make_run_config(model="HVAE")["model"] == "VAE"


@needs_shared_data
@pytest.mark.parametrize("name", ["LVAE", "BIVA"])
def test_one_epoch_on_fashion_mnist(name):
    """A real fit, small: 400 Fashion-MNIST images, one epoch of the plain ELBO (no KL warm-up or
    free nats); held-out scores are finite and the fit raised L above the untrained model's.
    (One epoch is too short for L>k < L, which needs a trained model: benchmarks/paper/ood_table.py.)"""
    path = SHARED_DATA / "fashion_mnist.npz"
    if not path.is_file():
        pytest.skip("fashion_mnist.npz is not in the shared data")
    with np.load(path) as data:
        train, test = data["x_train"][:400], data["x_test"][:100]
    arch = {"model": name, **PRESETS["small"]}
    det = HVAEOutlierDetector(
        architecture=arch,
        epochs=1,
        batch_size=32,
        learning_rate=1e-3,
        warmup_epochs=0,
        free_nats=0,
        device="cpu",
        random_state=0,
    ).fit(train)
    scores = det.ood_scores(test)
    assert set(scores) == {"L", "L>1", "LLR>1", "L>2", "LLR>2", "IC", "T", "Fused", "Path", "PathCOPOD", "FusedECOD"}
    assert all(np.isfinite(v).all() for v in scores.values()) and np.isfinite(det.offset_)
    x = torch.from_numpy(test[:, None] / 255.0).float().round()  # a fixed binarisation of the same images
    untrained = make_model(ModelConfig((1, 28, 28), arch, "bernoulli")).eval()
    before, after = (importance_bounds(m, x, [], 1, seed=0)[0].mean() for m in (untrained, det.model_))
    assert after > before + 25  # nats per image (measured: LVAE +64, BIVA +122)
