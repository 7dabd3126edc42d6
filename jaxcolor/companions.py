"""Companions: networks trained in the same step as the colorizer, each with its own parameters,
batch statistics and optimizer, saved in the same checkpoint.

A GAN's discriminator is the companion colorization papers need (DeOldify, ChromaGAN, DDColor):
it learns from the colorizer's predictions and adds a term to the colorizer's loss. The step
(`jaxcolor.step.train_step`) knows companions only through `Companion`, so the train state, the
jit and pmap steps and the checkpoint carry any number of them the same way.

`discriminator` is there when `config.loss.terms.adversarial` > 0: a conditional PatchGAN
(`jaxcolor.models.discriminator`) on (L, ab), real photos against the colorizer's predictions,
with hinge or least-squares losses (`config.discriminator.loss`), its own optimizer, and
DeOldify's NoGAN schedule (`generator_steps` of the colorizer alone, then
`discriminator_steps` of the discriminator alone, then both).

The other built in is `probe` (`config.probe.enabled`): a linear probe, as in self-supervised
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
import jax
import jax.numpy as jnp
import optax

from jaxcolor import color


@dataclasses.dataclass(frozen=True)
class Companion:
    """What the step needs to train one companion network.

    `inputs(batch, ab_pred)` builds the companion's input from the batch and the colorizer's
    prediction (ab/128, already decoded); `loss(outputs, batch) -> (loss, metrics)` is what the
    companion minimises (the prediction it saw carries no gradient to the colorizer), with
    metrics to log beside it; `colorizer_loss(outputs, batch)`, if set, is the weighted term the
    colorizer minimises through the same companion (its parameters held fixed for that
    gradient). `example_input(image_size)` shapes the init.

    Schedule, by the step count before the update: the companion trains from step `starts`; its
    term joins the colorizer's loss from step `term_starts`; in between the colorizer is held
    (DeOldify's NoGAN: the critic learns on a fixed generator first).
    """

    model: nn.Module
    tx: optax.GradientTransformation
    example_input: Callable[[int], jnp.ndarray]
    inputs: Callable
    loss: Callable
    colorizer_loss: Callable | None = None
    starts: int = 0
    term_starts: int = 0


class LinearProbe(nn.Module):
    """Per pixel: BatchNorm (no scale, no bias: it only standardises) then a linear map to ab."""

    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False,
                         axis_name=self.axis_name if train else None)(x.astype(jnp.float32))
        # Zero-initialised: the probe starts at the gray baseline (a = b = 0) and learns from there.
        return nn.Dense(2, kernel_init=nn.initializers.zeros)(x)


def _probe_error(outputs, batch):
    """Mean |ab| error of the probe's recoloring, in LAB units (comparable with `ab_mae`)."""
    return jnp.abs(outputs - batch["ab"].astype(jnp.float32)).mean() * color.AB_SCALE


def _probe_loss(outputs, batch):
    return _probe_error(outputs, batch), {}


def probe(settings, axis_name: str | None) -> Companion:
    return Companion(
        model=LinearProbe(axis_name=axis_name),
        tx=optax.adam(settings.learning_rate),
        example_input=lambda size: jnp.zeros((1, size, size, 2), jnp.float32),
        inputs=lambda batch, ab_pred: ab_pred,
        loss=_probe_loss,
    )


def _real_and_fake(batch, ab_pred):
    """The discriminator's input: the batch's real (L, ab) rows, then the same L with the
    predicted ab, in one batch of 2B."""
    l = batch["L"].astype(jnp.float32)
    real = jnp.concatenate([l, batch["ab"].astype(jnp.float32)], axis=-1)
    fake = jnp.concatenate([l, ab_pred.astype(jnp.float32)], axis=-1)
    return jnp.concatenate([real, fake], axis=0)


def _halves(outputs):
    n = outputs.shape[0] // 2
    return outputs[:n].astype(jnp.float32), outputs[n:].astype(jnp.float32)


GAN_LOSSES = ("hinge", "lsgan")


def discriminator_loss(kind: str):
    """The discriminator's loss on [real; fake] patch logits, and its accuracy on each half
    (real judged real: logit > 0 for hinge, > 0.5 for least squares, whose targets are 1 and 0)."""
    threshold = 0.0 if kind == "hinge" else 0.5

    def loss(outputs, batch):
        real, fake = _halves(outputs)
        if kind == "hinge":
            value = jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake))
        else:
            value = jnp.mean((real - 1.0) ** 2) + jnp.mean(fake**2)
        return value, {"acc_real": jnp.mean(real > threshold).astype(jnp.float32),
                       "acc_fake": jnp.mean(fake <= threshold).astype(jnp.float32)}

    return loss


def adversarial_term(kind: str, weight: float):
    """The colorizer's side: make the discriminator call its predictions real."""

    def term(outputs, batch):
        _, fake = _halves(outputs)
        value = -jnp.mean(fake) if kind == "hinge" else jnp.mean((fake - 1.0) ** 2)
        return weight * value

    return term


def discriminator(config, axis_name: str | None) -> Companion:
    from jaxcolor import losses
    from jaxcolor.models.discriminator import PatchDiscriminator

    d = config.discriminator
    del axis_name  # no BatchNorm: nothing to average but the gradients (the step does that)
    if d.optimizer == "sgd":
        tx = optax.sgd(d.learning_rate)
    else:
        tx = optax.adam(d.learning_rate, b1=d.b1, b2=d.b2)
    weight = losses.terms_of(config.loss)[losses.ADVERSARIAL]
    g, k = int(d.generator_steps), int(d.discriminator_steps)
    return Companion(
        model=PatchDiscriminator(width=int(d.width), layers=int(d.layers),
                                 spectral_norm=bool(d.spectral_norm)),
        tx=tx,
        example_input=lambda size: jnp.zeros((2, size, size, 3), jnp.float32),
        inputs=_real_and_fake,
        loss=discriminator_loss(d.loss),
        colorizer_loss=adversarial_term(d.loss, weight),
        starts=g,
        term_starts=g + k,
    )


def build(config, axis_name: str | None = None) -> dict[str, Companion]:
    """The companions `config` asks for, by name (the key of each in the train state)."""
    from jaxcolor import losses

    out = {}
    if losses.ADVERSARIAL in losses.terms_of(config.loss):
        out["discriminator"] = discriminator(config, axis_name)
    if config.get("probe") is not None and config.probe.enabled:
        out["probe"] = probe(config.probe, axis_name)
    return out
