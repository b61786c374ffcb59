"""Building blocks: residual blocks, Gaussian stochastic layers, shape projections.

Every module takes the shape of its input (without the batch dimension) at
construction and exposes ``out_shape``, so a stack can be built from the paper's
JSON and mirrored for the generative path without running data through it.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

LOG_2PI = math.log(2 * math.pi)


def _identity(x):
    return x


# The paper's activation names (oodd/layers/activations.py) -> functions. "Swish" is x * sigmoid(x),
# which is torch's SiLU; "SiLU" names the same function in this package's own default.
ACTIVATIONS = {
    "Identity": _identity,
    "ReLU": F.relu,
    "LeakyReLU": F.leaky_relu,
    "SELU": F.selu,
    "ELU": F.elu,
    "SoftPlus": F.softplus,
    "Tanh": torch.tanh,
    "Swish": F.silu,
    "SiLU": F.silu,
}


def activation_fn(name: str):
    """The activation function called ``name`` (one of ``ACTIVATIONS``)."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}") from None


def _wn(module: nn.Module, on: bool) -> nn.Module:
    if not on:
        return module
    # Transposed convolutions keep output channels on dim 1.
    return weight_norm(module, dim=1 if isinstance(module, nn.ConvTranspose2d) else 0)


def weight_normed_layers(model: nn.Module) -> list[nn.Module]:
    """Every convolution, transposed convolution and linear layer of ``model`` under weight norm."""
    return [
        m
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
        and hasattr(m, "parametrizations")
        and hasattr(m.parametrizations, "weight")
        and hasattr(m.parametrizations.weight, "original0")
    ]


@torch.no_grad()
def data_dependent_init(layers, run) -> None:
    """Data-dependent weight-norm initialisation (Salimans & Kingma 2016) of ``layers`` on one batch.

    ``run()`` runs the batch through the network once. During that pass each layer, when first
    called, gets a fresh direction v ~ Kaiming normal (fan in, ReLU gain), then scale g and bias b
    such that its outputs on this batch have zero mean and unit (unbiased) variance per output
    channel: g = 1 / sqrt(var + 1e-8), b = -mean * g, with mean and var of v's unit-norm output.
    Later layers therefore see the already-normalised outputs of earlier ones, as in the paper's
    lazy per-layer initialisation on the first training batch.
    """
    done, handles = set(), []

    def pre_hook(module, args):
        if module in done:
            return
        w = module.parametrizations.weight
        nn.init.kaiming_normal_(w.original1, mode="fan_in", nonlinearity="relu")
        w.original0.fill_(1.0)
        if module.bias is not None:
            module.bias.zero_()

    def hook(module, args, out):
        if module in done:
            return None
        done.add(module)
        dims = [d for d in range(out.dim()) if d != 1]
        if out.shape[0] * math.prod(out.shape[2:]) < 2:
            raise ValueError("data-dependent initialisation needs at least 2 values per channel (a batch of 2+)")
        mean = out.float().mean(dims)
        scale = 1.0 / torch.sqrt(out.float().var(dims, unbiased=True) + 1e-8)
        g = module.parametrizations.weight.original0
        g.copy_(scale.view(g.shape).to(g.dtype))
        if module.bias is not None:
            module.bias.copy_((-mean * scale).to(module.bias.dtype))
        shape = [1, -1] + [1] * (out.dim() - 2)
        return ((out.float() - mean.view(shape)) * scale.view(shape)).to(out.dtype)

    try:
        for layer in layers:
            handles.append(layer.register_forward_pre_hook(pre_hook))
            handles.append(layer.register_forward_hook(hook))
        run()
    finally:
        for h in handles:
            h.remove()


