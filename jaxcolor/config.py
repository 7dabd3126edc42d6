"""Configs: checking one before anything runs, overriding fields from the command line, and
reading a saved one with the defaults of fields added since (`jaxcolor.runs.read_config`).

A bad value found after XLA compiled the step (minutes on a large model) or after the workdir
was written (a `config.json` holding `batch_size=-8` makes the corrected rerun look like a config
change) costs the user time and, worse, trust. `validate` looks at every field the trainer reads
and raises `ConfigError` with one line naming the first wrong field (`config.data.image_size`,
not the model's internal requirement) and what was expected. `train` calls it before it creates,
locks or writes anything.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any, Mapping, Sequence

import ml_collections

SOURCES = ("sample", "folder", "shards", "tfds")


class ConfigError(ValueError):
    """A config field with a value the framework cannot run with."""


def _int(config, field: str, minimum: int) -> int:
    value = _get(config, field)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"config.{field}={value!r}: expected an integer >= {minimum}")
    if value < minimum:
        raise ConfigError(f"config.{field}={value}: expected an integer >= {minimum}")
    return int(value)


def _float(config, field: str, minimum: float = 0.0, positive: bool = False,
           below: float | None = None) -> float:
    value = _get(config, field)
    what = (f"a finite number {'>' if positive else '>='} {minimum:g}"
            + (f" and < {below:g}" if below is not None else ""))
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"config.{field}={value!r}: expected {what}")
    bad = (not math.isfinite(value) or value < minimum or (positive and value <= minimum)
           or (below is not None and value >= below))
    if bad:
        raise ConfigError(f"config.{field}={value!r}: expected {what}")
    return float(value)


def _choice(config, field: str, choices) -> str:
    value = _get(config, field)
    if value not in choices:
        raise ConfigError(f"config.{field}={value!r}: expected one of {', '.join(map(repr, choices))}")
    return value


def _get(config, field: str):
    node = config
    for part in field.split("."):
        node = node[part]
    return node


def validate(config) -> None:
    """Raises ConfigError naming the first field of `config` the trainer cannot run with."""
    from jaxcolor import losses
    from jaxcolor.models import DTYPES, MODEL_NAMES, MODELS
    from jaxcolor.models.autoencoder import OPS

    _int(config, "seed", 0)
    _int(config, "batch_size", 1)
    _int(config, "num_steps", 1)
    for field in ("log_every", "eval_every", "checkpoint_every", "keep", "num_preview_images"):
        _int(config, field, 1)
    _int(config, "patience", 0)
    _int(config, "prefetch", 0)
    _choice(config, "dtype", tuple(DTYPES))
    _choice(config, "parallel", ("jit", "pmap"))

    source = _choice(config, "data.source", SOURCES)
    if source in ("folder", "shards"):
        path = _get(config, "data.path")
        what = ("a directory of JPEG/PNG images" if source == "folder" else
                "the --out directory of `python -m jaxcolor.prepare shards`")
        if not path or not os.path.isdir(path):
            raise ConfigError(f"config.data.path={path!r}: expected {what} (config.data.source="
                              f"{source!r})" + ("" if not path or os.path.isabs(path) else
                                                f"; relative to {os.getcwd()}"))
    if source == "tfds" and not _get(config, "data.name"):
        raise ConfigError("config.data.name='': the tfds source needs a TFDS dataset name, "
                          "e.g. celeb_a")
    size = _int(config, "data.image_size", 1)
    _int(config, "data.crop", 0)
    _float(config, "data.rotate_degrees")
    _choice(config, "data.augment_on", ("host", "device"))
    _int(config, "data.worker_count", 0)
    _int(config, "data.worker_buffer_size", 1)
    _int(config, "data.eval_threads", 1)
    _int(config, "data.eval_examples", 0)
    _int(config, "data.sample_train_examples", 1)
    _int(config, "data.sample_eval_examples", 1)

    name = _choice(config, "model.name", MODEL_NAMES)
    if name == "autoencoder":
        _float(config, "model.width", positive=True)
        _choice(config, "model.ops", ("auto", *OPS))

    loss = _choice(config, "loss.name", (*losses.LOSSES, losses.CLASSIFICATION))
    stride = _int(config, "loss.output_stride", 1)
    if stride > 1 and loss != losses.CLASSIFICATION:
        raise ConfigError(f"config.loss.output_stride={stride}: only the classification loss "
                          "predicts at a reduced resolution; expected 1")
    if loss == losses.CLASSIFICATION:
        _float(config, "loss.grid", positive=True)
        _float(config, "loss.sigma", positive=True)
        _float(config, "loss.temperature")
        if not 0.0 <= _float(config, "loss.rebalance_lambda") <= 1.0:
            raise ConfigError(f"config.loss.rebalance_lambda={config.loss.rebalance_lambda}: "
                              "expected a number in [0, 1]")
        _int(config, "loss.neighbours", 1)
    multiple = math.lcm(MODELS[name].size_multiple, stride)  # the side the model's input needs
    if size % multiple:
        why = f"the {name} model" + (f" with loss.output_stride={stride}" if stride > 1 else "")
        raise ConfigError(f"config.data.image_size={size}: {why} needs a multiple of {multiple} "
                          f"(e.g. {max(multiple, size // multiple * multiple)} or "
                          f"{(size // multiple + 1) * multiple})")

    _choice(config, "optimizer.name", ("adam", "adamw", "sgd"))
    _choice(config, "optimizer.schedule", ("constant", "cosine"))
    _float(config, "optimizer.learning_rate", positive=True)
    _int(config, "optimizer.warmup_steps", 0)
    _float(config, "optimizer.b1", below=1.0)
    _float(config, "optimizer.b2", below=1.0)
    _float(config, "optimizer.weight_decay")
    _float(config, "optimizer.grad_clip")


def with_defaults(defaults: dict, saved: dict) -> dict:
    """A saved config (a run's config.json) with the defaults filling the fields it lacks (added
    to the code after the run was saved), section by section."""
    out = dict(defaults)
    for key, value in saved.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = with_defaults(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str] | Mapping[str, Any],
                    allowed: Sequence[str] = ("data",)) -> ml_collections.ConfigDict:
    """A copy of `config` with `KEY=VALUE` strings (or a {key: value} mapping) applied.

    Only keys under the `allowed` sections may change: the model and optimizer fields describe
    the checkpoint and must stay as trained. String values are converted to the type of the field
    they replace (int, float, bool or str).
    """
    config = ml_collections.ConfigDict(config.to_dict())
    items = overrides.items() if isinstance(overrides, Mapping) else map(_split_override, overrides)
    for key, value in items:
        section = key.split(".", 1)[0]
        if section not in allowed:
            raise ValueError(f"--{key}: only {', '.join(f'--{a}.*' for a in allowed)} can be "
                             "overridden (the rest describes the trained checkpoint)")
        *path, leaf = key.split(".")
        target = config
        for part in path:
            if part not in target or not isinstance(target[part], ml_collections.ConfigDict):
                raise ValueError(f"--{key}: {part!r} is not a config section")
            target = target[part]
        if leaf not in target:
            raise ValueError(f"--{key}: unknown field; {'.'.join(path)} has {sorted(target.keys())}")
        target[leaf] = _convert(key, value, target[leaf])
    return config


def _split_override(text: str) -> tuple[str, str]:
    key, sep, value = text.removeprefix("--").partition("=")
    if not sep or not key:
        raise ValueError(f"{text!r}: expected --section.field=value, e.g. --data.path=DIR")
    return key, value


def _convert(key: str, value: Any, current: Any) -> Any:
    if not isinstance(value, str) or isinstance(current, str) or current is None:
        return value
    try:
        if isinstance(current, bool):
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
            raise ValueError(value)
        return type(current)(value)
    except ValueError:
        raise ValueError(f"--{key}={value}: expected a {type(current).__name__}") from None
