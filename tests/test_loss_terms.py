"""The objective as weighted terms (`config.loss.terms`, jaxcolor/losses.py): each term against a
hand-computed case, the colorfulness term's gradient at gray, both heads, the saturation boost,
and the single-loss configs unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from jaxcolor import color, config as config_lib, losses

RNG = np.random.default_rng(0)


def batch(n=2, size=8, chroma=0.3):
    return {"L": jnp.asarray(RNG.uniform(0.3, 0.8, (n, size, size, 1)), jnp.float32),
            "ab": jnp.asarray(RNG.uniform(-chroma, chroma, (n, size, size, 2)), jnp.float32)}


def hasler_suesstrunk(rgb01):
    """Colorfulness written out from the paper, per image, 0..255 RGB (NumPy, float64)."""
    out = []
    for img in np.asarray(rgb01, np.float64) * 255.0:
        r, g, b = img[..., 0], img[..., 1], img[..., 2]
        rg, yb = r - g, 0.5 * (r + g) - b
        out.append(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    return np.array(out)


def rgb(l, ab):
    return color.lab_to_rgb(np.concatenate([np.asarray(l) * 100.0, np.asarray(ab) * 128.0], -1))


def test_colorfulness_term_is_the_colorfulness_gap_over_100():
    b, pred = batch(), batch()["ab"] * 0.5
    want = np.abs(hasler_suesstrunk(rgb(b["L"], pred)) - hasler_suesstrunk(rgb(b["L"], b["ab"])))
    got = float(losses.colorfulness_loss(pred, b["ab"], b["L"]))
    assert got == pytest.approx(want.mean() / 100.0, rel=1e-3), (got, want)
    weight = jnp.asarray([1.0, 0.0])  # the padded second row does not count
    assert float(losses.colorfulness_loss(pred, b["ab"], b["L"], weight)) == pytest.approx(
        want[0] / 100.0, rel=1e-3)


def test_colorfulness_term_gradient_is_finite_at_gray():
    b = batch()
    gray = jnp.zeros_like(b["ab"])
    flat = jnp.full_like(b["L"], 0.5)  # a uniform gray picture: both spreads exactly 0
    for l_input in (b["L"], flat):
        for target in (b["ab"], gray):
            g = jax.grad(lambda ab: losses.colorfulness_loss(ab, target, l_input))(gray)
            assert np.isfinite(np.asarray(g)).all()
    g = jax.grad(lambda ab: losses.colorfulness_loss(ab, b["ab"], b["L"]))(gray)
    assert np.abs(np.asarray(g)).max() > 0  # and it pulls away from gray towards the truth's CF


def test_weighted_terms_add_up_and_each_is_reported():
    c = tiny_config(**{"loss.terms.l1": 2.0, "loss.terms.colorfulness": 0.5})
    objective = losses.make_loss(c.loss)
    b, pred = batch(), batch()["ab"] * 0.5
    total, parts = objective(pred, b)
    l1 = float(jnp.abs(pred - b["ab"]).mean())
    cf = float(losses.colorfulness_loss(pred, b["ab"], b["L"]))
    assert float(parts["l1"]) == pytest.approx(2.0 * l1, rel=1e-6)
    assert float(parts["colorfulness"]) == pytest.approx(0.5 * cf, rel=1e-6)
    assert float(total) == pytest.approx(2.0 * l1 + 0.5 * cf, rel=1e-6)
    assert set(parts) == {"l1", "colorfulness"}


def test_a_single_loss_config_is_exactly_the_plain_loss_function():
    b, pred = batch(), batch()["ab"]
    for name in losses.LOSSES:
        total, parts = losses.make_loss(tiny_config(**{"loss.name": name}).loss)(pred, b)
        plain = losses.get_loss(name)(pred, b["ab"])
        assert parts == {} and np.asarray(total).tobytes() == np.asarray(plain).tobytes(), name
    # a terms mapping of one term with weight 1 is the same objective as `name`
    total, _ = losses.make_loss(tiny_config(**{"loss.terms.huber": 1.0}).loss)(pred, b)
    assert np.asarray(total).tobytes() == np.asarray(losses.huber_loss(pred, b["ab"])).tobytes()


def test_classification_and_regression_together_use_two_heads():
    c = tiny_config(**{"loss.terms.classification": 1.0, "loss.terms.l1": 10.0})
    q = losses.num_bins(c.loss)
    assert losses.head(c.loss) == {"output_channels": q + 2, "output_stride": 1}
    weights = np.ones(q, np.float32)
    objective = losses.make_loss(c.loss, weights)
    b = batch()
    out = jnp.asarray(RNG.normal(size=(2, 8, 8, q + 2)), jnp.float32)
    _, parts = objective(out, b)
    classification = losses.make_loss(tiny_config(**{"loss.name": "classification"}).loss,
                                      weights)(out[..., :q], b)[0]
    l1 = losses.l1_loss(jnp.tanh(out[..., q:]), b["ab"])
    assert float(parts["classification"]) == pytest.approx(float(classification), rel=1e-6)
    assert float(parts["l1"]) == pytest.approx(10.0 * float(l1), rel=1e-6)
    np.testing.assert_allclose(losses.make_decode(c.loss)(out), np.tanh(out[..., q:]), atol=1e-6)
    c.loss.decode = "classification"
    by_bins = losses.make_decode(tiny_config(**{"loss.name": "classification"}).loss)(out[..., :q])
    np.testing.assert_allclose(losses.make_decode(c.loss)(out), by_bins, atol=1e-6)


def test_saturation_boost_scales_ab_and_stays_in_gamut():
    b = batch(chroma=0.05)  # low chroma: x 1.2 stays in gamut, so it is exactly x 1.2
    boosted = losses.boost_saturation(b["L"], b["ab"], 1.2)
    np.testing.assert_allclose(boosted, 1.2 * b["ab"], atol=2e-4)
    # Colors of real RGB pixels (so in gamut), many saturated: x 1.2 leaves the gamut for most,
    # and they are brought back to its edge at their own L, never beyond.
    lab = color.rgb_to_lab(RNG.uniform(0, 1, (2, 8, 8, 3)).astype(np.float32))
    vivid = {"L": jnp.asarray(lab[..., :1] / 100.0), "ab": jnp.asarray(lab[..., 1:] / 128.0)}
    boosted = np.asarray(losses.boost_saturation(vivid["L"], vivid["ab"], 1.2))
    lab = np.concatenate([np.asarray(vivid["L"]) * 100.0, boosted * 128.0], -1)
    unclipped = color.lab_to_rgb(lab, clip=False)
    assert unclipped.min() > -2e-3 and unclipped.max() < 1 + 2e-3
    chroma, before = np.hypot(*np.moveaxis(boosted, -1, 0)), np.hypot(*np.moveaxis(
        np.asarray(vivid["ab"]), -1, 0))
    assert (chroma <= 1.2 * before + 1e-6).all()  # never more than the factor
    in_gamut = color.lab_to_rgb(np.concatenate([np.asarray(vivid["L"]) * 100.0,
                                                np.asarray(vivid["ab"]) * 128.0], -1), clip=False)
    fits = ((in_gamut >= -1e-4) & (in_gamut <= 1 + 1e-4)).all(-1)
    assert fits.mean() > 0.99, fits.mean()
    assert (chroma[fits] >= before[fits] - 1e-6).all()  # an in-gamut color is never desaturated
    assert (chroma > 1.19 * before).mean() < 0.9  # the gamut did stop some (the test means it)
    objective = losses.make_loss(tiny_config(**{"loss.name": "l1",
                                                "loss.target_saturation": 1.2}).loss)
    low = batch(chroma=0.05)
    pred = low["ab"] * 1.2
    assert float(objective(pred, low, train=True)[0]) < 2e-4  # trains towards the boosted target
    assert float(objective(pred, low)[0]) > 1e-3  # evaluation scores against the truth


@pytest.mark.parametrize("overrides, field", [
    ({"loss.terms.adversarial": 1.0}, "config.loss.terms"),
    ({"loss.terms.l1": -1.0}, "config.loss.terms.l1"),
    ({"loss.terms.classification": 1.0, "loss.terms.l1": 1.0, "loss.output_stride": 2},
     "config.loss.output_stride"),
    ({"loss.decode": "both"}, "config.loss.decode"),
    ({"loss.target_saturation": 0.0}, "config.loss.target_saturation"),
])
def test_bad_terms_are_refused_naming_the_field(overrides, field):
    with pytest.raises(config_lib.ConfigError, match=field.replace(".", r"\.")):
        config_lib.validate(tiny_config(**overrides))


def test_an_unknown_term_is_refused():
    c = tiny_config()
    c.loss.terms.sharpness = 1.0
    with pytest.raises(config_lib.ConfigError, match="config.loss.terms.sharpness: unknown term"):
        config_lib.validate(c)


def test_perceptual_term_needs_its_weights_file_and_trains_with_one(tmp_path):
    """Without a file: one line naming the field and the Keras file. With a random-weight file in
    the real format (tests/test_vgg16.py writes it): a short run logs the term, finite, > 0."""
    from test_vgg16 import random_layers, write_legacy_h5

    from jaxcolor import loop
    from jaxcolor.models import vgg16

    terms = {"loss.terms.l1": 1.0, "loss.terms.perceptual": 0.1, "num_steps": 2, "log_every": 1,
             "eval_every": 2, "checkpoint_every": 2}
    with pytest.raises(config_lib.ConfigError, match=r"config\.loss\.vgg16_weights=''.*"
                       + vgg16.KERAS_FILE):
        config_lib.validate(tiny_config(**terms))
    path = write_legacy_h5(tmp_path / vgg16.KERAS_FILE, random_layers())
    c = tiny_config(**terms, **{"loss.vgg16_weights": str(path)})
    loop.train_and_evaluate(c, str(tmp_path / "run"))
    import json
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    values = [r["loss_perceptual"] for r in rows if "loss_perceptual" in r]
    assert len(values) == 2 and all(np.isfinite(values)) and min(values) > 0, values
