"""`python -m jaxcolor.train --config experiments/NAME.py --workdir runs/NAME [--config.X=Y]`

Trains a colorizer: a grain pipeline feeds a pure, compiled train step over every device of every
process; orbax checkpoints the state and the data iterator together, so rerunning the same command
resumes exactly where the last checkpoint left off. `run(config, workdir)` is the same thing as a
Python function.

Reproducibility: the workdir's `run.json` (see `jaxcolor.run_record`) records the config, command,
versions, devices, git commit and dataset digest of every session. Parameters are initialised
from `split(key(seed))[0]`, step `s` gets the key `fold_in(split(key(seed))[1], s)` and the data
order is grain's shuffle seeded with `config.seed`, so the same config and seed on the same
machine and device count give bitwise identical parameters and metrics (CPU; tested), resumed or
not. Starting in a workdir whose `config.json` differs (outside `run_record.HARMLESS_FIELDS`) is
an error listing the fields, unless `--allow_config_change`.

Stops: SIGTERM/SIGINT checkpoint the current step and exit with status 75 (`EXIT_INTERRUPTED`);
a SIGKILL loses only the steps since the last completed checkpoint (orbax writes atomically and
`checkpoint.restore_latest` sets incomplete step directories aside). One process trains in a
workdir at a time: process 0 holds an exclusive lock on `WORKDIR/train.lock` for the session.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import math
import os
import signal
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from jaxcolor import ab_prior, checkpoint, images, losses, parallel, run_record
from jaxcolor import config as config_lib
from jaxcolor import step as step_lib
from jaxcolor.data import device_augment, pipeline, transforms
from jaxcolor.logbook import Logbook
from jaxcolor.models import build_model, load_pretrained_weights, param_labels_fn

log = logging.getLogger("jaxcolor")

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: checkpointed on a stop request; rerun to resume
EXIT_USAGE = 2  # a bad flag, config field or data path: nothing was written or compiled
EXIT_CONFIG_CHANGED = EXIT_USAGE  # the workdir holds a run with another config, or is in use
DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "default.py")


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
        self.init_fn = functools.partial(
            step_lib.create_state, self.model, self.tx, image_size=config.data.image_size
        )
        skip = bool(config.get("skip_nonfinite", False))
        # augment_on="device": training batches arrive as uint8 RGB plus the drawn angles and
        # flips; rotation, flip and LAB run inside the compiled step (evaluation stays on host).
        prepare = (device_augment.to_model_batch
                   if transforms.augment_on(config.data) == "device" else None)
        if self.pmap:
            self.train_step, self.eval_step = step_lib.compile_pmap(
                self.loss_fn, parallel.PMAP_AXIS, self.decode, skip_nonfinite=skip,
                prepare=prepare)
        else:
            self.train_step, self.eval_step = step_lib.compile_jit(
                self.loss_fn, self.repl, self.data, self.decode, skip_nonfinite=skip,
                prepare=prepare)

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

    def preview(self, state, preview_batch) -> np.ndarray:
        """Gray | prediction | truth grid on fixed validation images, on this process alone."""
        host_state = jax.tree.map(np.asarray, parallel.fetch(self.to_global_form(state)))
        n = int(preview_batch["weight"].sum())
        pred = jax.jit(functools.partial(step_lib.predict, decode=self.decode))(
            host_state, preview_batch["L"][:n])
        return images.comparison_grid(
            preview_batch["L"][:n], np.asarray(pred), preview_batch["ab"][:n]
        )


def _host_batches(iterator):
    """(host batch, iterator state after it, files skipped so far) for each batch."""
    for batch in iterator:
        skipped = int(np.max(batch.pop("skipped")))
        yield batch, iterator.get_state(), skipped


class StopRequest:
    """SIGTERM/SIGINT (cluster preemption, Ctrl-C) -> finish the current step, checkpoint, stop."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def __call__(self, step: int) -> bool:
        return self.signal is not None

    def install(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        self.signal = signum


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


def run(config, workdir: str, should_stop=None, allow_config_change: bool = False,
        command=None) -> dict:
    """Trains (or resumes) in `workdir`; returns the final validation summary.

    `should_stop(step) -> bool` is asked after every step (default: whether SIGTERM or SIGINT
    arrived); when it says yes, the run checkpoints the current step, waits for the write to
    complete and returns with `summary["interrupted"] = True`. Rerunning resumes.
    Raises `run_record.ConfigChangedError` when `workdir` holds a run with another config,
    unless `allow_config_change`, and `jaxcolor.config.ConfigError` for a config it cannot run,
    before anything is created or written. `command` is recorded in run.json (default: sys.argv).
    """
    config_lib.validate(config)
    stop_request = None
    if should_stop is None:
        should_stop = stop_request = StopRequest().install()
    try:
        return _run(config, workdir, should_stop, allow_config_change, command)
    finally:
        if stop_request is not None:
            stop_request.uninstall()


def _run(config, workdir: str, should_stop, allow_config_change=False, command=None) -> dict:
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0
    lock = run_record.WorkdirLock(workdir).acquire() if is_main else None
    try:
        return _locked_run(config, workdir, should_stop, allow_config_change, command)
    finally:
        if lock is not None:
            lock.release()


def _locked_run(config, workdir, should_stop, allow_config_change, command) -> dict:
    is_main = jax.process_index() == 0
    changes = run_record.check_config(workdir, config, allow_config_change)
    if changes:
        log.warning("continuing %s with a changed config (--allow_config_change):\n%s", workdir,
                    run_record.format_diff(changes))
    bin_weights = None
    if losses.is_classification(config.loss):  # before the model: its head has one logit per bin
        bin_weights = ab_prior.ensure(config, workdir, progress=is_main, write=is_main).weights
    trainer = Trainer(config, bin_weights=bin_weights)
    logbook = Logbook(workdir, enabled=is_main)
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    record = run_record.RunRecord(workdir, enabled=is_main)

    state, abstract = trainer.init_state(init_key(config.seed))
    # Closed on every way out: an open manager's background threads outlive a start-up error
    # and print orbax tracebacks after the error message at interpreter exit.
    manager = checkpoint.make_manager(workdir, config.keep)
    try:
        dataset = pipeline.train_dataset(
            config.data, config.batch_size, config.seed, jax.process_index(),
            jax.process_count())
        iterator = iter(dataset)
        loop = {"best_val_loss": math.inf, "best_step": -1, "bad_evals": 0,
                "stopped_early": False}
        start = 0
        restored = checkpoint.restore_latest(manager, abstract)
        if restored is not None:
            start, state, data_state, loop = restored
            iterator.set_state(data_state)
            logbook.truncate_after(start)
            log.info("resumed from %s at step %d", manager.directory, start)
        else:
            logbook.truncate_after(0)  # rows of a session killed before its first checkpoint
        record.start(config, start, changes, command)
        try:
            return _train(config, workdir, should_stop, trainer, logbook, record, manager,
                          state, iterator, loop, start)
        except BaseException as exc:
            status = "failed"
            if isinstance(exc, KeyboardInterrupt):
                status = "interrupted"
            record.end(status, checkpoint.last_complete_step(str(manager.directory)),
                       f"{type(exc).__name__}: {exc}"[:2000])
            raise
    finally:
        checkpoint.close(manager, failing=sys.exc_info()[0] is not None)


def _train(config, workdir, should_stop, trainer, logbook, record, manager, state, iterator,
           loop, start) -> dict:
    is_main = jax.process_index() == 0
    root = step_root(config.seed)
    skip_nonfinite = bool(config.get("skip_nonfinite", False))
    skipped_at_prepare = pipeline.skipped_at_prepare(config.data)  # shards source, else None
    if start >= config.num_steps or loop.get("stopped_early"):
        log.info("nothing to do: the run in %s already ended at step %d", workdir, start)

    val_records = pipeline.eval_records(config.data, config.data.val_split)
    preview_batch = next(
        pipeline.eval_batches(config.data, config.data.val_split,
                              min(config.num_preview_images, len(val_records)),
                              records=val_records[: config.num_preview_images])
    )

    state = trainer.to_step_form(state)
    batches = parallel.prefetch(
        _host_batches(iterator),
        put=lambda item: (trainer.put(item[0]), item[1], item[2]),
        size=max(1, config.prefetch),
    )
    progress = _progress(is_main, start, config.num_steps)
    pending: list[tuple[int, dict]] = []
    data_state, skipped = None, 0
    last_time, last_step = time.perf_counter(), start
    last_eval: dict | None = None

    def flush(step: int) -> None:
        """Fetch the metrics of the steps since the last flush; stop on a non-finite loss."""
        nonlocal pending, last_time, last_step
        if not pending:
            return
        host = trainer.fetch([m for _, m in pending])
        bad = [s for (s, _), m in zip(pending, host) if not bool(m["finite"])]
        if bad and skip_nonfinite:
            loop["skipped_updates"] = loop.get("skipped_updates", 0) + len(bad)
            log.warning("non-finite loss or gradient at step(s) %s: update(s) skipped (%d so far)",
                        bad, loop["skipped_updates"])
            host = [m for (s, _), m in zip(pending, host) if bool(m["finite"])] or host
        elif bad:
            raise NonFiniteError(
                f"non-finite loss or gradient at step {bad[0]}; last good checkpoint: "
                f"{manager.latest_step()} in {manager.directory}"
            )
        now = time.perf_counter()
        row = {k: float(np.mean([m[k] for m in host])) for k in ("loss", "ab_mae", "grad_norm")}
        row["learning_rate"] = float(trainer.schedule(step))
        row["examples_per_s"] = (step - last_step) * config.batch_size / max(now - last_time, 1e-9)
        row["skipped_files"] = skipped
        if skipped_at_prepare is not None:
            row["skipped_files_at_prepare"] = skipped_at_prepare
        if skip_nonfinite:
            row["skipped_updates"] = loop.get("skipped_updates", 0)
        logbook.write(step, row)
        progress.set_postfix(loss=f"{row['loss']:.4f}", ex_s=f"{row['examples_per_s']:.0f}")
        pending, last_time, last_step = [], now, step

    def save(step: int, val_loss: float | None) -> None:
        flush(step)
        checkpoint.save(manager, step, trainer.to_global_form(state), data_state,
                        dict(loop, skipped_files=skipped), val_loss)
        # The save above is asynchronous, but it began by finishing the previous one: run.json
        # records the newest checkpoint that is complete on disk, never one still being written.
        record.progress(checkpoint.last_complete_step(str(manager.directory)))

    interrupted = False
    try:
        for step in range(start, config.num_steps):
            if loop.get("stopped_early"):
                break
            batch, data_state, skipped = next(batches)
            state, metrics = trainer.train_step(state, batch, jax.random.fold_in(root, step))
            done = step + 1
            pending.append((done, metrics))
            progress.update(1)
            if done % config.log_every == 0 or done == config.num_steps:
                flush(done)
            val_loss = None
            if done % config.eval_every == 0 or done == config.num_steps:
                flush(done)
                last_eval = trainer.evaluate(state, val_records)
                val_loss = last_eval["loss"]
                logbook.write(done, {f"val_{k}": v for k, v in last_eval.items()})
                if is_main:
                    logbook.image("val/gray_pred_truth", trainer.preview(state, preview_batch), done)
                if val_loss < loop["best_val_loss"]:
                    loop.update(best_val_loss=val_loss, best_step=done, bad_evals=0)
                else:
                    loop["bad_evals"] += 1
                    if config.patience and loop["bad_evals"] >= config.patience:
                        loop["stopped_early"] = True
                        log.info("early stopping at step %d: no improvement in %d evaluations",
                                 done, loop["bad_evals"])
            stop = done < config.num_steps and should_stop(done)
            if (done % config.checkpoint_every == 0 or done == config.num_steps or stop
                    or loop["stopped_early"] or val_loss is not None and loop["best_step"] == done):
                save(done, val_loss)
            if stop:
                interrupted = True
                log.warning("stop requested: checkpointed step %d in %s; rerun to resume",
                            done, manager.directory)
                break
        else:
            flush(config.num_steps)
    finally:
        batches.close()  # stops the prefetch thread before the iterator goes away
        iterator.close()  # stops grain's worker processes now, not at interpreter exit
        progress.close()
        logbook.close()
        if sys.exc_info()[0] is None:
            checkpoint.wait(manager)  # a failed last write is this run's error
        else:
            try:  # the error in flight is the one to report; this only lets the write end
                manager.wait_until_finished()
            except Exception:  # noqa: BLE001
                log.warning("the pending checkpoint write failed too")
    record.progress(checkpoint.last_complete_step(str(manager.directory)))

    state = trainer.to_global_form(state)
    if interrupted:
        record.end("interrupted", manager.latest_step(), "stop request (SIGTERM/SIGINT or should_stop)")
        return {"interrupted": True, "step": int(manager.latest_step())}
    if last_eval is None:
        last_eval = trainer.evaluate(trainer.to_step_form(state), val_records)
    if is_main:
        grid = trainer.preview(trainer.to_step_form(state), preview_batch)
        images.save_png(grid, os.path.join(workdir, "preview.png"))
        summary = {"step": int(manager.latest_step() or 0), "interrupted": False, **last_eval,
                   "best_step": loop["best_step"], "best_val_loss": loop["best_val_loss"],
                   "stopped_early": bool(loop["stopped_early"]),
                   "skipped_updates": int(loop.get("skipped_updates", 0))}
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        record.end("finished", manager.latest_step())
        print(
            f"validation ab error (mean |ab| error, LAB units) on {last_eval['count']} images: "
            f"model {last_eval['ab_mae']:.3f} vs gray baseline (a=b=0) "
            f"{last_eval['gray_ab_mae']:.3f}"
        )
    return last_eval


def _progress(enabled: bool, start: int, total: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, dynamic_ncols=True,
                desc="train", file=sys.stderr)


def _exit_with(error, status: int):
    """One line on stderr, then exit: flushed first, so nothing printed at exit follows it."""
    sys.stdout.flush()
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(status)


def _override_error(exc: Exception, argv) -> str:
    """ml_collections' message for a bad `--config.FIELD` (with its "did you mean"), one line."""
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    text = " ".join(text.replace("\\n", " ").replace("\n", " ").split()).strip("'\" ")
    text = text.replace("\\'", "'").replace("\\", "")
    bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    return f"{' '.join(bad) or '--config'}: unknown config field {text}"


FLAGS = flags.FLAGS
try:  # ml_collections defines one flag per `--config.FIELD` of sys.argv here, at import
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG,
                                    "Experiment config file (get_config()).", lock_config=True)
