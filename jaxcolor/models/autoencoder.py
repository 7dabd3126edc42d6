"""The reference work's skip autoencoder, layer for layer as the Keras original.

Encoder: conv16, conv32+BN, pool, conv64+BN, pool, conv128+BN, conv256+BN; decoder: up, conv128+BN,
up, conv64+BN, concatenate the input, conv64+BN, conv32+BN, conv2 tanh. Every conv is 3x3 'same'
with a bias, followed (where the reference had one) by Keras' BatchNormalization (momentum 0.99,
epsilon 1e-3) and Keras' LeakyReLU (slope 0.3). At 128x128x1 this is 820,770 numbers: 819,234
trainable and 1,536 BatchNorm moving statistics, as the reference.

The computation is written for speed without changing the function or the parameters (names,
shapes, initial values; tests/test_autoencoder_equivalence.py checks both against the plain
formulation): the 2x2 max-pool is a reshape + max with an element-wise backward pass
(`max_pool_2x2`), each "upsample, then 3x3 conv" is four 2x2 convs at the low resolution
(`UpsampleConv`, 0.44x the FLOPs of those two largest layers), and the concatenation of the input
before skip64 is a conv with a split kernel (`SplitInputConv`). benchmarks/RESULTS.md has the
measurements.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxcolor import ab_bins
from jaxcolor.models.entry import Entry, all_trainable, no_pretrained_weights

LEAKY_SLOPE = 0.3  # keras.layers.LeakyReLU default
BN_MOMENTUM = 0.99  # keras.layers.BatchNormalization defaults
BN_EPSILON = 1e-3


def scaled(channels: int, width: float) -> int:
    """Hidden channel count under the width multiplier; never below 1."""
    return max(1, int(round(channels * width)))


class SplitInputConv(nn.Module):
    """`nn.Conv(features, (3, 3), padding='SAME')` on the channel concatenation of `inputs`,
    computed without concatenating.

    The parameters are those of the `nn.Conv` on the concatenation (same names, shapes,
    initializers and random draws): one kernel (3, 3, sum of channels, features) and a bias. The
    kernel is sliced along its input channels and each part convolved with its input; the sum is
    the same convolution, up to float summation order. This saves writing and re-reading the
    concatenated activation and its gradient, and keeps every conv at a channel count that conv
    libraries handle well (64, not 65) on CPU and GPU alike.
    """

    features: int
    dtype: Any = jnp.float32
    single_channel_im2col: bool = False  # 1-channel parts by `im2col_conv`

    @nn.compact
    def __call__(self, inputs: Sequence[Any]):
        sizes = [x.shape[-1] for x in inputs]
        kernel, bias = _conv_params(self, sum(sizes), self.features)
        *parts, kernel, bias = nn.dtypes.promote_dtype(*inputs, kernel, bias, dtype=self.dtype)
        y, start = None, 0
        for x, size in zip(parts, sizes):
            k = kernel[:, :, start : start + size]
            if size == 1 and self.single_channel_im2col:
                part = im2col_conv(x, k)
            else:
                part = lax.conv_general_dilated(
                    x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            y = part if y is None else y + part
            start += size
        return y + bias


def im2col_conv(x, kernel):
    """3x3 'same' conv of a 1-channel (B, H, W, 1) map as a matmul of its 9 shifted copies.

    Conv libraries pad a 1-channel input to their vector width and convert layouts around it: on
    the H100 that cost ~3.9 ms of a 50.8 ms step (benchmarks/RESULTS.md). The (B, H, W, 9) patches
    are small (9 numbers per pixel against the 16-64 channels of the output), and the matmul over
    them, with its weight gradient patches^T @ dy, is a plain GEMM on every backend. Accumulates
    in float32. No faster than the library conv on XLA:CPU (RESULTS.md); not yet measured on a GPU.
    """
    _, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate(
        [xp[:, i : i + h, j : j + w, :] for i in range(3) for j in range(3)], axis=-1)
    y = jnp.einsum("bhwk,kf->bhwf", patches, kernel.reshape(9, -1),
                   preferred_element_type=jnp.float32)
    return y.astype(x.dtype)


def _conv_params(module, in_features: int, features: int):
    """The kernel (3, 3, in, out) and bias of `nn.Conv(features, (3, 3))`: same names, shapes,
    initializers and random draws, so a module using these has `nn.Conv`'s parameter tree."""
    kernel = module.param(
        "kernel", nn.linear.default_kernel_init, (3, 3, in_features, features), jnp.float32
    )
    bias = module.param("bias", nn.initializers.zeros_init(), (features,), jnp.float32)
    return kernel, bias


