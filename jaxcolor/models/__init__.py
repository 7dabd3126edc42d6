"""Models by name: `build_model(config.model, dtype=..., bn_axis_name=...)`."""

from __future__ import annotations

import jax.numpy as jnp

from jaxcolor.models.autoencoder import SkipAutoencoder

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str):
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"config.dtype={name!r}: expected one of {sorted(DTYPES)}") from None


def build_model(model_config, dtype: str = "float32", bn_axis_name: str | None = None,
                output_channels: int = 2):
    """The Flax module named by `model_config.name`."""
    name = model_config.name
    if name == "autoencoder":
        return SkipAutoencoder(
            width=model_config.width,
            dtype=compute_dtype(dtype),
            bn_axis_name=bn_axis_name,
            output_channels=output_channels,
        )
    raise ValueError(f"config.model.name={name!r}: expected one of ['autoencoder']")
