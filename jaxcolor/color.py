"""sRGB <-> CIE LAB (D65, 2-degree observer), matching `skimage.color.rgb2lab` / `lab2rgb`.

The input pipeline converts on the host with NumPy; training and inference convert on the device
with jax.numpy. Both are the same code written against an array module (`xp`), so the two can
never drift apart: one set of constants, one set of formulas.

Conventions: RGB is sRGB in [0, 1] with channels last; LAB has L in [0, 100] and a, b roughly in
[-128, 127]. Any leading shape is accepted: (3,), (H, W, 3), (B, H, W, 3).
"""

from __future__ import annotations

import numpy as np

# sRGB primaries (IEC 61966-2-1) to CIE XYZ, as skimage's `xyz_from_rgb`.
XYZ_FROM_RGB = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ],
    dtype=np.float64,
)
RGB_FROM_XYZ = np.linalg.inv(XYZ_FROM_RGB)
# Reference white D65 for the 2-degree observer (skimage's `_illuminants["D65"]["2"]`).
WHITE_D65 = np.array([0.95047, 1.0, 1.08883], dtype=np.float64)

_EPSILON = 0.008856  # (6/29)^3, as skimage rounds it
_KAPPA = 7.787  # (29/6)^2 / 3, as skimage rounds it
_DELTA = 16.0 / 116.0

# Gray baseline constants used across the project: a = b = 0 is "predicting gray".
AB_SCALE = 128.0  # model target is ab / AB_SCALE in about [-1, 1]
L_SCALE = 100.0  # model input is L / L_SCALE in [0, 1]


def _srgb_to_linear(c, xp):
    return xp.where(c > 0.04045, ((xp.maximum(c, 0.04045) + 0.055) / 1.055) ** 2.4, c / 12.92)


def _linear_to_srgb(c, xp):
    safe = xp.maximum(c, 0.0031308)
    return xp.where(c > 0.0031308, 1.055 * safe ** (1 / 2.4) - 0.055, 12.92 * c)


def _f(t, xp):
    # cbrt of a clamped argument keeps the unused branch of `where` finite for gradients.
    return xp.where(t > _EPSILON, xp.cbrt(xp.maximum(t, _EPSILON)), _KAPPA * t + _DELTA)


def _f_inv(t, xp):
    return xp.where(t > 0.2068966, t**3, (t - _DELTA) / _KAPPA)


def _matmul_last(x, m, xp):
    return x @ xp.asarray(m.T, dtype=x.dtype)


def rgb_to_lab_xp(rgb, xp):
    """sRGB in [0, 1] -> LAB, written once for any NumPy-like module `xp`."""
    lin = _srgb_to_linear(rgb, xp)
    xyz = _matmul_last(lin, XYZ_FROM_RGB, xp) / xp.asarray(WHITE_D65, dtype=rgb.dtype)
    fx, fy, fz = _f(xyz[..., 0], xp), _f(xyz[..., 1], xp), _f(xyz[..., 2], xp)
    # skimage: L = 116 fy - 16 where y > eps, else 903.3 y; 116 (kappa y + 16/116) - 16 == 903.3 y.
    lightness = 116.0 * fy - 16.0
    return xp.stack([lightness, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_rgb_xp(lab, xp, clip: bool = True):
    """LAB -> sRGB; clipped to [0, 1] (the displayable gamut) unless `clip=False`."""
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = fy + lab[..., 1] / 500.0
    fz = xp.maximum(fy - lab[..., 2] / 200.0, 0.0)  # skimage clamps z >= 0
    xyz = xp.stack([_f_inv(fx, xp), _f_inv(fy, xp), _f_inv(fz, xp)], axis=-1)
    xyz = xyz * xp.asarray(WHITE_D65, dtype=lab.dtype)
    lin = _matmul_last(xyz, RGB_FROM_XYZ, xp)
    rgb = _linear_to_srgb(lin, xp)
    return xp.clip(rgb, 0.0, 1.0) if clip else rgb


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """NumPy sRGB -> LAB for the input pipeline. Keeps float32 inputs in float32."""
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8:
        rgb = rgb.astype(np.float32) / 255.0
    elif rgb.dtype not in (np.float32, np.float64):
        rgb = rgb.astype(np.float32)
    return rgb_to_lab_xp(rgb, np)


def lab_to_rgb(lab: np.ndarray, clip: bool = True) -> np.ndarray:
    """NumPy LAB -> sRGB in [0, 1]."""
    lab = np.asarray(lab)
    if lab.dtype not in (np.float32, np.float64):
        lab = lab.astype(np.float32)
    return lab_to_rgb_xp(lab, np, clip=clip)


def rgb_to_lab_jax(rgb):
    """jax.numpy sRGB -> LAB: jit-able and differentiable."""
    import jax.numpy as jnp

    return rgb_to_lab_xp(jnp.asarray(rgb), jnp)


def lab_to_rgb_jax(lab, clip: bool = True):
    """jax.numpy LAB -> sRGB: jit-able and differentiable."""
    import jax.numpy as jnp

    return lab_to_rgb_xp(jnp.asarray(lab), jnp, clip=clip)


def gray_rgb_from_l(l_channel, xp=np):
    """The neutral-gray sRGB image that a lightness channel stands for (a = b = 0).

    `l_channel` is L in [0, 100] with shape (..., 1) or (...); returns (..., 3) in [0, 1].
    """
    l_channel = xp.asarray(l_channel)
    if l_channel.shape[-1:] != (1,):
        l_channel = l_channel[..., None]
    zeros = xp.zeros_like(l_channel)
    return lab_to_rgb_xp(xp.concatenate([l_channel, zeros, zeros], axis=-1), xp)
