"""The model families by name: one call builds a VAE, LVAE or BIVA from an architecture.

The family is the architecture's "model" key (``hvae_detect.models.architectures``; absent means
the VAE, so every model saved before the key existed rebuilds as it was).
"""

from __future__ import annotations

from hvae_detect.models.architectures import family_of, model_family, resolve_architecture
from hvae_detect.models.biva import BIVA
from hvae_detect.models.lvae import LadderVAE
from hvae_detect.models.base import HierarchicalModel
from hvae_detect.models.vae import HierarchicalVAE

FAMILIES = {"VAE": HierarchicalVAE, "LVAE": LadderVAE, "BIVA": BIVA}


def make_model(input_shape, architecture="small", likelihood="bernoulli", n_mix=10, **options) -> HierarchicalModel:
    """The model of ``architecture``'s family; ``options`` as ``HierarchicalVAE``'s (activation,
    likelihood_head, skip_stochastic, q_dropout, p_dropout, log_scale_min)."""
    arch = resolve_architecture(architecture)
    return FAMILIES[family_of(arch)](input_shape, arch, likelihood, n_mix, **options)


def with_family(architecture, model: str | None) -> dict:
    """``architecture`` resolved, its family set to ``model`` (a --model value) when given; a preset or
    dict that already names another family is refused rather than silently changed."""
    arch = resolve_architecture(architecture)
    if model is None:
        return arch
    family = model_family(model)
    if "model" in arch and arch["model"] != family:
        raise ValueError(f"the architecture is a {arch['model']} model but the model asked for is {family}; "
                         "give one of them")
    if family != "VAE" or "model" in arch:
        arch = {"model": family, **{k: v for k, v in arch.items() if k != "model"}}
    return resolve_architecture(arch)