def _phase_taps(kernel, phase: int, axis: int):
    """The 3 taps of `kernel` along `axis` folded onto the 2 low-resolution rows that output
    phase `phase` (0: even, 1: odd upsampled row) sees: [k0, k1 + k2] or [k0 + k1, k2]."""
    k0, k1, k2 = (lax.index_in_dim(kernel, i, axis) for i in range(3))
    pair = (k0, k1 + k2) if phase == 0 else (k0 + k1, k2)
    return jnp.concatenate(pair, axis=axis)


class UpsampleConv(nn.Module):
    """`nn.Conv(features, (3, 3), padding='SAME')` applied to `upsample2x(x)`, computed at the
    low resolution without materializing the upsampled map.

    Each output pixel (2i + a, 2j + b) of a 3x3 conv over a nearest-upsampled map sees only a 2x2
    neighbourhood of x, with some of the 3x3 taps landing on the same x pixel. So the result is
    four 2x2 convs of x (one per output phase (a, b), with the 3x3 kernel's taps summed
    accordingly, and padding on the side that phase reaches past the border), interleaved. That is
    16 instead of 36 multiply-adds per output pixel and input channel (0.44x the FLOPs), the same
    function up to float rounding of the summed taps, and the same parameters (names, shapes,
    initialization) as the `nn.Conv` it replaces. Plain convs, slices and a depth-to-space
    interleave: standard on CPU, GPU and TPU alike.
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel, bias = _conv_params(self, x.shape[-1], self.features)
        b, h, w, _ = x.shape
        rows = []
        for a in (0, 1):
            k_a = _phase_taps(kernel, a, axis=0)
            cols = []
            for c in (0, 1):
                k_ac = _phase_taps(k_a, c, axis=1)  # (2, 2, in, out), summed in float32
                xs, k_ac, bias_c = nn.dtypes.promote_dtype(x, k_ac, bias, dtype=self.dtype)
                pad = lambda phase: (1, 0) if phase == 0 else (0, 1)  # noqa: E731
                y = lax.conv_general_dilated(
                    xs, k_ac, (1, 1), (pad(a), pad(c)),
                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                )
                cols.append(y + bias_c)
            rows.append(jnp.stack(cols, axis=3))  # (b, h, w, 2, out)
        y = jnp.stack(rows, axis=2)  # (b, h, 2, w, 2, out)
        return y.reshape(b, 2 * h, 2 * w, self.features)


# How the three reshaping steps of the autoencoder are computed (same function and parameters):
# the upsample + conv, the concatenation before skip64, and the 2x2 max-pool.
OPS = {
    "phase": ("phase", "split", "elementwise"),  # the fastest on XLA:CPU and an H100 (RESULTS.md)
    "im2col": ("phase", "split_im2col", "elementwise"),  # phase + `im2col_conv` (GPU trial)
    "plain": ("materialize", "concat", "reduce_window"),  # the reference's ops, as written
}
# The `ops` that 'auto' picks per backend: the fastest measured there (benchmarks/RESULTS.md:
# 'phase' on XLA:CPU and on an H100; no TPU measurement).
AUTO_OPS = {"cpu": "phase", "gpu": "phase"}
SIZE_MULTIPLE = 4  # two 2x2 poolings


class ConvBlock(nn.Module):
    """3x3 'same' conv, optional BatchNorm, LeakyReLU: the reference's repeated unit.

    `x` is an array, or a sequence of arrays standing for their channel concatenation (see
    `SplitInputConv`; the parameters are the same either way).
    """

    features: int
    batch_norm: bool = True
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    upsample: bool = False  # conv of upsample2x(x)
    ops: str = "phase"  # a key of OPS

    @nn.compact
    def __call__(self, x, train: bool):
        upsample_form, concat_form, _ = OPS[self.ops]
        if self.upsample and upsample_form == "phase":
            x = UpsampleConv(self.features, dtype=self.dtype, name="conv")(x)
        elif concat_form == "split_im2col" and (isinstance(x, (tuple, list)) or x.shape[-1] == 1):
            parts = x if isinstance(x, (tuple, list)) else [x]
            x = SplitInputConv(self.features, self.dtype, single_channel_im2col=True,
                               name="conv")(parts)
        elif isinstance(x, (tuple, list)) and concat_form.startswith("split"):
            x = SplitInputConv(self.features, dtype=self.dtype, name="conv")(x)
        else:
            if self.upsample:
                x = upsample2x(x)
            elif isinstance(x, (tuple, list)):
                x = jnp.concatenate(x, axis=-1)
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


def _pool_windows(x):
    """(B, H, W, C) -> the four (B, H/2, W/2, C) corners of the 2x2 windows, in row-major order."""
    b, h, w, c = x.shape
    xr = x.reshape(b, h // 2, 2, w // 2, 2, c)
    return xr[:, :, 0, :, 0], xr[:, :, 0, :, 1], xr[:, :, 1, :, 0], xr[:, :, 1, :, 1]


def _pool_max_and_index(x):
    """Window maximum and the index (0..3) of its first occurrence, from pairwise compares."""
    x00, x01, x10, x11 = _pool_windows(x)
    top, bottom = jnp.maximum(x00, x01), jnp.maximum(x10, x11)
    top_i = jnp.where(x01 > x00, 1, 0).astype(jnp.int8)
    bottom_i = jnp.where(x11 > x10, 3, 2).astype(jnp.int8)
    return jnp.maximum(top, bottom), jnp.where(bottom > top, bottom_i, top_i)


@jax.custom_vjp
def max_pool_2x2(x):
    """2x2 max-pool with stride 2 (H, W even), as `nn.max_pool(x, (2, 2), (2, 2))`.

    Forward: the maximum of the four strided corners of the windows. Backward: the gradient goes
    to the first maximum of each window in row-major order, as the reduce_window formulation's
    select_and_scatter (and TF/Keras' MaxPoolGrad) do. The winner's index (int8) is found by
    pairwise compares in the forward pass and kept, so the backward pass never compares floats
    for equality (XLA may recompute the pooled activation in another fusion, where an equality
    test against the saved maximum could miss by a rounding). Everything is element-wise work that
    XLA fuses on every backend; XLA:CPU's select_and_scatter, which the reduce_window gradient
    lowers to, is slow (benchmarks/RESULTS.md).
    """
    return _pool_max_and_index(x)[0]


def _max_pool_fwd(x):
    y, index = _pool_max_and_index(x)
    return y, index


def _max_pool_bwd(index, g):
    b, h2, w2, c = g.shape
    zero = jnp.zeros_like(g)
    corners = [jnp.where(index == k, g, zero) for k in range(4)]
    top = jnp.stack(corners[:2], axis=3)  # (b, h/2, w/2, 2, c)
    bottom = jnp.stack(corners[2:], axis=3)
    dx = jnp.stack([top, bottom], axis=2)  # (b, h/2, 2, w/2, 2, c)
    return (dx.reshape(b, 2 * h2, 2 * w2, c),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


@jax.custom_vjp
def upsample2x(x):
    """Keras UpSampling2D (nearest): each pixel becomes a 2x2 block.

    SkipAutoencoder calls this only with `ops="plain"` (the other forms fold the upsampling into
    the next conv).

    Forward: broadcast + reshape. Backward: the sum of the four strided corners of the 2x2
    blocks of the gradient, element-wise adds that XLA fuses into one loop on every backend. The
    automatic gradient of the broadcast is a reduce over the two window axes, which XLA:CPU in
    jaxlib 0.10 hands to a YNNPACK reduction that took a quarter of the CPU train step
    (benchmarks/RESULTS.md); the sum is the same up to float summation order.
    """
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, h * 2, w * 2, c)


def _upsample_fwd(x):
    return upsample2x(x), None


def _upsample_bwd(_, g):
    g00, g01, g10, g11 = _pool_windows(g)
    return ((g00 + g01) + (g10 + g11),)


upsample2x.defvjp(_upsample_fwd, _upsample_bwd)


class SkipAutoencoder(nn.Module):
    """(B, H, W, 1) L/100 in [0, 1] -> (B, H, W, 2) tanh, the predicted ab/128.

    H and W must be divisible by 4 (two 2x2 poolings). `output_channels` > 2 turns the last
    layer into per-pixel logits (no tanh), as the classification loss needs; `output_stride` s > 1
    averages the last features over s x s blocks first, so the output (and the costly Q-channel
    last conv) is at 1/s resolution, as Zhang et al. predicted at 1/4. `ops` picks how the
    upsample-convs, the concatenation and the pooling are computed (see `OPS`); every choice has
    the same parameters and computes the same function up to float rounding.
    """

    width: float = 1.0
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    output_channels: int = 2
    ops: str = "phase"
    output_stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        if x.shape[1] % SIZE_MULTIPLE or x.shape[2] % SIZE_MULTIPLE:
            raise ValueError(f"SkipAutoencoder needs H and W divisible by {SIZE_MULTIPLE}, "
                             f"got {x.shape[1:3]}")
        if self.ops not in OPS:
            raise ValueError(f"config.model.ops={self.ops!r}: expected one of {list(OPS)}")
        block = lambda c, bn=True, name=None, up=False: ConvBlock(  # noqa: E731
            scaled(c, self.width), bn, self.dtype, self.bn_axis_name, up, self.ops, name=name
        )
        pool = max_pool_2x2 if OPS[self.ops][2] == "elementwise" else (
            lambda v: nn.max_pool(v, (2, 2), (2, 2)))
        inputs = x.astype(self.dtype)
        x = block(16, bn=False, name="enc16")(inputs, train)
        x = block(32, name="enc32")(x, train)
        x = pool(x)
        x = block(64, name="enc64")(x, train)
        x = pool(x)
        x = block(128, name="enc128")(x, train)
        x = block(256, name="enc256")(x, train)
        x = block(128, name="dec128", up=True)(x, train)  # = conv of upsample2x(x)
        x = block(64, name="dec64", up=True)(x, train)
        x = block(64, name="skip64")((x, inputs), train)  # = conv of concatenate([x, inputs])
        x = block(32, name="skip32")(x, train)
        x = ab_bins.pool(x, self.output_stride)  # the loss's reduced-resolution grid
        x = nn.Conv(self.output_channels, (3, 3), padding="SAME", dtype=self.dtype, name="out")(x)
        x = x.astype(jnp.float32)
        return jnp.tanh(x) if self.output_channels == 2 else x


def resolve_ops(name: str) -> str:
    """`config.model.ops`, with 'auto' resolved for the backend JAX runs on."""
    if name != "auto":
        return name
    return AUTO_OPS.get(jax.default_backend(), "phase")


def build(model_config, dtype, bn_axis_name=None, output_channels=2, output_stride=1):
    return SkipAutoencoder(
        width=model_config.width,
        dtype=dtype,
        bn_axis_name=bn_axis_name,
        output_channels=output_channels,
        ops=resolve_ops(model_config.get("ops", "auto")),
        output_stride=output_stride,
    )


ENTRY = Entry(build=build, load=no_pretrained_weights, param_labels=all_trainable,
              size_multiple=SIZE_MULTIPLE)
