"""Classification over ab bins: the gamut bins, soft encoding and annealed-mean decoding, the
prior's smoothing and rebalancing weights, the loss, and a tiny classification run end to end."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, tiny_config

from jaxcolor import ab_bins, ab_prior, losses, prepare
from jaxcolor.configs.default import get_config

GAMUT_BINS_10 = 261  # bins of the 10-unit ab grid that 8-bit sRGB colors reach


def test_every_srgb_color_falls_in_a_derived_bin_and_no_bin_is_empty():
    """All 256^3 sRGB colors, converted independently by scikit-image, land in the derived bins
    (the cell whose center each rounds to), and each of the 261 bins holds some of them."""
    from skimage.color import rgb2lab

    centers = ab_bins.gamut_bins(10)
    assert centers.shape == (GAMUT_BINS_10, 2)
    assert np.all(centers % 10 == 0)
    size = 41  # cells -20..20 cover |a|, |b| <= 200
    counts = np.zeros(size * size, np.int64)
    v = np.arange(256, dtype=np.uint8)
    for r in range(0, 256, 32):
        rgb = np.stack(np.meshgrid(v[r : r + 32], v, v, indexing="ij"), axis=-1)
        cells = ab_bins.grid_cells(rgb2lab(rgb)[..., 1:].reshape(-1, 2), 10) + size // 2
        counts += np.bincount(cells[:, 0] * size + cells[:, 1], minlength=size * size)
    bins = ab_bins.grid_cells(centers, 10) + size // 2
    in_bins = np.zeros(size * size, bool)
    in_bins[bins[:, 0] * size + bins[:, 1]] = True
    assert counts.sum() == 256**3
    assert counts[~in_bins].sum() == 0, "sRGB colors outside the derived bins"
    assert np.all(counts[in_bins] > 0), "derived bins without sRGB colors"


def test_grid_is_configurable():
    coarse = ab_bins.gamut_bins(20)
    assert np.all(coarse % 20 == 0) and 40 < len(coarse) < GAMUT_BINS_10


def test_soft_encoding_then_annealed_mean_at_t_to_0_recovers_in_gamut_ab_within_one_bin():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20_000, 3)).astype(np.float64) / 255.0
    from jaxcolor import color

    ab = color.rgb_to_lab(rgb)[:, 1:].astype(np.float32)
    centers = ab_bins.gamut_bins(10)
    _, w = ab_bins.soft_encode(jnp.asarray(ab), centers, neighbours=5, sigma=5.0)
    np.testing.assert_allclose(np.asarray(w).sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(np.diff(np.asarray(w), axis=1) <= 1e-6)  # nearest bin first, heaviest
    dense = ab_bins.soft_encode_dense(jnp.asarray(ab), centers)
    assert np.all((np.asarray(dense) > 0).sum(axis=1) == 5)
    log_p = jnp.log(jnp.maximum(dense, 1e-30))
    for t in (0.0, 0.01):
        decoded = np.asarray(ab_bins.annealed_mean(log_p, centers, t))
        err = np.linalg.norm(decoded - ab, axis=1)
        # the mode is the bin the color falls in: within half the bin's diagonal
        assert err.max() <= 5.0 * np.sqrt(2) + 1e-3, (t, err.max())


def test_annealed_mean_is_the_mean_at_t_1_and_the_mode_at_t_0():
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 20.0]], np.float32)
    p = jnp.array([0.5, 0.3, 0.2])
    np.testing.assert_allclose(ab_bins.annealed_mean(jnp.log(p), centers, 1.0), [3.0, 4.0],
                               rtol=1e-5)
    np.testing.assert_allclose(ab_bins.annealed_mean(jnp.log(p), centers, 0.0), [0.0, 0.0])
    sharp = np.asarray(ab_bins.annealed_mean(jnp.log(p), centers, 0.38))
    assert np.linalg.norm(sharp) < np.linalg.norm([3.0, 4.0])


def test_rebalancing_weights_have_expectation_1_on_a_known_distribution():
    p = np.array([0.5, 0.25, 0.125, 0.125])
    w = ab_bins.rebalancing_weights(p, 0.5)
    inverse = 1.0 / (0.5 * p + 0.5 / 4)  # [8/3, 4, 16/3, 16/3], E_p = 11/3
    np.testing.assert_allclose(w, inverse / (11 / 3), rtol=1e-12)
    assert np.sum(p * w) == pytest.approx(1.0, abs=1e-12)
    assert w[0] < w[1] < w[2]  # rarer bins weigh more
    np.testing.assert_allclose(ab_bins.rebalancing_weights(p, 1.0), 1.0)  # lambda 1: no rebalancing


def test_smoothing_is_a_gaussian_over_the_ab_plane():
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    smoothed = ab_bins.smooth_prior([0.0, 1.0, 0.0], centers, sigma=5.0)
    assert smoothed.sum() == pytest.approx(1.0)
    assert smoothed[0] / smoothed[1] == pytest.approx(np.exp(-100 / 50))
    np.testing.assert_allclose(ab_bins.smooth_prior([1.0, 3.0, 0.0], centers, 0.0), [0.25, 0.75, 0])


def on_target(objective):
    """The run's objective as a plain `loss(pred, target_ab, weight)` (its total)."""
    return lambda out, target, weight=None: objective(out, {"ab": target}, weight)[0]


