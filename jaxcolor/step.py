"""The train state and the pure step functions.

`train_step(state, batch, rng)` and `eval_step(state, batch)` are plain functions of arrays. The
same functions run under `jax.jit` over a mesh (the batch is global, XLA inserts the collectives)
and under `jax.pmap` (pass `axis_name`: gradients, metrics and - through the model's BatchNorm
`axis_name` - batch statistics are averaged over devices), so both paths compute the same numbers.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from jaxcolor import color, losses, metrics


class TrainState(train_state.TrainState):
    """Flax's TrainState plus BatchNorm running statistics and, by name, the states of the
    companion networks trained alongside (`jaxcolor.companions`; each one a TrainState itself,
    with its own parameters, statistics and optimizer). None when there are none, so a state
    without companions has the tree, and the checkpoint, it had before companions existed."""

    batch_stats: Any = None
    companions: Any = None


def make_optimizer(opt_config, num_steps: int) -> tuple[optax.GradientTransformation, Callable]:
    """Adam (the reference), AdamW or SGD with momentum b1, with a constant, cosine or warmup-cosine learning rate."""
    lr = opt_config.learning_rate
    warmup = opt_config.warmup_steps
    if opt_config.schedule == "constant":
        schedule = optax.constant_schedule(lr)
        if warmup:
            schedule = optax.join_schedules(
                [optax.linear_schedule(0.0, lr, warmup), schedule], [warmup]
            )
    elif opt_config.schedule == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(
            0.0 if warmup else lr, lr, max(warmup, 0), max(num_steps, warmup + 1)
        )
    else:
        raise ValueError(
            f"config.optimizer.schedule={opt_config.schedule!r}: expected 'constant' or 'cosine'"
        )
    if opt_config.name == "adam":
        tx = optax.adam(schedule, b1=opt_config.b1, b2=opt_config.b2)
    elif opt_config.name == "sgd":
        tx = optax.sgd(schedule, momentum=opt_config.b1 or None)
    elif opt_config.name == "adamw":
        tx = optax.adamw(schedule, b1=opt_config.b1, b2=opt_config.b2,
                         weight_decay=opt_config.weight_decay)
    else:
        raise ValueError(f"config.optimizer.name={opt_config.name!r}: expected 'adam', 'adamw' or 'sgd'")
    if opt_config.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(opt_config.grad_clip), tx)
    return tx, schedule


def create_state(model, tx, rng, image_size: int, companions: Mapping = {}) -> TrainState:
    """Fresh state; meant to be traced under `jax.eval_shape` and `jax.jit`. The colorizer is
    initialised from `rng` itself (as before companions existed); companion i (by sorted name)
    from `fold_in(rng, i + 1)`."""
    variables = model.init(rng, jnp.zeros((1, image_size, image_size, 1), jnp.float32), train=False)
    states = {}
    for i, name in enumerate(sorted(companions)):
        c = companions[name]
        v = c.model.init(jax.random.fold_in(rng, i + 1), c.example_input(image_size), train=False)
        states[name] = TrainState.create(apply_fn=c.model.apply, params=v["params"],
                                         batch_stats=v.get("batch_stats", {}), tx=c.tx)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=tx,
        companions=states or None,
    )


def _mean(x, axis_name):
    return jax.lax.pmean(x, axis_name) if axis_name else x


def _identity(pred):
    return pred.astype(jnp.float32)


def train_step(state: TrainState, batch, rng, *, loss_fn, axis_name: str | None = None,
               decode: Callable = _identity, skip_nonfinite: bool = False,
               companions: Mapping = {}):
    """One optimizer step on `batch` = {'L': (B,H,W,1), 'ab': (B,H,W,2)}.

    Returns the new state and float32 scalar metrics. A non-finite loss or gradient is reported
    in `metrics['finite']`; the caller decides whether to stop (see train.py). With
    `skip_nonfinite`, such a step returns the old state unchanged (params, optimizer state,
    BatchNorm statistics and step count, selected on device so it stays one compiled program);
    without it the step is exactly the plain update. `decode` turns the model's output into
    ab/128 for the ab metrics (the annealed mean of a classification model's logits,
    `losses.make_decode`); the loss sees the raw output.

    `companions` (name -> `jaxcolor.companions.Companion`, states in `state.companions`): each
    one's `colorizer_loss`, if any, joins the colorizer's loss (`metrics['<name>_term']`), and
    each is updated by its own optimizer on this step's prediction, as made before the colorizer's
    update (the simultaneous update of GAN training): `metrics['<name>_loss']`.
    """
    del rng  # the models are deterministic; kept so stochastic models need no new signature
    objective = losses.as_objective(loss_fn)

    def loss_of(params):
        pred, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch["L"],
            train=True,
            mutable=["batch_stats"],
        )
        loss, parts = objective(pred, batch, train=True)
        terms = {f"loss_{name}": value for name, value in parts.items()}
        terms.update(_companion_terms(state, companions, batch, decode(pred)))
        for name in companions:
            if f"{name}_term" in terms:
                loss = loss + terms[f"{name}_term"]
        return loss, (pred, updates["batch_stats"], terms)

    (loss, (pred, batch_stats, terms)), grads = jax.value_and_grad(loss_of, has_aux=True)(
        state.params)
    grads = _mean(grads, axis_name)
    loss = _mean(loss, axis_name)
    ab_mae = _mean(jnp.abs(decode(pred) - batch["ab"]).mean(), axis_name)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    metrics = {"loss": loss, "ab_mae": ab_mae * color.AB_SCALE, "grad_norm": grad_norm}
    for name, term in terms.items():  # loss_<term> of the objective, <companion>_term
        metrics[name] = _mean(term, axis_name)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    if companions:
        ab_seen = jax.lax.stop_gradient(decode(pred))
        states, companion_metrics = _update_companions(state, companions, batch, ab_seen,
                                                       axis_name)
        finite = finite & companion_metrics.pop("finite")
        metrics.update(companion_metrics)
        new_state = _hold_colorizer(state, new_state, companions).replace(companions=states)
    metrics["finite"] = finite
    if skip_nonfinite:
        new_state = _select(finite, new_state, state)
    return new_state, metrics


def _select(pred, new, old):
    """`new` where the scalar `pred` holds, else `old`, leaf by leaf, on device (one program)."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def _companion_terms(state, companions, batch, ab_pred) -> dict:
    """`<name>_term` of each companion that adds to the colorizer's loss (0 before its
    `term_starts`): the colorizer's gradient flows through `ab_pred`, not into the companion."""
    terms = {}
    for name, c in companions.items():
        if c.colorizer_loss is not None:
            out, _ = _apply_companion(state.companions[name], c, batch, ab_pred)
            term = c.colorizer_loss(out, batch)
            if c.term_starts:
                term = jnp.where(state.step >= c.term_starts, term, 0.0)
            terms[f"{name}_term"] = term
    return terms


