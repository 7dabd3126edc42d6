"""The reference recipe on the 10,000 half-resolution CelebA photos in ../shared (89x109 JPEG):
center crop/pad 75 -> 64 (the reference's 150 -> 128 at half resolution), otherwise unchanged."""

import os

from jaxcolor.configs.reference import get_config as _reference

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "celeba-10k",
                      "img_align_celeba")


def get_config():
    c = _reference()
    c.data.path = os.path.abspath(SHARED)
    c.data.crop = 75
    c.data.image_size = 64
    c.data.worker_count = 1
    c.data.eval_examples = 512  # of the 1,500 validation photos, to keep evaluations short on CPU
    c.num_steps = 3_000
    c.eval_every = 100
    c.checkpoint_every = 100
    return c
