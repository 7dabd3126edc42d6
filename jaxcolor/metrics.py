"""Colorization metrics in JAX: batched, weighted, summed on the device, summarized on the host.

Every metric is computed per example, multiplied by the example's weight (0 marks the padding
rows of an evaluation batch) and summed, so that the sums of all batches of a split add up on the
device and a single host transfer at the end gives the split's numbers (`summarize`). The batch
functions are pure and jit-able; `batch_sums` is what `jaxcolor.evaluate` compiles.

Conventions (the resolution is whatever the arrays have, in evaluation the model's
`image_size` x `image_size`):

* Inputs are LAB: `l` (B, H, W, 1) with L in [0, 100], `ab_true` / `ab_pred` (B, H, W, 2) in LAB
  units (roughly -128..127). The model's ab/128 outputs are scaled up before they get here.
* RGB metrics (PSNR, SSIM, colorfulness) compare the sRGB image rebuilt from the *true* L and the
  predicted ab, clipped to the displayable gamut [0, 1], with the sRGB image of the true L and
  true ab (the original picture up to float rounding). Data range 1.0 on [0, 1] RGB.
* PSNR: 10 log10(1 / MSE) per image over H, W and the 3 channels, averaged over images. MSE is
  floored at 1e-10 (PSNR capped at 100 dB) so that a perfect image does not make the mean infinite.
* SSIM: scikit-image's default, `structural_similarity(x, y, channel_axis=-1, data_range=1.0)`:
  a 7x7 uniform window (gaussian_weights=False), sample covariance, K1=0.01, K2=0.03, averaged
  over the windows lying fully inside the image and over the 3 channels. Needs H, W >= 7.
* ab errors: mean absolute and root-mean-square difference of a and b, in LAB units, over pixels
  and both channels. `ab_sums` / `summarize_ab` are the one definition: training's validation
  (`jaxcolor.step.eval_step`, `summarize_eval`) adds up the same sums, so its `val_ab_mae` is this
  ab MAE by construction.
* AuC (Zhang et al., "Colorful Image Colorization", 2016): the fraction of pixels whose ab
  Euclidean error d is at most t, integrated over thresholds t in [0, 150] and divided by 150.
  The integral is taken exactly rather than on a grid: for one pixel it is max(0, 1 - d / 150),
  so a perfect prediction gives 1.0 and a constant error e gives (150 - e) / 150. (Summing over
  the integer thresholds 0..150 instead would differ by less than 1/150.)
* Class-rebalanced AuC: the same with each pixel weighted by the inverse prior probability of the
  ab bin of its true color (its nearest bin center), pooled over all pixels of the split. The
  prior is the one training's classification loss rebalances with, `jaxcolor.ab_prior.Prior`, on
  the same bins (a run's `RUN/data/ab_prior.npz`, or `ab_prior.from_ab` of any ab values); see
  `prior_weights`.
* Wrong hue: among the pixels where both the prediction and the truth have chroma
  sqrt(a^2 + b^2) above `WRONG_HUE_MIN_CHROMA` (15), the share whose hues differ by more than
  90 degrees (equivalently, whose ab vectors have a negative dot product), pooled over all such
  pixels of the split: the "wrong color patch" (blue skin, cyan grass) that a vivid but unfaithful
  model makes, which the averages above barely see. NaN when no pixel qualifies.
* Colorfulness (Hasler & Suesstrunk, 2003) on 0..255 RGB: rg = R - G, yb = (R + G) / 2 - B,
  CF = sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2) (population std over the
  image's pixels). Reported for predictions and ground truth, their ratio (mean CF of
  predictions / mean CF of ground truth) and delta-CF (mean over images of |CF_pred - CF_true|).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxcolor import color
from jaxcolor.ab_prior import Prior

AUC_MAX_THRESHOLD = 150.0  # ab units, as Zhang et al.
PSNR_MIN_MSE = 1e-10  # caps PSNR at 100 dB for a perfect image
SSIM_WIN = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03
DATA_RANGE = 1.0  # RGB in [0, 1]
WRONG_HUE_MIN_CHROMA = 15.0  # ab units


# ---------------------------------------------------------------------------------------------
# Per-example metrics: (B, ...) -> (B,)


def lab_to_rgb(l, ab):
    """(B, H, W, 1) L and (B, H, W, 2) ab -> (B, H, W, 3) sRGB clipped to [0, 1]."""
    lab = jnp.concatenate([l, ab], axis=-1).astype(jnp.float32)
    return color.lab_to_rgb_jax(lab, clip=True)


def psnr(rgb_pred, rgb_true, data_range: float = DATA_RANGE):
    """Per-image PSNR in dB over all pixels and channels (MSE floored at PSNR_MIN_MSE)."""
    diff = (rgb_pred - rgb_true).astype(jnp.float32)
    mse = jnp.mean(diff.reshape(diff.shape[0], -1) ** 2, axis=1)
    return 10.0 * jnp.log10(data_range**2 / jnp.maximum(mse, PSNR_MIN_MSE))


def _box_mean(x, size: int):
    """Mean over each size x size window lying fully inside the image: (B, H, W, C) ->
    (B, H-size+1, W-size+1, C). skimage filters with reflection and then crops (size-1)/2 from
    every border, which leaves exactly these windows."""
    summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, size, size, 1), (1, 1, 1, 1), "VALID")
    return summed / (size * size)


def ssim(rgb_pred, rgb_true, data_range: float = DATA_RANGE, win_size: int = SSIM_WIN):
    """Per-image SSIM as skimage's default (see module docstring), averaged over channels."""
    x = rgb_pred.astype(jnp.float32)
    y = rgb_true.astype(jnp.float32)
    if x.shape[1] < win_size or x.shape[2] < win_size:
        raise ValueError(f"SSIM needs images of at least {win_size}x{win_size}; got {x.shape[1:3]}")
    # Statistics of centered images: variances and covariances are shift-invariant, and float32
    # loses much less to cancellation in E[x^2] - E[x]^2 when E[x] is near 0.
    shift = 0.5 * (x.mean(axis=(1, 2), keepdims=True) + y.mean(axis=(1, 2), keepdims=True))
    xc, yc = x - shift, y - shift
    mx, my = _box_mean(xc, win_size), _box_mean(yc, win_size)
    n = win_size * win_size
    cov_norm = n / (n - 1.0)  # sample covariance, as skimage's default
    vx = cov_norm * (_box_mean(xc * xc, win_size) - mx * mx)
    vy = cov_norm * (_box_mean(yc * yc, win_size) - my * my)
    vxy = cov_norm * (_box_mean(xc * yc, win_size) - mx * my)
    ux, uy = mx + shift, my + shift
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.mean(axis=(1, 2, 3))


