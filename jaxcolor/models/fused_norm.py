"""BatchNorm (batch statistics) followed by LeakyReLU, with a backward pass that keeps only the
normalised layer's input.

Differentiating `nn.leaky_relu(nn.BatchNorm(...)(y))` automatically keeps, for the backward
pass, two float32 copies of the activation (`y - mean` and its scaled form) plus the bfloat16
output and a boolean mask: about 11 bytes per element beside the bfloat16 input itself. These
are written in the forward pass and read back in the backward one, so the element-wise work
around the convolutions moved more bytes than the convolutions (benchmarks/RESULTS.md, the GPU
trace). Here the backward pass recomputes the normalised value and the LeakyReLU slope from the
layer's input `y` (which the convolution's weight gradient does not need, but which is already
in memory) and two per-channel numbers, so the whole pair costs one reduction and one
element-wise pass forward, and one of each backward.

`BatchNormLeakyReLU` has `nn.BatchNorm`'s variables (params `scale`, `bias`; batch_stats `mean`,
`var`), initial values and running-average update, and computes the same function in float32
(tests/test_autoencoder_equivalence.py).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_AXES = (0, 1, 2)  # NHWC: statistics over batch and space, one per channel


def _pmean(x, axis_name):
    return x if axis_name is None else lax.pmean(x, axis_name)


def _moments(y, axis_name):
    """float32 mean and (fast, clipped) variance per channel, as flax's `_compute_stats`."""
    yf = y.astype(jnp.float32)
    mean, mean2 = _pmean((jnp.mean(yf, _AXES), jnp.mean(yf * yf, _AXES)), axis_name)
    return mean, jnp.maximum(0.0, mean2 - mean * mean)


def _normalize_leaky(y, mean, rstd, scale, bias, slope):
    """float32 (x_hat, pre-activation u, LeakyReLU(u))."""
    x_hat = (y.astype(jnp.float32) - mean) * rstd
    u = x_hat * scale + bias
    return x_hat, u, jnp.where(u >= 0, u, slope * u)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def batch_norm_leaky_relu(y, scale, bias, epsilon: float, slope: float, axis_name):
    """(LeakyReLU(BN(y)) in y's dtype, batch mean, batch variance) over axes (N, H, W).

    With `axis_name` (inside pmap) the statistics are averaged over that axis, as
    `nn.BatchNorm(axis_name=...)`; under jit over a mesh the global batch is one array and XLA
    inserts the collectives. The mean and variance outputs are for the running averages; their
    gradients are propagated too, so the function is differentiable as a whole.
    """
    return _forward(y, scale, bias, epsilon, slope, axis_name)[0]


def _forward(y, scale, bias, epsilon, slope, axis_name):
    mean, var = _moments(y, axis_name)
    rstd = lax.rsqrt(var + epsilon)
    z = _normalize_leaky(y, mean, rstd, scale, bias, slope)[2].astype(y.dtype)
    return (z, mean, var), (y, mean, rstd, scale, bias)


def _fwd(y, scale, bias, epsilon, slope, axis_name):
    return _forward(y, scale, bias, epsilon, slope, axis_name)


def _bwd(epsilon, slope, axis_name, residuals, cotangents):
    """The transpose of the forward pass, derived by hand (it is what autodiff gives):

        g      = dz * LeakyReLU'(u)                 dscale = sum g x_hat,  dbias = sum g
        ct_m   = -rstd scale sum g + d_mean          ct_v = -rstd^2 scale sum(g x_hat) / 2 + d_var
        dy     = rstd scale g + (P(ct_m) + 2 (y - mean) P(ct_v)) / n

    where P is the mean over `axis_name` (the transpose of the statistics' pmean) and n the
    per-device element count per channel. `y - mean` is x_hat / rstd.
    """
    del epsilon
    y, mean, rstd, scale, bias = residuals
    dz, d_mean, d_var = cotangents
    x_hat, u, _ = _normalize_leaky(y, mean, rstd, scale, bias, slope)
    g = dz.astype(jnp.float32) * jnp.where(u >= 0, 1.0, slope)
    sum_g, sum_gx = jnp.sum(g, _AXES), jnp.sum(g * x_hat, _AXES)
    n = y.shape[0] * y.shape[1] * y.shape[2]
    ct_m = -rstd * scale * sum_g + d_mean
    ct_v = -0.5 * rstd * rstd * scale * sum_gx + d_var
    ct_m, ct_v = _pmean((ct_m, ct_v), axis_name)
    dy = rstd * scale * g + (ct_m + 2.0 * (x_hat / rstd) * ct_v) / n
    return dy.astype(y.dtype), sum_gx, sum_g


batch_norm_leaky_relu.defvjp(_fwd, _bwd)


class BatchNormLeakyReLU(nn.Module):
    """`nn.leaky_relu(nn.BatchNorm(...)(x), slope)` with the lean backward pass above; the same
    variables, defaults and running-average update as `nn.BatchNorm`."""

    use_running_average: bool = False
    momentum: float = 0.99
    epsilon: float = 1e-5
    slope: float = 0.01
    dtype: Any = None
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x):
        features = (x.shape[-1],)
        scale = self.param("scale", nn.initializers.ones, features, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, features, jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
        dtype = self.dtype or jnp.result_type(x, jnp.float32)
        x = x.astype(dtype)
        if self.use_running_average:
            rstd = lax.rsqrt(ra_var.value + self.epsilon)
            return _normalize_leaky(x, ra_mean.value, rstd, scale, bias, self.slope)[2].astype(dtype)
        axis_name = None if self.is_initializing() else self.axis_name
        z, mean, var = batch_norm_leaky_relu(x, scale, bias, self.epsilon, self.slope, axis_name)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return z
