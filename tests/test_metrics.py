"""Each metric against an independent reference: scikit-image for LAB -> RGB, PSNR and SSIM,
NumPy for colorfulness and ab errors, closed-form cases for AuC."""

import math
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import skimage.color
import skimage.metrics

from jaxcolor import ab_bins, ab_prior, metrics


def smooth_rgb(rng, b, h, w):
    """Random smooth color images in [0, 1] with some texture, like photographs."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for _ in range(b):
        base = rng.random(3)
        freq = rng.uniform(2, 8, size=(3, 2))
        img = base + 0.3 * np.sin(freq[:, 0] * 6 * xx[..., None] + freq[:, 1] * 4 * yy[..., None])
        out.append(np.clip(img + 0.05 * rng.standard_normal((h, w, 3)), 0, 1))
    return np.stack(out)


@pytest.fixture(scope="module")
def lab_batch():
    """(L, ab_true, ab_pred) in LAB units: 3 real examples plus one padding row of noise."""
    rng = np.random.default_rng(0)
    rgb = smooth_rgb(rng, 4, 16, 20)
    lab = skimage.color.rgb2lab(rgb)
    ab_pred = lab[..., 1:] * rng.uniform(0.2, 0.9, size=(4, 1, 1, 1)) + rng.normal(0, 6, (4, 16, 20, 2))
    ab_pred[3] = rng.normal(0, 60, (16, 20, 2))  # the padding row: must not count
    weight = np.array([1, 1, 1, 0], np.float32)
    return lab[..., :1], lab[..., 1:], ab_pred, weight


def reference_rgb(l, ab):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns when it clips negative Z values
        return np.clip(skimage.color.lab2rgb(np.concatenate([l, ab], axis=-1)), 0, 1)


def summary(lab_batch, prior=None):
    l, ab_true, ab_pred, weight = (np.asarray(x, np.float32) for x in lab_batch)
    return metrics.summarize(metrics.batch_sums_jit(l, ab_true, ab_pred, weight, prior))


def test_psnr_and_ssim_match_scikit_image(lab_batch):
    l, ab_true, ab_pred, _ = lab_batch
    got = summary(lab_batch)
    psnrs, ssims = [], []
    for i in range(3):
        truth, pred = reference_rgb(l[i], ab_true[i]), reference_rgb(l[i], ab_pred[i])
        psnrs.append(skimage.metrics.peak_signal_noise_ratio(truth, pred, data_range=1.0))
        ssims.append(skimage.metrics.structural_similarity(truth, pred, channel_axis=-1,
                                                           data_range=1.0))
    assert got["count"] == 3
    assert got["psnr"] == pytest.approx(np.mean(psnrs), abs=2e-5)  # measured 4e-6 (float32)
    assert got["ssim"] == pytest.approx(np.mean(ssims), abs=1e-6)  # measured 2e-7; population
    # covariance instead of sample covariance would be 5e-5 off
    assert 0.2 < got["ssim"] < 0.99  # a case where the window statistics matter


def test_ssim_per_image_matches_scikit_image_on_random_pairs():
    rng = np.random.default_rng(1)
    x = smooth_rgb(rng, 3, 12, 9)
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    ours = np.asarray(metrics.ssim(x.astype(np.float32), y.astype(np.float32)))
    ref = [skimage.metrics.structural_similarity(x[i], y[i], channel_axis=-1, data_range=1.0)
           for i in range(3)]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)  # measured 2e-7
    np.testing.assert_allclose(np.asarray(metrics.ssim(x, x)), 1.0, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="at least 7x7"):
        metrics.ssim(x[:, :6], y[:, :6])


def numpy_colorfulness(rgb01):
    """Hasler & Suesstrunk (2003), written out on 0..255 RGB."""
    r, g, b = (rgb01[..., c].astype(np.float64) * 255 for c in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean())


def test_colorfulness_matches_numpy(lab_batch):
    l, ab_true, ab_pred, _ = lab_batch
    got = summary(lab_batch)
    cf_true = [numpy_colorfulness(reference_rgb(l[i], ab_true[i])) for i in range(3)]
    cf_pred = [numpy_colorfulness(reference_rgb(l[i], ab_pred[i])) for i in range(3)]
    # float32 against float64: measured relative errors 1e-8 to 1e-7
    assert got["colorfulness_true"] == pytest.approx(np.mean(cf_true), rel=2e-7)
    assert got["colorfulness"] == pytest.approx(np.mean(cf_pred), rel=2e-7)
    assert got["colorfulness_ratio"] == pytest.approx(sum(cf_pred) / sum(cf_true), rel=2e-7)
    assert got["colorfulness_delta"] == pytest.approx(
        np.mean(np.abs(np.subtract(cf_pred, cf_true))), rel=5e-7)
    # a saturated red square scores far above its gray version
    red = np.zeros((1, 8, 8, 3), np.float32)
    red[..., 0] = 1
    gray = np.full((1, 8, 8, 3), 0.5, np.float32)
    assert float(metrics.colorfulness(red)[0]) == pytest.approx(numpy_colorfulness(red[0]), rel=2e-7)
    assert float(metrics.colorfulness(gray)[0]) == pytest.approx(0.0, abs=1e-5)  # measured 0


def test_ab_errors_match_numpy(lab_batch):
    _, ab_true, ab_pred, _ = lab_batch
    got = summary(lab_batch)
    err = ab_pred[:3] - ab_true[:3]
    assert got["ab_mae"] == pytest.approx(np.abs(err).mean(), rel=1e-6)  # measured 2e-7
    assert got["ab_rmse"] == pytest.approx(np.sqrt((err**2).mean()), rel=1e-6)


def discrete_auc(distance, thresholds=np.arange(0, 151)):
    """Zhang et al.'s curve on integer thresholds, trapezoid rule, normalized by 150."""
    curve = [(distance <= t).mean() for t in thresholds]
    return np.trapezoid(curve, thresholds) / 150.0


