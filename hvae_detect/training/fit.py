"""One model trained from scratch, as the estimator's ``fit`` does: built from its configuration under a
seeded generator, then ``train_epochs`` on images in memory or streamed."""

from __future__ import annotations

import torch

from hvae_detect.models.registry import make_model
from hvae_detect.training.batches import LoaderBatches
from hvae_detect.training.config import TrainingConfig, resolve_auto
from hvae_detect.training.loop import train_epochs


def train_model(config, images, settings: dict, device, *, init_seed: int, training_seed: int, verbose: bool = False):
    """(model, per-epoch history) of the ``ModelConfig`` ``config`` trained on ``images``: a uint8 or
    [0, 1] array (N, C, H, W), held on ``device``, or an image source of
    ``hvae_detect.data.image_sources`` (memory-mapped files, Datasets), streamed through a DataLoader
    whose draws are keyed by (seed, epoch, image). ``init_seed`` seeds the initial weights (the global
    generator, forked so that the caller's stream is left as it was), ``training_seed`` the batches and
    the draws. ``settings``: the fields of a ``TrainingConfig``, "auto" ones resolved here for this model
    and these images (``resolve_auto``)."""
    training = TrainingConfig(**resolve_auto(settings, len(images), config.n_latents))
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = make_model(config).to(device)
        observation = model.observation  # its training draw: the Bernoulli's dynamic binarisation
        if isinstance(images, torch.Tensor) or hasattr(images, "__array_interface__"):
            data = torch.as_tensor(images).to(device)
        else:  # (a likelihood that draws nothing needs no keyed uniforms)
            data = LoaderBatches(
                images,
                training.batch_size,
                seed=training_seed,
                device=device,
                prepare=observation.keyed_draw if observation.draws_input else None,
            )
        history = train_epochs(
            model,
            data,
            training,
            transform=observation.training_draw,
            verbose=verbose,
            generator=torch.Generator(device=device).manual_seed(training_seed),
        )
    return model, history
