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
    from jaxcolor.models import DTYPES, MODELS

    _int(config, "seed", 0)
    _int(config, "batch_size", 1)
    _int(config, "num_steps", 1)
    for field in ("log_every", "eval_every", "checkpoint_every", "keep", "num_preview_images"):
        _int(config, field, 1)
    _int(config, "patience", 0)
    _int(config, "prefetch", 0)
    _choice(config, "dtype", tuple(DTYPES))
    _choice(config, "parallel", ("jit", "pmap"))
    size = _validate_data(config)
    name = _validate_model(config)
    stride = _validate_loss(config)
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
    if config.get("probe") is not None and _get(config, "probe.enabled"):
        _float(config, "probe.learning_rate", positive=True)


def _validate_data(config) -> int:
    """The data section; returns the image size."""
    from jaxcolor.data import sources

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
    if config.data.get("min_colorfulness") is not None:  # configs saved before it have none
        _float(config, "data.min_colorfulness")
    try:
        sources.filters_colorfulness(config.data, config.data.train_split)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if source == "folder":  # a split folder that is not there, named before anything is written
        try:
            files = sources.list_image_files(path)
        except FileNotFoundError:
            files = None  # no images at all: the folder source says so where it lists them
        for field in ("data.train_split", "data.val_split") if files else ():
            try:
                sources.folder_records(path, _get(config, field), files)
            except ValueError as exc:
                raise ConfigError(f"config.{field}: {exc}") from None

    return size


def _validate_model(config) -> str:
    from jaxcolor.models import MODEL_NAMES
    from jaxcolor.models.autoencoder import OPS

    name = _choice(config, "model.name", MODEL_NAMES)
    if name == "autoencoder":
        _float(config, "model.width", positive=True)
        _choice(config, "model.ops", ("auto", *OPS))

    return name


def _validate_loss(config) -> int:
    """The objective's terms and heads, and the networks they need; returns the output stride."""
    from jaxcolor import losses

    _choice(config, "loss.name", (*losses.LOSSES, losses.CLASSIFICATION))
    for term, weight in dict(config.loss.get("terms") or {}).items():
        if term not in losses.TERMS:
            raise ConfigError(f"config.loss.terms.{term}: unknown term; expected one of "
                              f"{', '.join(losses.TERMS)}")
        _float(config, f"loss.terms.{term}")
    terms = losses.terms_of(config.loss)
    if set(terms) == {losses.ADVERSARIAL}:
        raise ConfigError("config.loss.terms: only 'adversarial' is set; the colorizer needs a "
                          "regression or classification term too")
    if losses.PERCEPTUAL in terms:
        from jaxcolor.models import vgg16

        path = _get(config, "loss.vgg16_weights")
        if not path or not os.path.isfile(os.path.expanduser(path)):
            raise ConfigError(
                f"config.loss.vgg16_weights={path!r}: the perceptual term needs Keras' VGG16 "
                f"ImageNet weights, {vgg16.KERAS_FILE} (keras.applications.VGG16("
                "weights='imagenet', include_top=False) downloads it to ~/.keras/models/)")
        for tap in str(_get(config, "loss.perceptual_layers")).split(","):
            if tap.strip() not in vgg16.LAYERS:
                raise ConfigError(f"config.loss.perceptual_layers: {tap.strip()!r} is not one "
                                  f"of {', '.join(vgg16.LAYERS)}")
    if losses.ADVERSARIAL in terms:
        from jaxcolor.companions import GAN_LOSSES

        _int(config, "discriminator.width", 1)
        _int(config, "discriminator.layers", 1)
        _choice(config, "discriminator.loss", GAN_LOSSES)
        _choice(config, "discriminator.optimizer", ("adam", "sgd"))
        _float(config, "discriminator.learning_rate", positive=True)
        _float(config, "discriminator.b1", below=1.0)
        _float(config, "discriminator.b2", below=1.0)
        _int(config, "discriminator.generator_steps", 0)
        _int(config, "discriminator.discriminator_steps", 0)
    if config.loss.get("target_saturation") is not None:
        _float(config, "loss.target_saturation", positive=True)
    if config.loss.get("decode") is not None:
        _choice(config, "loss.decode", losses.DECODE_HEADS)
    stride = _int(config, "loss.output_stride", 1)
    classifies = losses.is_classification(config.loss)
    if stride > 1 and (not classifies or losses.has_regression_head(config.loss)):
        raise ConfigError(f"config.loss.output_stride={stride}: only the classification loss "
                          "alone predicts at a reduced resolution; expected 1")
    if classifies:
        _float(config, "loss.grid", positive=True)
        _float(config, "loss.sigma", positive=True)
        _float(config, "loss.temperature")
        if not 0.0 <= _float(config, "loss.rebalance_lambda") <= 1.0:
            raise ConfigError(f"config.loss.rebalance_lambda={config.loss.rebalance_lambda}: "
                              "expected a number in [0, 1]")
        _int(config, "loss.neighbours", 1)
    return stride


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


# ---------------------------------------------------------------------------------------------
# Command lines: the one override syntax and the one way a usage error is reported, shared by
# every command (train's flags are absl's, the others' argparse's; both end up here).


