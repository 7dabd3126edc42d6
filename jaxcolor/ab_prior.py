"""`python -m jaxcolor.prepare ab-prior --config CONFIG --workdir RUN` (also `python -m jaxcolor.ab_prior`)

The empirical distribution of ab bins over the training split, and the class-rebalancing weights
the `classification` loss multiplies each pixel's cross-entropy with (Zhang et al. 2016, eq. 4):

    p      = share of training pixels whose nearest bin is q (the pipeline's own decoding, center
             crop and resize; no augmentation), counted on device in float32
    p~     = p smoothed by a 2-D Gaussian of `config.loss.sigma` ab units (`ab_bins.smooth_prior`)
    w      ~ ((1 - lambda) p~ + lambda / Q)^-1, scaled so that E_p~[w] = 1

They are saved in the run's data directory, `RUN/data/ab_prior.npz` (no pickle), with what
determines them: the bin centers (`ab_centers`), `probs` (= p; with `ab_centers` this is also the
`--ab_prior` file `jaxcolor.evaluate` takes for the class-rebalanced AuC), `probs_smoothed`,
`weights`, `rebalance_lambda`, `sigma`, `pixels` counted, and a `key` string naming the data
config fields and a digest of the training file list. Training reads the file, and computes it
(with a progress bar) when it is missing or its key no longer matches the config: a stale prior is
never used silently.

`Prior` is the project's one ab prior: the loss's rebalancing weights and `evaluate`'s
class-rebalanced AuC (`--ab_prior FILE`, `jaxcolor.metrics.prior_weights`) read the same file,
on the same bins (`ab_bins.bins_for`: centers at multiples of `loss.grid`, a color counted in its
nearest bin). `from_ab` makes one from any set of ab values (e.g. a test set's), `save` writes it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import NamedTuple

import numpy as np

from jaxcolor import ab_bins, color
from jaxcolor import config as config_lib

log = logging.getLogger("jaxcolor")

FILENAME = "ab_prior.npz"
BATCH = 64  # images per counting batch
FROM_AB_CHUNK = 1 << 16  # ab values per distance matrix in `from_ab`


class Prior(NamedTuple):
    ab_centers: np.ndarray  # (Q, 2) LAB units
    probs: np.ndarray  # (Q,) empirical
    probs_smoothed: np.ndarray  # (Q,)
    weights: np.ndarray  # (Q,) rebalancing weights, E_smoothed[w] = 1
    rebalance_lambda: float
    sigma: float
    pixels: int
    key: str


def default_path(workdir: str) -> str:
    """The run's data directory holds the prior: WORKDIR/data/ab_prior.npz."""
    return os.path.join(workdir, "data", FILENAME)


def prior_key(config) -> str:
    """What the counted prior depends on, as a JSON string: the bins, the training split and how
    its images are decoded (crop, size), and a digest of the training file list."""
    from jaxcolor.data import sources

    d = config.data
    records = sources.records_for(d, d.train_split)
    return json.dumps({
        "bins": str(config.loss.bins or ""), "grid": float(config.loss.grid),
        "source": d.source, "path": os.path.abspath(d.path) if d.path else "",
        "train_split": d.train_split, "crop": int(d.crop), "image_size": int(d.image_size),
        "records": len(records), "records_digest": sources.digest(records),
    }, sort_keys=True)


