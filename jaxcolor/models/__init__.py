"""Models by name: `MODELS[config.model.name]` is the `Entry` (build, pretrained-weight loading,
parameter labels, input size multiple) that the model's module defines. Adding a model is adding
its module and a line here.

- `autoencoder`: the reference work's skip autoencoder (`width` scales its channels).
- `resnet50_seed`: the reference's transfer model, ResNet50 up to conv2_block1_out + its decoder.
- `resnet50_unet`: a U-Net decoder over ResNet50 taps down to 1/16 resolution.
The ResNet50 colorizers take `weights` (Keras ImageNet .h5 or a `jaxcolor.port` directory; 'none'
for random initialisation), `freeze` and `input_mode` from the model config.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxcolor.models import autoencoder, colorizers
from jaxcolor.models.autoencoder import AUTO_OPS  # noqa: F401  (public name)
from jaxcolor.models.entry import Entry

MODELS: dict[str, Entry] = {
    "autoencoder": autoencoder.ENTRY,
    "resnet50_seed": colorizers.SEED,
    "resnet50_unet": colorizers.UNET,
}
MODEL_NAMES = tuple(MODELS)

# Compute dtypes of activations; parameters, BatchNorm statistics, optimizer state and the loss
# stay float32. float16 is not offered: it needs loss scaling, bfloat16 does not.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

autoencoder_ops = autoencoder.resolve_ops  # `config.model.ops` with 'auto' resolved


def compute_dtype(name: str):
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"config.dtype={name!r}: expected one of {sorted(DTYPES)}") from None


def entry(name: str) -> Entry:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            f"config.model.name={name!r}: expected one of {list(MODEL_NAMES)}") from None


def build_model(model_config, dtype: str = "float32", bn_axis_name: str | None = None,
                output_channels: int = 2, output_stride: int = 1):
    """The Flax module named by `model_config.name`; `output_channels` and `output_stride` make
    its head a classifier (see `jaxcolor.losses.head`)."""
    return entry(model_config.name).build(model_config, compute_dtype(dtype), bn_axis_name,
                                          output_channels, output_stride)


def param_labels_fn(model_config):
    """For optax.multi_transform: params -> 'train'/'freeze' labels, or None if nothing is frozen."""
    return entry(model_config.name).param_labels(model_config)


def load_pretrained_weights(model_config, variables: dict) -> dict:
    """Puts the configured pretrained weights into freshly initialised `variables` (host arrays)."""
    return entry(model_config.name).load(model_config, variables)
