"""Shared test fixtures: one tiny architecture, its models and images, and where real data is."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hvae_detect.models.config import ModelConfig
from hvae_detect.models.vae import VAE

REPO = Path(__file__).resolve().parents[1]


def _conv(ch, k, s):
    return {"block": "ResBlockConv2d", "out_channels": ch, "kernel_size": k, "stride": s}


# The seed's shape (a convolutional latent, then two dense latents) with a few thousand weights;
# the top stage is dense so that both residual block types are exercised.
TINY = {
    "config_deterministic": [[_conv(8, 3, 2)], [_conv(8, 3, 2)], [{"block": "ResBlockDense", "out_features": 16}]],
    "config_stochastic": [
        {"block": "GaussianConv2d", "latent_features": 2},
        {"block": "GaussianDense", "latent_features": 4},
        {"block": "GaussianDense", "latent_features": 2},
    ],
}


def shared_path(*parts) -> Path | None:
    """A path under the shared folder beside the repository (or $HVAE_DETECT_SHARED), or None."""
    root = Path(os.environ.get("HVAE_DETECT_SHARED", REPO.parent / "shared"))
    path = root.joinpath(*parts)
    return path if path.exists() else None


SHARED_DATA = shared_path("data")
needs_shared_data = pytest.mark.skipif(SHARED_DATA is None, reason="../shared/data is not present")


def load_benchmark(name: str):
    """The script benchmarks/<name>.py or benchmarks/<group>/<name>.py as a module (registered in sys.modules:
    dataclasses look it up there)."""
    [path] = [*(REPO / "benchmarks").glob(f"{name}.py"), *(REPO / "benchmarks").glob(f"*/{name}.py")]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tiny_model(likelihood="bernoulli", shape=None, arch=TINY, seed=0, **options) -> VAE:
    torch.manual_seed(seed)
    shape = shape or ((1, 12, 12) if likelihood == "bernoulli" else (3, 8, 8))
    return VAE(ModelConfig(shape, arch, likelihood, n_mix=2, **options)).eval()


def images_for(model, n, seed=1) -> torch.Tensor:
    """n random images the model's likelihood accepts: binary, or on the 256-level grid."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *model.input_shape), generator=g)
    return torch.bernoulli(x, generator=g) if model.likelihood == "bernoulli" else (x * 255).round() / 255


def gen(seed=3) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def tiny_arch():
    return {key: [list(v) if isinstance(v, list) else dict(v) for v in value] for key, value in TINY.items()}


@pytest.fixture(scope="module")
def noise_mnist_root(tmp_path_factory):
    """A data root whose mnist.npz holds 64 training and 32 test images of uniform noise."""
    root = tmp_path_factory.mktemp("data")
    x = np.random.default_rng(0).integers(0, 256, size=(96, 28, 28), dtype=np.uint8)
    np.savez(
        root / "mnist.npz", x_train=x[:64], y_train=np.zeros(64, np.int64), x_test=x[64:], y_test=np.zeros(32, np.int64)
    )
    return root
