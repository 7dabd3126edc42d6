"""The reference work's transfer recipe: ResNet50 (ImageNet, Keras weights) cut at
conv2_block1_out under the reference decoder, on CelebA with the reference's data recipe.

Point `--config.model.weights` at Keras' `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`
(or a `python -m jaxcolor.port` directory); `--config.model.weights=none` trains from random
weights (with a warning) so the recipe can be tried anywhere. The reference froze the first
layers; here the stem (conv1) is frozen, `--config.model.freeze=encoder` freezes all it uses.
The reference fed L/100 three times; `--config.model.input_mode=l_repeat` reproduces that, the
default feeds the gray RGB image L stands for, preprocessed as the ImageNet weights expect.
"""

from jaxcolor.configs.reference import get_transfer_config


def get_config():
    return get_transfer_config("resnet50_seed")
