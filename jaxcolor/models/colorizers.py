"""Colorizers on a pretrained Keras ResNet50 encoder.

Input (B, H, W, 1) = L / 100 in [0, 1]; output (B, H, W, 2) = predicted ab / 128 through tanh.
The decoder reuses the skip autoencoder's unit (3x3 conv, Keras BatchNorm, LeakyReLU 0.3) and its
nearest-neighbour x2 upsampling.

The encoder sees an RGB image although the model only has L: by default the neutral-gray sRGB
image L stands for (a = b = 0), preprocessed as the ImageNet weights expect, so the pretrained
filters see the kind of input they were trained on. `input_mode='l_repeat'` feeds the reference
work's raw L / 100 repeated three times, kept only to reproduce it.

Freezing ('none', 'stem', 'encoder', or stage names such as 'conv1,conv2') is expressed twice and
both are needed: `param_labels` / `trainable_mask` keep the optimizer off frozen parameters, and
the encoder's frozen stages run BatchNorm on their loaded moving statistics even when training,
so those neither drift nor see batch statistics the pretrained filters were not trained with.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcolor import ab_bins
from jaxcolor.color import gray_rgb_from_l
from jaxcolor.models.autoencoder import ConvBlock, upsample2x
from jaxcolor.models.entry import Entry
from jaxcolor.models.keras_weights import load_pretrained
from jaxcolor.models.resnet import STAGE_NAMES, ResNet50, preprocess_caffe, stage_of

log = logging.getLogger(__name__)

ENCODER = "encoder"  # submodule name of the ResNet50 inside both colorizers
INPUT_MODES = ("gray_rgb", "l_repeat")


def parse_freeze(freeze: str) -> tuple[str, ...]:
    """'none' | 'stem' | 'encoder' | comma-separated stage names -> the frozen ResNet50 stages."""
    spec = freeze.strip().lower()
    if spec in ("", "none"):
        return ()
    if spec == "stem":
        return ("conv1",)
    if spec == "encoder":
        return STAGE_NAMES
    stages = tuple(s.strip() for s in spec.split(",") if s.strip())
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown:
        raise ValueError(
            f"freeze={freeze!r}: unknown stage(s) {unknown}; use 'none', 'stem', 'encoder' or a "
            f"comma-separated subset of {list(STAGE_NAMES)}"
        )
    return tuple(s for s in STAGE_NAMES if s in stages)


def trainable_mask(params, freeze: str):
    """Pytree of bools like `params`: False for encoder parameters in frozen stages."""
    frozen = parse_freeze(freeze)

    def trainable(path, _):
        keys = [getattr(entry, "key", None) for entry in path]
        if ENCODER not in keys:
            return True
        layer = keys[keys.index(ENCODER) + 1]
        return stage_of(layer) not in frozen

    return jax.tree_util.tree_map_with_path(trainable, params)


def param_labels(params, freeze: str):
    """'train' / 'freeze' labels for optax.multi_transform.

    Use as `optax.multi_transform({'train': tx, 'freeze': optax.set_to_zero()}, labels)`.
    """
    return jax.tree.map(lambda t: "train" if t else "freeze", trainable_mask(params, freeze))


def encoder_input(l_norm, input_mode: str):
    """L / 100 (B, H, W, 1) -> the 3-channel image the ResNet50 encoder sees."""
    if input_mode == "gray_rgb":
        return preprocess_caffe(gray_rgb_from_l(l_norm * 100.0, xp=jnp))
    if input_mode == "l_repeat":
        return jnp.repeat(l_norm, 3, axis=-1)
    raise ValueError(f"input_mode={input_mode!r}; expected one of {INPUT_MODES}")


class _ResNetColorizer(nn.Module):
    """Shared attributes and plumbing of the two colorizers."""

    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    freeze: str = "none"
    input_mode: str = "gray_rgb"
    output_channels: int = 2  # 2 = tanh ab; more = per-pixel logits for a classification loss
    output_stride: int = 1  # > 1: the output layer runs on features averaged over s x s blocks

    def _encode(self, x, taps: tuple[str, ...], train: bool):
        inputs = encoder_input(jnp.asarray(x, jnp.float32), self.input_mode)
        encoder = ResNet50(
            include_top=False,
            outputs=taps,
            dtype=self.dtype,
            frozen_bn=parse_freeze(self.freeze),
            bn_axis_name=self.bn_axis_name,
            name=ENCODER,
        )
        return inputs.astype(self.dtype), encoder(inputs, train=train)

    def _unit(self, features, name):
        return ConvBlock(features, True, self.dtype, self.bn_axis_name, name=name)

    def _head(self, x):
        x = ab_bins.pool(x, self.output_stride)  # the loss's reduced-resolution grid
        x = nn.Conv(self.output_channels, (3, 3), padding="SAME", dtype=self.dtype,
                    name="output_conv")(x).astype(jnp.float32)
        return jnp.tanh(x) if self.output_channels == 2 else x


class ResNet50Seed(_ResNetColorizer):
    """The reference work's transfer model: ResNet50 up to conv2_block1_out and a small decoder.

    The concatenation with the 3-channel encoder input restores full-resolution detail the 1/4
    resolution features lost; at 128x128 the model has 514,338 variables (parameters plus
    BatchNorm moving statistics), the reference's Keras count.
    """

    @nn.compact
    def __call__(self, x, train: bool):
        inputs, features = self._encode(x, ("conv2_block1_out",), train)
        y = upsample2x(features["conv2_block1_out"])
        y = self._unit(128, "up1")(y, train)
        y = upsample2x(y)
        y = self._unit(64, "up2")(y, train)
        y = jnp.concatenate([y, inputs], axis=-1)
        y = self._unit(64, "fuse1")(y, train)
        y = self._unit(32, "fuse2")(y, train)
        return self._head(y)


class ResNet50UNet(_ResNetColorizer):
    """U-Net on the ResNet50 stages down to 1/16 resolution (conv4_block6_out).

    Each decoder stage upsamples, concatenates the encoder tap of that resolution and applies two
    conv units; the last stage concatenates the 3-channel encoder input at full resolution. H and
    W must be multiples of 16 so every upsampled map lines up with its tap.
    """

    widths: tuple[int, int, int, int] = (256, 128, 64, 32)

    deepest = "conv4_block6_out"  # 1/16
    skip_taps = ("conv3_block4_out", "conv2_block3_out", "conv1_relu")  # 1/8, 1/4, 1/2

    @nn.compact
    def __call__(self, x, train: bool):
        height, width = x.shape[1:3]
        if height % 16 or width % 16:
            raise ValueError(f"ResNet50UNet needs H and W divisible by 16, got {height}x{width}")
        if len(self.widths) != 4:
            raise ValueError(f"ResNet50UNet has 4 decoder stages, got widths={self.widths}")
        inputs, features = self._encode(x, (self.deepest,) + self.skip_taps, train)
        y = features[self.deepest]
        skips = [features[t] for t in self.skip_taps] + [inputs]
        for stage, (skip, features_out) in enumerate(zip(skips, self.widths, strict=True), start=1):
            y = jnp.concatenate([upsample2x(y), skip], axis=-1)
            y = self._unit(features_out, f"dec{stage}_a")(y, train)
            y = self._unit(features_out, f"dec{stage}_b")(y, train)
        return self._head(y)


def _take_encoder_part(target, source, collection: str):
    """`source[...]` restricted to the layers and shapes of `target`, checking both."""

    def take(path, leaf):
        keys = [entry.key for entry in path]
        node = source
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                raise ValueError(f"pretrained weights lack {collection}/{'/'.join(keys)}")
            node = node[key]
        if node.shape != leaf.shape:
            raise ValueError(
                f"pretrained {collection}/{'/'.join(keys)} has shape {node.shape}, "
                f"the encoder expects {leaf.shape}"
            )
        return jnp.asarray(node, leaf.dtype)

    return jax.tree_util.tree_map_with_path(take, target)


def load_encoder_weights(variables, path):
    """Colorizer variables with the encoder replaced by ResNet50 weights from `path`.

    `path` is a Keras `.h5` file or a `python -m jaxcolor.port` directory; the classifier top and
    any layers deeper than the encoder uses are ignored.
    """
    pretrained = load_pretrained(path)
    out = dict(variables)
    for collection in ("params", "batch_stats"):
        tree = dict(variables[collection])
        tree[ENCODER] = _take_encoder_part(tree[ENCODER], pretrained[collection], collection)
        out[collection] = tree
    return out


# --- the registry entries (jaxcolor.models.MODELS) --------------------------------------------


def build(cls, model_config, dtype, bn_axis_name=None, output_channels=2, output_stride=1):
    return cls(
        dtype=dtype,
        bn_axis_name=bn_axis_name,
        freeze=model_config.get("freeze", "none"),
        input_mode=model_config.get("input_mode", "gray_rgb"),
        output_channels=output_channels,
        output_stride=output_stride,
    )


def load(model_config, variables):
    """`variables` with the encoder from `model_config.weights` ('none': left random)."""
    weights = str(model_config.get("weights", "none") or "none")
    if weights.lower() == "none":
        log.warning("config.model.weights=none: the %s encoder starts from random weights, not "
                    "ImageNet", model_config.name)
        return variables
    return load_encoder_weights(variables, weights)


def labels_fn(model_config):
    """`param_labels` for `model_config.freeze`, or None if nothing is frozen."""
    freeze = model_config.get("freeze", "none")
    if freeze in ("", "none"):
        return None
    parse_freeze(freeze)  # fail early on a bad spec
    return lambda params: param_labels(params, freeze)


# The seed model concatenates its 1/4-resolution features back at full size; the U-Net taps 1/16.
SEED = Entry(functools.partial(build, ResNet50Seed), load, labels_fn, size_multiple=4)
UNET = Entry(functools.partial(build, ResNet50UNet), load, labels_fn, size_multiple=16)
