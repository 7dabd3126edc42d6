"""Models by name: `build_model(config.model, dtype=..., bn_axis_name=...)`.

- `autoencoder`: the reference work's skip autoencoder (`width` scales its channels).
- `resnet50_seed`: the reference's transfer model, ResNet50 up to conv2_block1_out + its decoder.
- `resnet50_unet`: a U-Net decoder over ResNet50 taps down to 1/16 resolution.
The ResNet50 colorizers take `weights` (Keras ImageNet .h5 or a `jaxcolor.port` directory; 'none'
for random initialisation), `freeze` and `input_mode` from the model config.
"""

from __future__ import annotations

import logging

import jax.numpy as jnp

from jaxcolor.models.autoencoder import SkipAutoencoder

log = logging.getLogger(__name__)

# Compute dtypes of activations; parameters, BatchNorm statistics, optimizer state and the loss
# stay float32. float16 is not offered: it needs loss scaling, bfloat16 does not.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# The autoencoder's `ops` (see models/autoencoder.OPS) that 'auto' picks per backend: the fastest
# measured there (benchmarks/RESULTS.md: 'phase' on XLA:CPU and on an H100; no TPU measurement).
AUTO_OPS = {"cpu": "phase", "gpu": "phase"}
MODEL_NAMES = ("autoencoder", "resnet50_seed", "resnet50_unet")


def compute_dtype(name: str):
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"config.dtype={name!r}: expected one of {sorted(DTYPES)}") from None


def autoencoder_ops(name: str) -> str:
    """`config.model.ops`, with 'auto' resolved for the backend JAX runs on."""
    if name != "auto":
        return name
    import jax

    return AUTO_OPS.get(jax.default_backend(), "phase")


def build_model(model_config, dtype: str = "float32", bn_axis_name: str | None = None,
                output_channels: int = 2, output_stride: int = 1):
    """The Flax module named by `model_config.name`; `output_channels` and `output_stride` make
    its head a classifier (see `jaxcolor.losses.head`)."""
    name = model_config.name
    if name == "autoencoder":
        return SkipAutoencoder(
            width=model_config.width,
            dtype=compute_dtype(dtype),
            bn_axis_name=bn_axis_name,
            output_channels=output_channels,
            ops=autoencoder_ops(model_config.get("ops", "auto")),
            output_stride=output_stride,
        )
    if name in ("resnet50_seed", "resnet50_unet"):
        from jaxcolor.models import colorizers

        cls = colorizers.ResNet50Seed if name == "resnet50_seed" else colorizers.ResNet50UNet
        return cls(
            dtype=compute_dtype(dtype),
            bn_axis_name=bn_axis_name,
            freeze=model_config.freeze,
            input_mode=model_config.input_mode,
            output_channels=output_channels,
            output_stride=output_stride,
        )
    raise ValueError(f"config.model.name={name!r}: expected one of {list(MODEL_NAMES)}")


def param_labels_fn(model_config):
    """For optax.multi_transform: params -> 'train'/'freeze' labels, or None if nothing is frozen."""
    freeze = model_config.get("freeze", "none")
    if model_config.name == "autoencoder" or freeze in ("", "none"):
        return None
    from jaxcolor.models import colorizers

    colorizers.parse_freeze(freeze)  # fail early on a bad spec
    return lambda params: colorizers.param_labels(params, freeze)


def load_pretrained_weights(model_config, variables: dict) -> dict:
    """Puts the configured encoder weights into freshly initialised `variables` (host arrays)."""
    weights = str(model_config.get("weights", "none") or "none")
    if model_config.name == "autoencoder":
        return variables
    if weights.lower() == "none":
        log.warning("config.model.weights=none: the %s encoder starts from random weights, not "
                    "ImageNet", model_config.name)
        return variables
    from jaxcolor.models import colorizers

    return colorizers.load_encoder_weights(variables, weights)
