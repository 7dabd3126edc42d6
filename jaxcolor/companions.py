"""Companions: networks trained in the same step as the colorizer, each with its own parameters,
batch statistics and optimizer, saved in the same checkpoint.

A GAN's discriminator is the companion colorization papers need (DeOldify, ChromaGAN, DDColor):
it learns from the colorizer's predictions and adds a term to the colorizer's loss. The step
(`jaxcolor.step.train_step`) knows companions only through `Companion`, so the train state, the
jit and pmap steps and the checkpoint carry any number of them the same way.

The one built in today is `probe` (`config.probe.enabled`): a linear probe, as in self-supervised
learning's linear evaluation (a BatchNorm without scale or bias, then a linear layer, MAE's
recipe), that maps each pixel's predicted ab to the true ab. It only watches, adds nothing to the
colorizer's loss and so leaves its training unchanged; its loss, logged as `probe_loss` beside
the colorizer's `ab_mae`, is the error left after the best per-pixel affine recoloring of the
predictions: a prediction that is right but desaturated (the reference work's sepia) is fixed by
a gain above 1, and the gap between the two numbers shows how much of the error is of that kind.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp
import optax

from jaxcolor import color


@dataclasses.dataclass(frozen=True)
class Companion:
    """What the step needs to train one companion network.

    `inputs(batch, ab_pred)` builds the companion's input from the batch and the colorizer's
    prediction (ab/128, already decoded); `loss(outputs, batch)` is what the companion minimises
    (the prediction it saw carries no gradient to the colorizer); `colorizer_loss(outputs, batch)`,
    if set, is the weighted term the colorizer minimises through the same companion (its
    parameters held fixed for that gradient). `example_input(image_size)` shapes the init.
    """

    model: nn.Module
    tx: optax.GradientTransformation
    example_input: Callable[[int], jnp.ndarray]
    inputs: Callable
    loss: Callable
    colorizer_loss: Callable | None = None


class LinearProbe(nn.Module):
    """Per pixel: BatchNorm (no scale, no bias: it only standardises) then a linear map to ab."""

    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False,
                         axis_name=self.axis_name if train else None)(x.astype(jnp.float32))
        # Zero-initialised: the probe starts at the gray baseline (a = b = 0) and learns from there.
        return nn.Dense(2, kernel_init=nn.initializers.zeros)(x)


def _probe_loss(outputs, batch):
    """Mean |ab| error of the probe's recoloring, in LAB units (comparable with `ab_mae`)."""
    return jnp.abs(outputs - batch["ab"].astype(jnp.float32)).mean() * color.AB_SCALE


def probe(settings, axis_name: str | None) -> Companion:
    return Companion(
        model=LinearProbe(axis_name=axis_name),
        tx=optax.adam(settings.learning_rate),
        example_input=lambda size: jnp.zeros((1, size, size, 2), jnp.float32),
        inputs=lambda batch, ab_pred: ab_pred,
        loss=_probe_loss,
    )


def build(config, axis_name: str | None = None) -> dict[str, Companion]:
    """The companions `config` asks for, by name (the key of each in the train state)."""
    out = {}
    if config.get("probe") is not None and config.probe.enabled:
        out["probe"] = probe(config.probe, axis_name)
    return out
