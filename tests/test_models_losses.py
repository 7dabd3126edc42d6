import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcolor import losses
from jaxcolor.models.autoencoder import SkipAutoencoder


def _counts(model, size=128):
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 1))))
    n = lambda t: sum(x.size for x in jax.tree.leaves(t))  # noqa: E731
    return n(v["params"]), n(v["batch_stats"])


def test_autoencoder_parameter_counts_match_keras():
    trainable, moving = _counts(SkipAutoencoder())
    assert trainable == 819_234
    assert moving == 1_536
    assert trainable + moving == 820_770


def test_width_multiplier_scales_channels():
    trainable, _ = _counts(SkipAutoencoder(width=0.5))
    assert trainable < 819_234 / 3
    out = SkipAutoencoder(width=0.25).init_with_output(
        jax.random.key(0), jnp.zeros((2, 16, 24, 1))
    )[0]
    assert out.shape == (2, 16, 24, 2)
    assert np.abs(np.asarray(out)).max() <= 1.0


def test_autoencoder_rejects_sizes_not_divisible_by_4():
    with pytest.raises(ValueError, match="divisible by 4"):
        SkipAutoencoder().init(jax.random.key(0), jnp.zeros((1, 18, 16, 1)))


def test_reference_loss_is_two_to_the_mean_abs():
    pred = jnp.zeros((1, 1, 2, 2))
    target = jnp.array([[[[0.5, 0.1], [0.0, -1.0]]]])
    # per pixel: 2 ** mean(|d|) = 2 ** 0.3 and 2 ** 0.5, then averaged
    expected = (2**0.3 + 2**0.5) / 2
    assert float(losses.reference_loss(pred, target)) == pytest.approx(expected, rel=1e-6)
    assert float(losses.l1_loss(pred, target)) == pytest.approx(0.4, rel=1e-6)
    assert float(losses.mse_loss(pred, target)) == pytest.approx((0.25 + 0.01 + 1) / 4, rel=1e-6)


def test_losses_ignore_zero_weight_rows():
    pred = jnp.zeros((2, 2, 2, 2))
    target = jnp.stack([jnp.full((2, 2, 2), 0.5), jnp.full((2, 2, 2), 9.0)])
    w = jnp.array([1.0, 0.0])
    for name in losses.LOSSES:
        fn = losses.get_loss(name)
        assert float(fn(pred, target, w)) == pytest.approx(float(fn(pred[:1], target[:1])))


def test_unknown_loss_is_a_clear_error():
    with pytest.raises(ValueError, match="config.loss.name='nope'"):
        losses.get_loss("nope")