def colorfulness(rgb01, eps: float = 0.0):
    """Hasler & Suesstrunk's colorfulness of each (H, W, 3) image in [0, 1], on the 0..255 scale.
    `eps` > 0 goes under both square roots: the loss term's (losses.colorfulness_loss) finite
    gradient at gray; the metric uses 0."""
    rgb = rgb01.astype(jnp.float32) * 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = (r - g).reshape(r.shape[0], -1)
    yb = (0.5 * (r + g) - b).reshape(r.shape[0], -1)
    mean_rg, mean_yb = rg.mean(axis=1), yb.mean(axis=1)
    var_rg = ((rg - mean_rg[:, None]) ** 2).mean(axis=1)
    var_yb = ((yb - mean_yb[:, None]) ** 2).mean(axis=1)
    return jnp.sqrt(var_rg + var_yb + eps) + 0.3 * jnp.sqrt(mean_rg**2 + mean_yb**2 + eps)


def wrong_hue_pixels(ab_pred, ab_true, min_chroma: float = WRONG_HUE_MIN_CHROMA):
    """(wrong, eligible) float32 (B, H, W) masks: eligible where both chromas exceed
    `min_chroma`; wrong where also the hues are more than 90 degrees apart."""
    ab_pred, ab_true = ab_pred.astype(jnp.float32), ab_true.astype(jnp.float32)
    chroma2 = lambda ab: jnp.sum(ab**2, axis=-1)  # noqa: E731
    eligible = (chroma2(ab_pred) > min_chroma**2) & (chroma2(ab_true) > min_chroma**2)
    wrong = eligible & (jnp.sum(ab_pred * ab_true, axis=-1) < 0)
    return wrong.astype(jnp.float32), eligible.astype(jnp.float32)


