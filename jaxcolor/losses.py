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

import dataclasses
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


# ---------------------------------------------------------------------------------------------
# The objective: weighted terms (`config.loss.terms`), or the one `config.loss.name`.

COLORFULNESS = "colorfulness"
PERCEPTUAL = "perceptual"
ADVERSARIAL = "adversarial"  # the discriminator's term: a companion's (jaxcolor.companions)
TERMS = (*LOSSES, CLASSIFICATION, COLORFULNESS, PERCEPTUAL, ADVERSARIAL)


def terms_of(loss_config) -> dict[str, float]:
    """{term: weight}: `config.loss.terms` when it names any, else `{config.loss.name: 1.0}` (the
    single-loss configs, which train bitwise as before terms existed)."""
    terms = {k: float(v) for k, v in dict(loss_config.get("terms") or {}).items() if v}
    return terms or {loss_config.name: 1.0}


def is_classification(loss_config) -> bool:
    """Whether the model carries the classification head (and the run needs the ab prior)."""
    return CLASSIFICATION in terms_of(loss_config)


def has_regression_head(loss_config) -> bool:
    """Two tanh ab channels: with any regression term, or whenever there is no classification."""
    terms = terms_of(loss_config)
    return CLASSIFICATION not in terms or any(t in LOSSES for t in terms)


def colorfulness_loss(ab_pred, ab_true, l_input, weight=None):
    """|CF(prediction) - CF(truth)| / 100 per image, CF the Hasler-Suesstrunk colorfulness of the
    sRGB rebuilt from the true L (0..255 scale, `metrics.colorfulness`, the metric `evaluate`
    reports; a small epsilon under its square roots keeps the gradient finite at gray, where
    both spreads are 0). Pulls the prediction towards the truth's colorfulness, not beyond it."""
    from jaxcolor import color, metrics

    def rgb(ab):
        lab = jnp.concatenate([l_input.astype(jnp.float32) * color.L_SCALE,
                               ab.astype(jnp.float32) * color.AB_SCALE], axis=-1)
        return color.lab_to_rgb_jax(lab)

    cf = metrics.colorfulness(rgb(ab_pred), eps=1e-3)
    cf_true = jax.lax.stop_gradient(metrics.colorfulness(rgb(ab_true), eps=1e-3))
    per_example = jnp.abs(cf - cf_true) / 100.0
    return _per_example(per_example[:, None], weight)


def perceptual_loss(loss_config) -> Callable:
    """The perceptual term `loss(ab_pred, ab_true, l_input, weight)`: the VGG16 feature distance
    (`jaxcolor.models.vgg16.perceptual_distance`, L1 per layer, DDColor's layer weights) between
    the sRGB rebuilt from the true L with the predicted ab and with the true ab. The network is
    frozen: its weights, read once from `config.loss.vgg16_weights` (Keras' ImageNet file), are
    constants of the compiled step, not part of the train state."""
    from jaxcolor import color
    from jaxcolor.models import vgg16

    layers = tuple(x.strip() for x in str(loss_config.perceptual_layers).split(",") if x.strip())
    variables = vgg16.load(loss_config.vgg16_weights)
    net = vgg16.VGG16Features(layers=layers)

    def loss(ab_pred, ab_true, l_input, weight=None):
        def features(ab):
            lab = jnp.concatenate([l_input.astype(jnp.float32) * color.L_SCALE,
                                   ab.astype(jnp.float32) * color.AB_SCALE], axis=-1)
            return net.apply(variables, color.lab_to_rgb_jax(lab))

        true = jax.lax.stop_gradient(features(ab_true))
        return vgg16.perceptual_distance(features(ab_pred), true, layers, weight=weight)

    return loss


@dataclasses.dataclass(frozen=True)
class Objective:
    """What the colorizer minimises: `objective(out, batch, weight=None) -> (total, parts)`.

    `out` is the model's raw output: two tanh channels, Q logits, or both (Q logits then two
    channels, tanh applied here; `split_heads`). Regression terms see the regression head
    (or, with classification alone, the decoded ab); `classification` sees the logits;
    `colorfulness` and `perceptual` see the decoded ab, the colors users get. `parts` holds each
    weighted term when there are several (logged as `loss_<term>`), {} for one.
    """

    terms: tuple[tuple[str, float, str, Callable], ...]  # (name, weight, sees, fn)
    decode: Callable
    num_bins: int = 0  # Q when the output carries logits
    saturation: float = 1.0  # training targets' ab x this, within the sRGB gamut

    def __call__(self, out, batch, weight=None, train: bool = False):
        if train and self.saturation != 1.0:
            batch = dict(batch, ab=boost_saturation(batch["L"], batch["ab"], self.saturation))
        logits, ab_head = split_heads(out, self.num_bins)
        views = {"logits": lambda: logits, "output": lambda: out,
                 "regression": lambda: ab_head if ab_head is not None else self.decode(out),
                 "decoded": lambda: self.decode(out)}
        parts = {}
        for name, w, sees, fn in self.terms:
            value = fn(views[sees](), batch, weight)
            parts[name] = value if w == 1.0 else w * value
        if len(parts) == 1:
            return next(iter(parts.values())), {}
        return sum(parts.values()), parts


