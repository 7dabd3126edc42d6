"""Turning model arrays into pictures: LAB recombination and side-by-side grids (PNG)."""

from __future__ import annotations

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
    return (np.clip(rgb01, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


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
