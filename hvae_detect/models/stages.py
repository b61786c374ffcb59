"""Stacks of residual blocks built from one stage's ``config_deterministic``, shared by every family.

A stage's inference stack runs its blocks in order; the generative mirror runs them in
reverse and resizes back (transposed convolutions upsample); a merge block copies the
stage's last block at stride 1, as the paper's ladder and BIVA stages build theirs.
"""

from __future__ import annotations

from torch import nn

from hvae_detect.models.layers import STOCHASTIC, ResBlockConv2d, ResBlockDense


def build_block(in_shape, cfg, out_shape=None, activation="SiLU", dropout=0.0):
    """One block from its seed dict; ``out_shape`` builds the generative mirror instead."""
    wn, gated = cfg.get("weightnorm", True), cfg.get("gated", False)
    kw = {"activation": activation, "dropout": dropout}
    if cfg["block"] == "ResBlockConv2d":
        if len(in_shape) != 3:
            raise ValueError(
                f"ResBlockConv2d needs a feature-map input, but the stage's input has shape {tuple(in_shape)}"
            )
        if out_shape is None:
            return ResBlockConv2d(
                in_shape, cfg["out_channels"], cfg["kernel_size"], cfg.get("stride", 1), wn, gated, **kw
            )
        return ResBlockConv2d(in_shape, out_shape[0], cfg["kernel_size"], 1, wn, gated, out_hw=out_shape[1:], **kw)
    return ResBlockDense(in_shape, cfg["out_features"], wn, gated, out_shape=out_shape, **kw)


def inference_stack(in_shape, cfgs, activation, dropout):
    """(the stage's blocks as one module, the shapes through them with the input first)."""
    shapes, blocks = [tuple(in_shape)], []
    for cfg in cfgs:
        blocks.append(build_block(shapes[-1], cfg, activation=activation, dropout=dropout))
        shapes.append(blocks[-1].out_shape)
    return nn.Sequential(*blocks), shapes


def generative_stack(shapes, cfgs, input_shape, bottom, activation, dropout):
    """The mirror of an inference stack with ``shapes``: from its output shape back to its input
    shape; the bottom stage ends in the first block's feature channels, not in pixels (the
    likelihood head maps them). Returns (module, the shape it ends in)."""
    shapes = list(shapes)
    if bottom:
        shapes[0] = (shapes[1][0] if len(shapes) > 1 else input_shape[0], *input_shape[1:])
    blocks = [
        build_block(shapes[j + 1], cfgs[j], out_shape=shapes[j], activation=activation, dropout=dropout)
        for j in reversed(range(len(cfgs)))
    ]
    return nn.Sequential(*blocks), shapes[0]


def merge_block(in_shape, cfgs, activation, dropout):
    """A block from ``in_shape`` to the stage's output shape: its last block at stride 1."""
    cfg = {**cfgs[-1]}
    if "stride" in cfg:
        cfg["stride"] = 1
    return build_block(in_shape, cfg, activation=activation, dropout=dropout)


def gaussian(in_shape, sto, activation):
    """The Gaussian layer of a ``config_stochastic`` entry reading features of ``in_shape``."""
    return STOCHASTIC[sto["block"]](
        in_shape, sto["latent_features"], sto.get("weightnorm", True), activation=activation
    )


def doubled(shape):
    """The shape of two such tensors concatenated along channels (or features)."""
    return (2 * shape[0], *shape[1:])
