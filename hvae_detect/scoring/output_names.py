"""The engine's outputs by name: how they are named, which of them a set of statistics needs, and the
vectors of them that the references model.

The engine (``hvae_detect.scoring.engine``, ``hvae_detect.scoring.outputs``) returns (n,) arrays named
"L" (the ELBO with S importance samples), "L>k" (the bound with the k lowest latents from the prior, S'
samples), and from L's passes "log p(x|z)" and each stage's KL ("KL1" .. "KLn"), in nats per image;
"bits" is the size of the image the model scored under a lossless compressor
(``hvae_detect.scoring.complexity``); the latent path's norms ("recon error", "|sigma x|", "|mu|i",
"|sigma|i": ``hvae_detect.models.base.HierarchicalModel.latent_path``) come from one more pass with
every latent at its posterior mean; "regret" is the likelihood regret (``hvae_detect.scoring.regret``,
on request only).

A statistic's ``needs`` (``hvae_detect.scoring.statistics``) names outputs in the same words, and three
words stand for several: ``EVERY_BOUND`` ("L>*") for every L>k, ``EVERY_KL`` ("KL") for every stage's
KL and ``LATENT_PATH`` ("path") for every norm of the latent path.

A numbered name is its prefix followed by decimal digits ("L>2", "KL3", "|mu|1"): ``numbered`` writes
one and ``number_in`` reads the number back.
"""

from __future__ import annotations

import numpy as np

ELBO = "L"
BOUND = "L>"  # the prefix of the numbered bounds L>k
KL = "KL"  # the prefix of the numbered KLs, and in ``needs`` every one of them
LOG_PX = "log p(x|z)"
BITS = "bits"
REGRET = "regret"
EVERY_BOUND = "L>*"  # in ``needs``: every L>k of the model
EVERY_KL = KL
LATENT_PATH = "path"  # in ``needs``: every output of the latent-path pass
PATH_OUTPUTS = ("recon error", "|sigma x|", "|mu|", "|sigma|")  # "|mu|" and "|sigma|" numbered per posterior


def numbered(prefix: str, i: int) -> str:
    """The name "<prefix><i>" ("L>2" of ``BOUND`` and 2)."""
    return f"{prefix}{i}"


def number_in(name: str, prefix: str) -> int | None:
    """i of a name "<prefix><i>" (i: one or more decimal digits), else None."""
    digits = name[len(prefix) :]
    return int(digits) if name.startswith(prefix) and digits.isdecimal() else None


def bound_name(k: int) -> str:
    """The output of the bound of the engine's k: "L" for k = 0, else "L>k"."""
    return ELBO if k == 0 else numbered(BOUND, k)


def _numbered_in(outputs, prefix: str) -> list[str]:
    """The outputs "<prefix><i>" in the order of i."""
    return sorted((n for n in outputs if number_in(n, prefix) is not None), key=lambda n: number_in(n, prefix))


def bounds_needed(outputs: set[str], n_latents: int) -> list[int]:
    """The bounds among ``outputs`` as the engine's ks: 0 for L, k for L>k (``EVERY_BOUND``: every k)."""
    every = range(1, n_latents) if EVERY_BOUND in outputs else ()
    return sorted({0, *every} | {k for k in (number_in(name, BOUND) for name in outputs) if k is not None})


def terms_needed(outputs: set[str]) -> bool:
    """Whether ``outputs`` need the terms of L's passes: "log p(x|z)" or the KLs (``EVERY_KL``: every stage's)."""
    return any(name == LOG_PX or name.startswith(KL) for name in outputs)


def path_needed(outputs: set[str]) -> bool:
    """Whether ``outputs`` need the latent-path pass."""
    return LATENT_PATH in outputs or any(name.startswith(PATH_OUTPUTS) for name in outputs)


def present(name: str, outputs: dict) -> bool:
    """Whether ``outputs`` hold the engine output ``name`` (of ``needs``' words)."""
    if name == EVERY_BOUND:  # every L>k of the model: one fewer than its KLs (none for a one-latent model)
        bounds, kls = len(_numbered_in(outputs, BOUND)), len(_numbered_in(outputs, KL))
        return bounds == kls - 1 if kls else bounds > 0
    if name == EVERY_KL:
        return bool(_numbered_in(outputs, KL))
    return "recon error" in outputs if name == LATENT_PATH else name in outputs


def path_vector(outputs: dict) -> np.ndarray:
    """(n, d) per image: the logs of the latent path's norms (Huang, He, Lui 2024): the reconstruction
    error, the likelihood's scale, and the mean and scale of every posterior. Logs, because norms are
    positive and skewed, and a Gaussian reference models their logs better."""
    names = ["recon error", "|sigma x|", *_numbered_in(outputs, "|mu|"), *_numbered_in(outputs, "|sigma|")]
    return np.log(np.maximum(np.stack([outputs[name] for name in names], axis=1), np.finfo(np.float64).tiny))


def statistic_vector(outputs: dict) -> np.ndarray:
    """(n, d) per image: every L>k, log p(x|z), every stage's KL, the compressed bits and the latent
    path's log-norms (``path_vector``). L itself is left out: with one sample it is log p(x|z) minus
    the KLs, so a Gaussian of both would be singular."""
    names = [*_numbered_in(outputs, BOUND), LOG_PX, *_numbered_in(outputs, KL), BITS]
    return np.hstack([np.stack([outputs[name] for name in names], axis=1), path_vector(outputs)])


VECTOR_NEEDS = (EVERY_BOUND, LOG_PX, EVERY_KL, BITS, LATENT_PATH)  # what ``statistic_vector`` reads
