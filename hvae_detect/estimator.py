"""HVAEOutlierDetector: the scikit-learn face of the hierarchical VAE."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from hvae_detect import parameter_constraints
from hvae_detect.data.image_sources import training_images
from hvae_detect.data.inputs import hold_out
from hvae_detect.devices import resolve_device
from hvae_detect.kernels.layout import LOG_SCALE_MIN
from hvae_detect.models.architectures import AUTO, resolve_architecture
from hvae_detect.models.config import ModelConfig
from hvae_detect.persistence import detectors
from hvae_detect.scoring import statistics
from hvae_detect.scoring.outputs import image_outputs
from hvae_detect.thresholds import Thresholds
from hvae_detect.training.config import TrainingConfig, resolve_auto
from hvae_detect.training.fit import train_model

_TRAINING = TrainingConfig()  # the defaults of the training parameters


class HVAEOutlierDetector(Thresholds, detectors.Persistence, OutlierMixin, BaseEstimator):
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
        need a hierarchy); chosen on held-out pairs (benchmarks/results/2026-12-06-colour-default.md). Or a preset
        ("small", "bottleneck", "paper-mnist", "paper-cifar"; BIVA: "biva-small", "biva-mnist",
        "biva-cifar"; "lvae-small"), or a dict with the paper's "config_deterministic" and
        "config_stochastic" structures and optionally the model family, "model": "VAE" (the
        default; alias "HVAE"), "LVAE" or "BIVA" (``hvae_detect.models.architectures``).
    likelihood : {"auto", "bernoulli", "dlogmix"}, default="auto"
        "auto": Bernoulli (dynamically binarised) for 1 channel, the discretized logistic mixture for 3.
    n_mix : int, default=10
        Components of the discretized logistic mixture.
    activation : str, default="SiLU"
        Activation of the residual blocks (``hvae_detect.models.layers.ACTIVATIONS``; the paper's is "ReLU").
    likelihood_head : str, default="conv3x3"
        The layer that maps the last features to the likelihood's parameters
        (``hvae_detect.models.base.HEADS``; the paper's is "paper").
    log_scale_min : float in [-7, 0), default=-7
        The mixture's floor on log-scales.
    image_shape : tuple or None, default=None
        (C, H, W) (or (H, W)) for 2-D input of flattened images.
    epochs : int or "auto", default="auto"
        "auto": enough epochs to see about 60,000 training images (at most 50), a fit of minutes on two
        CPU cores at 10,000 images (benchmarks/results/2026-12-06-default-fit-budget.md) that two runs
        with one random_state repeat.
    batch_size : int, default=64
        Training images per step.
    learning_rate : float or "auto", default="auto"
        Adam's step size. "auto": 3e-4 for a hierarchical model, 1e-3 for a one-level one
        (``hvae_detect.training.config.resolve_auto`` says what that was measured on).
    free_nats : float, default=2.0
        The floor on each latent's KL (free bits) at the start of training.
    free_nats_epochs : float or "auto", default="auto"
        Epochs over which the free nats fall to 0. "auto": 10 for a hierarchical model, 40% of the
        epochs for a one-level one.
    warmup_epochs : float or "auto", default="auto"
        Epochs of the KL weight's linear warm-up from 0 to 1. "auto": 5 for a hierarchical model, 20%
        of the epochs for a one-level one.
    free_nats_mode : {"layer", "element"}, default="layer"
        Each latent's summed KL floored ("layer", what the measured CPU numbers used), or each element
        of it (the paper's; ``hvae_detect.training.config``).
    data_init : bool, default=False
        Data-dependent weight-norm initialisation on the first batch (the paper's).
    train_samples : int, default=1
        Posterior samples per training image.
    train_importance_weighted : bool, default=False
        Combine those samples by log-mean-exp (IWAE) instead of the mean.
    precision : {"float32", "bfloat16", "auto"}, default="float32"
        Arithmetic of training: bfloat16 mixed precision, or "auto" where it is faster.
    compile : bool, default=False
        torch.compile the training pass (faster steps after about a minute's compilation).
    statistic : str, default="fused"
        Statistic behind ``score_samples``, a name in the statistics table
        (``hvae_detect.scoring.statistics``), oriented so that higher = more normal: "fused" (a
        Gaussian of the per-image statistic vector fitted on held-out training images; chosen on
        held-out pairs, benchmarks/results/2026-12-06-statistics-default.md), "llr" (-LLR>k, the paper's), "elbo", "lk",
        "complexity", "typicality", "latent_path", "latent_path_copod", "fused_ecod".
    k : int, default=1
        Number of lowest latents taken from the prior in L>k (1..n_latents-1).
    iw_samples : int, default=1
        Importance samples S for L.
    iw_samples_lk : int, default=1
        Importance samples S' for L>k (the paper's scoring: S' = 1 by default).
    scoring_precision : {"float32", "bfloat16", "auto"}, default="float32"
        Arithmetic of the scoring passes ("auto" as ``precision``); bfloat16 is faster on CPUs that have
        it and moves AUROCs little (benchmarks/results/2026-12-06-bfloat16-scoring.md); a threshold holds
        for one precision.
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
        (benchmarks/results/2026-12-06-threshold-calibration.md). Fewer held-out images than
        2 / contamination, or than 3 per column of the statistic's reference, draw a warning: the share
        can then be far off.
    device : str or torch.device, default="auto"
        "auto" (CUDA when there is one), "cpu", "cuda" or a torch device string.
    random_state : int, RandomState or None, default=None
        Seeds initialisation, batching, the held-out draw and the key of the scoring random numbers.
    verbose : bool, default=False
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

    _parameter_constraints = parameter_constraints.CONSTRAINTS

    def __init__(
        self,
        *,
        # the model
        architecture="auto",
        likelihood="auto",
        n_mix=10,
        activation="SiLU",
        likelihood_head="conv3x3",
        log_scale_min=LOG_SCALE_MIN,
        image_shape=None,
        # its training (hvae_detect.training.config.TrainingConfig)
        epochs="auto",
        batch_size=_TRAINING.batch_size,
        learning_rate="auto",
        free_nats=_TRAINING.free_nats,
        free_nats_epochs="auto",
        warmup_epochs="auto",
        free_nats_mode=_TRAINING.free_nats_mode,
        data_init=_TRAINING.data_init,
        train_samples=_TRAINING.train_samples,
        train_importance_weighted=_TRAINING.train_importance_weighted,
        precision=_TRAINING.precision,
        compile=_TRAINING.compile,
        # scoring
        statistic="fused",
        k=1,
        iw_samples=1,
        iw_samples_lk=1,
        scoring_precision="float32",
        # the threshold
        holdout=0.1,
        contamination="auto",
        # where and how
        device="auto",
        random_state=None,
        verbose=False,
    ):
        self.architecture = architecture
        self.likelihood = likelihood
        self.n_mix = n_mix
        self.activation = activation
        self.likelihood_head = likelihood_head
        self.log_scale_min = log_scale_min
        self.image_shape = image_shape
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.free_nats = free_nats
        self.free_nats_epochs = free_nats_epochs
        self.warmup_epochs = warmup_epochs
        self.free_nats_mode = free_nats_mode
        self.data_init = data_init
        self.train_samples = train_samples
        self.train_importance_weighted = train_importance_weighted
        self.precision = precision
        self.compile = compile
        self.statistic = statistic
        self.k = k
        self.iw_samples = iw_samples
        self.iw_samples_lk = iw_samples_lk
        self.scoring_precision = scoring_precision
        self.holdout = holdout
        self.contamination = contamination
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self):
        self._validate_params()
        statistics.get(self.statistic)
        TrainingConfig(**resolve_auto(self._training_params(), n_train=1, n_latents=2))  # finite values
        if self.architecture != AUTO:
            resolve_architecture(self.architecture)

    def _training_params(self) -> dict:
        """The training settings as given ("auto" unresolved)."""
        return {name: getattr(self, name) for name in TrainingConfig.field_names()}

    # ---- fit --------------------------------------------------------------------
    def fit(self, X, y=None):
        """Train the model on in-distribution images X (y is ignored): an array, held on the device; or,
        streamed through a DataLoader (draws keyed by image), a memory-mapped array, the path of a .npy
        or uncompressed .npz file, or a map-style torch Dataset of images. Then fit the references of the
        statistics on the held-out images and calibrate the threshold (``contamination``) on them."""
        self._check_params()
        data = training_images(X, self.image_shape)
        init_seed, training_seed, scoring_seed = (
            int(s) for s in check_random_state(self.random_state).randint(0, 2**31 - 1, 3)
        )
        held = None if data.streamed else hold_out(len(data.images), self.holdout, scoring_seed)  # a mask, or None
        config = ModelConfig.for_images(
            data.image_shape,
            self.architecture,
            self.likelihood,
            hierarchical=statistics.get(self.statistic).per_k,
            n_mix=self.n_mix,
            activation=self.activation,
            likelihood_head=self.likelihood_head,
            log_scale_min=self.log_scale_min,
        )
        statistics.check_k(self.statistic, self.k, config.n_latents)
        train_on = data.source if data.streamed else (data.images if held is None else data.images[~held])
        model, self.history_ = train_model(
            config,
            train_on,
            self._training_params(),
            resolve_device(self.device),
            init_seed=init_seed,
            training_seed=training_seed,
            verbose=self.verbose,
        )
        self._set_model(model, scoring_seed)
        self._score_training_images(data.images, held)
        return self

    def _score_training_images(self, x, held):
        """Fit the references and the threshold on the held-out images (on all of x when none were held out),
        and keep every image's out-of-sample score in ``train_score_samples_``."""
        if held is None:
            self.train_score_samples_ = self._calibrate(x, "the held-out training images", stacklevel=4)
            return
        self.train_score_samples_ = np.empty(len(x))
        self.train_score_samples_[held] = self._calibrate(x[held], "the held-out training images", stacklevel=4)
        self.train_score_samples_[~held] = self._score_samples(x[~held])

    def _set_model(self, model, scoring_seed):
        self.model_ = model.eval()
        self.likelihood_ = model.likelihood
        self.image_shape_ = tuple(int(v) for v in model.input_shape)
        self.n_features_in_ = int(np.prod(self.image_shape_))
        self.n_latents_ = model.n_latents
        self.scoring_seed_ = int(scoring_seed)

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
        return statistics.ood_scores(out, ks, getattr(self, "references_", {}))

    def score_samples(self, X):
        """Normality of each image (higher = more normal): ``statistic`` at ``k`` (-LLR>k for "llr")."""
        check_is_fitted(self, "model_")
        return self._score_samples(X)

    def _statistic_key(self) -> str:
        return statistics.output_key(self.statistic, self.k)

    def _score_samples(self, X):
        statistics.check_k(self.statistic, self.k, self.n_latents_)
        outputs = self._engine_outputs(X, statistics.outputs_needed([self._statistic_key()]))
        statistic = statistics.get(self.statistic)
        return statistic.normality(statistic.value(outputs, self.k, getattr(self, "references_", {})))

    def score(self, X, y=None):
        """Mean ELBO L per image in nats (as GaussianMixture.score): higher = the data fit the model better."""
        check_is_fitted(self, "model_")
        return float(np.mean(self._engine_outputs(X, {"L"})["L"]))
