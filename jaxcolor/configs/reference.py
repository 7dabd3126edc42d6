"""The reference work's exact data and training recipe on CelebA (its skip autoencoder).

Experiment files for other models start from this one and change the model.

Folder source on CelebA's `img_align_celeba` (point `--config.data.path` at it), the reference's
TFDS slices (test [:10%], validation [10%:25%], train [25%:]), center crop/pad 150 -> 128,
+-15 degree rotations, batch 64, Adam 1e-3, the `2 ** mean|d|` loss, early stopping with patience 3.
"""

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
    import os

    c = get_config()
    c.model.name = model_name
    c.model.weights = os.path.expanduser(
        "~/.keras/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    c.model.freeze = "stem"
    c.model.input_mode = "gray_rgb"
    return c
