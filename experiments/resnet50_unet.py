"""A stronger transfer colorizer: a U-Net decoder over ResNet50 taps at 1/2, 1/4, 1/8 and 1/16
resolution, on the reference's CelebA data recipe. ImageNet weights as in seed_resnet50.py
(`--config.model.weights=none` for random initialisation); the stem is frozen."""

import os

from jaxcolor.configs.reference import get_config as _reference


def get_config():
    c = _reference()
    c.model.name = "resnet50_unet"
    c.model.weights = os.path.expanduser(
        "~/.keras/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    c.model.freeze = "stem"
    c.model.input_mode = "gray_rgb"
    return c
