"""Colorization as classification over quantized ab (Zhang, Isola and Efros, ECCV 2016).

Regression losses average the plausible colors of a pixel into a desaturated gray-brown. Zhang et
al. instead predict, per pixel, a distribution over Q bins of the ab plane, train it with a
cross-entropy against soft-encoded targets, reweight the rare (saturated) colors up, and decode
with an "annealed mean" between the mode (vivid, may be patchy) and the mean (smooth, gray).

Everything here works in LAB units (a, b roughly -128..127); the model's targets are ab/128 and
the callers scale. The pieces:

* `gamut_bins(grid)`: the bins of a `grid`-unit square grid over the ab plane (centers at integer
  multiples of `grid`, cell of a color = the center it rounds to) that real sRGB colors reach,
  derived by converting every 8-bit sRGB color (the whole 256^3 cube) with `jaxcolor.color`.
  Nothing is hard-coded: a different grid gives a different set. `load_bins(path)` reads a
  user's (Q, 2) bin-center file instead (e.g. Zhang et al.'s 313 `pts_in_hull.npy`).
* `soft_encode` / `nearest_bins`: the k nearest bin centers of each ab value with Gaussian
  weights (on device, float32).
* `annealed_mean` / `decode_logits`: Q-way logits -> ab.
* `smooth_prior`, `rebalancing_weights`: the class-rebalancing of the loss, from a prior counted
  over the training data (`jaxcolor.ab_prior`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxcolor import color

DEFAULT_GRID = 10.0
AB_LIMIT = 130.0  # sRGB spans a in about [-86, 98] and b in about [-108, 95]


# ---------------------------------------------------------------------------------------------
# Bins


def srgb_ab(chunk: int = 16, dtype=np.float64):
    """Yields the ab values (n, 2) of every 8-bit sRGB color, `chunk` red levels at a time
    (256 * 256 * chunk colors per piece, so memory stays small)."""
    v = np.arange(256, dtype=dtype) / dtype(255.0)
    for r in range(0, 256, chunk):
        rgb = np.stack(np.meshgrid(v[r : r + chunk], v, v, indexing="ij"), axis=-1)
        yield color.rgb_to_lab_xp(rgb, np)[..., 1:].reshape(-1, 2)


def grid_cells(ab, grid: float):
    """Integer grid cell (i, j) of each ab value: the multiple of `grid` it rounds to."""
    return np.round(np.asarray(ab) / grid).astype(np.int64)


@functools.lru_cache(maxsize=8)
def _gamut_bins_cached(grid: float) -> np.ndarray:
    reach = int(np.ceil(AB_LIMIT / grid)) + 1  # |a|, |b| < AB_LIMIT for every sRGB color
    hit = np.zeros((2 * reach + 1, 2 * reach + 1), bool)  # cell (i, j) at hit[i + reach, j + reach]
    for ab in srgb_ab():
        # float64 and float32 conversions can round a color on a cell border differently; the
        # data pipeline converts in float32, so a bin either of them reaches is in the gamut.
        for values in (ab, ab.astype(np.float32)):
            cells = grid_cells(values, grid) + reach
            hit[cells[:, 0], cells[:, 1]] = True
    keys = np.argwhere(hit) - reach  # row-major: sorted by (a, b)
    out = (keys * grid).astype(np.float32)
    out.setflags(write=False)
    return out


def gamut_bins(grid: float = DEFAULT_GRID) -> np.ndarray:
    """(Q, 2) float32 centers, in LAB units, of the `grid`-unit ab bins that sRGB colors reach,
    sorted by (a, b). Derived from all 256^3 8-bit sRGB colors (about 2 s, cached per process):
    every sRGB color lies in one of these bins and every bin holds some sRGB color. On a 10-unit
    grid that is 261 bins (Zhang et al.'s 313 came from a wider gamut estimate)."""
    if not grid > 0:
        raise ValueError(f"config.loss.grid={grid!r}: expected a positive bin size in ab units")
    return _gamut_bins_cached(float(grid))


def load_bins(path: str) -> np.ndarray:
    """(Q, 2) bin centers in LAB units from a .npy file (no pickle), checked."""
    try:
        centers = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"config.loss.bins={path!r}: no such file (expected a .npy of "
                                "(Q, 2) ab bin centers in LAB units)") from None
    centers = np.asarray(centers, np.float32)
    if centers.ndim != 2 or centers.shape[1] != 2 or centers.shape[0] < 2:
        raise ValueError(f"config.loss.bins={path!r}: expected a (Q, 2) array of ab bin centers "
                         f"with Q >= 2, got shape {centers.shape}")
    if not np.all(np.isfinite(centers)):
        raise ValueError(f"config.loss.bins={path!r}: bin centers must be finite")
    return centers


def bins_for(loss_config) -> np.ndarray:
    """The bin centers a loss config names: `loss.bins` (a .npy file) if set, else the sRGB gamut
    bins of a `loss.grid` grid."""
    path = str(loss_config.get("bins", "") or "")
    if path:
        return load_bins(path)
    return gamut_bins(float(loss_config.get("grid", DEFAULT_GRID)))


# ---------------------------------------------------------------------------------------------
# Soft encoding and decoding (jax, float32)


def sq_distances(ab, centers):
    """(N, Q) squared distances from ab (N, 2) to centers (Q, 2), via one matrix product."""
    ab = ab.astype(jnp.float32)
    centers = jnp.asarray(centers, jnp.float32)
    d = (jnp.sum(ab**2, axis=1, keepdims=True) - 2.0 * ab @ centers.T
         + jnp.sum(centers**2, axis=1)[None, :])
    return jnp.maximum(d, 0.0)