def exit_with(message, status: int) -> None:
    """Prints `error: MESSAGE` as one line on stderr and exits with `status`; does not return.
    stdout is flushed first, so nothing a command printed before lands after the line."""
    import sys

    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def usage_error(message) -> None:
    """A usage error of any command: `error: MESSAGE`, one line on stderr (naming the flag, file
    or config field and what was expected), then exit status 2, before anything was written.
    One line, not argparse's usage block, where the line that matters comes last; does not
    return (SystemExit(2), like argparse's own errors)."""
    exit_with(message, 2)


def command_parser(prog: str, description: str, **kwargs):
    """An `argparse.ArgumentParser` whose errors are `usage_error`s: one line naming the flag and
    what was expected, with the closest known flag for a misspelt one (`--max-pixels`: did you
    mean --max_pixels?). Flags must be spelt out, as absl's are for train: no abbreviations."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False,
                                     **kwargs)
    parser.error = lambda message: usage_error(_with_suggestions(parser, message))
    return parser


def _with_suggestions(parser, message: str) -> str:
    """argparse's error message, with "did you mean" for each unrecognized flag that is close to
    a documented one, and where the flags are listed."""
    import argparse
    import difflib

    known = [s[2:] for action in parser._actions if action.help is not argparse.SUPPRESS
             for s in action.option_strings if s.startswith("--")]
    head, sep, args = message.partition("unrecognized arguments: ")
    hints = []
    for arg in args.split() if sep and not head else ():
        flag = arg.split("=")[0]
        close = difflib.get_close_matches(flag[2:], known, n=1, cutoff=0.7)
        if flag.startswith("--") and close:
            hints.append(f"{flag}: did you mean --{close[0]}?")
    return "; ".join([message, *hints]) + f" (see {parser.prog} --help)"


def split_config_overrides(argv: Sequence[str], legacy_sections: Sequence[str] = ()
                           ) -> tuple[list[tuple[str, str]], list[str]]:
    """The `--config.KEY=VALUE` (or `--config.KEY VALUE`) arguments of a command line, as
    (KEY, VALUE) pairs, and the other arguments, both in order: train's override syntax (that of
    ml_collections' config_flags) for the commands whose other flags argparse parses.

    `legacy_sections`: sections whose `--SECTION.FIELD=VALUE` an earlier version accepted
    (evaluate's `--data.path=DIR`), still read, as `--config.SECTION.FIELD`, so that existing
    scripts keep working. Arguments after `--` are left alone. A `--config.KEY` with no value is a
    ConfigError naming it.
    """
    prefixes = ("--config.", *(f"--{s}." for s in legacy_sections))
    overrides, rest, args = [], [], list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            rest += [arg, *args]
            break
        if not arg.startswith(prefixes):
            rest.append(arg)
            continue
        key, sep, value = arg.removeprefix("--config.").removeprefix("--").partition("=")
        if not sep and args and not args[0].startswith("--"):
            sep, value = "=", args.pop(0)
        if not sep or not key:
            raise ConfigError(f"{arg}: expected {arg.partition('=')[0]}=VALUE, e.g. "
                              "--config.data.path=DIR")
        overrides.append((key, value))
    return overrides, rest


def parse_with_overrides(parser, argv: Sequence[str], legacy_sections: Sequence[str] = ()):
    """(parser's namespace of the other arguments, the `--config.*` (KEY, VALUE) pairs) of a
    command line (`split_config_overrides`); a malformed override or a flag the parser does not
    know is a `usage_error`."""
    try:
        overrides, rest = split_config_overrides(argv, legacy_sections)
    except ConfigError as exc:
        usage_error(exc)
    return parser.parse_args(rest), overrides


def apply_config_overrides(config: ml_collections.ConfigDict,
                           overrides: Sequence[tuple[str, Any]],
                           allowed: Sequence[str] | None = None) -> ml_collections.ConfigDict:
    """A copy of `config` with the (KEY, VALUE) pairs of `split_config_overrides` applied, by
    `apply_overrides`; each is checked here first, so that a wrong one is a ConfigError naming
    the flag as the user typed it (`--config.data.pathh`) in one line, as train's are: a field
    the config does not have (with the closest one), one outside the `allowed` sections (None:
    any field; a restored run allows only the fields that do not describe its checkpoint), or a
    value that is not of the field's type."""
    checked = {}
    for key, value in overrides:
        flag = f"--config.{key}"
        *path, leaf = key.split(".")
        target = config
        for depth, part in enumerate(path):
            if not isinstance(target.get(part), ml_collections.ConfigDict):
                where = ".".join(["config", *path[:depth + 1]])
                raise ConfigError(f"{flag}: {where} is a field, not a section" if part in target
                                  else f"{flag}: unknown config section {where}"
                                  + _did_you_mean(part, target, path[:depth]))
            target = target[part]
        if leaf not in target:
            raise ConfigError(f"{flag}: unknown config field {leaf!r}"
                              + _did_you_mean(leaf, target, path))
        if allowed is not None and (not path or path[0] not in allowed):
            raise ConfigError(f"{flag}: only {', '.join(f'--config.{a}.*' for a in allowed)} "
                              "can be overridden here; the other fields describe the trained "
                              "checkpoint")
        try:
            checked[key] = _convert(f"config.{key}", value, target[leaf])
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return apply_overrides(config, checked,
                           allowed=tuple(config.keys()) if allowed is None else allowed)


def _did_you_mean(name: str, section, path: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(section.keys()), n=1)
    where = ".".join(["config", *path])
    if close:
        return f"; did you mean --{where}.{close[0]}?"
    return f"; {where} has {', '.join(sorted(section.keys()))}"
