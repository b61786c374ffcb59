"""HVAEOutlierDetector: the scikit-learn face of the hierarchical VAE."""

from __future__ import annotations

import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from hvae_detect import checkpoints
from hvae_detect.architectures import resolve_architecture
from hvae_detect.devices import resolve_device
from hvae_detect.inputs import binarize, check_images
from hvae_detect.model import HierarchicalVAE
from hvae_detect.scoring import importance_bounds
from hvae_detect.training import TrainingConfig, train_epochs

SCORES = ("llr", "elbo", "lk")
_TRAINING = TrainingConfig()  # the defaults of the training parameters


class HVAEOutlierDetector(OutlierMixin, BaseEstimator):
    """Out-of-distribution detector built on a hierarchical VAE (Havtorn et al., ICML 2021).

    Fits a hierarchical VAE to in-distribution images and scores new images with
    the likelihood-ratio statistic LLR>k = L - L>k (or the bounds themselves).

    Parameters
    ----------
    architecture : {"small", "paper-mnist", "paper-cifar"} or dict, default="small"
        A preset, or a dict with the seed's "config_deterministic" and
        "config_stochastic" structures.
    likelihood : {"auto", "bernoulli", "dlogmix"}, default="auto"
        "auto" uses Bernoulli (dynamically binarised) for 1 channel and the
        discretized logistic mixture for 3 channels.
    score : {"llr", "elbo", "lk"}, default="llr"
        Statistic behind ``score_samples``: -LLR>k, L or L>k (higher = more normal).
    k : int, default=1
        Number of lowest latents taken from the prior in L>k (1..n_latents-1).
    iw_samples : int, default=1
        Importance samples S for L.
    iw_samples_lk : int or None, default=None
        Importance samples S' for L>k; None uses ``iw_samples``.
    epochs, batch_size, learning_rate, free_nats, free_nats_epochs, warmup_epochs, precision
        Training settings (``hvae_detect.training.TrainingConfig``): Adam, the seed's
        free-nats and KL warm-up schedules. ``precision`` "bfloat16" runs convolutions in
        bfloat16 mixed precision with float32 weights and bound (faster on hardware with
        bfloat16 arithmetic, see benchmarks/RESULTS.md); "auto" picks it on CUDA. Scoring
        is always float32.
    n_mix : int, default=10
        Mixture components of the discretized logistic mixture.
    image_shape : tuple or None
        (C, H, W) (or (H, W)) for 2-D input of flattened images.
    contamination : "auto" or float in (0, 0.5], default="auto"
        Sets ``offset_`` as the given quantile of the training scores;
        "auto" uses 0.05 (5% of the training images fall below the threshold).
    device : "auto", "cpu", "cuda" or a torch device string
    random_state : int, RandomState or None
        Seeds initialisation, batching, binarisation and importance samples.
    verbose : bool
        Progress bar and per-epoch ELBO during fit.

    Attributes
    ----------
    model_ : HierarchicalVAE
    offset_ : float or None (None for a model loaded from a training run: no threshold)
    image_shape_ : tuple (C, H, W)
    n_features_in_ : int
    n_latents_ : int
    likelihood_ : str
    history_ : list of dict, per-epoch training ELBO and KL per layer
    """

    def __init__(self, architecture="small", likelihood="auto", score="llr", k=1, iw_samples=1, iw_samples_lk=None,
                 epochs=_TRAINING.epochs, batch_size=_TRAINING.batch_size, learning_rate=_TRAINING.learning_rate,
                 free_nats=_TRAINING.free_nats, free_nats_epochs=_TRAINING.free_nats_epochs,
                 warmup_epochs=_TRAINING.warmup_epochs, n_mix=10, image_shape=None, contamination="auto",
                 device="auto", precision=_TRAINING.precision, random_state=None, verbose=False):
        self.architecture = architecture
        self.likelihood = likelihood
        self.score = score
        self.k = k
        self.iw_samples = iw_samples
        self.iw_samples_lk = iw_samples_lk
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.free_nats = free_nats
        self.free_nats_epochs = free_nats_epochs
        self.warmup_epochs = warmup_epochs
        self.n_mix = n_mix
        self.image_shape = image_shape
        self.contamination = contamination
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    # ---- parameter checks -------------------------------------------------------
    def _training_config(self) -> TrainingConfig:
        return TrainingConfig(**{name: getattr(self, name) for name in TrainingConfig.field_names()})

    def _check_params(self):
        self._training_config()  # validates the training settings
        if self.iw_samples_lk is not None and (not isinstance(self.iw_samples_lk, numbers.Integral)
                                               or isinstance(self.iw_samples_lk, bool) or self.iw_samples_lk < 1):
            raise ValueError(f"iw_samples_lk must be a positive integer or None, got {self.iw_samples_lk!r}")
        for name in ("iw_samples", "n_mix"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.likelihood not in ("auto", "bernoulli", "dlogmix"):
            raise ValueError(f"likelihood must be 'auto', 'bernoulli' or 'dlogmix', got {self.likelihood!r}")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")
        if not isinstance(self.k, numbers.Integral) or isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"k must be a positive integer (latents skipped in L>k), got {self.k!r}")
        c = self.contamination
        if not (c == "auto" or (isinstance(c, numbers.Real) and not isinstance(c, bool) and 0 < c <= 0.5)):
            raise ValueError(f"contamination must be 'auto' or a float in (0, 0.5], got {c!r}")
        resolve_architecture(self.architecture)

    # ---- fit --------------------------------------------------------------------
    def fit(self, X, y=None):
        """Train the hierarchical VAE on in-distribution images X; y is ignored."""
        self._check_params()
        x = check_images(X, self.image_shape, min_samples=2)
        c = x.shape[1]
        likelihood = self.likelihood if self.likelihood != "auto" else ("bernoulli" if c == 1 else "dlogmix")
        device = resolve_device(self.device)
        seeds = check_random_state(self.random_state).randint(0, 2**31 - 1, size=3)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seeds[0]))
            model = HierarchicalVAE(x.shape[1:], self.architecture, likelihood, self.n_mix)
        if self.k >= model.n_latents:
            raise ValueError(f"k must be in 1..{model.n_latents - 1} for a model with {model.n_latents} latents, got {self.k}")
        model.to(device)
        gen = torch.Generator(device=device).manual_seed(int(seeds[1]))
        data = torch.from_numpy(x).to(device)
        transform = binarize if likelihood == "bernoulli" else None
        self.history_ = train_epochs(model, data, self._training_config(), transform=transform, generator=gen,
                                     verbose=self.verbose)
        self._set_model(model, int(seeds[2]))
        contamination = 0.05 if self.contamination == "auto" else self.contamination
        self.offset_ = float(np.percentile(self.score_samples(X), 100.0 * contamination))
        return self

    def _set_model(self, model, scoring_seed):
        self.model_ = model.eval()
        self.likelihood_ = model.likelihood
        self.image_shape_ = tuple(int(v) for v in model.input_shape)
        self.n_features_in_ = int(np.prod(self.image_shape_))
        self.n_latents_ = model.n_latents
        self.scoring_seed_ = int(scoring_seed)

    # ---- scoring ----------------------------------------------------------------
    def _prepare(self, X):
        check_is_fitted(self, "model_")
        x = check_images(X, self.image_shape, expected_shape=self.image_shape_)
        device = next(self.model_.parameters()).device
        data = torch.from_numpy(x).to(device)
        if self.likelihood_ == "bernoulli":
            # One fixed draw per call, so equal inputs get equal scores (the paper's evaluation sets).
            data = binarize(data, torch.Generator(device=device).manual_seed(self.scoring_seed_))
        return data

    def _bounds(self, X, ks, batch_size=256):
        data = self._prepare(X)
        gen = torch.Generator(device=data.device).manual_seed(self.scoring_seed_ + 1)
        self.model_.eval()
        parts = [importance_bounds(self.model_, data[i:i + batch_size], ks, self.iw_samples, self.iw_samples_lk,
                                   generator=gen)
                 for i in range(0, data.shape[0], batch_size)]
        return {k: torch.cat([p[k] for p in parts]).double().cpu().numpy() for k in parts[0]}

    def ood_scores(self, X, batch_size=256):
        """L, and L>k and LLR>k for every k in 1..n_latents-1, in nats per image.

        Returns a dict of (n,) arrays with keys "L", "L>1", "LLR>1", ...
        """
        check_is_fitted(self, "model_")
        b = self._bounds(X, range(1, self.n_latents_), batch_size)
        out = {"L": b[0]}
        for k in range(1, self.n_latents_):
            out[f"L>{k}"] = b[k]
            out[f"LLR>{k}"] = b[0] - b[k]
        return out

    def score_samples(self, X):
        """Normality score of each image (higher = more normal): -LLR>k, L or L>k per ``score``."""
        check_is_fitted(self, "model_")
        if not 1 <= self.k < self.n_latents_:
            raise ValueError(f"k must be in 1..{self.n_latents_ - 1}, got {self.k}")
        ks = [self.k] if self.score != "elbo" else []
        b = self._bounds(X, ks)
        if self.score == "elbo":
            return b[0]
        if self.score == "lk":
            return b[self.k]
        return -(b[0] - b[self.k])

    def decision_function(self, X):
        """score_samples - offset_: negative for outliers."""
        check_is_fitted(self, "model_")
        if self.offset_ is None:
            raise ValueError("this detector has no threshold (offset_ is None: it was loaded from a training "
                             "run, not fitted); use score_samples / ood_scores, or fit the detector")
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """+1 for inliers, -1 for outliers."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    # ---- persistence ------------------------------------------------------------
    def save(self, path):
        """Write ``path``/model.safetensors and ``path``/config.json (no pickle)."""
        check_is_fitted(self, "model_")
        params = self.get_params()
        params["architecture"] = resolve_architecture(self.architecture)
        params["random_state"] = self.random_state if isinstance(self.random_state, (int, type(None))) else None
        fitted = {"likelihood_": self.likelihood_, "image_shape_": list(self.image_shape_), "offset_": self.offset_,
                  "scoring_seed_": self.scoring_seed_, "history_": self.history_}
        return checkpoints.write_model_dir(path, self.model_, {"detector": {"params": params, "fitted": fitted}})

    @classmethod
    def load(cls, path, device="auto", checkpoint="best"):
        """Open a detector written by ``save``, or a run folder written by ``hvae-detect train``
        (its ``checkpoint``, "best" or "last"; such a detector has no threshold). No pickle."""
        folder = checkpoints.resolve_model_dir(path, checkpoint)
        model, config = checkpoints.read_model_dir(folder, resolve_device(device))
        if "detector" in config:
            params, fitted = dict(config["detector"]["params"]), config["detector"]["fitted"]
            if params.get("image_shape") is not None:
                params["image_shape"] = tuple(params["image_shape"])
            det = cls(**params)
            det._set_model(model, fitted["scoring_seed_"])
            det.offset_ = None if fitted["offset_"] is None else float(fitted["offset_"])
            det.history_ = fitted["history_"]
            return det
        run = checkpoints.run_config_of(folder) or {}
        m = config["model"]
        training = {k: run[k] for k in TrainingConfig.field_names() if k in run}
        det = cls(architecture=m["architecture"], likelihood=m["likelihood"], n_mix=m["n_mix"],
                  random_state=run.get("seed"), **training)
        det._set_model(model, run.get("seed", 0))
        det.offset_ = None
        det.history_ = config["training_state"].get("history", [])
        return det