def count_bins(config, progress: bool = True) -> tuple[np.ndarray, int]:
    """Histogram (Q,) of nearest bins over every pixel of the training split, and the pixel
    count. Images go through the evaluation pipeline (decode, center crop/pad, resize; no random
    augmentation), 64 at a time; undecodable files are skipped as training skips them."""
    import jax
    import jax.numpy as jnp
    from tqdm import tqdm

    from jaxcolor.data import pipeline, sources

    centers = jnp.asarray(ab_bins.bins_for(config.loss))
    q = int(centers.shape[0])

    @jax.jit
    def histogram(ab, weight):
        flat = (ab * color.AB_SCALE).reshape(-1, 2)
        pixel_weight = jnp.repeat(weight, ab.shape[1] * ab.shape[2])
        return jnp.zeros((q,), jnp.float32).at[ab_bins.nearest_bin(flat, centers)].add(pixel_weight)

    records = sources.records_for(config.data, config.data.train_split)
    if not records:
        raise ValueError(f"split {config.data.train_split!r} of {config.data.source!r} is empty: "
                         "no pixels to count an ab prior on")
    counts = np.zeros((q,), np.float64)
    pixels = 0
    bar = tqdm(total=len(records), desc="ab prior", unit="img", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        for batch in pipeline.eval_batches(config.data, config.data.train_split, BATCH,
                                           records=records):
            # float64 on the host: per-batch counts are exact in float32 (< 2^24 pixels)
            counts += np.asarray(histogram(batch["ab"], batch["weight"]), np.float64)
            n = int(batch["weight"].sum())
            pixels += n * batch["ab"].shape[1] * batch["ab"].shape[2]
            bar.update(n)
    finally:
        bar.close()
    if pixels == 0:
        raise ValueError(f"no readable image in split {config.data.train_split!r}: cannot count "
                         "an ab prior")
    return counts, pixels


def from_counts(counts, centers, sigma: float = 5.0, rebalance_lambda: float = 0.5,
                pixels: int | None = None, key: str = "") -> Prior:
    """The prior of a histogram `counts` (Q,) over the bins `centers` (Q, 2), with its smoothing
    and rebalancing weights: the one derivation, for a training split's count (`compute`) and for
    any ab values (`from_ab`). Probabilities in place of counts give the same prior."""
    counts = np.asarray(counts, np.float64)
    centers = np.asarray(centers, np.float32)
    if counts.shape != (centers.shape[0],) or not counts.sum() > 0:
        raise ValueError(f"an ab prior needs one non-negative count per bin, not all zero; got "
                         f"{counts.shape} counts for {centers.shape[0]} bins")
    probs = counts / counts.sum()
    smoothed = ab_bins.smooth_prior(probs, centers, sigma)
    weights = ab_bins.rebalancing_weights(smoothed, rebalance_lambda)
    pixels = int(round(counts.sum())) if pixels is None else int(pixels)
    return Prior(centers, probs.astype(np.float32), smoothed.astype(np.float32),
                 weights.astype(np.float32), float(rebalance_lambda), float(sigma), pixels, key)


def from_ab(ab, centers=None, sigma: float = 5.0, rebalance_lambda: float = 0.5) -> Prior:
    """The prior of a set of ab values (any shape (..., 2), LAB units) on training's bins
    (`centers`, default `ab_bins.gamut_bins()`: multiples of 10 that sRGB reaches): each value is
    counted in its nearest bin, as `count_bins` counts a training split, so (4, 4) falls in the
    bin centered at (0, 0). Zhang et al.'s recipe on your own data, for `evaluate --ab_prior`."""
    import jax.numpy as jnp

    centers = ab_bins.gamut_bins() if centers is None else np.asarray(centers, np.float32)
    flat = np.asarray(ab, np.float32).reshape(-1, 2)
    counts = np.zeros(len(centers), np.int64)
    for start in range(0, len(flat), FROM_AB_CHUNK):  # bounds the (n, Q) distance matrix
        nearest = ab_bins.nearest_bin(jnp.asarray(flat[start:start + FROM_AB_CHUNK]), centers)
        counts += np.bincount(np.asarray(nearest), minlength=len(centers))
    return from_counts(counts, centers, sigma, rebalance_lambda)


def compute(config, progress: bool = True) -> Prior:
    """Counts the prior over the training split and derives the rebalancing weights."""
    counts, pixels = count_bins(config, progress)
    return from_counts(counts, ab_bins.bins_for(config.loss), float(config.loss.sigma),
                       float(config.loss.rebalance_lambda), pixels, prior_key(config))


def save(path: str, prior: Prior) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, ab_centers=prior.ab_centers, probs=prior.probs,
             probs_smoothed=prior.probs_smoothed, weights=prior.weights,
             rebalance_lambda=np.float64(prior.rebalance_lambda), sigma=np.float64(prior.sigma),
             pixels=np.int64(prior.pixels), key=np.str_(prior.key))
    os.replace(tmp, path)  # a reader never sees half a file


def load(path: str) -> Prior:
    """Reads a prior file written by `save` (no pickle), checking its shapes and values: the
    loss and `evaluate --ab_prior` both read priors through here."""
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = set(Prior._fields) - set(f.files)
            if missing:
                raise ValueError(f"{path}: not an ab prior written by jaxcolor.ab_prior (lacks "
                                 f"{sorted(missing)}; make one with `prepare ab-prior` or "
                                 "ab_prior.save(path, ab_prior.from_ab(ab_values))")
            prior = Prior(f["ab_centers"], f["probs"], f["probs_smoothed"], f["weights"],
                          float(f["rebalance_lambda"]), float(f["sigma"]), int(f["pixels"]),
                          str(f["key"]))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such ab prior file") from None
    q = prior.ab_centers.shape[0]
    if prior.ab_centers.shape != (q, 2) or any(
            a.shape != (q,) for a in (prior.probs, prior.probs_smoothed, prior.weights)):
        raise ValueError(f"{path}: ab_centers must be (Q, 2) and probs, probs_smoothed, weights "
                         f"(Q,); got {prior.ab_centers.shape}, {prior.probs.shape}, "
                         f"{prior.probs_smoothed.shape}, {prior.weights.shape}")
    if not (np.all(np.isfinite(prior.probs)) and np.all(prior.probs >= 0)
            and prior.probs.sum() > 0):
        raise ValueError(f"{path}: probs must be finite, non-negative and not all zero")
    return prior


