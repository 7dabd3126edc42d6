"""The optimized SkipAutoencoder against the straightforward formulation it replaced.

`ReferenceAutoencoder` below is the original model, kept verbatim in spirit: `nn.max_pool`
(reduce_window, whose gradient is select_and_scatter), an explicit `jnp.concatenate` of the input
before the skip64 conv, and the broadcast+reshape nearest upsampling. The project's model must
have the same parameter tree (names, shapes, initial values) and compute the same outputs, batch
statistics and gradients up to float32 summation order.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcolor import losses
from jaxcolor.models import autoencoder as ae


class _RefBlock(nn.Module):
    features: int
    batch_norm: bool = True

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(self.features, (3, 3), padding="SAME", name="conv")(x)
        if self.batch_norm:
            x = nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3, name="bn")(x)
        return nn.leaky_relu(x, 0.3)


def _ref_upsample(x):
    b, h, w, c = x.shape
    return jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)


class ReferenceAutoencoder(nn.Module):
    """The skip autoencoder as first written (before the CPU speed-ups)."""

    width: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = lambda n: ae.scaled(n, self.width)  # noqa: E731
        inputs = x.astype(jnp.float32)
        x = _RefBlock(c(16), False, name="enc16")(inputs, train)
        x = _RefBlock(c(32), name="enc32")(x, train)
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = _RefBlock(c(64), name="enc64")(x, train)
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = _RefBlock(c(128), name="enc128")(x, train)
        x = _RefBlock(c(256), name="enc256")(x, train)
        x = _ref_upsample(x)
        x = _RefBlock(c(128), name="dec128")(x, train)
        x = _ref_upsample(x)
        x = _RefBlock(c(64), name="dec64")(x, train)
        x = jnp.concatenate([x, inputs], axis=-1)
        x = _RefBlock(c(64), name="skip64")(x, train)
        x = _RefBlock(c(32), name="skip32")(x, train)
        x = nn.Conv(2, (3, 3), padding="SAME", name="out")(x)
        return jnp.tanh(x)


def _shapes(tree):
    return jax.tree.map(lambda a: (a.shape, str(a.dtype)), tree)


def _assert_close(a, b, rtol, atol):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol), a, b)


# The parameters do not depend on the image size: the reference's counts at 128x128 for the
# default ops, a small input for the other formulations.
@pytest.mark.parametrize("ops,size", [("phase", 128), ("plain", 16), ("im2col", 16)])
def test_parameter_tree_and_initial_values_are_unchanged(ops, size):
    x = jnp.zeros((1, size, size, 1))
    new = ae.SkipAutoencoder(ops=ops).init(jax.random.key(0), x)
    ref = ReferenceAutoencoder().init(jax.random.key(0), x)
    assert _shapes(new) == _shapes(ref)
    count = lambda t: sum(a.size for a in jax.tree.leaves(t))  # noqa: E731
    assert count(new["params"]) == 819_234
    assert count(new["batch_stats"]) == 1_536
    _assert_close(new, ref, 0, 0)  # same initializers, same random draws


@pytest.mark.parametrize("width,size,batch,ops", [
    (0.25, 16, 3, "phase"), (0.5, 32, 2, "phase"), (0.25, 16, 3, "plain"), (0.25, 16, 3, "im2col")])
def test_forward_batch_stats_and_gradients_match_reference(width, size, batch, ops):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0, 1, (batch, size, size, 1)).astype(np.float32))
    target = jnp.asarray(rng.uniform(-0.5, 0.5, (batch, size, size, 2)).astype(np.float32))
    new_model, ref_model = ae.SkipAutoencoder(width=width, ops=ops), ReferenceAutoencoder(width=width)
    variables = ref_model.init(jax.random.key(1), x)
    # Perturb the BatchNorm scales/biases so the test does not rest on their 1/0 initial values.
    variables = jax.tree.map(
        lambda a: a + 0.1 * jnp.asarray(rng.standard_normal(a.shape).astype(np.float32)), variables
    )

    def loss_and_stats(model, params):
        pred, upd = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                train=True, mutable=["batch_stats"])
        return losses.reference_loss(pred, target), (pred, upd["batch_stats"])

    (l_new, (p_new, s_new)), g_new = jax.jit(jax.value_and_grad(
        lambda p: loss_and_stats(new_model, p), has_aux=True))(variables["params"])
    (l_ref, (p_ref, s_ref)), g_ref = jax.jit(jax.value_and_grad(
        lambda p: loss_and_stats(ref_model, p), has_aux=True))(variables["params"])

    # Float32 sums in another order (split and phase-folded kernels), through ten layers.
    np.testing.assert_allclose(float(l_new), float(l_ref), rtol=1e-5)
    _assert_close(p_new, p_ref, rtol=1e-3, atol=1e-4)
    _assert_close(s_new, s_ref, rtol=1e-3, atol=1e-5)
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_ref))
    _assert_close(g_new, g_ref, rtol=1e-3, atol=1e-4 * scale)

    inference = lambda m: m.apply(variables, x, train=False)  # noqa: E731
    _assert_close(inference(new_model), inference(ref_model), rtol=1e-3, atol=1e-4)


def test_max_pool_matches_reduce_window_with_ties():
    """Gradient to the first maximum of each window, as select_and_scatter, even with ties."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(np.round(rng.standard_normal((2, 8, 6, 3)) * 2) / 2, jnp.float32)  # many ties
    x = x.at[0, :2, :2, 0].set(1.0)  # a window of four equal values
    ct = jnp.asarray(rng.standard_normal((2, 4, 3, 3)).astype(np.float32))
    y_ref, vjp_ref = jax.vjp(lambda v: nn.max_pool(v, (2, 2), (2, 2)), x)
    y_new, vjp_new = jax.vjp(ae.max_pool_2x2, x)
    np.testing.assert_array_equal(np.asarray(y_new), np.asarray(y_ref))
    np.testing.assert_array_equal(np.asarray(vjp_new(ct)[0]), np.asarray(vjp_ref(ct)[0]))