def constant_error_batch(error):
    l = np.full((2, 8, 8, 1), 50.0, np.float32)
    ab_true = np.random.default_rng(2).uniform(-40, 40, (2, 8, 8, 2)).astype(np.float32)
    ab_pred = ab_true + np.array([0.6, 0.8], np.float32) * error  # |offset| = error
    return l, ab_true, ab_pred, np.ones(2, np.float32)


@pytest.mark.parametrize("error", [0.0, 10.0, 30.0, 149.0, 200.0])
def test_auc_known_cases(error):
    got = summary(constant_error_batch(error))
    assert got["auc"] == pytest.approx(max(0.0, (150.0 - error) / 150.0), abs=1e-6)  # measured 1e-7


def test_auc_agrees_with_the_thresholded_curve(lab_batch):
    _, ab_true, ab_pred, _ = lab_batch
    distance = np.linalg.norm(ab_pred[:3] - ab_true[:3], axis=-1)
    got = summary(lab_batch)["auc"]
    # the exact integral, pixel by pixel (measured 4e-8 off in float32)
    assert got == pytest.approx(np.clip(1.0 - distance / 150.0, 0.0, 1.0).mean(), abs=1e-6)
    # The integer-threshold curve differs by less than 1/150 in the worst case (the docstring's
    # bound); over these 960 pixels the per-pixel rounding averages out to 4e-5.
    assert got == pytest.approx(discrete_auc(distance), abs=2e-4)


