"""The training augmentation and RGB -> LAB conversion as jnp functions of a whole batch, for
`config.data.augment_on = "device"`: composed in front of the train step inside its compiled
program, so the host only decodes, crops, draws the random numbers and batches uint8 pixels.

Why: on a GPU host the per-example rotation (PIL) and LAB conversion cost ~2 ms of CPU per
example, more than 16 workers can supply to a step that consumes ~10,000 examples/s; on the
accelerator they are a few element-wise passes and four gathers per pixel. The uint8 batch is
also a quarter of the bytes of the float32 L and ab arrays it replaces.

Every function is shape-static and per-example (nothing mixes rows), so it runs the same under
`jax.jit` with the batch split over a mesh and per device under `jax.pmap`. The results match
the host path (`transforms.rotate`, the flip, `transforms.to_model_arrays`): the rotation to
within one uint8 level on a small fraction of values (float32 here, float64 in PIL; measured in
tests/test_device_augment.py), the LAB conversion to ~1e-6.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxcolor.data import transforms

AUGMENT_KEYS = ("rgb", "degrees", "flip")  # what the device path's training examples carry


def _reflect(index, n: int):
    """Integer coordinates -> [0, n) by mirroring without repeating the edge, as
    np.pad(mode="reflect") extends an image (period 2(n - 1)), however far outside they fall."""
    if n == 1:
        return jnp.zeros_like(index)
    period = 2 * (n - 1)
    index = jnp.mod(index, period)
    return jnp.where(index > n - 1, period - index, index)


def _snap(x):
    """cos/sin of a multiple of 90 degrees exactly 0, as the host's round(x, 15) makes them:
    float32's cos(pi/2) is -4e-8, which moves every sample point a hair below an integer, and
    the truncation to uint8 then takes a level off ~10% of the values of a 90-degree turn."""
    return jnp.where(jnp.abs(x) < 1e-7, jnp.zeros_like(x), x)


def rotate_flip(rgb, degrees, flip):
    """(B, H, W, 3) uint8 rotated by `degrees` (B,) about the center, then mirrored left-right
    where `flip` (B,) is true: `transforms.rotate` followed by `rgb[:, ::-1]`, per example.

    The host reflect-pads and lets PIL's affine BILINEAR transform sample the padded image: PIL
    maps an output pixel's center (x + 0.5, y + 0.5) through the matrix, subtracts 0.5, takes
    the floor and the fractions, interpolates the 2x2 neighbours in x, then in y, and truncates
    to uint8. In unpadded coordinates the padding cancels out of that map, and the padded pixels
    it reads are reflections, so here the coordinates are reflected instead of the image padded.
    The flip is folded into the map: output column W-1-x has the centered coordinate -u of
    column x, and negating u is exact, so this is bitwise the flip of the rotated image.
    """
    b, h, w, c = rgb.shape
    theta = -jnp.deg2rad(degrees.astype(jnp.float32))  # PIL's matrix is output -> input
    cos, sin = (_snap(x)[:, None, None] for x in (jnp.cos(theta), jnp.sin(theta)))
    u = jnp.arange(w, dtype=jnp.float32) + (0.5 - w / 2.0)  # pixel centers about the image's
    v = jnp.arange(h, dtype=jnp.float32)[:, None] + (0.5 - h / 2.0)
    u = jnp.where(flip[:, None, None], -u, u)  # (B, 1, W)
    xs = cos * u + sin * v + (w / 2.0 - 0.5)  # (B, H, W) input column, PIL's xin - 0.5
    ys = -sin * u + cos * v + (h / 2.0 - 0.5)
    x0, y0 = jnp.floor(xs), jnp.floor(ys)
    dx, dy = (xs - x0)[..., None], (ys - y0)[..., None]
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    xa, xb = _reflect(x0, w), _reflect(x0 + 1, w)
    ya, yb = _reflect(y0, h), _reflect(y0 + 1, h)
    flat = rgb.reshape(b, h * w, c)

    def at(yi, xi):
        index = (yi * w + xi).reshape(b, h * w, 1)
        return jnp.take_along_axis(flat, index, axis=1).reshape(b, h, w, c).astype(jnp.float32)

    p00, p01, p10, p11 = at(ya, xa), at(ya, xb), at(yb, xa), at(yb, xb)
    top = p00 + (p01 - p00) * dx
    bottom = p10 + (p11 - p10) * dx
    value = top + (bottom - top) * dy
    return jnp.clip(jnp.floor(value), 0, 255).astype(jnp.uint8)  # PIL truncates: (UINT8)v


def _lab_f(t):
    return jnp.where(t <= transforms._EPS, transforms._KAPPA * t + transforms._DELTA, jnp.cbrt(t))


def to_model_arrays(rgb) -> dict:
    """(..., H, W, 3) uint8 -> {'L': L/100 (..., 1), 'ab': ab/128 (..., 2)} float32: the same
    table, matrix and constants as `transforms.to_model_arrays`, so the two agree to ~1e-6."""
    table = jnp.asarray(transforms._LINEAR)
    rgb = rgb.astype(jnp.int32)
    r, g, b = table[rgb[..., 0]], table[rgb[..., 1]], table[rgb[..., 2]]
    return transforms.linear_rgb_to_model_arrays(r, g, b, _lab_f, jnp)


def to_model_batch(batch: dict) -> dict:
    """{'rgb': (B, H, W, 3) uint8, 'degrees': (B,) float32, 'flip': (B,) bool, ...} -> the same
    batch with 'L' and 'ab' (what the train step reads) in place of the three augmentation keys;
    any other key passes through unchanged."""
    rgb = rotate_flip(batch["rgb"], batch["degrees"], batch["flip"])
    out = {k: v for k, v in batch.items() if k not in AUGMENT_KEYS}
    out.update(to_model_arrays(rgb))
    return out