def boost_saturation(l_input, ab, factor: float, steps: int = 12):
    """The training target made more saturated (DDColor, BigColor: x 1.2): each pixel's ab
    multiplied by the largest s <= `factor` that keeps (L, s * ab) inside the sRGB gamut at the
    same L (bisection between 1 and `factor`, `steps` halvings: s within factor * 2^-steps), so
    the target is a color a photo with that lightness can have. L/100 and ab/128 in and out;
    float32; no gradient (a target)."""
    from jaxcolor import color

    l100 = l_input.astype(jnp.float32) * color.L_SCALE
    ab = ab.astype(jnp.float32)

    def fits(scale):
        lab = jnp.concatenate([l100, ab * (scale * color.AB_SCALE)], axis=-1)
        rgb = color.lab_to_rgb_xp(lab, jnp, clip=False)
        return jnp.all((rgb >= 0.0) & (rgb <= 1.0), axis=-1, keepdims=True)

    lo = jnp.ones_like(l100)
    hi = jnp.full_like(l100, factor)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        ok = fits(mid)
        lo, hi = jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)
    scale = jnp.where(fits(hi), hi, lo)
    return jax.lax.stop_gradient(ab * scale)


def split_heads(out, num_bins: int):
    """(logits or None, ab/128 or None) of a model output (see `Objective`)."""
    if not num_bins:
        return None, out
    if out.shape[-1] == num_bins:
        return out, None
    return out[..., :num_bins], jnp.tanh(out[..., num_bins:].astype(jnp.float32))


def as_objective(loss_fn) -> Objective:
    """An Objective, or a plain `loss(pred, target, weight)` wrapped as one (tests, benchmarks)."""
    if isinstance(loss_fn, Objective):
        return loss_fn
    return Objective(terms=(("loss", 1.0, "output", _on_target(loss_fn)),),
                     decode=lambda out: out.astype(jnp.float32))


def _on_target(loss):
    """`loss(pred, target_ab, weight)` as a term `fn(view, batch, weight)`."""
    return lambda x, batch, weight: loss(x, batch["ab"], weight)


def make_loss(loss_config, bin_weights=None, perceptual=None) -> Objective:
    """The run's Objective for `config.loss`: each term of `terms_of` with its weight; the
    classification term with its bins (`ab_bins.bins_for`) and the rebalancing weights (Q,) of
    the run's prior (`jaxcolor.ab_prior`) closed over, so the train step stays a pure function.
    `perceptual`: a `loss(ab_pred, ab_true, l_input, weight)` for the perceptual term, instead
    of `perceptual_loss(loss_config)`'s VGG16. The adversarial term is the discriminator's
    (`jaxcolor.companions`), not this objective's."""
    terms = []
    for name, weight in terms_of(loss_config).items():
        if name == ADVERSARIAL:
            continue
        if name in LOSSES:
            sees, fn = "regression", _on_target(get_loss(name))
        elif name == CLASSIFICATION:
            sees, fn = "logits", _on_target(_classification(loss_config, bin_weights))
        elif name in (COLORFULNESS, PERCEPTUAL):
            loss = colorfulness_loss if name == COLORFULNESS else (
                perceptual or perceptual_loss(loss_config))
            sees = "decoded"
            fn = functools.partial(lambda loss, x, batch, weight: loss(
                x, batch["ab"], batch["L"], weight), loss)
        else:
            raise ValueError(f"config.loss.terms.{name}: expected one of {', '.join(TERMS)}")
        terms.append((name, weight, sees, fn))
    if not terms:
        raise ValueError("config.loss.terms: the colorizer needs a term besides 'adversarial'")
    q = num_bins(loss_config) if is_classification(loss_config) else 0
    return Objective(terms=tuple(terms), decode=make_decode(loss_config), num_bins=q,
                     saturation=float(loss_config.get("target_saturation", 1.0)))


def _classification(loss_config, bin_weights):
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
    full resolution for regression; Q logits, at 1/`output_stride` resolution, for
    classification; Q + 2 raw channels (logits, then the ab head's pre-tanh values) for both."""
    stride = int(loss_config.get("output_stride", 1))
    if stride < 1:
        raise ValueError(f"config.loss.output_stride={stride}: expected 1 (full resolution) or more")
    if not is_classification(loss_config):
        if stride != 1:
            raise ValueError(f"config.loss.output_stride={stride}: only the classification loss "
                             "predicts at a reduced resolution; expected 1")
        return {"output_channels": 2, "output_stride": 1}
    q = num_bins(loss_config)
    if has_regression_head(loss_config):
        if stride != 1:
            raise ValueError(f"config.loss.output_stride={stride}: a model with both heads "
                             "predicts at full resolution; expected 1")
        return {"output_channels": q + 2, "output_stride": 1}
    return {"output_channels": q, "output_stride": stride}


def num_bins(loss_config) -> int:
    from jaxcolor import ab_bins

    return int(ab_bins.bins_for(loss_config).shape[0])


DECODE_HEADS = ("regression", "classification")


def make_decode(loss_config, temperature: float | None = None) -> Callable:
    """`decode(model_output) -> ab/128 (B, H, W, 2)`: the identity for regression models, the
    annealed mean at `temperature` (default `config.loss.temperature`) for classification; with
    both heads, the one `config.loss.decode` names (default the regression head)."""
    if not is_classification(loss_config):
        return lambda pred: pred.astype(jnp.float32)
    from jaxcolor import ab_bins

    centers = jnp.asarray(ab_bins.bins_for(loss_config))
    t = float(loss_config.temperature if temperature is None else temperature)
    if t < 0:
        raise ValueError(f"temperature={t}: expected T >= 0 (0 = the mode, 1 = the mean)")
    annealed = functools.partial(ab_bins.decode_logits, centers=centers, temperature=t,
                                 output_stride=int(loss_config.output_stride))
    if not has_regression_head(loss_config):
        return annealed
    q = centers.shape[0]
    which = loss_config.get("decode", "regression")
    if which not in DECODE_HEADS:
        raise ValueError(f"config.loss.decode={which!r}: expected one of {DECODE_HEADS}")
    if which == "classification":
        return lambda out: annealed(out[..., :q])
    return lambda out: split_heads(out, q)[1]
