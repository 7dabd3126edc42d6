"""The reference work's skip autoencoder, layer for layer as the Keras original.

Encoder: conv16, conv32+BN, pool, conv64+BN, pool, conv128+BN, conv256+BN; decoder: up, conv128+BN,
up, conv64+BN, concatenate the input, conv64+BN, conv32+BN, conv2 tanh. Every conv is 3x3 'same'
with a bias, followed (where the reference had one) by Keras' BatchNormalization (momentum 0.99,
epsilon 1e-3) and Keras' LeakyReLU (slope 0.3). At 128x128x1 this is 820,770 numbers: 819,234
trainable and 1,536 BatchNorm moving statistics, as the reference.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

LEAKY_SLOPE = 0.3  # keras.layers.LeakyReLU default
BN_MOMENTUM = 0.99  # keras.layers.BatchNormalization defaults
BN_EPSILON = 1e-3


def scaled(channels: int, width: float) -> int:
    """Hidden channel count under the width multiplier; never below 1."""
    return max(1, int(round(channels * width)))


class ConvBlock(nn.Module):
    """3x3 'same' conv, optional BatchNorm, LeakyReLU: the reference's repeated unit."""

    features: int
    batch_norm: bool = True
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(self.features, (3, 3), padding="SAME", dtype=self.dtype, name="conv")(x)
        if self.batch_norm:
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=BN_MOMENTUM,
                epsilon=BN_EPSILON,
                dtype=self.dtype,
                axis_name=self.bn_axis_name,
                name="bn",
            )(x)
        return nn.leaky_relu(x, LEAKY_SLOPE)


def upsample2x(x):
    """Keras UpSampling2D (nearest): each pixel becomes a 2x2 block."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, h * 2, w * 2, c)


class SkipAutoencoder(nn.Module):
    """(B, H, W, 1) L/100 in [0, 1] -> (B, H, W, 2) tanh, the predicted ab/128.

    H and W must be divisible by 4 (two 2x2 poolings). `output_channels` > 2 turns the last
    layer into per-pixel logits (no tanh), as the classification loss needs.
    """

    width: float = 1.0
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    output_channels: int = 2

    @nn.compact
    def __call__(self, x, train: bool = False):
        if x.shape[1] % 4 or x.shape[2] % 4:
            raise ValueError(f"SkipAutoencoder needs H and W divisible by 4, got {x.shape[1:3]}")
        block = lambda c, bn=True, name=None: ConvBlock(  # noqa: E731
            scaled(c, self.width), bn, self.dtype, self.bn_axis_name, name=name
        )
        inputs = x.astype(self.dtype)
        x = block(16, bn=False, name="enc16")(inputs, train)
        x = block(32, name="enc32")(x, train)
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = block(64, name="enc64")(x, train)
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = block(128, name="enc128")(x, train)
        x = block(256, name="enc256")(x, train)
        x = upsample2x(x)
        x = block(128, name="dec128")(x, train)
        x = upsample2x(x)
        x = block(64, name="dec64")(x, train)
        x = jnp.concatenate([x, inputs], axis=-1)
        x = block(64, name="skip64")(x, train)
        x = block(32, name="skip32")(x, train)
        x = nn.Conv(self.output_channels, (3, 3), padding="SAME", dtype=self.dtype, name="out")(x)
        x = x.astype(jnp.float32)
        return jnp.tanh(x) if self.output_channels == 2 else x