def ab_distance(ab_pred, ab_true):
    """(B, H, W) Euclidean ab error per pixel, LAB units."""
    return jnp.sqrt(jnp.sum((ab_pred - ab_true).astype(jnp.float32) ** 2, axis=-1))


def auc_per_pixel(distance, max_threshold: float = AUC_MAX_THRESHOLD):
    """Area under the cumulative error curve of one pixel, normalized: the integral over t in
    [0, max_threshold] of [distance <= t], divided by max_threshold."""
    return jnp.clip(1.0 - distance / max_threshold, 0.0, 1.0)


def prior_weights(ab_true, prior: Prior):
    """(B, H, W) inverse prior probability (`prior.probs`, unsmoothed) of each pixel's true ab bin
    (its nearest center, as training assigns bins), scaled so that the most common bin weighs 1
    (only ratios matter; small numbers keep float32 sums accurate). Bins of probability 0 get the
    weight of the rarest seen bin, so a color unseen when the prior was counted cannot get an
    infinite weight."""
    centers = jnp.asarray(prior.ab_centers, jnp.float32)
    probs = jnp.asarray(prior.probs, jnp.float32)
    rarest = jnp.min(jnp.where(probs > 0, probs, jnp.inf))
    inv = jnp.max(probs) / jnp.where(probs > 0, probs, rarest)
    flat = ab_true.reshape(-1, 2).astype(jnp.float32)
    # argmin |x - c|^2 = argmin (|c|^2 - 2 x.c): one (N, Q) matrix product
    score = jnp.sum(centers**2, axis=1)[None, :] - 2.0 * flat @ centers.T
    return inv[jnp.argmin(score, axis=1)].reshape(ab_true.shape[:-1])


# ---------------------------------------------------------------------------------------------
# Split-level sums and their summary


def ab_sums(ab_true, ab_pred, weight) -> dict[str, jax.Array]:
    """Weighted sums of one batch's ab errors, LAB units: `count` (the weights' sum), `ab_abs` and
    `ab_sq` (per example, |error| and error^2 averaged over its pixels and both channels, times its
    weight; 0 for padding rows). The one definition of the ab errors: `step.eval_step` (training's
    validation) and `batch_sums` (`evaluate`) both add these up and `summarize_ab` both divide,
    so training's `val_ab_mae` and evaluate's ab MAE cannot drift apart."""
    w = weight.astype(jnp.float32)
    err = (ab_pred - ab_true).astype(jnp.float32)
    per_example = lambda x: x.reshape(x.shape[0], -1).mean(axis=1)  # noqa: E731
    return {
        "count": w.sum(),
        "ab_abs": (per_example(jnp.abs(err)) * w).sum(),
        "ab_sq": (per_example(err**2) * w).sum(),
    }


