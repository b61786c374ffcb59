"""HVAEOutlierDetector: the scikit-learn face of the hierarchical VAE."""

from __future__ import annotations

import numbers
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Integral, Interval, Real, StrOptions
from sklearn.utils.validation import check_is_fitted

from hvae_detect.data.image_sources import streamed_images
from hvae_detect.data.inputs import check_images, hold_out
from hvae_detect.devices import resolve_device
from hvae_detect.kernels.layout import LOG_SCALE_MIN
from hvae_detect.likelihoods import resolve_likelihood
from hvae_detect.models.architectures import AUTO, auto_preset, resolve_architecture
from hvae_detect.models.base import HEADS
from hvae_detect.models.config import ModelConfig
from hvae_detect.models.layers import ACTIVATIONS
from hvae_detect.persistence import detectors
from hvae_detect.precision import PRECISIONS
from hvae_detect.scoring import calibration, statistics
from hvae_detect.scoring.outputs import image_outputs
from hvae_detect.training.config import FREE_NATS_MODES, TrainingConfig, resolve_auto
from hvae_detect.training.fit import train_model

_TRAINING = TrainingConfig()  # the defaults of the training parameters
_THRESHOLD_PARAMS = ("statistic", "k", "iw_samples", "iw_samples_lk", "scoring_precision")


def _positive(kind):
    return Interval(kind, 1 if kind is Integral else 0, None, closed="left" if kind is Integral else "neither")