def _update_companions(state, companions, batch, ab_seen, axis_name):
    """Each companion's own step on the prediction it sees (from its `starts` on): (new states,
    metrics `<name>_loss` and `<name>_<metric>`, plus `finite` of them all)."""
    states, metrics, finite = {}, {}, True
    for name, c in companions.items():
        old = state.companions[name]
        new, c_loss, c_metrics, c_norm = _companion_update(old, c, batch, ab_seen, axis_name)
        if c.starts:  # NoGAN: the companion waits for the colorizer's first steps
            new = _select(state.step >= c.starts, new, old)
        states[name] = new
        metrics[f"{name}_loss"] = c_loss
        metrics.update({f"{name}_{k}": v for k, v in c_metrics.items()})
        finite = finite & jnp.isfinite(c_loss) & jnp.isfinite(c_norm)
    metrics["finite"] = finite
    return states, metrics


def _hold_colorizer(state, new_state, companions):
    """NoGAN's critic-only steps (from a companion's `starts` to its `term_starts`): the
    colorizer keeps its parameters, optimizer state and statistics; the step count moves on."""
    held = [(c.starts, c.term_starts) for c in companions.values() if c.term_starts > c.starts]
    if not held:
        return new_state
    frozen = functools.reduce(jnp.logical_or, [(state.step >= a) & (state.step < b)
                                               for a, b in held])
    return new_state.replace(**{k: _select(frozen, getattr(state, k), getattr(new_state, k))
                                for k in ("params", "opt_state", "batch_stats")})


def _apply_companion(c_state, companion, batch, ab_pred, params=None):
    """The companion on this batch in training mode: (outputs, updated batch statistics)."""
    out, updates = c_state.apply_fn(
        {"params": c_state.params if params is None else params,
         "batch_stats": c_state.batch_stats},
        companion.inputs(batch, ab_pred), train=True, mutable=["batch_stats"])
    return out, updates.get("batch_stats", c_state.batch_stats)


def _companion_update(c_state, companion, batch, ab_pred, axis_name):
    """One step of a companion's own optimizer: (new state, loss, its metrics, gradient norm)."""

    def loss_of(params):
        out, batch_stats = _apply_companion(c_state, companion, batch, ab_pred, params)
        loss, metrics = companion.loss(out, batch)
        return loss, (batch_stats, metrics)

    (loss, (batch_stats, metrics)), grads = jax.value_and_grad(loss_of, has_aux=True)(
        c_state.params)
    grads = _mean(grads, axis_name)
    new = c_state.apply_gradients(grads=grads, batch_stats=batch_stats)
    return new, _mean(loss, axis_name), _mean(metrics, axis_name), optax.global_norm(grads)


