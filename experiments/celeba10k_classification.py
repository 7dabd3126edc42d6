"""celeba10k.py with Zhang et al.'s (2016) classification loss: per pixel, a distribution over the
261 sRGB-reachable bins of a 10-unit ab grid, soft-encoded targets (5 nearest bins, sigma 5), the
cross-entropy class-rebalanced with lambda = 0.5 against the training split's smoothed prior
(counted into WORKDIR/data/ab_prior.npz at the start of training if `python -m jaxcolor.prepare
ab-prior` has not done it), decoded by the annealed mean at T = 0.38, predicted at 1/4 resolution (16x16 for the 64x64
input; the Q-channel output layer at full resolution made a CPU step 4x slower) and upsampled. See experiments/RESULTS.md,
"Vivid colors", for what it changes against the reference loss and L1."""

from jaxcolor.configs.reference import get_celeba10k_config as _celeba10k


def get_config():
    c = _celeba10k()
    c.loss.name = "classification"
    c.loss.grid = 10.0
    c.loss.rebalance_lambda = 0.5
    c.loss.sigma = 5.0
    c.loss.neighbours = 5
    c.loss.temperature = 0.38
    c.loss.output_stride = 4  # as Zhang et al.: one distribution per 4x4 block, upsampled
    return c
