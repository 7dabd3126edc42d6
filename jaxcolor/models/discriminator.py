"""A conditional PatchGAN discriminator on (L, ab), the critic of adversarial colorization.

Pix2pix's PatchGAN (Isola et al. 2017), as colorization GANs use it (ChromaGAN, DeOldify's
critic, DDColor's): strided 4x4 convolutions with leaky ReLU, ending in one logit per patch, so
it judges local color texture rather than the whole picture. It sees the lightness with the
colors, (L/100, ab/128) stacked, so it asks "are these colors plausible for this photo", not
"are these plausible colors". No BatchNorm: the discriminator is applied to real and fake
images in one batch, where batch statistics would leak one into the other; spectral
normalisation (Miyato et al. 2018, optional) bounds its Lipschitz constant instead, with its
power-iteration vectors kept in the `batch_stats` collection (so they are checkpointed with it).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class PatchDiscriminator(nn.Module):
    """(B, H, W, 3) = (L/100, a/128, b/128) -> (B, H/2^k, W/2^k, 1) patch logits (float32)."""

    width: int = 32
    layers: int = 3  # strided convolutions (each halves the side) before the last two
    spectral_norm: bool = True

    @nn.compact
    def __call__(self, x, train: bool):
        def conv(features, stride, name):
            layer = nn.Conv(features, (4, 4), strides=stride, padding="SAME", name=name)
            if not self.spectral_norm:
                return layer
            return lambda y: nn.SpectralNorm(layer, name=f"{name}_sn")(y, update_stats=train)

        x = x.astype(jnp.float32)
        for i in range(self.layers):
            x = nn.leaky_relu(conv(self.width * 2**i, 2, f"down{i}")(x), 0.2)
        x = nn.leaky_relu(conv(self.width * 2**self.layers, 1, "features")(x), 0.2)
        return conv(1, 1, "logits")(x)
