"""A stronger transfer colorizer: a U-Net decoder over ResNet50 taps at 1/2, 1/4, 1/8 and 1/16
resolution, on the reference's CelebA data recipe. ImageNet weights as in seed_resnet50.py
(`--config.model.weights=none` for random initialisation); the stem is frozen."""

from jaxcolor.configs.reference import get_transfer_config


def get_config():
    return get_transfer_config("resnet50_unet")