def test_classification_loss_rewards_the_right_bins_and_ignores_padding():
    c = get_config()
    c.loss.name = "classification"
    q = losses.head(c.loss)["output_channels"]
    assert q == GAMUT_BINS_10
    loss = jax.jit(on_target(losses.make_loss(c.loss, np.ones(q))))
    target = jnp.stack([jnp.full((4, 4, 2), 0.3), jnp.full((4, 4, 2), -0.2)])  # ab/128
    uniform = jnp.zeros((2, 4, 4, q))
    assert float(loss(uniform, target)) == pytest.approx(np.log(q), rel=1e-5)
    idx, w = ab_bins.soft_encode(target.reshape(-1, 2) * 128, ab_bins.gamut_bins(10))
    # logits = log of the soft target: the cross-entropy is the target's own entropy
    good = jnp.full((32, q), -30.0).at[jnp.arange(32)[:, None], idx].set(jnp.log(w))
    good = good.reshape(2, 4, 4, q)
    entropy = -float(jnp.sum(w * jnp.log(w), axis=1).mean())
    assert float(loss(good, target)) == pytest.approx(entropy, rel=1e-4)
    assert entropy < 0.5 * np.log(q)
    weight = jnp.array([1.0, 0.0])
    mixed = jnp.concatenate([good[:1], uniform[1:]])
    assert float(loss(mixed, target, weight)) == pytest.approx(float(loss(good[:1], target[:1])))
    with pytest.raises(ValueError, match="rebalancing weights"):
        losses.make_loss(c.loss, np.ones(q + 1))


def test_reduced_resolution_head_and_decoding():
    from jaxcolor.models.autoencoder import SkipAutoencoder

    c = get_config()
    c.loss.name, c.loss.output_stride = "classification", 4
    model = SkipAutoencoder(width=0.125, **losses.head(c.loss))
    out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0),
                                                        jnp.zeros((2, 16, 16, 1)))[0])
    assert out.shape == (2, 4, 4, GAMUT_BINS_10)
    logits = jax.random.normal(jax.random.key(1), out.shape)
    assert losses.make_decode(c.loss)(logits).shape == (2, 16, 16, 2)
    loss = on_target(losses.make_loss(c.loss, np.ones(GAMUT_BINS_10)))
    assert np.isfinite(float(loss(logits, jnp.zeros((2, 16, 16, 2)))))
    c.loss.name = "l1"
    with pytest.raises(ValueError, match="output_stride"):
        losses.head(c.loss)


def test_bins_file_is_loaded_and_checked(tmp_path):
    path = str(tmp_path / "bins.npy")
    np.save(path, np.array([[0.0, 0.0], [10.0, 10.0], [-10.0, 20.0]]))
    c = get_config()
    c.loss.name, c.loss.bins = "classification", path
    assert losses.head(c.loss)["output_channels"] == 3
    np.save(path, np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"config.loss.bins=.*\(Q, 2\)"):
        ab_bins.bins_for(c.loss)


DEFAULT_CONFIG = os.path.join(ROOT, "jaxcolor", "configs", "default.py")


def test_prior_command_writes_weights_with_unit_expectation(tmp_path):
    code = prepare.main(["ab-prior", "--config", DEFAULT_CONFIG, "--workdir", str(tmp_path),
                          "--config.loss.name=classification",
                          "--config.data.sample_train_examples=16",
                          "--config.data.image_size=16"])
    assert code == 0
    prior = ab_prior.load(ab_prior.default_path(str(tmp_path)))
    assert prior.weights.shape == (GAMUT_BINS_10,) and prior.pixels == 16 * 16 * 16
    assert prior.probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert float(np.sum(prior.probs_smoothed * prior.weights)) == pytest.approx(1.0, abs=1e-4)
    c = ab_prior.load_config(DEFAULT_CONFIG, ["--config.loss.name=classification",
                             "--config.data.sample_train_examples=16", "--config.data.image_size=16"])
    assert ab_prior.mismatch(prior, c) is None
    c.data.image_size = 32
    assert "other data" in ab_prior.mismatch(prior, c)
    c.data.image_size = 16
    c.loss.rebalance_lambda = 0.7
    assert "lambda" in ab_prior.mismatch(prior, c)


def test_tiny_classification_run_trains_evaluates_and_colorizes(tmp_path):
    from jaxcolor import colorize, evaluate, loop

    c = tiny_config(num_steps=16, log_every=4, eval_every=16, checkpoint_every=16)
    c.loss.name, c.loss.output_stride = "classification", 2
    c.data.sample_train_examples = 16  # the prior is counted over these at the start
    c.optimizer.learning_rate = 3e-3
    workdir = str(tmp_path / "run")
    summary = loop.train_and_evaluate(c, workdir)
    assert os.path.isfile(os.path.join(workdir, "data", "ab_prior.npz"))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    train_losses = [r["loss"] for r in rows if "loss" in r]
    assert np.mean(train_losses[-2:]) < train_losses[0]
    assert summary["ab_mae"] > 0 and np.isfinite(summary["loss"])

    prior_file = os.path.join(workdir, "data", "ab_prior.npz")  # training's prior, for the AuC
    assert evaluate.main(["--workdir", workdir, "--temperature", "0",
                          "--ab_prior", prior_file]) == 0
    with open(evaluate.result_path(workdir, "validation", 16, 0.0)) as f:
        result = json.load(f)
    assert result["temperature"] == 0.0 and result["model"]["count"] == 16
    assert result["ab_prior"] == prior_file and 0 < result["model"]["auc_rebalanced"] <= 1
    assert result["model"]["colorfulness"] > 0

    from PIL import Image
    from skimage import data as skdata

    out = tmp_path / "out"
    image = tmp_path / "in" / "astronaut.png"
    image.parent.mkdir()
    Image.fromarray(skdata.astronaut()[::8, ::8]).save(image)
    code = colorize.main([str(image), "--workdir", workdir, "-o", str(out), "--temperature", "0.2"])
    assert code == 0 and (out / "astronaut.png").exists()
