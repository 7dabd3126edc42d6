"""What the framework needs of a model: one `Entry` per `config.model.name` (see
`jaxcolor.models.MODELS`), defined by the model's own module."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Entry:
    # (model_config, compute dtype, bn_axis_name, output_channels, output_stride) -> Flax module
    build: Callable[..., Any]
    # (model_config, host variables {'params', 'batch_stats'}) -> them with the pretrained weights
    # in (the same object where there is nothing to load)
    load: Callable[[Any, dict], dict]
    # model_config -> (params -> 'train'/'freeze' labels for optax.multi_transform), or None if
    # every parameter trains
    param_labels: Callable[[Any], Callable | None]
    # the input's height and width must be multiples of this
    size_multiple: int


def no_pretrained_weights(model_config, variables: dict) -> dict:
    """`Entry.load` of a model trained from scratch: `variables` themselves."""
    return variables


def all_trainable(model_config) -> None:
    """`Entry.param_labels` of a model without frozen parameters."""
    return None
