import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.color

from jaxcolor import color

CORNERS = np.array(list(itertools.product([0.0, 1.0], repeat=3)))


def _colors():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.random((5000, 3)), CORNERS, rng.random((50, 3)) * 0.02])


def test_numpy_matches_skimage():
    rgb = _colors()
    lab = color.rgb_to_lab(rgb)
    # float64, the same formulas and constants as skimage: measured 0 and 6e-15
    assert np.abs(lab - skimage.color.rgb2lab(rgb)).max() < 1e-10
    assert np.abs(color.lab_to_rgb(lab) - skimage.color.lab2rgb(lab)).max() < 1e-10


def test_corners_match_skimage():
    lab = color.rgb_to_lab(CORNERS)
    ref = skimage.color.rgb2lab(CORNERS)
    assert np.abs(lab - ref).max() < 1e-10  # measured 0
    # white is L=100, a=b=0 up to the rounding of skimage's constants; black is all zeros
    np.testing.assert_allclose(lab[-1], [100, 0, 0], atol=1e-2)
    np.testing.assert_allclose(lab[0], [0, 0, 0], atol=1e-6)


def test_jax_matches_skimage_in_float32():
    rgb = _colors().astype(np.float32)
    lab = np.asarray(jax.jit(color.rgb_to_lab_jax)(rgb))
    assert np.abs(lab - skimage.color.rgb2lab(rgb.astype(np.float64))).max() < 3e-4  # meas. 7e-5
    back = np.asarray(jax.jit(color.lab_to_rgb_jax)(lab))
    assert np.abs(back - rgb).max() < 3e-5  # measured 6e-6


def test_round_trip():
    rgb = _colors()
    assert np.abs(color.lab_to_rgb(color.rgb_to_lab(rgb)) - rgb).max() < 1e-10  # measured 8e-15


def test_uint8_and_image_shapes():
    img = (np.random.default_rng(1).random((4, 5, 3)) * 255).astype(np.uint8)
    np.testing.assert_allclose(
        color.rgb_to_lab(img), skimage.color.rgb2lab(img), rtol=0, atol=2e-4
    )  # computed in float32 (measured 4e-5 off)


def test_jax_gradients_are_finite_everywhere():
    rgb = jnp.asarray(np.concatenate([CORNERS, _colors()[:100]]), jnp.float32)
    grad = jax.grad(lambda x: color.rgb_to_lab_jax(x).sum())(rgb)
    assert np.isfinite(np.asarray(grad)).all()
    lab = color.rgb_to_lab_jax(rgb)
    grad = jax.grad(lambda x: color.lab_to_rgb_jax(x).sum())(lab)
    assert np.isfinite(np.asarray(grad)).all()


def test_gray_from_l_is_neutral():
    rgb = color.gray_rgb_from_l(np.array([[0.0], [50.0], [100.0]]))
    assert np.abs(rgb - rgb[:, :1]).max() < 1e-4  # measured 1.6e-5 (skimage's rounded constants)
    np.testing.assert_allclose(color.rgb_to_lab(rgb)[:, 0], [0, 50, 100], atol=1e-3)


def _lab_grid():
    """L in {0, 30, 60, 100} x a, b on an 18-step grid over [-128, 127] (most of it outside the
    sRGB gamut, with z < 0 wherever b is large and L small), plus in-gamut LAB colors."""
    ab = np.linspace(-128.0, 127.0, 18)
    grid = np.stack(np.meshgrid([0.0, 30.0, 60.0, 100.0], ab, ab, indexing="ij"), -1).reshape(-1, 3)
    in_gamut = skimage.color.rgb2lab(_colors()[::10])
    return np.concatenate([grid, in_gamut])


def _skimage_lab2rgb(lab):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns when it clamps negative Z values
        return skimage.color.lab2rgb(lab)


@pytest.mark.parametrize(
    "path, dtype, tol",
    [  # tolerances a few times the measured agreement: 2e-15 in float64, 1.3e-6 in float32
        ("numpy", np.float64, 1e-10),
        ("numpy", np.float32, 1e-5),
        ("jax", np.float32, 1e-5),
    ],
)
def test_lab_to_rgb_matches_skimage_out_of_gamut(path, dtype, tol):
    """Out-of-gamut LAB as a model's ab predictions can be: skimage clamps z = fy - b/200 at 0
    before the inverse f; without that clamp the RGB of this grid moves by up to 0.18."""
    lab = _lab_grid()
    fy = (lab[:, 0] + 16.0) / 116.0
    assert (fy - lab[:, 2] / 200.0 < 0).sum() > 100  # the grid reaches the clamped region
    ref = _skimage_lab2rgb(lab)
    convert = color.lab_to_rgb if path == "numpy" else jax.jit(color.lab_to_rgb_jax)
    got = np.asarray(convert(lab.astype(dtype)))
    assert got.dtype == dtype and got.shape == lab.shape
    err = np.abs(got.astype(np.float64) - ref).max(axis=1)
    worst = int(err.argmax())
    assert err[worst] < tol, f"|rgb - skimage| = {err[worst]:.3g} at LAB {lab[worst]}"
