"""What one training run holds: the model, its optimizer, the compiled train and evaluation
steps, the device shardings, and how batches and states move between host and devices.

The same `Trainer` serves the `jax.jit` path (one program over a mesh of every device of every
process) and the `jax.pmap` path (`config.parallel = "pmap"`, per-device copies); the train step
is the one pure function of `jaxcolor.step` in both. Checkpoints always hold the global,
replicated form of the state (`to_global_form`), so either path restores the other's.

Random keys: parameters are initialised from `init_key(seed)` and step `s` gets
`step_key(seed, s) = fold_in(step_root(seed), s)`, which depends on nothing but (seed, step), not
on where a run was resumed.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcolor import companions as companions_lib
from jaxcolor import images, losses, parallel
from jaxcolor import step as step_lib
from jaxcolor.data import device_augment, pipeline, transforms
from jaxcolor.models import build_model, load_pretrained_weights, param_labels_fn


class NonFiniteError(FloatingPointError):
    """The loss or gradient went NaN/Inf: training cannot continue from this state."""


class Trainer:
    """What one run holds: compiled steps, shardings and how to move batches and states."""

    def __init__(self, config, mesh=None, bin_weights=None):
        """`bin_weights`: the (Q,) rebalancing weights of the ab prior, for a classification loss
        (`jaxcolor.ab_prior.ensure`)."""
        self.config = config
        parallel.check_batch(config.batch_size, mesh)
        self.pmap = config.parallel == "pmap"
        if config.parallel not in ("jit", "pmap"):
            raise ValueError(f"config.parallel={config.parallel!r}: expected 'jit' or 'pmap'")
        self.mesh = parallel.make_mesh() if mesh is None else mesh
        self.repl = parallel.replicated(self.mesh)
        self.data = parallel.data_sharding(self.mesh)
        self.model = build_model(
            config.model, config.dtype, bn_axis_name=parallel.PMAP_AXIS if self.pmap else None,
            **losses.head(config.loss),
        )
        self.loss_fn = losses.make_loss(config.loss, bin_weights)
        self.decode = losses.make_decode(config.loss)
        self.tx, self.schedule = step_lib.make_optimizer(config.optimizer, config.num_steps)
        labels = param_labels_fn(config.model)
        if labels is not None:  # frozen layers get exactly zero updates: they stay bitwise as loaded
            self.tx = optax.multi_transform({"train": self.tx, "freeze": optax.set_to_zero()},
                                            labels)
        # Networks trained alongside the colorizer (a discriminator, a probe), in the same state.
        self.companions = companions_lib.build(
            config, axis_name=parallel.PMAP_AXIS if self.pmap else None)
        self.init_fn = functools.partial(
            step_lib.create_state, self.model, self.tx, image_size=config.data.image_size,
            companions=self.companions,
        )
        skip = bool(config.get("skip_nonfinite", False))
        # augment_on="device": training batches arrive as uint8 RGB plus the drawn angles and
        # flips; rotation, flip and LAB run inside the compiled step (evaluation stays on host).
        prepare = (device_augment.to_model_batch
                   if transforms.augment_on(config.data) == "device" else None)
        # Inference on host variables (previews): compiled once, at the first call.
        self.predict = jax.jit(lambda variables, l_input: self.decode(
            self.model.apply(variables, l_input, train=False)))
        if self.pmap:
            self.train_step, self.eval_step = step_lib.compile_pmap(
                self.loss_fn, parallel.PMAP_AXIS, self.decode, skip_nonfinite=skip,
                prepare=prepare, companions=self.companions)
        else:
            self.train_step, self.eval_step = step_lib.compile_jit(
                self.loss_fn, self.repl, self.data, self.decode, skip_nonfinite=skip,
                prepare=prepare, companions=self.companions)

    def init_state(self, rng):
        """Global, replicated state: shapes first (no allocation), then a compiled init, then the
        configured pretrained weights (same values on every process)."""
        abstract = jax.eval_shape(self.init_fn, rng)
        state = jax.jit(self.init_fn, out_shardings=self.repl)(rng)
        host = parallel.fetch({"params": state.params, "batch_stats": state.batch_stats})
        loaded = load_pretrained_weights(self.config.model, host)
        if loaded is not host:
            state = state.replace(**{k: jax.tree.map(
                lambda x: parallel.full_to_global(np.asarray(x), self.repl), loaded[k])
                for k in ("params", "batch_stats")})
        return state, self.with_sharding(abstract)

    def with_sharding(self, abstract):
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.repl), abstract
        )

    # The checkpointed form is always the global replicated state; pmap works on per-device copies.
    def to_step_form(self, state):
        return parallel.pmap_replicate(state) if self.pmap else state

    def to_global_form(self, state):
        return parallel.pmap_unreplicate(state, self.repl) if self.pmap else state

    def put(self, batch):
        return parallel.to_pmap(batch) if self.pmap else parallel.to_global(batch, self.data)

    def fetch(self, tree):
        """Device metrics -> host floats (pmap results carry a leading device axis)."""
        return parallel.first_replica(tree) if self.pmap else parallel.fetch(tree)

    def evaluate(self, state, records) -> dict[str, float]:
        """The validation metrics, with `skipped` = images of the split that could not be read;
        `pipeline.NothingEvaluatedError` when none could."""
        cfg = self.config
        share = pipeline.per_process_batch(cfg.batch_size, jax.process_count())
        sums = None
        for batch in pipeline.eval_batches(
            cfg.data, cfg.data.val_split, share, jax.process_index(), jax.process_count(), records
        ):
            out = self.eval_step(state, self.put(batch))
            sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
        summary = step_lib.summarize_eval(self.fetch(sums))
        summary["skipped"] = pipeline.count_skipped(summary["count"], records, cfg.data.val_split)
        return summary

    def variables(self, state) -> dict:
        """{'params', 'batch_stats'} of a step-form state, on the host: what inference needs
        (the optimizer state, often twice the parameters' size, stays on the devices)."""
        tree = {"params": state.params, "batch_stats": state.batch_stats}
        return parallel.first_replica(tree) if self.pmap else parallel.fetch(tree)

    def preview(self, state, preview_batch) -> np.ndarray:
        """Gray | prediction | truth grid on fixed validation images, on this process alone,
        through `self.predict`, compiled once for the run."""
        n = int(preview_batch["weight"].sum())
        pred = self.predict(self.variables(state), preview_batch["L"][:n])
        return images.comparison_grid(
            preview_batch["L"][:n], np.asarray(pred), preview_batch["ab"][:n]
        )


def init_key(seed: int):
    """The key parameters are initialised from."""
    # 'rbg' rather than the default threefry: XLA:CPU takes ~20 s to compile a threefry init of
    # even a tiny model, against ~3 s for rbg; both are deterministic for a seed.
    return jax.random.split(jax.random.key(seed, impl="rbg"))[0]


def step_root(seed: int):
    return jax.random.split(jax.random.key(seed, impl="rbg"))[1]


def step_key(seed: int, step: int):
    """The RNG key of train step `step`: `fold_in(step_root(seed), step)`, so it depends on
    nothing but (seed, step) - not on where a run was resumed."""
    return jax.random.fold_in(step_root(seed), step)