def mismatch(prior: Prior, config, key: str | None = None) -> str | None:
    """Why `prior` does not fit `config` (None if it does)."""
    centers = ab_bins.bins_for(config.loss)
    if prior.ab_centers.shape != centers.shape or not np.allclose(prior.ab_centers, centers):
        return f"its {len(prior.ab_centers)} bins are not the config's {len(centers)}"
    if not np.isclose(prior.sigma, config.loss.sigma):
        return f"sigma {prior.sigma} != config.loss.sigma {config.loss.sigma}"
    if not np.isclose(prior.rebalance_lambda, config.loss.rebalance_lambda):
        return (f"lambda {prior.rebalance_lambda} != config.loss.rebalance_lambda "
                f"{config.loss.rebalance_lambda}")
    key = prior_key(config) if key is None else key
    if prior.key != key:
        return f"it was counted on other data ({prior.key} != {key})"
    return None


def ensure(config, workdir: str, progress: bool = True, write: bool = True) -> Prior:
    """The prior a classification run trains with.

    `config.loss.prior` names a file to use as it is (its bins and lambda must fit the config).
    Otherwise WORKDIR/data/ab_prior.npz is read if it fits the config, else (missing or stale)
    counted now and written there (`write`: only the main process writes).
    """
    if config.loss.prior:
        path = config.loss.prior
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config.loss.prior={path!r}: no such file (make one with "
                                    "`python -m jaxcolor.prepare ab-prior --config ...`, or "
                                    "leave it empty to count the prior at the start of training)")
        prior = load(path)
        problem = mismatch(prior, config, key=prior.key)  # data may differ on purpose
        if problem:
            raise ValueError(f"config.loss.prior={path!r} does not fit the config: {problem}")
        return prior
    path = default_path(workdir)
    if os.path.isfile(path):
        prior = load(path)
        problem = mismatch(prior, config)
        if problem is None:
            log.info("ab prior: %s (%d bins, %d pixels)", path, len(prior.weights), prior.pixels)
            return prior
        log.warning("ab prior %s is stale (%s): counting it again", path, problem)
    else:
        log.info("ab prior: %s missing, counting it over the training split", path)
    prior = compute(config, progress)
    if write:
        save(path, prior)
    return prior


def summary(prior: Prior) -> str:
    w = prior.weights
    return (f"{len(w)} ab bins, {prior.pixels} pixels; {int((prior.probs > 0).sum())} bins seen; "
            f"weights (lambda {prior.rebalance_lambda}, sigma {prior.sigma}) from {w.min():.3f} "
            f"to {w.max():.3f}, E_p~[w] = {float(np.sum(prior.probs_smoothed * w)):.4f}")


def main(argv=None) -> int:
    """`prepare ab-prior`: count (or recount) the prior of a config into WORKDIR/data/."""
    parser = config_lib.command_parser(
        "python -m jaxcolor.prepare ab-prior",
        "Count the ab-bin prior of the training split and the class-rebalancing weights of the "
        "classification loss into WORKDIR/data/ab_prior.npz.",
        epilog="Any --config.SECTION.FIELD=VALUE overrides the config, as for jaxcolor.train.")
    parser.add_argument("--config", required=True, help="experiment config file (get_config())")
    parser.add_argument("--workdir", required=True,
                        help="the run's directory; the prior goes to WORKDIR/data/ab_prior.npz")
    parser.add_argument("--out", default=None, help="write here instead of WORKDIR/data/")
    args, overrides = config_lib.parse_with_overrides(parser, sys.argv[1:] if argv is None
                                                      else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config, overrides)
        prior = compute(config)
    except (FileNotFoundError, ValueError) as exc:
        config_lib.usage_error(exc)
    path = args.out or default_path(args.workdir)
    save(path, prior)
    print(f"wrote {path}: {summary(prior)}")
    return 0


def load_config(path: str, overrides=()):
    """A config file's `get_config()` with overrides, `--config.a.b=value` strings or the
    (KEY, VALUE) pairs of `jaxcolor.config.split_config_overrides` (types as the field's)."""
    import importlib.util

    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config={path}: no such config file")
    spec = importlib.util.spec_from_file_location("_jaxcolor_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    if any(isinstance(item, str) for item in overrides):  # command-line strings
        overrides, rest = config_lib.split_config_overrides(overrides)
        if rest:
            raise config_lib.ConfigError(f"{rest[0]!r}: expected --config.SECTION.FIELD=VALUE")
    return config_lib.apply_config_overrides(config, overrides)


if __name__ == "__main__":
    sys.exit(main())
