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


def test_models_by_registry():
    """`build_model`, `param_labels_fn` and `load_pretrained_weights` go to the model's entry."""
    import ml_collections

    from conftest import tiny_config
    from jaxcolor import models
    from jaxcolor.models import colorizers

    assert models.MODEL_NAMES == ("autoencoder", "resnet50_seed", "resnet50_unet")
    assert {name: e.size_multiple for name, e in models.MODELS.items()} == {
        "autoencoder": 4, "resnet50_seed": 4, "resnet50_unet": 16}
    types = {"autoencoder": SkipAutoencoder, "resnet50_seed": colorizers.ResNet50Seed,
             "resnet50_unet": colorizers.ResNet50UNet}
    variables = {"params": {}, "batch_stats": {}}
    for name in models.MODEL_NAMES:
        config = tiny_config(**{"model.name": name}).model  # weights and freeze: none
        model = models.build_model(config, "bfloat16", "batch", output_channels=5, output_stride=2)
        assert type(model) is types[name]
        assert (model.dtype, model.bn_axis_name, model.output_channels, model.output_stride) == (
            jnp.bfloat16, "batch", 5, 2)
        assert models.param_labels_fn(config) is None
        assert models.load_pretrained_weights(config, variables) is variables
    config = tiny_config(**{"model.name": "resnet50_seed", "model.freeze": "stem"}).model
    assert models.build_model(config).freeze == "stem" and models.param_labels_fn(config)
    with pytest.raises(ValueError, match="config.model.name='nope'"):
        models.build_model(ml_collections.ConfigDict({"name": "nope"}))


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
