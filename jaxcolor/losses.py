"""Losses on ab/128, selected by name in the config: regression, or classification over ab bins.

Each takes `pred` and `target` of shape (B, H, W, 2) and an optional per-example `weight` of shape
(B,) (0 for padding rows of an evaluation batch), and returns a float32 scalar, averaged over the
examples that count. Computation is float32 whatever the model's compute dtype.

`classification` is different: the model emits (B, H, W, Q) logits over ab bins instead of two
tanh channels, and the loss needs the bins and the rebalancing weights of the training data's
prior, so it is built by `make_loss(config.loss, weights)`; `make_decode` turns its output into
ab/128 (see `jaxcolor.ab_bins`). The target stays ab/128: the soft encoding happens in the loss.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


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
        raise ValueError(f"config.loss.name={name!r}: expected one of "
                         f"{sorted(LOSSES) + [CLASSIFICATION]}") from None


# ---------------------------------------------------------------------------------------------
# Classification over ab bins (Zhang et al. 2016): `pred` is (B, H, W, Q) logits, not ab.

CLASSIFICATION = "classification"


def classification_loss(logits, target, weight=None, *, centers, bin_weights, neighbours=5,
                        sigma=5.0):
    """Class-rebalanced cross-entropy of (B, h, w, Q) logits against soft-encoded ab/128 targets
    (B, H, W, 2).

    Per pixel: the `neighbours` nearest bin centers of the true ab get Gaussian weights (`sigma`
    ab units), the cross-entropy with the predicted distribution is multiplied by the rebalancing
    weight of the nearest bin (`bin_weights`, E_prior[w] = 1), then averaged over pixels and the
    examples that count. A model with `output_stride` s predicts at h = H / s: the target ab is
    then averaged over s x s blocks first (Zhang et al. downsampled the ground truth likewise).
    Float32 throughout.
    """
    from jaxcolor import ab_bins, color

    logits = logits.astype(jnp.float32)
    stride = target.shape[1] // logits.shape[1]
    if stride * logits.shape[1] != target.shape[1] or stride * logits.shape[2] != target.shape[2]:
        raise ValueError(f"logits {logits.shape[1:3]} are not the target {target.shape[1:3]} at "
                         "an integer output_stride")
    ab = ab_bins.pool(target.astype(jnp.float32), stride) * color.AB_SCALE
    shape, q = logits.shape[:-1], logits.shape[-1]
    z = logits.reshape(-1, q)
    # The barrier keeps XLA from fusing the target's top-k into the loss: fused, it ran 10-20x
    # slower on XLA:CPU (measured), and the target needs no gradient anyway.
    idx, soft = jax.lax.optimization_barrier(
        ab_bins.soft_encode(ab.reshape(-1, 2), centers, neighbours, sigma))
    # The dense (N, Q) target built by comparisons, not a gather of log-probabilities: its
    # gradient is elementwise instead of a scatter (3x faster on CPU). Targets sum to 1, so
    # -sum_q t_q log p_q = logsumexp(z) - sum_q t_q z_q.
    bins = jnp.arange(q)[None, :]
    target_q = sum(jnp.where(bins == idx[:, j : j + 1], soft[:, j : j + 1], 0.0)
                   for j in range(idx.shape[1]))
    cross_entropy = jax.nn.logsumexp(z, axis=-1) - jnp.sum(target_q * z, axis=-1)
    per_pixel = cross_entropy * jnp.asarray(bin_weights, jnp.float32)[idx[:, 0]]
    return _per_example(per_pixel.reshape(shape), weight)


def is_classification(loss_config) -> bool:
    return loss_config.name == CLASSIFICATION


def make_loss(loss_config, bin_weights=None) -> Callable:
    """`loss_fn(pred, target, weight=None)` for `config.loss`: a regression loss by name, or the
    classification loss with its bins (`ab_bins.bins_for`) and the rebalancing weights (Q,) of
    the run's prior (`jaxcolor.ab_prior`) closed over, so the train step stays a pure function."""
    if not is_classification(loss_config):
        return get_loss(loss_config.name)
    from jaxcolor import ab_bins

    centers = ab_bins.bins_for(loss_config)
    if bin_weights is None:
        raise ValueError("config.loss.name='classification' needs the rebalancing weights of the "
                         "ab prior (see jaxcolor.ab_prior)")
    bin_weights = np.asarray(bin_weights, np.float32)
    if bin_weights.shape != (centers.shape[0],):
        raise ValueError(f"rebalancing weights of shape {bin_weights.shape} for "
                         f"{centers.shape[0]} ab bins: the prior was computed for other bins")
    return functools.partial(
        classification_loss, centers=jnp.asarray(centers), bin_weights=jnp.asarray(bin_weights),
        neighbours=int(loss_config.neighbours), sigma=float(loss_config.sigma))


def head(loss_config) -> dict[str, int]:
    """The model's output layer for this loss, as `build_model` keywords: 2 tanh channels at
    full resolution for regression; Q logits, at 1/`output_stride` resolution, for classification."""
    stride = int(loss_config.get("output_stride", 1))
    if stride < 1:
        raise ValueError(f"config.loss.output_stride={stride}: expected 1 (full resolution) or more")
    if not is_classification(loss_config):
        if stride != 1:
            raise ValueError(f"config.loss.output_stride={stride}: only the classification loss "
                             "predicts at a reduced resolution; expected 1")
        return {"output_channels": 2, "output_stride": 1}
    from jaxcolor import ab_bins

    return {"output_channels": int(ab_bins.bins_for(loss_config).shape[0]),
            "output_stride": stride}


def make_decode(loss_config, temperature: float | None = None) -> Callable:
    """`decode(model_output) -> ab/128 (B, H, W, 2)`: the identity for regression models, the
    annealed mean at `temperature` (default `config.loss.temperature`) for classification."""
    if not is_classification(loss_config):
        return lambda pred: pred.astype(jnp.float32)
    from jaxcolor import ab_bins

    centers = jnp.asarray(ab_bins.bins_for(loss_config))
    t = float(loss_config.temperature if temperature is None else temperature)
    if t < 0:
        raise ValueError(f"temperature={t}: expected T >= 0 (0 = the mode, 1 = the mean)")
    return functools.partial(ab_bins.decode_logits, centers=centers, temperature=t,
                             output_stride=int(loss_config.output_stride))
