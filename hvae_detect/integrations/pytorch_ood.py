"""``HVAE``: the hierarchical-VAE detector as a pytorch-ood ``Detector``
(``pip install "hvae-detect[pytorch-ood]"``; the interface of pytorch-ood 0.4).

``fit(loader)`` trains the model on the in-distribution images of a loader that yields ``(x, y)``
batches (or bare ``x``); ``predict(x)`` returns one outlier score per image (higher = more likely
OOD: LLR>k with the estimator's defaults) as a tensor on ``x``'s device, which is what
``pytorch_ood.metrics.OODMetrics`` takes. Images are (B, C, H, W) uint8 or floats in [0, 1]
(``ToTensor()``, without ``Normalize``).
"""

from __future__ import annotations

import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

try:
    from pytorch_ood.api import Detector, DetectorInfo, Paper, RequiresFittingException, Task
except ImportError as e:  # the optional extra is not installed
    raise ImportError(
        'hvae_detect.integrations.pytorch_ood needs pytorch-ood, an optional extra: '
        'pip install "hvae-detect[pytorch-ood]"'
    ) from e

from hvae_detect.estimator import HVAEOutlierDetector


def _in_distribution_images(data_loader) -> torch.Tensor:
    """The loader's images, on the CPU, without those labelled OOD (label < 0, pytorch-ood's convention)."""
    parts = []
    for batch in data_loader:
        if isinstance(batch, torch.Tensor):
            x, y = batch, None
        elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
            x, y = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            raise ValueError(
                f"expected the loader to yield image tensors or (images, labels) pairs, got {type(batch).__name__}"
            )
        if y is not None:
            x = x[torch.as_tensor(y).to(x.device) >= 0]
        parts.append(x.detach().cpu())
    if not parts or not sum(len(p) for p in parts):
        raise ValueError("the loader yielded no in-distribution images (labels >= 0) to fit on")
    return torch.cat(parts)


class HVAE(Detector):
    """pytorch-ood detector around ``HVAEOutlierDetector`` (Havtorn et al., ICML 2021).

    Parameters
    ----------
    estimator : HVAEOutlierDetector or None, default=None
        The detector with its architecture, statistic, k, epochs, device ...; ``fit`` trains it
        in place, and one already fitted (e.g. ``HVAEOutlierDetector.load(path)``) scores at once.
        Keep a fitted one with ``detector.estimator.save(path)``. None: ``HVAEOutlierDetector()``.

    Notes
    -----
    The hyperparameters (``get_hyperparameters``, ``set_hyperparameters``, what
    ``pytorch_ood.utils.GridSearch`` tunes) are the estimator's parameters. The default space
    holds the scoring settings, statistic and k (every preset architecture has three latents,
    so k is 1 or 2); GridSearch fits the model again for every candidate.
    """

    requires_fit = True
    hyperparameter_space = {"statistic": ["llr", "elbo", "lk"], "k": [1, 2]}
    info = DetectorInfo(
        tasks={Task.CLASSIFICATION},
        paper=Paper(
            title="Hierarchical VAEs Know What They Don't Know",
            venue="ICML",
            year=2021,
            url="https://arxiv.org/abs/2102.08248",
            code="https://github.com/JakobHavtorn/hvae-oodd",
        ),
        ai_coded=True,
    )

    def __init__(self, estimator: HVAEOutlierDetector | None = None):
        if estimator is not None and not isinstance(estimator, HVAEOutlierDetector):
            raise ValueError(f"estimator must be an HVAEOutlierDetector or None, got {type(estimator).__name__}")
        self.estimator = estimator if estimator is not None else HVAEOutlierDetector()

    def fit(self, data_loader) -> HVAE:
        """Train the model on the loader's in-distribution images (all of them are held in memory)."""
        self.estimator.fit(_in_distribution_images(data_loader))
        return self

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Outlier scores of the images ``x`` (B, C, H, W): shape (B,), float32, on ``x``'s device."""
        try:
            check_is_fitted(self.estimator, "model_")
        except NotFittedError:
            raise RequiresFittingException() from None
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a tensor of images (B, C, H, W), got {type(x).__name__}")
        scores = -self.estimator.score_samples(x)
        return torch.as_tensor(scores, dtype=torch.float32).to(x.device)

    def get_hyperparameters(self) -> dict:
        return {name: getattr(self.estimator, name) for name in self.hyperparameter_space}

    def set_hyperparameters(self, **kwargs) -> HVAE:
        unknown = sorted(set(kwargs) - set(self.hyperparameter_space))
        if unknown:
            raise ValueError(
                f"unknown hyperparameters {unknown} for {type(self).__name__}; "
                f"expected names in {list(self.hyperparameter_space)}"
            )
        self.estimator.set_params(**kwargs)
        return self

    @property
    def device(self):
        """The device of the fitted model, else None."""
        model = getattr(self.estimator, "model_", None)
        return next(model.parameters()).device if model is not None else None

    def to(self, device) -> HVAE:
        """Move the fitted model to ``device``, and fit there from now on."""
        device = torch.device(device)
        model = getattr(self.estimator, "model_", None)
        if model is not None:
            model.to(device)
        self.estimator.set_params(device=str(device))
        return self