def conv_out_hw(hw, kernel_size, stride):
    pad = kernel_size // 2
    return tuple((s + 2 * pad - kernel_size) // stride + 1 for s in hw)


def _resize_conv(in_ch, out_ch, kernel_size, in_hw, out_hw, weightnorm):
    """Convolution from in_hw to out_hw: stride 1, a strided conv down, or a transposed conv up."""
    pad = kernel_size // 2
    if tuple(in_hw) == tuple(out_hw):
        return _wn(nn.Conv2d(in_ch, out_ch, kernel_size, 1, pad), weightnorm)
    if all(o < i for i, o in zip(in_hw, out_hw)):
        conv = nn.Conv2d(in_ch, out_ch, kernel_size, 2, pad)
        if conv_out_hw(in_hw, kernel_size, 2) != tuple(out_hw):
            raise ValueError(f"cannot map {in_hw} to {out_hw} with a stride-2 convolution")
        return _wn(conv, weightnorm)
    output_padding = [o - ((i - 1) * 2 - 2 * pad + kernel_size) for i, o in zip(in_hw, out_hw)]
    if any(p not in (0, 1) for p in output_padding):
        raise ValueError(f"cannot map {in_hw} to {out_hw} with a stride-2 transposed convolution")
    return _wn(nn.ConvTranspose2d(in_ch, out_ch, kernel_size, 2, pad, tuple(output_padding)), weightnorm)


class ResBlockConv2d(nn.Module):
    """Pre-activation residual block: act -> conv (resizes) -> act -> conv (-> gate), plus a shortcut.

    ``out_hw`` defaults to what ``stride`` gives; pass a larger ``out_hw`` for the
    generative mirror of a stride-2 block (transposed convolutions upsample).
    """

    def __init__(
        self,
        in_shape,
        out_channels,
        kernel_size=3,
        stride=1,
        weightnorm=True,
        gated=False,
        out_hw=None,
        activation="SiLU",
        dropout=0.0,
    ):
        super().__init__()
        self.act = activation_fn(activation)
        # The paper's q_dropout / p_dropout: between the middle activation and the second convolution.
        self.dropout = nn.Dropout(dropout) if dropout else None
        in_ch, *in_hw = in_shape
        out_hw = tuple(out_hw) if out_hw is not None else conv_out_hw(in_hw, kernel_size, stride)
        self.out_shape = (out_channels, *out_hw)
        self.gated = gated
        self.conv1 = _resize_conv(in_ch, out_channels, kernel_size, in_hw, out_hw, weightnorm)
        self.conv2 = _wn(
            nn.Conv2d(out_channels, out_channels * (2 if gated else 1), kernel_size, 1, kernel_size // 2), weightnorm
        )
        same = in_ch == out_channels and tuple(in_hw) == out_hw
        self.shortcut = nn.Identity() if same else _resize_conv(in_ch, out_channels, 1, in_hw, out_hw, weightnorm)

    def forward(self, x):
        h = self.act(self.conv1(self.act(x)))
        if self.dropout is not None:
            h = self.dropout(h)
        h = self.conv2(h)
        if self.gated:
            a, b = h.chunk(2, dim=1)
            h = a * torch.sigmoid(b)
        return self.shortcut(x) + h


class ResBlockDense(nn.Module):
    """Dense residual block on flattened features; ``out_shape`` may reshape the output."""

    def __init__(
        self, in_shape, out_features, weightnorm=True, gated=False, out_shape=None, activation="SiLU", dropout=0.0
    ):
        super().__init__()
        self.act = activation_fn(activation)
        self.dropout = nn.Dropout(dropout) if dropout else None
        in_features = math.prod(in_shape)
        self.out_shape = tuple(out_shape) if out_shape is not None else (out_features,)
        out_features = math.prod(self.out_shape)
        self.gated = gated
        self.fc1 = _wn(nn.Linear(in_features, out_features), weightnorm)
        self.fc2 = _wn(nn.Linear(out_features, out_features * (2 if gated else 1)), weightnorm)
        self.shortcut = (
            nn.Identity() if in_features == out_features else _wn(nn.Linear(in_features, out_features), weightnorm)
        )

    def forward(self, x):
        x = x.flatten(1)
        h = self.act(self.fc1(self.act(x)))
        if self.dropout is not None:
            h = self.dropout(h)
        h = self.fc2(h)
        if self.gated:
            a, b = h.chunk(2, dim=1)
            h = a * torch.sigmoid(b)
        return (self.shortcut(x) + h).view(-1, *self.out_shape)


class Projection(nn.Module):
    """Linear map between shapes: a 1x1 convolution when the spatial size agrees, else dense."""

    def __init__(self, in_shape, out_shape, weightnorm=True):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.conv = len(in_shape) == 3 and len(out_shape) == 3 and tuple(in_shape[1:]) == tuple(out_shape[1:])
        if self.conv:
            self.map = _wn(nn.Conv2d(in_shape[0], out_shape[0], 1), weightnorm)
        else:
            self.map = _wn(nn.Linear(math.prod(in_shape), math.prod(out_shape)), weightnorm)

    def forward(self, x):
        if self.conv:
            return self.map(x)
        return self.map(x.flatten(1)).view(-1, *self.out_shape)


class Gaussian:
    """Diagonal Gaussian over a batch of tensors; log densities are summed per row."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.mean, self.std = mean, std

    def sample(self, generator=None):
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def log_prob(self, z):
        return self.log_prob_elements(z).flatten(1).sum(1)

    def log_prob_elements(self, z):
        """log density of each element of z (not summed), z's shape."""
        d = (z - self.mean) / self.std
        return -0.5 * d * d - torch.log(self.std) - 0.5 * LOG_2PI

    def repeat(self, s: int) -> Gaussian:
        """Tile the batch s times, sample-major: row r*N + n holds image n."""
        reps = (s,) + (1,) * (self.mean.dim() - 1)
        return Gaussian(self.mean.repeat(reps), self.std.repeat(reps))


def standard_normal_log_prob(z):
    return standard_normal_log_prob_elements(z).flatten(1).sum(1)


def standard_normal_log_prob_elements(z):
    return -0.5 * z * z - 0.5 * LOG_2PI


class _GaussianLayer(nn.Module):
    min_std = 1e-3  # keeps log densities finite early in training

    def _gaussian(self, h):
        # float32 even under mixed precision: the bound is a sum of many log densities.
        h = h.float()
        if torch.is_grad_enabled():
            # Contiguous before the split: a channels-last convolution's backward whose gradient came back
            # through the two halves' views corrupted the heap on CPUs for odd batch sizes (torch 2.14;
            # tests/test_model.py). Only where a backward can follow, so scores keep their bits.
            h = h.contiguous()
        mean, raw = h.chunk(2, dim=1)
        return Gaussian(mean, F.softplus(raw) + self.min_std)


class GaussianConv2d(_GaussianLayer):
    """Convolutional Gaussian: feature map -> latent map of ``latent_features`` channels."""

    def __init__(self, in_shape, latent_features, weightnorm=True, kernel_size=3, activation="SiLU"):
        super().__init__()
        self.act = activation_fn(activation)
        if len(in_shape) != 3:
            raise ValueError(f"GaussianConv2d needs a feature-map input (C, H, W), got shape {tuple(in_shape)}")
        self.out_shape = (latent_features, *in_shape[1:])
        self.conv = _wn(nn.Conv2d(in_shape[0], 2 * latent_features, kernel_size, 1, kernel_size // 2), weightnorm)

    def forward(self, h) -> Gaussian:
        return self._gaussian(self.conv(self.act(h)))


class GaussianDense(_GaussianLayer):
    """Dense Gaussian: flattened features -> latent vector of ``latent_features``."""

    def __init__(self, in_shape, latent_features, weightnorm=True, activation="SiLU"):
        super().__init__()
        self.act = activation_fn(activation)
        self.out_shape = (latent_features,)
        self.fc = _wn(nn.Linear(math.prod(in_shape), 2 * latent_features), weightnorm)

    def forward(self, h) -> Gaussian:
        return self._gaussian(self.fc(self.act(h.flatten(1))))


STOCHASTIC = {"GaussianConv2d": GaussianConv2d, "GaussianDense": GaussianDense}
