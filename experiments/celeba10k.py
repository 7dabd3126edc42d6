"""The reference recipe on the 10,000 half-resolution CelebA photos in ../shared (89x109 JPEG):
center crop/pad 75 -> 64 (the reference's 150 -> 128 at half resolution), otherwise unchanged
(`jaxcolor.configs.reference.get_celeba10k_config`)."""

from jaxcolor.configs.reference import get_celeba10k_config as get_config  # noqa: F401
