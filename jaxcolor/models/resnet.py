"""Keras' ResNet50 (v1) in Flax Linen, layer for layer.

The point of matching `keras.applications.ResNet50` exactly (explicit zero padding, conv biases,
Keras' BatchNorm epsilon, the stride on the first 1x1 conv of a block, submodule names equal to
Keras layer names) is that the Keras ImageNet weight files load without any translation beyond
renaming BatchNorm variables, and that a Flax feature map can be compared with Keras' number for
number (see tests/test_resnet.py).
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# Keras 'caffe' preprocessing: BGR channel means of ImageNet on the 0..255 scale.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)

BN_EPSILON = 1.001e-5  # Keras' ResNet uses this, not BatchNormalization's default 1e-3
BN_MOMENTUM = 0.99

# (stage name, bottleneck width, number of blocks, stride of the first block), as Keras' stack_fn.
STAGES = (
    ("conv2", 64, 3, 1),
    ("conv3", 128, 4, 2),
    ("conv4", 256, 6, 2),
    ("conv5", 512, 3, 2),
)
STAGE_NAMES = ("conv1",) + tuple(stage for stage, *_ in STAGES)

_BLOCK_OUT = re.compile(r"^(conv[2-5])_block([1-9])_out$")


def preprocess_caffe(rgb):
    """RGB in [0, 1] -> ResNet50's input, as `keras.applications.resnet50.preprocess_input`.

    Takes [0, 1] (not Keras' [0, 255]) because that is how the whole project holds images; the
    result equals Keras' preprocessing of `rgb * 255`: BGR order, ImageNet means subtracted, no
    division by a standard deviation.
    """
    rgb = jnp.asarray(rgb)
    bgr = rgb[..., ::-1] * 255.0
    return bgr - jnp.asarray(IMAGENET_MEAN_BGR, dtype=bgr.dtype)


def tap_index(name: str) -> tuple[int, int]:
    """Position of a feature tap in the network's order, checking that the tap exists.

    `conv1_relu` is (1, 0); `convN_blockM_out` is (N, M).
    """
    if name == "conv1_relu":
        return (1, 0)
    match = _BLOCK_OUT.match(name)
    if match:
        stage, block = match.group(1), int(match.group(2))
        blocks = {s: n for s, _, n, _ in STAGES}[stage]
        if block <= blocks:
            return (int(stage[-1]), block)
    raise ValueError(
        f"unknown ResNet50 tap {name!r}: expected 'conv1_relu' or 'convN_blockM_out' with "
        "N in 2..5 and M up to 3, 4, 6, 3 blocks for conv2..conv5"
    )


def stage_of(layer_name: str) -> str:
    """The stage ('conv1'..'conv5', or 'predictions') a Keras ResNet50 layer belongs to."""
    return layer_name.split("_", 1)[0]


class ResNet50(nn.Module):
    """ResNet50 v1 as `keras.applications.ResNet50` computes it.

    Returns a dict from tap name to feature map for every name in `outputs`; with `include_top`
    also 'logits' (the 1000-way Dense output before softmax) and 'predictions' (softmax
    probabilities, what Keras' model outputs), both float32. Without the top the network stops
    after the deepest requested tap, so a truncated encoder neither creates nor computes the
    layers it does not use.

    `frozen_bn`: True runs every BatchNorm in inference mode; a tuple of stage names ('conv1' ..
    'conv5') does so for those stages only. Frozen BatchNorm layers use and keep their loaded
    moving statistics even when `train=True`, which is what fine-tuning a pretrained encoder
    with frozen parts needs. `bn_axis_name` is given to the BatchNorm layers that do train, so
    their batch statistics are averaged across devices under `jax.pmap`.
    """

    include_top: bool = False
    outputs: tuple[str, ...] = ("conv5_block3_out",)
    dtype: Any = jnp.float32
    frozen_bn: bool | tuple[str, ...] = False
    bn_axis_name: str | None = None

    def _bn_frozen(self, stage: str) -> bool:
        if isinstance(self.frozen_bn, bool):
            return self.frozen_bn
        return stage in self.frozen_bn

    def _conv(self, features, kernel, strides, padding, name):
        return nn.Conv(
            features,
            (kernel, kernel),
            strides=(strides, strides),
            padding=padding,
            use_bias=True,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name=name,
        )

    def _bn(self, name, train):
        frozen = self._bn_frozen(stage_of(name))
        return nn.BatchNorm(
            use_running_average=frozen or not train,
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            axis_name=None if frozen else self.bn_axis_name,
            name=name,
        )

    def _block(self, x, filters, strides, conv_shortcut, name, train):
        """Keras' `block1`: bottleneck with the stride on the first 1x1 conv."""
        if conv_shortcut:
            shortcut = self._conv(4 * filters, 1, strides, "VALID", f"{name}_0_conv")(x)
            shortcut = self._bn(f"{name}_0_bn", train)(shortcut)
        else:
            shortcut = x
        x = self._conv(filters, 1, strides, "VALID", f"{name}_1_conv")(x)
        x = nn.relu(self._bn(f"{name}_1_bn", train)(x))
        x = self._conv(filters, 3, 1, "SAME", f"{name}_2_conv")(x)
        x = nn.relu(self._bn(f"{name}_2_bn", train)(x))
        x = self._conv(4 * filters, 1, 1, "VALID", f"{name}_3_conv")(x)
        x = self._bn(f"{name}_3_bn", train)(x)
        return nn.relu(shortcut + x)

    @nn.compact
    def __call__(self, x, train: bool):
        if not self.outputs and not self.include_top:
            raise ValueError("ResNet50 needs at least one tap in `outputs` or include_top=True")
        wanted = {name: tap_index(name) for name in self.outputs}
        last = (5, 3) if self.include_top else max(wanted.values())
        features = {}

        x = jnp.asarray(x, self.dtype)
        x = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))  # conv1_pad
        x = self._conv(64, 7, 2, "VALID", "conv1_conv")(x)
        x = nn.relu(self._bn("conv1_bn", train)(x))
        features["conv1_relu"] = x
        if last > (1, 0):
            x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # pool1_pad
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")  # pool1_pool
            for stage, filters, blocks, stride in STAGES:
                for block in range(1, blocks + 1):
                    if last < (int(stage[-1]), block):
                        break
                    name = f"{stage}_block{block}"
                    first = block == 1
                    x = self._block(x, filters, stride if first else 1, first, name, train)
                    features[f"{name}_out"] = x

        out = {name: features[name] for name in self.outputs}
        if self.include_top:
            pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # avg_pool
            logits = nn.Dense(1000, dtype=self.dtype, param_dtype=jnp.float32, name="predictions")(
                pooled
            )
            out["logits"] = logits.astype(jnp.float32)
            out["predictions"] = nn.softmax(out["logits"])
        return out