def batch_sums(l, ab_true, ab_pred, weight, prior: Prior | None = None) -> dict[str, jax.Array]:
    """Weighted sums over one batch of every metric; add them up over batches, then `summarize`.

    l: (B, H, W, 1) L in [0, 100]; ab_true, ab_pred: (B, H, W, 2) LAB units; weight: (B,), 0 for
    padding rows. `prior` (an `ab_prior.Prior`) adds the class-rebalanced AuC.
    """
    w = weight.astype(jnp.float32)
    rgb_true = lab_to_rgb(l, ab_true)
    rgb_pred = lab_to_rgb(l, ab_pred)
    per_example = lambda x: x.reshape(x.shape[0], -1).mean(axis=1)  # noqa: E731
    cf_pred, cf_true = colorfulness(rgb_pred), colorfulness(rgb_true)
    auc = auc_per_pixel(ab_distance(ab_pred, ab_true))
    sums = {
        **ab_sums(ab_true, ab_pred, weight),
        "psnr": (psnr(rgb_pred, rgb_true) * w).sum(),
        "ssim": (ssim(rgb_pred, rgb_true) * w).sum(),
        "auc": (per_example(auc) * w).sum(),
        "cf_pred": (cf_pred * w).sum(),
        "cf_true": (cf_true * w).sum(),
        "cf_absdiff": (jnp.abs(cf_pred - cf_true) * w).sum(),
    }
    wrong, eligible = wrong_hue_pixels(ab_pred, ab_true)
    sums["hue_wrong"] = (wrong.sum(axis=(1, 2)) * w).sum()
    sums["hue_eligible"] = (eligible.sum(axis=(1, 2)) * w).sum()
    if prior is not None:
        pw = prior_weights(ab_true, prior) * w[:, None, None]
        sums["auc_rb_num"] = (pw * auc).sum()
        sums["auc_rb_den"] = pw.sum()
    return sums


_batch_sums_jit = jax.jit(batch_sums)


def batch_sums_jit(l, ab_true, ab_pred, weight, prior: Prior | None = None):
    """`batch_sums` compiled. Of the prior only its arrays go in as arguments: its other fields
    (lambda, sigma, pixels, the key string) are no JAX types, and the AuC reads none of them."""
    if prior is not None:
        prior = prior._replace(rebalance_lambda=None, sigma=None, pixels=None, key=None)
    return _batch_sums_jit(l, ab_true, ab_pred, weight, prior)


def add(a: dict | None, b: dict) -> dict:
    """Accumulate two sum dicts (None is the empty sum), on the device."""
    return b if a is None else jax.tree.map(jnp.add, a, b)


def split_mean(sums: dict, key: str) -> float:
    """The per-example mean of a summed metric. n is the count itself: an evaluation that scored
    no image gives NaN, never a perfect 0 (the callers' `pipeline.count_skipped` then raises
    NothingEvaluatedError)."""
    n = float(np.asarray(sums["count"]))
    return float(np.asarray(sums[key])) / n if n > 0 else math.nan


def summarize_ab(sums: dict, prefix: str = "") -> dict[str, float]:
    """Summed `ab_sums` (device or host) -> {prefix + 'ab_mae', prefix + 'ab_rmse'}; `prefix`
    reads the sums stored under `prefix + 'ab_abs'` / `'ab_sq'` (training's gray baseline)."""
    return {f"{prefix}ab_mae": split_mean(sums, f"{prefix}ab_abs"),
            f"{prefix}ab_rmse": math.sqrt(split_mean(sums, f"{prefix}ab_sq"))}


def summarize(sums: dict) -> dict[str, float]:
    """Device or host sums -> the split's metrics as Python floats (see module docstring)."""
    s = {k: float(np.asarray(v)) for k, v in sums.items()}
    out = {"psnr": split_mean(s, "psnr"), "ssim": split_mean(s, "ssim"), **summarize_ab(s),
           "auc": split_mean(s, "auc")}
    if "auc_rb_num" in s:
        den = s["auc_rb_den"]  # > 0 whenever an image counted: every bin weighs > 0
        out["auc_rebalanced"] = s["auc_rb_num"] / den if den > 0 else math.nan
    out.update(
        colorfulness=split_mean(s, "cf_pred"),
        colorfulness_true=split_mean(s, "cf_true"),
        colorfulness_ratio=s["cf_pred"] / s["cf_true"] if s["cf_true"] > 0 else math.nan,
        colorfulness_delta=split_mean(s, "cf_absdiff"),
        wrong_hue=s["hue_wrong"] / s["hue_eligible"] if s.get("hue_eligible", 0) > 0 else math.nan,
        count=int(round(s["count"])),
    )
    return out
