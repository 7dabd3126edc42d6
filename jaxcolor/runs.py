"""Loading a trained run back: its config, its model and the weights of one checkpoint.

`jaxcolor.evaluate`, `jaxcolor.colorize` and `jaxcolor.plot` all start here, so they agree on
which checkpoint a run stands for: the best one by validation loss (the `best_step` the training
loop recorded in the `loop` item of its latest checkpoint), else the latest, unless a step is
asked for. A training workdir holds `config.json` and `checkpoints/<step>/{state,data,loop}`
(see `jaxcolor.train`).

A restored run is one object, `Colorizer` (model, variables, decode, image size, and the
run's config, step and why that step): `evaluate` places its variables on every device of the
mesh, `colorize` and the Python API (`jaxcolor.colorize_array`) on one device.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from jaxcolor import checkpoint, losses, parallel
from jaxcolor import config as config_lib
from jaxcolor.config import apply_overrides  # noqa: F401 - runs.apply_overrides, as before
from jaxcolor.configs.default import get_config as default_config
from jaxcolor.models import build_model


log = logging.getLogger("jaxcolor")


class RunError(FileNotFoundError):
    """A workdir, config or checkpoint that is missing or not what a trained run leaves."""


# ---------------------------------------------------------------------------------------------
# Config


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """`WORKDIR/config.json` as a ConfigDict, with the defaults filling any field the run's
    version of the code did not have yet (so older runs still load)."""
    if not os.path.isdir(workdir):
        raise RunError(f"{workdir}: no such run directory (expected a training workdir made by "
                       "`python -m jaxcolor.train --workdir ...`)")
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise RunError(f"{path}: missing; {workdir!r} does not look like a training workdir "
                       "(train writes config.json there when it starts)")
    with open(path) as f:
        try:
            saved = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
    return ml_collections.ConfigDict(config_lib.with_defaults(default_config().to_dict(), saved))


# ---------------------------------------------------------------------------------------------
# Checkpoints


def _manager(workdir: str) -> ocp.CheckpointManager:
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    if not os.path.isdir(directory):
        raise RunError(f"{directory}: no checkpoints directory; has the run in {workdir!r} "
                       "saved a checkpoint yet?")
    options = ocp.CheckpointManagerOptions(create=False)  # only reads: nothing is saved
    manager = ocp.CheckpointManager(directory, item_names=checkpoint.ITEMS, options=options)
    if not manager.all_steps():
        raise RunError(f"{directory}: no complete checkpoint (expected step folders such as "
                       "'100/' holding state/, data/ and loop/)")
    return manager


def checkpoint_steps(workdir: str) -> list[int]:
    """The complete checkpoints of a run, ascending."""
    manager = _manager(workdir)
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def select_step(workdir: str, step: int | None = None) -> int:
    """`step` if given (and present); else the best step by validation loss, else the latest."""
    return choose_step(workdir, step)[0]


def choose_step(workdir: str, step: int | None = None) -> tuple[int, str]:
    """(step, why): `step` if given (and present); else the best step by validation loss that
    the training loop recorded (`best_step` in the `loop` item of the latest checkpoint), else
    the latest. `why` says which rule chose it, in words a command can print."""
    return _candidates(workdir, step)[0]


def _candidates(workdir: str, step: int | None) -> list[tuple[int, str]]:
    """The steps to try, in order, each with why: the asked-for step alone; else the best, then
    the latest, then the others newest first (the fallbacks for a damaged checkpoint)."""
    manager = _manager(workdir)
    try:
        steps = sorted(manager.all_steps())
        if step is not None:
            if step not in steps:
                raise RunError(f"{manager.directory}: no checkpoint for step {step}; "
                               f"available: {steps}")
            return [(step, "asked for with --step")]
        latest = steps[-1]
        loop = _loop(manager, latest)
        best = int(loop.get("best_step", -1))
        if best in steps:
            first = (best, f"the best by validation loss ({loop.get('best_val_loss', math.nan):.6g}"
                           f"{'' if best == latest else f'; the latest is {latest}'})")
        elif best > 0:
            first = (latest, f"the latest: the best step {best} recorded by training is no "
                             "longer on disk")
        else:
            first = (latest, "the latest (no validation loss recorded)")
        rest = [(s, "the newest undamaged checkpoint")
                for s in sorted(steps, reverse=True) if s != first[0]]
        return [first, *rest]
    finally:
        manager.close()


def _loop(manager, step: int) -> dict:
    try:
        restored = manager.restore(step, args=ocp.args.Composite(loop=ocp.args.JsonRestore()))
    except Exception:  # noqa: BLE001 - an unreadable loop record: the state may still be fine
        return {}
    return dict(restored["loop"] or {})


def restore_variables(workdir: str, config, step: int, sharding=None) -> dict:
    """The model variables {'params', 'batch_stats'} saved at `step`, placed with `sharding`
    (default: replicated over every device of this host's mesh).

    Only these two parts of the saved TrainState are read: the optimizer state is not needed to
    evaluate or colorize, and its structure depends on optimizer options (freezing, clipping)
    that inference should not have to rebuild.
    """
    manager = _manager(workdir)
    sharding = sharding or parallel.replicated(parallel.make_mesh())
    model = build_model(config.model, config.dtype, **losses.head(config.loss))
    size = config.data.image_size
    shapes = jax.eval_shape(
        lambda rng: model.init(rng, jnp.zeros((1, size, size, 1), jnp.float32), train=False),
        jax.random.key(0))
    target = {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), target)
    try:
        try:
            _check_stored_shapes(workdir, os.path.join(manager.directory, str(step), "state"),
                                 target)
            args = ocp.args.PyTreeRestore(
                item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                partial_restore=True)
            restored = manager.restore(step, args=ocp.args.Composite(state=args))["state"]
        except RunError:
            raise
        except (KeyError, TypeError) as exc:
            raise RunError(f"{manager.directory}/{step}/state: does not hold the model that "
                           f"{os.path.join(workdir, 'config.json')} describes ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - tensorstore's errors for unreadable files
            raise checkpoint.DamagedCheckpointError(
                f"{manager.directory}/{step}: unreadable ({type(exc).__name__}: "
                f"{exc})"[:300]) from None
        variables = {"params": restored["params"],
                     "batch_stats": restored.get("batch_stats", {})}
        saved = _loop(manager, step).get(checkpoint.CHECKSUMS)
        checkpoint.verify(f"{manager.directory}/{step}", saved,
                          {part: checkpoint.digest(tree) for part, tree in variables.items()})
    finally:
        manager.close()
    return variables


def _check_stored_shapes(workdir: str, state_dir, expected: dict) -> None:
    """Compares the checkpoint's array shapes (its metadata, nothing loaded) with the model the
    config describes, so that a mismatch is one clear error rather than a failed array read."""
    from etils import epath

    stored = ocp.PyTreeCheckpointHandler().metadata(epath.Path(state_dir))
    stored = getattr(stored, "tree", stored)
    flat = lambda tree: {jax.tree_util.keystr(k): tuple(v.shape)  # noqa: E731
                         for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
    have = flat({k: stored.get(k, {}) for k in expected})
    want = flat(expected)
    problems = [f"{k}: checkpoint {have.get(k, 'missing')}, model {v}"
                for k, v in want.items() if have.get(k) != v]
    problems += [f"{k}: in the checkpoint only" for k in have if k not in want]
    if problems:
        raise RunError(f"{state_dir}: does not hold the model that "
                       f"{os.path.join(workdir, 'config.json')} describes: "
                       + "; ".join(problems[:4]) + (" ..." if len(problems) > 4 else ""))


class Colorizer:
    """A trained model ready for inference, and where it came from: what `evaluate`,
    `colorize`, `plot` and the Python API (`jaxcolor.colorize_array`) all take.

    model, variables: the Flax module (taking (B, S, S, 1) L/100 and `train=False`) and its
        {'params', 'batch_stats'}; decode: the module's output -> ab/128 (the identity for
        regression models, the annealed mean for classification ones, `losses.make_decode`).
    image_size: S, the square side the model was trained at; inputs are resized to it.
    config, workdir, step, step_reason: the run, its checkpoint step and why that step (None and
        "" for a model built in Python).

    `load_run(workdir)` / `load_colorizer(workdir)` make one from a run;
    `Colorizer.from_module(module, variables, S)` from any such Flax module.
    """

    def __init__(self, model, variables, image_size: int, decode: Callable | None = None,
                 config: ml_collections.ConfigDict | None = None, workdir: str | None = None,
                 step: int | None = None, step_reason: str = ""):
        self.model, self.variables, self.image_size = model, variables, int(image_size)
        self.decode = decode or (lambda out: jnp.asarray(out, jnp.float32))
        self.config, self.workdir, self.step, self.step_reason = config, workdir, step, step_reason
        self.predict = jax.jit(self.apply)  # (variables, L/100) -> ab/128, compiled per shape

    @classmethod
    def from_module(cls, module, variables, image_size: int, decode: Callable | None = None,
                    **info) -> "Colorizer":
        return cls(module, variables, image_size, decode, **info)

    def apply(self, variables, l_input):
        """Inference-mode forward pass: (B, S, S, 1) L/100 -> (B, S, S, 2) ab/128 float32."""
        return self.decode(self.model.apply(variables, l_input, train=False))

    def predict_ab(self, l_input: np.ndarray) -> np.ndarray:
        """(B, S, S, 1) L/100 -> (B, S, S, 2) ab/128 as NumPy."""
        return np.asarray(self.predict(self.variables, l_input))


def _with_temperature(config, temperature: float | None):
    """`config` with `loss.temperature` replaced (the annealed-mean T of classification runs)."""
    if temperature is None:
        return config
    if temperature < 0:
        raise ValueError(f"--temperature={temperature}: expected T >= 0 (0 = the mode, 1 = the "
                         "mean)")
    config = ml_collections.ConfigDict(config.to_dict())
    config.loss.temperature = float(temperature)
    return config


def load_run(workdir: str, step: int | None = None, overrides=(), sharding=None,
             temperature: float | None = None) -> Colorizer:
    """Config + the best (or given) checkpoint's variables, ready for evaluation. `temperature`
    overrides the run's `loss.temperature` (classification runs only; ignored otherwise)."""
    config = _with_temperature(apply_overrides(read_config(workdir), overrides), temperature)
    damaged = []
    for chosen, why in _candidates(workdir, step):
        try:
            variables = restore_variables(workdir, config, chosen, sharding)
        except checkpoint.DamagedCheckpointError as exc:
            if step is not None:
                raise RunError(f"{exc}; choose another --step (available: "
                               f"{checkpoint_steps(workdir)})") from None
            log.warning("skipping damaged checkpoint: %s", exc)
            damaged.append(chosen)
            continue
        if damaged:
            why = (f"{why}: step(s) {', '.join(map(str, damaged))} damaged (checksum mismatch "
                   "or unreadable)")
        model = build_model(config.model, config.dtype, **losses.head(config.loss))
        return Colorizer(model, variables, config.data.image_size,
                         losses.make_decode(config.loss), config=config, workdir=workdir,
                         step=chosen, step_reason=why)
    raise RunError(f"{workdir}: every checkpoint is damaged (steps {damaged})")


def load_colorizer(workdir: str, step: int | None = None,
                   temperature: float | None = None) -> Colorizer:
    """The best (or given) checkpoint of a run on this host's first device (`load_run` places it
    on every device of the mesh, for evaluation); `temperature` overrides a classification run's
    annealed-mean T."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return load_run(workdir, step, sharding=device, temperature=temperature)