class HVAEOutlierDetector(detectors.Persistence, OutlierMixin, BaseEstimator):
    """Out-of-distribution detector built on a hierarchical VAE (Havtorn et al., ICML 2021).

    Fits a hierarchical VAE to in-distribution images and scores new images with the statistics
    of ``hvae_detect.scoring.statistics`` (by default a fused score of several; "llr" is the paper's
    LLR>k = L - L>k). A score is a function of the image: its random numbers are keyed by the
    detector's seed and the image, so it does not depend on the batch or the order (across devices,
    and on CPUs across thread counts, it can differ in the last bits).

    Parameters
    ----------
    architecture : str or dict, default="auto"
        "auto" picks by the images: "bottleneck" (one latent of 100 dimensions under three stride-2
        blocks: its narrow path is what separates colour images) for colour images, "small" (the
        paper's three-latent shape at CPU size) for grey ones and for the statistics of one k (L>k, LLR>k
        need a hierarchy); chosen on held-out pairs (benchmarks/RESULTS.md, "Colour images"). Or a preset
        ("small", "bottleneck", "paper-mnist", "paper-cifar"; BIVA: "biva-small", "biva-mnist",
        "biva-cifar"; "lvae-small"), or a dict with the paper's "config_deterministic" and
        "config_stochastic" structures and optionally the model family, "model": "VAE" (the
        default; alias "HVAE"), "LVAE" or "BIVA" (``hvae_detect.models.architectures``).
    likelihood : {"auto", "bernoulli", "dlogmix"}, default="auto"
        "auto": Bernoulli (dynamically binarised) for 1 channel, the discretized logistic mixture for 3.
    statistic : str, default="fused"
        Statistic behind ``score_samples``, a name in the statistics table
        (``hvae_detect.scoring.statistics``), oriented so that higher = more normal: "fused" (a
        Gaussian of the per-image statistic vector fitted on held-out training images; chosen on
        held-out pairs, benchmarks/RESULTS.md), "llr" (-LLR>k, the paper's), "elbo", "lk",
        "complexity", "typicality", "latent_path", "latent_path_copod", "fused_ecod".
    k : int, default=1
        Number of lowest latents taken from the prior in L>k (1..n_latents-1).
    iw_samples : int, default=1
        Importance samples S for L.
    iw_samples_lk : int, default=1
        Importance samples S' for L>k (the paper's scoring: S' = 1 by default).
    scoring_precision : {"float32", "bfloat16", "auto"}, default="float32"
        Arithmetic of the scoring passes ("auto" as ``precision``); bfloat16 is faster on CPUs that have
        it and moves AUROCs little (benchmarks/RESULTS.md); a threshold holds for one precision.
    epochs : int or "auto", default="auto"
        "auto": enough epochs to see about 60,000 training images (at most 50), a fit of minutes on two
        CPU cores at 10,000 images (benchmarks/RESULTS.md) that two runs with one random_state repeat.
    learning_rate, warmup_epochs, free_nats_epochs : float or "auto", default="auto"
        "auto": 3e-4, 5 and 10 epochs for a hierarchical model; 1e-3, 20% and 40% of the epochs for a
        one-level one (``hvae_detect.training.config.resolve_auto`` says what that was measured on).
    batch_size, free_nats, precision, \
    free_nats_mode, data_init, train_samples, train_importance_weighted, compile
        Training settings, described in ``hvae_detect.training.config.TrainingConfig``: Adam, the
        paper's free-nats and KL warm-up schedules, bfloat16 mixed precision ("auto": where faster),
        torch.compile of the training pass (faster steps after about a minute's compilation). The
        estimator keeps the objective its measured CPU numbers used (per-layer free nats, no
        data-dependent initialisation); ``hvae-detect train`` defaults to the paper's.
    activation, likelihood_head, n_mix, log_scale_min
        Model options, described in ``hvae_detect.models.config.ModelConfig``. The estimator keeps
        "SiLU" and a 3x3 head (what benchmarks/RESULTS.md measured); the paper's are "ReLU" and "paper".
    image_shape : tuple or None
        (C, H, W) (or (H, W)) for 2-D input of flattened images.
    holdout : float in [0, 0.5), default=0.1
        Fraction of the training images (of an in-memory X) held out of training, drawn with
        ``random_state``: the statistics that read a reference (typicality, fused, ...) fit it on them,
        and ``offset_`` is calibrated on them. 0, or too few images to hold out 2, uses the training
        images instead (as a streamed X always does).
    contamination : "auto" or float in (0, 0.5], default="auto"
        The share of new normal images that ``predict`` should flag ("auto": 0.05): ``offset_`` is that
        quantile of the held-out images' scores, each scored by references fitted without it
        (leave-one-out), so that it holds for images the references never saw; measured at 0.05 with 40
        to 200 held-out images, 0.039-0.057 of fresh normal images flagged on average per statistic
        (benchmarks/RESULTS.md, "Thresholds"). Fewer held-out images than 2 / contamination, or than 3
        per column of the statistic's reference, draw a warning: the share can then be far off.
    device : "auto", "cpu", "cuda" or a torch device string
    random_state : int, RandomState or None
        Seeds initialisation, batching, and the key of the scoring random numbers.
    verbose : bool
        Progress bar and per-epoch ELBO during fit.

    Attributes
    ----------
    model_ : HierarchicalModel (VAE, LVAE or BIVA: the architecture's family)
    offset_ : float or None
        Threshold of ``decision_function``; None for a model loaded from a training run.
    threshold_params_ : dict
        statistic, k, iw_samples, iw_samples_lk that ``offset_`` was computed with.
    threshold_calibration_ : str
        How ``offset_`` was set (earlier versions: in-sample, which flagged more than ``contamination``).
    train_score_samples_ : ndarray of shape (n_train,)
        ``score_samples`` of every image given to ``fit``.
    references_ : dict
        Per statistic that reads one, its reference fitted on the held-out images (or why it could not be).
    image_shape_, n_features_in_, n_latents_, likelihood_, scoring_seed_
    history_ : list of dict, per-epoch training ELBO and KL per layer

    Notes
    -----
    ``save``/``load`` write and read safetensors and JSON: no code runs on load, so use them for
    files from elsewhere. Pickle works too (as ``cross_validate(n_jobs=2)`` needs), but
    unpickling runs code: only unpickle files you trust.

    Examples
    --------
    >>> import numpy as np
    >>> from hvae_detect import HVAEOutlierDetector
    >>> X = np.random.default_rng(0).integers(0, 256, (256, 28, 28), dtype=np.uint8)
    >>> det = HVAEOutlierDetector(epochs=1, random_state=0).fit(X)
    >>> labels = det.predict(X[:4])             # +1 inlier, -1 outlier
    >>> normality = det.score_samples(X[:4])    # higher = more normal (the fused statistic by default)
    >>> sorted(det.ood_scores(X[:4]))           # every statistic, each in its own units
    ['Fused', 'FusedECOD', 'IC', 'L', 'L>1', 'L>2', 'LLR>1', 'LLR>2', 'Path', 'PathCOPOD', 'T']

    References
    ----------
    .. [1] J. D. Havtorn, J. Frellsen, S. Hauberg and L. Maaløe, "Hierarchical VAEs Know What They
           Don't Know", ICML 2021.
    .. [2] L. Maaløe, M. Fraccaro, V. Liévin and O. Winther, "BIVA: A Very Deep Hierarchy of Latent
           Variables for Generative Modeling", NeurIPS 2019.
    .. [3] C. K. Sønderby, T. Raiko, L. Maaløe, S. K. Sønderby and O. Winther, "Ladder Variational
           Autoencoders", NeurIPS 2016.
    """

    _parameter_constraints = {
        "architecture": [str, dict],
        "likelihood": [StrOptions({"auto", "bernoulli", "dlogmix"})],
        "statistic": [str],  # a name in the statistics table, checked against it (statistics.get)
        **dict.fromkeys(
            ("k", "iw_samples", "iw_samples_lk", "batch_size", "train_samples", "n_mix"), [_positive(Integral)]
        ),
        "epochs": [_positive(Integral), StrOptions({"auto"})],
        "learning_rate": [_positive(Real), StrOptions({"auto"})],
        "free_nats": [Interval(Real, 0, None, closed="left")],
        **dict.fromkeys(
            ("free_nats_epochs", "warmup_epochs"), [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})]
        ),
        "free_nats_mode": [StrOptions(set(FREE_NATS_MODES))],
        **dict.fromkeys(("data_init", "train_importance_weighted", "compile"), ["boolean"]),
        "activation": [StrOptions(set(ACTIVATIONS))],
        "likelihood_head": [StrOptions(set(HEADS))],
        "log_scale_min": [Interval(Real, LOG_SCALE_MIN, 0, closed="left")],
        "image_shape": [tuple, list, None],
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
        "holdout": [Interval(Real, 0, 0.5, closed="left")],
        "device": [str, torch.device],
        **dict.fromkeys(("precision", "scoring_precision"), [StrOptions(set(PRECISIONS))]),
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        architecture="auto",
        likelihood="auto",
        statistic="fused",
        k=1,
        iw_samples=1,
        iw_samples_lk=1,
        epochs="auto",
        batch_size=_TRAINING.batch_size,
        learning_rate="auto",
        free_nats=_TRAINING.free_nats,
        free_nats_epochs="auto",
        warmup_epochs="auto",
        n_mix=10,
        image_shape=None,
        contamination="auto",
        device="auto",
        precision=_TRAINING.precision,
        random_state=None,
        verbose=False,
        free_nats_mode=_TRAINING.free_nats_mode,
        data_init=_TRAINING.data_init,
        train_samples=_TRAINING.train_samples,
        train_importance_weighted=_TRAINING.train_importance_weighted,
        activation="SiLU",
        likelihood_head="conv3x3",
        log_scale_min=LOG_SCALE_MIN,
        holdout=0.1,
        scoring_precision="float32",
        compile=_TRAINING.compile,
    ):
        self.architecture, self.likelihood, self.statistic = architecture, likelihood, statistic
        self.k, self.iw_samples, self.iw_samples_lk = k, iw_samples, iw_samples_lk
        self.epochs, self.batch_size, self.learning_rate = epochs, batch_size, learning_rate
        self.free_nats, self.free_nats_epochs, self.warmup_epochs = free_nats, free_nats_epochs, warmup_epochs
        self.n_mix, self.image_shape, self.contamination = n_mix, image_shape, contamination
        self.device, self.precision, self.random_state = device, precision, random_state
        self.verbose, self.free_nats_mode, self.data_init = verbose, free_nats_mode, data_init
        self.train_samples, self.train_importance_weighted = train_samples, train_importance_weighted
        self.activation, self.likelihood_head, self.log_scale_min = activation, likelihood_head, log_scale_min
        self.holdout, self.scoring_precision, self.compile = holdout, scoring_precision, compile

    def _training_config(self, n_train: int = 1, n_latents: int = 2) -> TrainingConfig:
        settings = {name: getattr(self, name) for name in TrainingConfig.field_names()}
        return TrainingConfig(**resolve_auto(settings, n_train, n_latents))

    def _check_params(self):
        self._validate_params()
        statistics.get(self.statistic)
        self._training_config()  # finite values
        if self.architecture != AUTO:
            resolve_architecture(self.architecture)

    # ---- fit --------------------------------------------------------------------
    def fit(self, X, y=None):
        """Train the model on in-distribution images X (y is ignored): an array, held on the device; or,
        streamed through a DataLoader (draws keyed by image), a memory-mapped array, the path of a .npy
        or uncompressed .npz file, or a map-style torch Dataset of images. Then fit the references of the
        statistics on the held-out images and calibrate the threshold (``contamination``) on them."""
        self._check_params()
        source = streamed_images(X, image_shape=self.image_shape)
        if source is not None:
            x, shape = (source if isinstance(X, (str, Path)) else X), source.image_shape
        else:
            x = check_images(X, self.image_shape, min_samples=2)
            shape = x.shape[1:]
        init_seed, training_seed, scoring_seed = check_random_state(self.random_state).randint(0, 2**31 - 1, 3)
        held = None if source is not None else hold_out(len(x), self.holdout, int(scoring_seed))  # a mask, or None
        architecture = (
            self.architecture
            if self.architecture != AUTO
            else auto_preset(shape, hierarchical=statistics.get(self.statistic).per_k)
        )
        config = ModelConfig(
            shape,
            architecture,
            resolve_likelihood(self.likelihood, n_channels=shape[0]),
            self.n_mix,
            self.activation,
            self.likelihood_head,
            log_scale_min=self.log_scale_min,
        )
        n_latents = len(config.architecture["config_stochastic"])
        statistics.check_k(self.statistic, self.k, n_latents)
        images = source if source is not None else (x if held is None else x[~held])
        model, self.history_ = train_model(
            config,
            images,
            self._training_config(len(images), n_latents),
            resolve_device(self.device),
            init_seed=int(init_seed),
            training_seed=int(training_seed),
            verbose=self.verbose,
        )
        self._set_model(model, int(scoring_seed))
        held_scores = self._calibrate(x if held is None else x[held], "the held-out training images")
        self.train_score_samples_ = held_scores  # every image is scored once: the held-out ones in _calibrate
        if held is not None:
            self.train_score_samples_ = np.empty(len(x))
            self.train_score_samples_[held] = held_scores
            self.train_score_samples_[~held] = self._score_samples(x[~held])
        return self

    def _calibrate(self, X, source, rate=None):
        """Fit every statistic's reference on the images X and set ``offset_`` at the ``rate`` quantile
        (``contamination``) of scores their references did not see: each image is scored by references
        fitted without it (leave-one-out; ``hvae_detect.scoring.calibration`` says why). Returns those scores."""
        needs = statistics.outputs_needed([s.key for s in statistics.with_references()] + [self._statistic_key()])
        outputs = self._engine_outputs(X, needs)
        self.references_ = statistics.fit_references(outputs)
        rate = rate or (0.05 if self.contamination == "auto" else self.contamination)
        offset, info = calibration.threshold(
            statistics.get(self.statistic), outputs, self.k, rate, self.scoring_seed_, self.references_
        )
        if info["warning"]:
            warnings.warn(info["warning"], UserWarning, stacklevel=3)
        self._set_offset(offset, source)
        return info["scores"]

    def _set_model(self, model, scoring_seed):
        self.model_ = model.eval()
        self.likelihood_ = model.likelihood
        self.image_shape_ = tuple(int(v) for v in model.input_shape)
        self.n_features_in_ = int(np.prod(self.image_shape_))
        self.n_latents_ = model.n_latents
        self.scoring_seed_ = int(scoring_seed)

    def _set_offset(self, offset, source):
        if not np.isfinite(offset):
            raise ValueError(
                f"the threshold from {source} is {offset}: the model's scores are not finite "
                "(training diverged?); refit with a lower learning_rate"
            )
        self.offset_ = float(offset)
        self.threshold_params_ = {name: getattr(self, name) for name in _THRESHOLD_PARAMS}
        self.threshold_calibration_ = calibration.DESCRIPTION

    def set_threshold(self, X, fpr=0.05):
        """Set ``offset_`` so that a fraction ``fpr`` of the held-out inliers X is predicted an outlier (after
        changing the statistic, k or the samples, or for a model loaded from a training run). A statistic
        whose reference this detector lacks (a training run's) has it fitted on X, calibrated as in ``fit``.
        Returns self."""
        check_is_fitted(self, "model_")
        if not (isinstance(fpr, numbers.Real) and 0 < fpr < 1):
            raise ValueError(f"fpr (the fraction of inliers to flag) must be in (0, 1), got {fpr!r}")
        statistic = statistics.get(self.statistic)
        if statistic.reference is not None and not hasattr(
            getattr(self, "references_", {}).get(statistic.name), "score"
        ):
            self._calibrate(X, "the held-out inliers, each scored by references fitted without it", fpr)
            return self
        scores = self._score_samples(X)
        message = calibration.warning(statistic, len(scores), 0, fpr, images="held-out inliers")
        if message:
            warnings.warn(message, UserWarning, stacklevel=2)
        self._set_offset(calibration.quantile(scores, fpr), "the held-out inliers")
        return self

    # ---- scoring (the public methods check the fitted state once; the private ones assume it) ----
    def _engine_outputs(self, X, needed, batch_size=None, iw_samples=None, iw_samples_lk=None) -> dict:
        """The outputs named in ``needed`` of every image (``hvae_detect.scoring.outputs``)."""
        self._validate_params()
        return image_outputs(
            self.model_,
            X,
            needed,
            seed=self.scoring_seed_,
            iw_samples=self.iw_samples if iw_samples is None else iw_samples,
            iw_samples_lk=self.iw_samples_lk if iw_samples_lk is None else iw_samples_lk,
            image_shape=self.image_shape,
            batch_size=batch_size,
            precision=self.scoring_precision,
        )

    def ood_scores(self, X, batch_size=None, iw_samples=None, iw_samples_lk=None):
        """Every statistic of the table (``hvae_detect.scoring.statistics``) for every k in 1..n_latents-1.

        X: images as in ``fit`` (numpy, memory-mapped or torch arrays on any device, or an
        iterable of such batches). ``iw_samples`` / ``iw_samples_lk`` override the detector's
        importance samples S / S' for this call. Returns a dict of (n,) arrays, each statistic in its
        own units and direction: "L", "L>1", "LLR>1", ... in nats per image (LLR>k is large for outliers).
        """
        check_is_fitted(self, "model_")
        ks = range(1, self.n_latents_)
        out = self._engine_outputs(
            X, statistics.outputs_needed(statistics.keys(ks)), batch_size, iw_samples, iw_samples_lk
        )
        return statistics.scores(out, ks, getattr(self, "references_", {}))

    def score_samples(self, X):
        """Normality of each image (higher = more normal): ``statistic`` at ``k`` (-LLR>k for "llr")."""
        check_is_fitted(self, "model_")
        return self._score_samples(X)

    def _statistic_key(self) -> str:
        return statistics.get(self.statistic).key_for(self.k)

    def _score_samples(self, X):
        statistics.check_k(self.statistic, self.k, self.n_latents_)
        return self._normality(self._engine_outputs(X, statistics.outputs_needed([self._statistic_key()])))

    def _normality(self, outputs):
        statistic = statistics.get(self.statistic)
        return statistic.normality(statistic.value(outputs, self.k, getattr(self, "references_", {})))

    def decision_function(self, X):
        """score_samples - offset_: negative for outliers."""
        check_is_fitted(self, "model_")
        return self._decision_function(X)

    def _decision_function(self, X):
        if self.offset_ is None:
            raise ValueError(
                "this detector has no threshold (offset_ is None: it was loaded from a training "
                "run); set one with set_threshold(X_inliers, fpr=...)"
            )
        now = {name: getattr(self, name) for name in _THRESHOLD_PARAMS}
        if now != self.threshold_params_:
            raise ValueError(
                f"offset_ was set for {self.threshold_params_}, but the detector now uses {now}; "
                "set a threshold for the new setting with set_threshold(X_inliers, fpr=...) or fit again"
            )
        return self._score_samples(X) - self.offset_

    def predict(self, X):
        """+1 for inliers, -1 for outliers."""
        check_is_fitted(self, "model_")
        return np.where(self._decision_function(X) < 0, -1, 1)

    def score(self, X, y=None):
        """Mean ELBO L per image in nats (as GaussianMixture.score): higher = the data fit the model better."""
        check_is_fitted(self, "model_")
        return float(np.mean(self._engine_outputs(X, {"L"})["L"]))
