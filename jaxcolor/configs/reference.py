"""The reference work's exact data and training recipe on CelebA (its skip autoencoder).

Experiment files for other models start from this one and change the model.

Folder source on CelebA's `img_align_celeba` (point `--config.data.path` at it), the reference's
TFDS slices (test [:10%], validation [10%:25%], train [25%:]), center crop/pad 150 -> 128,
+-15 degree rotations, batch 64, Adam 1e-3, the `2 ** mean|d|` loss, early stopping with patience 3.
"""

import os

from jaxcolor.configs.default import get_config as _default


def get_config():
    c = _default()
    c.data.source = "folder"
    c.data.path = "img_align_celeba"
    c.data.train_split = "[25%:]"
    c.data.val_split = "[10%:25%]"
    c.data.test_split = "[:10%]"
    c.data.crop = 150
    c.data.image_size = 128
    c.data.rotate_degrees = 15.0
    c.data.hflip = False
    c.data.worker_count = 4
    c.model.width = 1.0
    c.loss.name = "reference"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_steps = 0
    c.batch_size = 64
    c.num_steps = 100_000  # an upper bound: early stopping ends the run
    c.eval_every = 2_000
    c.checkpoint_every = 2_000
    c.patience = 3
    return c


def get_transfer_config(model_name: str):
    """The reference recipe with a ResNet50 colorizer: Keras' notop ImageNet file from
    `~/.keras/models/` (override with `--config.model.weights`, or `none`), the stem frozen, the
    encoder fed the gray RGB image that L stands for."""
    c = get_config()
    c.model.name = model_name
    c.model.weights = os.path.expanduser(
        "~/.keras/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    c.model.freeze = "stem"
    c.model.input_mode = "gray_rgb"
    return c


# The 10,000 half-resolution CelebA photos (89x109 JPEG) in `../shared` beside a checkout.
CELEBA_10K = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data",
                          "celeba-10k", "img_align_celeba")


def get_celeba10k_config():
    """The reference recipe on the 10,000 half-resolution CelebA photos: center crop/pad 75 -> 64
    (the reference's 150 -> 128 at half resolution), otherwise unchanged. Here rather than in
    `experiments/celeba10k.py` so that experiments built on it import it from the package, not
    from each other's files."""
    c = get_config()
    c.data.path = os.path.abspath(CELEBA_10K)
    c.data.crop = 75
    c.data.image_size = 64
    c.data.worker_count = 1
    c.data.eval_examples = 512  # of the 1,500 validation photos, to keep evaluations short on CPU
    c.num_steps = 3_000
    c.eval_every = 100
    c.checkpoint_every = 100
    return c