def eval_step(state: TrainState, batch, *, loss_fn, axis_name: str | None = None,
              decode: Callable = _identity):
    """Weighted sums over `batch` (weight 0 marks padding), to be added up over a split.

    Returns per-split sums: `count`, `loss`, and the ab error sums of `metrics.ab_sums` (LAB
    units) for the model (`ab_abs`, `ab_sq`) and the gray baseline a = b = 0 (`gray_ab_abs`,
    `gray_ab_sq`): the same function, on the same LAB-unit arrays, as `jaxcolor.evaluate`'s, so
    `val_ab_mae` is evaluate's ab MAE by construction. Only the ab errors: no RGB metric (SSIM
    and the rest are evaluate's), so evaluating during training stays cheap.
    """
    out = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats}, batch["L"], train=False
    )
    w = batch["weight"]
    ab_true = batch["ab"] * color.AB_SCALE
    model = metrics.ab_sums(ab_true, decode(out) * color.AB_SCALE, w)
    gray = metrics.ab_sums(ab_true, jnp.zeros_like(ab_true), w)
    sums = {
        "count": model["count"],
        "loss": losses.as_objective(loss_fn)(out, batch, w)[0] * w.sum(),
        "ab_abs": model["ab_abs"],
        "ab_sq": model["ab_sq"],
        "gray_ab_abs": gray["ab_abs"],
        "gray_ab_sq": gray["ab_sq"],
    }
    if axis_name:
        sums = jax.lax.psum(sums, axis_name)
    return sums


def summarize_eval(sums) -> dict[str, float]:
    """Summed `eval_step` outputs -> loss, ab_mae, ab_rmse, gray_ab_mae, gray_ab_rmse, count, by
    `metrics.summarize_ab`'s rule (the count itself divides: no image scored gives NaN, never 0;
    the caller's `pipeline.count_skipped` turns that into NothingEvaluatedError)."""
    return {
        "loss": metrics.split_mean(sums, "loss"),
        **metrics.summarize_ab(sums),
        **metrics.summarize_ab(sums, prefix="gray_"),
        "count": int(round(float(sums["count"]))),
    }


def predict(state: TrainState, l_input, decode: Callable = _identity):
    """(B,H,W,1) L/100 -> (B,H,W,2) ab/128 in inference mode."""
    return decode(state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats}, l_input, train=False
    ))


def with_prepare(step: Callable, prepare: Callable | None) -> Callable:
    """`step(state, prepare(batch), rng)`: a batch transform (e.g. the device-side augmentation,
    `jaxcolor.data.device_augment.to_model_batch`) traced into the same compiled program as the
    step it feeds, so its output never leaves the device. None: the step itself."""
    if prepare is None:
        return step

    def prepared_train_step(state, batch, rng):
        return step(state, prepare(batch), rng)

    return prepared_train_step


def compile_jit(loss_fn, state_sharding, data_sharding, decode: Callable = _identity,
                skip_nonfinite: bool = False, prepare: Callable | None = None,
                companions: Mapping = {}):
    """The jit path: state replicated, batch split on the mesh's data axis, state donated.
    `prepare` (see `with_prepare`) runs on the sharded batch inside the compiled train step."""
    train = jax.jit(
        with_prepare(functools.partial(train_step, loss_fn=loss_fn, decode=decode,
                                       skip_nonfinite=skip_nonfinite, companions=companions),
                     prepare),
        in_shardings=(state_sharding, data_sharding, state_sharding),
        out_shardings=(state_sharding, state_sharding),
        donate_argnums=0,
    )
    evaluate = jax.jit(
        functools.partial(eval_step, loss_fn=loss_fn, decode=decode),
        in_shardings=(state_sharding, data_sharding),
        out_shardings=state_sharding,
    )
    return train, evaluate


def compile_pmap(loss_fn, axis_name: str, decode: Callable = _identity,
                 skip_nonfinite: bool = False, prepare: Callable | None = None,
                 companions: Mapping = {}):
    """The pmap path: the same step per device with pmean/psum over `axis_name`; `prepare`
    runs on each device's rows inside it."""
    train = jax.pmap(
        with_prepare(functools.partial(train_step, loss_fn=loss_fn, axis_name=axis_name,
                                       decode=decode, skip_nonfinite=skip_nonfinite,
                                       companions=companions), prepare),
        axis_name=axis_name,
        in_axes=(0, 0, None),
        donate_argnums=0,
    )
    evaluate = jax.pmap(
        functools.partial(eval_step, loss_fn=loss_fn, axis_name=axis_name, decode=decode),
        axis_name=axis_name,
    )
    return train, evaluate
