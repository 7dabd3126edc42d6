"""Regression losses on ab/128, selected by name in the config.

Each takes `pred` and `target` of shape (B, H, W, 2) and an optional per-example `weight` of shape
(B,) (0 for padding rows of an evaluation batch), and returns a float32 scalar, averaged over the
examples that count. Computation is float32 whatever the model's compute dtype.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp


def _per_example(per_pixel, weight):
    per_example = per_pixel.reshape(per_pixel.shape[0], -1).mean(axis=1)
    if weight is None:
        return per_example.mean()
    return (per_example * weight).sum() / jnp.maximum(weight.sum(), 1.0)


def reference_loss(pred, target, weight=None):
    """The reference work's `2 ** mean_c(|pred - target|)`, averaged over pixels and batch."""
    diff = jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32))
    return _per_example(2.0 ** diff.mean(axis=-1), weight)


def l1_loss(pred, target, weight=None):
    diff = jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32))
    return _per_example(diff, weight)


def mse_loss(pred, target, weight=None):
    diff = pred.astype(jnp.float32) - target.astype(jnp.float32)
    return _per_example(diff**2, weight)


def huber_loss(pred, target, weight=None, delta: float = 0.1):
    """Quadratic below `delta` (in ab/128 units; 0.1 is about 13 ab units), linear above."""
    diff = jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32))
    quad = jnp.minimum(diff, delta)
    return _per_example(0.5 * quad**2 + delta * (diff - quad), weight)


LOSSES: dict[str, Callable] = {
    "reference": reference_loss,
    "l1": l1_loss,
    "mse": mse_loss,
    "huber": huber_loss,
}


def get_loss(name: str) -> Callable:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"config.loss.name={name!r}: expected one of {sorted(LOSSES)}") from None
