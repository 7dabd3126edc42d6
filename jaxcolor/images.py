"""Turning arrays into pictures: LAB recombination, side-by-side grids (PNG), and the one rule
by which an image array of any dtype and layout becomes uint8 RGB (`rgb_uint8`)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from jaxcolor import color


def rgb_from_model(l_input: np.ndarray, ab_scaled: np.ndarray) -> np.ndarray:
    """(..., H, W, 1) L/100 and (..., H, W, 2) ab/128 -> (..., H, W, 3) uint8 sRGB."""
    lab = np.concatenate(
        [np.asarray(l_input, np.float32) * color.L_SCALE,
         np.asarray(ab_scaled, np.float32) * color.AB_SCALE], axis=-1
    )
    return to_uint8(color.lab_to_rgb(lab))


def to_uint8(rgb01: np.ndarray) -> np.ndarray:
    """Float in [0, 1] -> uint8, x * 255 rounded (clipped first): the float rule of `rgb_uint8`,
    without its checks, for arrays this package computed itself (LAB -> sRGB, already clipped)."""
    return (np.clip(rgb01, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


LAYOUTS = "(H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"


def checked_image(image) -> np.ndarray:
    """`image` as an array of one of the `LAYOUTS` (an (H, W, 1) channel dropped), or a ValueError
    saying what is wrong: the shape, no pixels, or values outside the range its dtype stands for
    (see `check_values`)."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"image of shape {arr.shape}: expected {LAYOUTS}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image of shape {arr.shape}: it has no pixels")
    check_values(arr)
    return arr


def check_values(arr: np.ndarray) -> None:
    """Refuses values outside the range a dtype stands for, instead of clipping them to a white
    or black picture: float outside [0, 1] (0..255 data stored as float) or not finite, and
    integers (other than uint8, uint16 and bool, which cannot be out of range) outside 0..255."""
    if arr.dtype in (np.bool_, np.uint8, np.uint16):
        return
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(arr.min()), float(arr.max())  # NaN propagates through min and max
        if not (math.isfinite(lo) and math.isfinite(hi)):
            bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
            raise ValueError(f"float image with {bad} NaN or infinite values: expected finite "
                             "values in [0, 1]")
        if lo < 0.0 or hi > 1.0:
            hint = " (0..255 data? divide it by 255, or pass it as uint8)" if hi > 1.0 else ""
            raise ValueError(f"float image with values in [{lo:g}, {hi:g}]: expected values "
                             f"in [0, 1]{hint}")
    elif np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{arr.dtype} image with values in [{lo}, {hi}]: expected 0..255 "
                             "(16-bit data must be uint16, 0..65535)")
    else:
        raise ValueError(f"image dtype {arr.dtype}: expected uint8, uint16 or float in [0, 1]")


def rgb_uint8(image) -> np.ndarray:
    """An image array -> (H, W, 3) uint8 RGB, by the one rule of this package: what `colorize`
    does to a picture given as an array (strip by strip) and the `tfds` source to every example.

    Values, by dtype (anything else is a ValueError naming the range found, see `check_values`):
    uint8 as is; uint16 / 65535 (x * 255 / 65535, rounded); bool False -> 0, True -> 255; float
    in [0, 1], x * 255 rounded (`to_uint8`); any other integer 0..255, as is.
    Layouts: (H, W) and (H, W, 1) gray, repeated into R, G and B; (H, W, 3) RGB; (H, W, 4) RGBA,
    its alpha scaled as the colors are and composited on white, with the values
    `jaxcolor.data.transforms.to_rgb` gives a decoded file with alpha (both correctly rounded).

    uint16 is always divided by 65535: its dtype says it is 16-bit data. The rule the TFDS path
    had (divide by 65535 only when the image's maximum is over 255, else by 255) depended on the
    content: a dark 16-bit picture (every value <= 255 of 65535, an underexposed scan) came out
    up to 257 times brighter, and two crops of one image could get different scales. 16-bit
    files decode by the same rule (`to_rgb` of Pillow's I;16 modes).
    """
    arr = checked_image(image)
    if arr.dtype == np.uint16:
        arr = to_uint8(arr.astype(np.float64) / 65535.0)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = to_uint8(arr.astype(np.float64))
    elif arr.dtype == np.bool_:
        arr = arr * np.uint8(255)
    else:
        arr = arr.astype(np.uint8)  # checked: 0..255
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=-1)
    if arr.shape[-1] == 4:
        alpha = arr[..., 3:].astype(np.float32) / 255.0
        return (arr[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(arr)


def comparison_grid(l_input, ab_pred, ab_true, pad: int = 2) -> np.ndarray:
    """One row per image: grayscale input | prediction | ground truth, as (H', W', 3) uint8."""
    gray = rgb_from_model(l_input, np.zeros_like(ab_pred))
    rows = [gray, rgb_from_model(l_input, ab_pred), rgb_from_model(l_input, ab_true)]
    n, h, w, _ = gray.shape
    grid = np.full((n * (h + pad) + pad, 3 * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        for j, images in enumerate(rows):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y : y + h, x : x + w] = images[i]
    return grid


def save_png(array: np.ndarray, path: str) -> None:
    Image.fromarray(array).save(path)