except (AttributeError, KeyError) as _exc:
    if __name__ != "__main__":
        raise
    _exit_with(_override_error(_exc, sys.argv), EXIT_USAGE)
flags.DEFINE_string("workdir", "runs/default", "Where checkpoints, logs and images go.")
flags.DEFINE_string("coordinator", "", "host:port of process 0, for multi-process runs.")
flags.DEFINE_integer("num_processes", 0, "Processes in a multi-process run.")
flags.DEFINE_integer("process_id", -1, "This process's index in a multi-process run.")
flags.DEFINE_bool("allow_config_change", False,
                  "Continue a run whose saved config.json differs from --config (the changes are "
                  "recorded in run.json); without it that is an error listing the fields.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and grain are chatty at INFO
    _quiet_disk_full()
    try:
        config_lib.validate(FLAGS.config)  # before the cluster forms: every process says it
    except config_lib.ConfigError as exc:
        _exit_with(exc, EXIT_USAGE)
    parallel.maybe_initialize_distributed(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
    try:
        summary = run(FLAGS.config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change,
                      command=[sys.executable, "-m", "jaxcolor.train", *sys.argv[1:]])
    except (run_record.ConfigChangedError, run_record.WorkdirBusyError,
            config_lib.ConfigError) as exc:
        _exit_with(exc, EXIT_USAGE)
    except (checkpoint.CheckpointWriteError, pipeline.NothingEvaluatedError, NonFiniteError) as exc:
        _exit_with(exc, 1)
    except (FileNotFoundError, ValueError) as exc:  # data that is not what the config says
        _exit_with(exc, EXIT_USAGE)
    except OSError as exc:
        if not _is_disk_full(exc):
            raise
        last = checkpoint.last_complete_step(os.path.join(FLAGS.workdir, "checkpoints"))
        _exit_with(f"no space left on {checkpoint.mount_point(FLAGS.workdir)} while writing "
                   f"{exc.filename or 'to ' + FLAGS.workdir}; the last complete checkpoint is "
                   f"{'none' if last is None else last}", 1)
    if summary.get("interrupted"):
        sys.exit(EXIT_INTERRUPTED)


def _is_disk_full(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class _DiskFullFilter(logging.Filter):
    """Drops the tracebacks background writers (orbax's save threads) log for a full disk:
    `main` reports it once, in one line, with what was kept."""

    def filter(self, record):
        return not (record.exc_info and _is_disk_full(record.exc_info[1])
                    or "No space left on device" in record.getMessage())


def _quiet_disk_full():
    logging.getLogger("absl").addFilter(_DiskFullFilter())
    previous = threading.excepthook

    def hook(args):  # tensorboardX's writer thread dies with the same error
        if not _is_disk_full(args.exc_value):
            previous(args)

    threading.excepthook = hook


def parse_flags(argv):
    """absl's parser, but a bad flag value is one line and exit status 2, not a traceback."""
    try:
        return FLAGS(argv)
    except flags.Error as exc:
        _exit_with(exc, EXIT_USAGE)
    except (AttributeError, KeyError) as exc:
        _exit_with(_override_error(exc, argv), EXIT_USAGE)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
