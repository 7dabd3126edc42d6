"""The reference work's exact recipe for its skip autoencoder on CelebA: folder source on
`img_align_celeba` (point `--config.data.path` at it), the reference's TFDS slices, center
crop/pad 150 -> 128, +-15 degree rotations, batch 64, Adam 1e-3, the `2 ** mean|d|` loss and early
stopping with patience 3. The recipe itself lives in `jaxcolor/configs/reference.py`."""

from jaxcolor.configs.reference import get_config  # noqa: F401