def test_rebalanced_auc():
    # Two bins: "red" (a > 0) is common, "green" (a < 0) is rare. Red pixels are predicted
    # exactly, green ones off by 75 (AuC 0.5 each).
    centers = np.array([[30.0, 0.0], [-30.0, 0.0]], np.float32)
    ab_true = np.zeros((1, 8, 8, 2), np.float32)
    ab_true[0, :, :6, 0] = 30.0  # 48 red pixels
    ab_true[0, :, 6:, 0] = -30.0  # 16 green pixels
    ab_pred = ab_true.copy()
    ab_pred[0, :, 6:, 1] = 75.0
    batch = (np.full((1, 8, 8, 1), 50.0, np.float32), ab_true, ab_pred, np.ones(1, np.float32))
    plain = summary(batch)["auc"]
    assert plain == pytest.approx((48 * 1.0 + 16 * 0.5) / 64, abs=1e-6)

    uniform = ab_prior.from_counts(np.array([0.5, 0.5]), centers)
    assert summary(batch, uniform)["auc_rebalanced"] == pytest.approx(plain, abs=1e-6)

    skewed = ab_prior.from_counts(np.array([0.9, 0.1]), centers)
    w_red, w_green = 1 / 0.9, 1 / 0.1
    expected = (48 * w_red * 1.0 + 16 * w_green * 0.5) / (48 * w_red + 16 * w_green)
    got = summary(batch, skewed)["auc_rebalanced"]
    assert got == pytest.approx(expected, abs=1e-6)
    assert got < plain  # the rare color's errors now weigh more

    perfect = (batch[0], ab_true, ab_true, batch[3])
    assert summary(perfect, skewed)["auc_rebalanced"] == pytest.approx(1.0, abs=1e-6)


def skewed_prior(ab_true):
    """A prior counted on the real rows, made very uneven (bin weights from 1 to ~1e3), so that
    a rebalanced sum that let a padded row's pixels in would move visibly."""
    prior = ab_prior.from_ab(ab_true)
    return ab_prior.from_counts(np.asarray(prior.probs, np.float64) ** 2, prior.ab_centers)


def padded_row(kind, shape):
    """The content of an evaluation batch's padding row: what `pipeline.eval_batches` pads with
    (zeros; the model's prediction for a black input is anything), or arbitrary noise."""
    rng = np.random.default_rng(7)
    h, w = shape
    if kind == "zeros":
        return np.zeros((h, w, 1)), np.zeros((h, w, 2)), rng.normal(0, 40, (h, w, 2))
    return rng.uniform(0, 100, (h, w, 1)), rng.uniform(-128, 127, (h, w, 2)), \
        rng.uniform(-128, 127, (h, w, 2))