def soft_encode(ab, centers, neighbours: int = 5, sigma: float = 5.0):
    """The k nearest bins of each ab value (N, 2) and their Gaussian weights (summing to 1).

    Returns (indices (N, k) int32, nearest first; weights (N, k) float32). The weights are
    exp(-d^2 / 2 sigma^2) renormalized, as Zhang et al.'s soft encoding.
    """
    if neighbours < 1:
        raise ValueError(f"config.loss.neighbours={neighbours}: expected at least 1")
    k = min(int(neighbours), int(np.shape(centers)[0]))
    centers = jnp.asarray(centers, jnp.float32)
    ab = ab.astype(jnp.float32)
    _, idx = jax.lax.top_k(-sq_distances(ab, centers), k)
    # Distances recomputed from the chosen centers: exact, and (measured on XLA:CPU) 30x faster
    # than using top_k's values, which XLA fuses into a slow sort.
    d2 = jnp.sum((ab[:, None, :] - centers[idx]) ** 2, axis=-1)
    # relative to the nearest, so that exp never underflows to 0/0 far outside the gamut
    logits = -(d2 - d2[:, :1]) / (2.0 * float(sigma) ** 2)
    return idx.astype(jnp.int32), jax.nn.softmax(logits, axis=-1)


def soft_encode_dense(ab, centers, neighbours: int = 5, sigma: float = 5.0):
    """`soft_encode` as a (N, Q) distribution."""
    idx, w = soft_encode(ab, centers, neighbours, sigma)
    q = int(np.shape(centers)[0])
    return jnp.sum(jax.nn.one_hot(idx, q, dtype=jnp.float32) * w[..., None], axis=1)


def nearest_bin(ab, centers):
    """(N,) index of the nearest bin center of each ab value (N, 2)."""
    return jnp.argmin(sq_distances(ab, centers), axis=1).astype(jnp.int32)


def annealed_mean(log_probs, centers, temperature: float):
    """Zhang et al.'s annealed mean: (..., Q) log-probabilities (or logits: only differences
    matter) -> (..., 2) ab. The distribution is sharpened to p^(1/T) and renormalized, then
    averaged over the bin centers: T = 1 is the mean, T -> 0 the mode (T = 0 takes the mode
    exactly). Zhang et al. chose T = 0.38: nearly as vivid as the mode, without its patches."""
    centers = jnp.asarray(centers, jnp.float32)
    log_probs = log_probs.astype(jnp.float32)
    if temperature < 0:
        raise ValueError(f"temperature={temperature}: expected T >= 0")
    if temperature == 0:
        return centers[jnp.argmax(log_probs, axis=-1)]
    probs = jax.nn.softmax(log_probs / temperature, axis=-1)
    return probs @ centers


def pool(x, stride: int):
    """Mean over stride x stride blocks of (B, H, W, C): the reduced-resolution grid on which
    `output_stride` > 1 predicts (Zhang et al. predicted at 1/4 resolution)."""
    if stride == 1:
        return x
    b, h, w, c = x.shape
    if h % stride or w % stride:
        raise ValueError(f"config.loss.output_stride={stride}: the image size {h}x{w} must be "
                         "divisible by it")
    return x.reshape(b, h // stride, stride, w // stride, stride, c).mean(axis=(2, 4))


def decode_logits(logits, centers, temperature: float, output_stride: int = 1):
    """(B, h, w, Q) logits -> (B, h s, w s, 2) ab/128 float32 by the annealed mean, where s is the
    model's `output_stride`: a reduced-resolution prediction is decoded there and its ab upsampled
    bilinearly (ab is smooth; the full-resolution L carries the detail)."""
    ab = annealed_mean(logits, centers, temperature) / color.AB_SCALE
    if output_stride > 1:
        b, h, w, _ = ab.shape
        ab = jax.image.resize(ab, (b, h * output_stride, w * output_stride, 2), "bilinear")
    return ab


# ---------------------------------------------------------------------------------------------
# Prior and rebalancing weights (host, NumPy)


def smooth_prior(probs, centers, sigma: float = 5.0) -> np.ndarray:
    """The prior convolved with a 2-D Gaussian of `sigma` ab units over the ab plane, read at the
    bin centers and renormalized: p~_i = sum_j G(c_i - c_j) p_j / Z. Mass that would spread
    outside the bins is dropped by the renormalization. sigma = 0 leaves it unchanged."""
    probs = np.asarray(probs, np.float64)
    if sigma <= 0:
        return probs / probs.sum()
    c = np.asarray(centers, np.float64)
    d2 = np.sum((c[:, None, :] - c[None, :, :]) ** 2, axis=-1)
    smoothed = np.exp(-d2 / (2.0 * sigma**2)) @ probs
    return smoothed / smoothed.sum()


def rebalancing_weights(probs_smoothed, rebalance_lambda: float = 0.5) -> np.ndarray:
    """w ~ ((1 - lambda) p~ + lambda / Q)^-1, scaled so that E_p~[w] = sum_q p~_q w_q = 1
    (Zhang et al., eq. 4). lambda = 1 weighs every bin 1 (no rebalancing); lambda = 0 is the
    full inverse prior (needs every bin seen, else a weight is infinite)."""
    p = np.asarray(probs_smoothed, np.float64)
    p = p / p.sum()
    if not 0.0 <= rebalance_lambda <= 1.0:
        raise ValueError(f"config.loss.rebalance_lambda={rebalance_lambda}: expected a value in "
                         "[0, 1]")
    mix = (1.0 - rebalance_lambda) * p + rebalance_lambda / p.size
    if np.any(mix <= 0):
        raise ValueError("rebalance_lambda=0 with bins of prior probability 0: their weight "
                         "would be infinite; use a lambda > 0")
    w = 1.0 / mix
    return w / np.sum(p * w)