def test_split_input_conv_equals_conv_of_concatenation():
    rng = np.random.default_rng(3)
    a = jnp.asarray(rng.standard_normal((2, 8, 8, 5)).astype(np.float32))
    b = jnp.asarray(rng.standard_normal((2, 8, 8, 1)).astype(np.float32))
    conv = nn.Conv(4, (3, 3), padding="SAME")
    v = conv.init(jax.random.key(0), jnp.concatenate([a, b], -1))
    split = ae.SplitInputConv(4)
    assert _shapes(split.init(jax.random.key(0), (a, b))) == _shapes(v)
    np.testing.assert_allclose(np.asarray(split.apply(v, (a, b))),
                               np.asarray(conv.apply(v, jnp.concatenate([a, b], -1))),
                               rtol=1e-5, atol=1e-5)


def test_upsample_matches_broadcast_reshape_and_its_gradient():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((2, 3, 5, 4)).astype(np.float32))
    ct = jnp.asarray(rng.standard_normal((2, 6, 10, 4)).astype(np.float32))
    y_ref, vjp_ref = jax.vjp(_ref_upsample, x)
    y_new, vjp_new = jax.jit(lambda v: jax.vjp(ae.upsample2x, v))(x)
    np.testing.assert_array_equal(np.asarray(y_new), np.asarray(y_ref))
    np.testing.assert_array_equal(np.asarray(y_new), np.asarray(jnp.repeat(jnp.repeat(x, 2, 1), 2, 2)))
    np.testing.assert_allclose(np.asarray(vjp_new(ct)[0]), np.asarray(vjp_ref(ct)[0]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("h,w", [(1, 1), (3, 5), (4, 4)])
def test_upsample_conv_equals_conv_of_upsampled_input(h, w):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((2, h, w, 6)).astype(np.float32))
    conv = nn.Conv(3, (3, 3), padding="SAME")
    v = conv.init(jax.random.key(0), _ref_upsample(x))
    v = jax.tree.map(lambda a: a + jnp.asarray(rng.standard_normal(a.shape).astype(np.float32)), v)
    up = ae.UpsampleConv(3)
    assert _shapes(up.init(jax.random.key(0), x)) == _shapes(v)
    _assert_close(up.init(jax.random.key(0), x), conv.init(jax.random.key(0), _ref_upsample(x)), 0, 0)
    ct = jnp.asarray(rng.standard_normal((2, 2 * h, 2 * w, 3)).astype(np.float32))
    y_new, vjp_new = jax.vjp(lambda v, x: up.apply(v, x), v, x)
    y_ref, vjp_ref = jax.vjp(lambda v, x: conv.apply(v, _ref_upsample(x)), v, x)
    np.testing.assert_allclose(np.asarray(y_new), np.asarray(y_ref), rtol=1e-5, atol=1e-5)
    _assert_close(vjp_new(ct), vjp_ref(ct), rtol=1e-5, atol=1e-4)
