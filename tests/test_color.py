import itertools

import jax
import jax.numpy as jnp
import numpy as np
import skimage.color

from jaxcolor import color

CORNERS = np.array(list(itertools.product([0.0, 1.0], repeat=3)))


def _colors():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.random((5000, 3)), CORNERS, rng.random((50, 3)) * 0.02])


def test_numpy_matches_skimage():
    rgb = _colors()
    lab = color.rgb_to_lab(rgb)
    assert np.abs(lab - skimage.color.rgb2lab(rgb)).max() < 1e-3
    assert np.abs(color.lab_to_rgb(lab) - skimage.color.lab2rgb(lab)).max() < 1e-4


def test_corners_match_skimage():
    lab = color.rgb_to_lab(CORNERS)
    ref = skimage.color.rgb2lab(CORNERS)
    assert np.abs(lab - ref).max() < 1e-3
    # white is L=100, a=b=0 up to the rounding of skimage's constants; black is all zeros
    np.testing.assert_allclose(lab[-1], [100, 0, 0], atol=1e-2)
    np.testing.assert_allclose(lab[0], [0, 0, 0], atol=1e-6)


def test_jax_matches_skimage_in_float32():
    rgb = _colors().astype(np.float32)
    lab = np.asarray(jax.jit(color.rgb_to_lab_jax)(rgb))
    assert np.abs(lab - skimage.color.rgb2lab(rgb.astype(np.float64))).max() < 1e-3
    back = np.asarray(jax.jit(color.lab_to_rgb_jax)(lab))
    assert np.abs(back - rgb).max() < 1e-4


def test_round_trip():
    rgb = _colors()
    assert np.abs(color.lab_to_rgb(color.rgb_to_lab(rgb)) - rgb).max() < 1e-4


def test_uint8_and_image_shapes():
    img = (np.random.default_rng(1).random((4, 5, 3)) * 255).astype(np.uint8)
    np.testing.assert_allclose(
        color.rgb_to_lab(img), skimage.color.rgb2lab(img), atol=1e-3
    )


def test_jax_gradients_are_finite_everywhere():
    rgb = jnp.asarray(np.concatenate([CORNERS, _colors()[:100]]), jnp.float32)
    grad = jax.grad(lambda x: color.rgb_to_lab_jax(x).sum())(rgb)
    assert np.isfinite(np.asarray(grad)).all()
    lab = color.rgb_to_lab_jax(rgb)
    grad = jax.grad(lambda x: color.lab_to_rgb_jax(x).sum())(lab)
    assert np.isfinite(np.asarray(grad)).all()


def test_gray_from_l_is_neutral():
    rgb = color.gray_rgb_from_l(np.array([[0.0], [50.0], [100.0]]))
    assert np.abs(rgb - rgb[:, :1]).max() < 1e-3
    np.testing.assert_allclose(color.rgb_to_lab(rgb)[:, 0], [0, 50, 100], atol=1e-3)