@pytest.mark.parametrize("kind", ["fixture", "zeros", "noise"])
def test_padding_rows_change_nothing(lab_batch, kind):
    """A weight-0 row changes no sum and no metric, the rebalanced AuC included, whatever it
    holds. On XLA:CPU the sums are bitwise equal today; the tolerance (1e-6 relative) only
    allows for a different float summation order, while counting the padded row moves every
    metric by a sizeable fraction of itself (AuC rebalanced 0.856 -> 0.70 or lower here)."""
    l, ab_true, ab_pred, weight = (np.array(x) for x in lab_batch)
    if kind != "fixture":
        l[3], ab_true[3], ab_pred[3] = padded_row(kind, l.shape[1:3])
    prior = skewed_prior(ab_true[:3])
    padded = (l, ab_true, ab_pred, weight)
    real = (l[:3], ab_true[:3], ab_pred[:3], weight[:3])
    cast = lambda batch: [np.asarray(x, np.float32) for x in batch]  # noqa: E731
    sums_padded = metrics.batch_sums_jit(*cast(padded), prior)
    sums_real = metrics.batch_sums_jit(*cast(real), prior)
    assert set(sums_padded) == set(sums_real)
    for key in sums_real:
        assert float(sums_padded[key]) == pytest.approx(float(sums_real[key]), rel=1e-6), key
    for p in (None, prior):
        with_padding, without = summary(padded, p), summary(real, p)
        assert set(with_padding) == set(without)
        assert ("auc_rebalanced" in without) == (p is not None)
        for key, value in without.items():
            assert with_padding[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key


def test_sums_accumulate_across_batches(lab_batch):
    l, ab_true, ab_pred, weight = (np.asarray(x, np.float32) for x in lab_batch)
    prior = skewed_prior(ab_true[:3])
    whole = metrics.summarize(metrics.batch_sums_jit(l, ab_true, ab_pred, weight, prior))
    parts = None
    for sl in (slice(0, 1), slice(1, 4)):
        parts = metrics.add(
            parts, metrics.batch_sums_jit(l[sl], ab_true[sl], ab_pred[sl], weight[sl], prior))
    split = metrics.summarize(parts)
    assert set(split) == set(whole) and "auc_rebalanced" in whole
    for key, value in split.items():
        assert value == pytest.approx(whole[key], rel=1e-6), key


def test_the_evaluation_prior_counts_colors_in_the_training_bins(tmp_path):
    """evaluate's rebalanced AuC and the classification loss share one prior on one grid:
    centers at multiples of 10, a color counted in its nearest bin, so (4, 4) is bin (0, 0)
    (the old evaluation prior floored it into a bin centered at (5, 5))."""
    ab = np.array([[4.0, 4.0], [4.0, 4.0], [-3.0, 2.0], [14.0, -4.0]], np.float32)
    prior = ab_prior.from_ab(ab)
    centers = ab_bins.gamut_bins()
    np.testing.assert_array_equal(prior.ab_centers, centers)  # training's bins, in its order
    seen = {tuple(c): float(p) for c, p in zip(prior.ab_centers.tolist(), prior.probs) if p > 0}
    assert seen == pytest.approx({(0.0, 0.0): 0.75, (10.0, 0.0): 0.25})
    assert centers[int(ab_bins.nearest_bin(jnp.asarray(ab[:1]), centers)[0])].tolist() == [0, 0]
    # The file evaluate --ab_prior reads (a run's RUN/data/ab_prior.npz is one) round-trips,
    # and weighs (4, 4) as bin (0, 0) and (14, -4) as bin (10, 0), three times rarer.
    path = str(tmp_path / "prior.npz")
    ab_prior.save(path, prior)
    loaded = ab_prior.load(path)
    for field in ("ab_centers", "probs", "probs_smoothed", "weights"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(prior, field))
    weights = np.asarray(metrics.prior_weights(jnp.asarray(ab[None, None]), loaded))
    np.testing.assert_allclose(weights[0, 0], [1.0, 1.0, 1.0, 3.0], rtol=1e-6)


def test_ab_prior_file_errors(tmp_path):
    prior = ab_prior.from_ab(np.array([[1.0, 1.0], [14.0, -4.0]]))
    np.savez(tmp_path / "bad.npz", ab_centers=prior.ab_centers, probs=prior.probs)
    with pytest.raises(ValueError, match="lacks"):
        ab_prior.load(str(tmp_path / "bad.npz"))
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        ab_prior.load(str(tmp_path / "missing.npz"))
    ab_prior.save(str(tmp_path / "short.npz"), prior._replace(probs=prior.probs[:3]))
    with pytest.raises(ValueError, match=r"\(Q, 2\)"):
        ab_prior.load(str(tmp_path / "short.npz"))
    with pytest.raises(ValueError, match="one non-negative count per bin"):
        ab_prior.from_counts(np.zeros(2), prior.ab_centers[:2])


# --- one evaluation core: training's validation and evaluate ---------------------------------


def test_training_validation_and_evaluate_compute_the_ab_errors_alike(lab_batch):
    """step.eval_step (training's validation) and evaluate's eval_step score the same
    predictions with the same sums: the ab errors agree to the last bit, padding row and gray
    baseline included."""
    import functools
    from types import SimpleNamespace

    import jax

    from jaxcolor import color, evaluate, step

    l, ab_true, ab_pred, weight = (np.asarray(x, np.float32) for x in lab_batch)
    batch = {"L": l / color.L_SCALE, "ab": ab_true / color.AB_SCALE, "weight": weight}
    pred = jnp.asarray(ab_pred / color.AB_SCALE)
    state = SimpleNamespace(apply_fn=lambda variables, x, train: pred, params={},
                            batch_stats={})
    zero_loss = lambda out, ab, w: jnp.float32(0.0)  # noqa: E731
    val = jax.jit(lambda b: step.eval_step(state, b, loss_fn=zero_loss))(batch)
    ev = jax.jit(functools.partial(evaluate.eval_step, lambda variables, x: pred, {}))(batch)
    for key in ("count", "ab_abs", "ab_sq"):
        assert float(val[key]) == float(ev["model"][key]), key
        if key != "count":
            assert float(val[f"gray_{key}"]) == float(ev["gray"][key]), key
    summary, scores = step.summarize_eval(val), metrics.summarize(ev["model"])
    assert summary["ab_mae"] == scores["ab_mae"] and summary["ab_rmse"] == scores["ab_rmse"]
    assert summary["gray_ab_mae"] == metrics.summarize(ev["gray"])["ab_mae"]
    assert summary["count"] == scores["count"] == 3


def test_a_split_with_no_image_scores_nan_never_zero():
    """No image scored is no number (the callers' pipeline.count_skipped then raises
    NothingEvaluatedError), not the perfect 0 error that dividing by max(count, 1) gave."""
    from jaxcolor import step

    val = step.summarize_eval({k: 0.0 for k in ("count", "loss", "ab_abs", "ab_sq",
                                                "gray_ab_abs", "gray_ab_sq")})
    assert val["count"] == 0
    assert all(math.isnan(val[k]) for k in val if k != "count"), val
    l, ab, w = np.zeros((1, 8, 8, 1), np.float32), np.zeros((1, 8, 8, 2), np.float32), np.zeros(1)
    scores = metrics.summarize(metrics.batch_sums_jit(l, ab, ab, w.astype(np.float32)))
    assert scores["count"] == 0
    assert all(math.isnan(v) for k, v in scores.items() if k != "count"), scores


def test_wrong_hue_share_by_hand():
    """Four pixels per image: a hue 180 degrees off (wrong), 60 degrees off (right), one too
    gray in the prediction (not counted) and 100 degrees off (wrong); the padded row holds only
    wrong hues and must not count. Pooled: 2 wrong of 3 eligible."""
    ab_true = np.array([[40.0, 0.0], [40.0, 0.0], [40.0, 0.0], [30.0, 10.0]], np.float32)
    ab_pred = np.array([[-40.0, 0.0], [20.0, 34.64], [5.0, 5.0],
                        [30.0 * np.cos(np.radians(118.4)), 30.0 * np.sin(np.radians(118.4))]],
                       np.float32)
    assert np.degrees(np.arctan2(ab_pred[3, 1], ab_pred[3, 0]) - np.arctan2(10, 30)) > 90
    def image(pixels):  # 2x2 pixels, each a 4x4 block: 8x8, enough for SSIM's 7x7 window
        return np.repeat(np.repeat(pixels.reshape(2, 2, 2), 4, axis=0), 4, axis=1)

    ab_true = np.stack([image(ab_true), image(ab_true)])
    ab_pred = np.stack([image(ab_pred), -ab_true[0]])
    l = np.full((2, 8, 8, 1), 50.0, np.float32)
    weight = np.array([1.0, 0.0], np.float32)
    wrong, eligible = metrics.wrong_hue_pixels(jnp.asarray(ab_pred), jnp.asarray(ab_true))
    assert np.asarray(wrong[0]).sum() == 2 * 16 and np.asarray(eligible[0]).sum() == 3 * 16
    sums = metrics.batch_sums(l, ab_true, ab_pred, weight)
    assert float(sums["hue_wrong"]) == 32 and float(sums["hue_eligible"]) == 48
    assert metrics.summarize(sums)["wrong_hue"] == pytest.approx(2 / 3)
    gray = metrics.summarize(metrics.batch_sums(l, ab_true, np.zeros_like(ab_pred), weight))
    assert math.isnan(gray["wrong_hue"])  # nothing colored in the prediction: no share to give
