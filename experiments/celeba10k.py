"""The reference recipe on the 10,000 half-resolution CelebA photos in ../shared (89x109 JPEG):
center crop/pad 75 -> 64 (the reference's 150 -> 128 at half resolution), otherwise unchanged."""

import os

from jaxcolor.configs.default import get_config as _default

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "celeba-10k",
                      "img_align_celeba")


def get_config():
    c = _default()
    c.data.source = "folder"
    c.data.path = os.path.abspath(SHARED)
    c.data.train_split = "[25%:]"
    c.data.val_split = "[10%:25%]"
    c.data.test_split = "[:10%]"
    c.data.crop = 75
    c.data.image_size = 64
    c.data.rotate_degrees = 15.0
    c.data.hflip = False
    c.data.worker_count = 1
    c.data.eval_examples = 512
    c.model.width = 1.0
    c.loss.name = "reference"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_steps = 0
    c.batch_size = 64
    c.num_steps = 3_000
    c.eval_every = 100
    c.checkpoint_every = 100
    c.patience = 3
    return c
