"""The training loop: `train_and_evaluate(config, workdir)` trains, evaluates and checkpoints a
colorizer, and resumes exactly where the last checkpoint left off when run again.

One step of training is `jaxcolor.step.train_step` (a pure function), compiled over every device
of every process by `jaxcolor.trainer.Trainer`. Around it this module does, per step: take the next
batch (a grain iterator, prefetched to the devices), run the step with `step_key(seed, step)`,
then ask one predicate, `itstime`, whether to log, evaluate, preview and checkpoint. The loop's
own state (`LoopState`: step, best validation loss, patience left, counters) is a dataclass
saved with every checkpoint, beside the train state and the data iterator's state.

Reproducibility: the workdir's `run.json` (`jaxcolor.run_record`) records the config, command,
versions, machine, devices, git commit and dataset of every session. The same config and seed on
the same machine (CPU model included: XLA's CPU kernels differ across CPU models) and device
count give bitwise identical parameters and metrics, resumed or not (CPU; tested). Starting in a
workdir whose `config.json` differs (outside `run_record.HARMLESS_FIELDS`) is an error listing the
fields, unless `allow_config_change`.

Stops: SIGTERM/SIGINT checkpoint the current step; with several processes every process stops
at the same step (orbax's preemption sync point over JAX's preemption notifier), so none waits in
a collective the others left. A SIGKILL loses only the steps since the last complete checkpoint.
One process trains in a workdir at a time: process 0 holds a lock on `WORKDIR/train.lock`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import threading
import time

import jax
import numpy as np

from jaxcolor import ab_prior, checkpoint, images, losses, parallel, run_record
from jaxcolor import config as config_lib
from jaxcolor.data import pipeline
from jaxcolor.logbook import Logbook
from jaxcolor.trainer import NonFiniteError, Trainer, init_key, step_root

log = logging.getLogger("jaxcolor")


def itstime(step: int, every: int, total: int) -> bool:
    """Whether a periodic action (logging, evaluation, checkpoint) runs after `step` steps:
    every `every` steps and after the last one."""
    return step % every == 0 or step == total


@dataclasses.dataclass
class LoopState:
    """What the loop knows beyond the train state, checkpointed as the `loop` item."""

    step: int = 0
    best_val_loss: float = math.inf
    best_step: int = -1
    bad_evals: int = 0  # evaluations since the best one: early stopping when it reaches patience
    stopped_early: bool = False
    skipped_updates: int = 0  # non-finite updates skipped (config.skip_nonfinite)
    skipped_files: int = 0  # distinct unreadable training files met so far

    def record(self) -> dict:
        """The checkpoint's `loop` item (the step is the checkpoint's own)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "step"}

    @classmethod
    def restore(cls, step: int, record: dict) -> "LoopState":
        """From a `loop` item; fields added later take their defaults, unknown ones are ignored."""
        names = {f.name for f in dataclasses.fields(cls)} - {"step"}
        return cls(step=step, **{k: v for k, v in record.items() if k in names})

    def validated(self, step: int, val_loss: float, patience: int) -> None:
        """Takes the validation loss of `step`: the best so far, or one more bad evaluation."""
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.best_step, self.bad_evals = val_loss, step, 0
            return
        self.bad_evals += 1
        if patience and self.bad_evals >= patience:
            self.stopped_early = True
            log.info("early stopping at step %d: no improvement in %d evaluations", step,
                     self.bad_evals)


class StopSignal:
    """SIGTERM/SIGINT (cluster preemption, Ctrl-C) -> finish the step, checkpoint, stop.

    One process: a handler sets a flag. Several processes: a signal reaches the hosts at slightly
    different moments, and a host that stopped alone would wait in its checkpoint while the others
    wait in the next step's all-reduce. So SIGTERM is left to JAX's preemption notifier (installed
    by `jax.distributed.initialize`), SIGINT is turned into a SIGTERM to this process, and the
    decision is orbax's `reached_preemption(step)`: true on every process at the same step.
    """

    def __init__(self, manager):
        self.manager = manager
        self.signal: int | None = None
        self._previous: dict = {}
        self._distributed = jax.process_count() > 1

    def __call__(self, step: int) -> bool:
        return self.signal is not None or (self._distributed
                                           and self.manager.reached_preemption(step))

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            signals = (signal.SIGINT,) if self._distributed else (signal.SIGTERM, signal.SIGINT)
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self._distributed:  # let the preemption notifier tell every process
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            self.signal = signum


def train_and_evaluate(config, workdir: str, should_stop=None, allow_config_change: bool = False,
                       command=None) -> dict:
    """Trains (or resumes) in `workdir`; returns the final validation summary.

    `should_stop(step) -> bool` is asked after every step (default: `StopSignal`); when it says
    yes, the run checkpoints the current step, waits for the write to complete and returns
    `{"interrupted": True, "step": ...}`. Rerunning resumes.
    Raises `jaxcolor.config.ConfigError` for a config it cannot run, before anything is created
    or written; `run_record.ConfigChangedError` when `workdir` holds a run with another config,
    unless `allow_config_change`. `command` is recorded in run.json (default: sys.argv).
    """
    config_lib.validate(config)
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if is_main:
            stack.callback(run_record.WorkdirLock(workdir).acquire().release)
        changes = run_record.check_config(workdir, config, allow_config_change)
        if changes:
            log.warning("continuing %s with a changed config (--allow_config_change):\n%s",
                        workdir, run_record.format_diff(changes))
        bin_weights = None
        if losses.is_classification(config.loss):  # before the model: one logit per bin
            bin_weights = ab_prior.ensure(config, workdir, progress=is_main,
                                          write=is_main).weights
        trainer = Trainer(config, bin_weights=bin_weights)
        if is_main:
            with open(os.path.join(workdir, "config.json"), "w") as f:
                f.write(config.to_json_best_effort(indent=2, sort_keys=True))
        state, abstract = trainer.init_state(init_key(config.seed))
        # Closed on every way out: an open manager's threads outlive a start-up error and print
        # orbax tracebacks after the error message at interpreter exit.
        manager = checkpoint.make_manager(workdir, config.keep)
        stack.callback(lambda: checkpoint.close(manager, failing=sys.exc_info()[0] is not None))
        if should_stop is None:
            should_stop = stack.enter_context(StopSignal(manager))
        logbook = stack.enter_context(contextlib.closing(Logbook(workdir, enabled=is_main)))
        iterator = iter(pipeline.train_dataset(config.data, config.batch_size, config.seed,
                                               jax.process_index(), jax.process_count()))
        stack.callback(iterator.close)  # stops grain's worker processes now, not at exit
        loop = LoopState()
        restored = checkpoint.restore_latest(manager, abstract)
        if restored is not None:
            step, state, data_state, record = restored
            loop = LoopState.restore(step, record)
            iterator.set_state(data_state)
            log.info("resumed from %s at step %d", manager.directory, step)
        logbook.truncate_after(loop.step)  # rows a killed session wrote past its checkpoint
        record = run_record.RunRecord(workdir, enabled=is_main)
        record.start(config, loop.step, changes, command)
        try:
            return _train(config, workdir, should_stop, trainer, logbook, record, manager,
                          state, iterator, loop)
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            record.end(status, checkpoint.last_complete_step(str(manager.directory)),
                       f"{type(exc).__name__}: {exc}"[:2000])
            raise


def _host_batches(iterator):
    """(host batch, iterator state after it, files skipped so far) for each batch."""
    for batch in iterator:
        skipped = int(np.max(batch.pop("skipped")))
        yield batch, iterator.get_state(), skipped


class _MetricRows:
    """The train metrics of the steps since the last `metrics.jsonl` row, kept on the devices and
    fetched together when a row is written (one transfer per row, not one per step). A non-finite
    step stops the run (NonFiniteError) unless `config.skip_nonfinite`, where it is counted."""

    def __init__(self, config, trainer, logbook, loop: LoopState, manager, progress):
        self.config, self.trainer, self.logbook, self.loop = config, trainer, logbook, loop
        self.manager, self.progress = manager, progress
        self.skip_nonfinite = bool(config.get("skip_nonfinite", False))
        self.skipped_at_prepare = pipeline.skipped_at_prepare(config.data)  # shards, else None
        # folder source with data.min_colorfulness: training photos left out as (near) gray
        self.dropped_gray = pipeline.dropped_for_colorfulness(config.data)
        self.pending: list[tuple[int, dict]] = []
        self.last_time, self.last_step = time.perf_counter(), loop.step

    def add(self, step: int, metrics) -> None:
        self.pending.append((step, metrics))

    def write(self, step: int) -> None:
        if not self.pending:
            return
        loop = self.loop
        host = self.trainer.fetch([m for _, m in self.pending])
        bad = [s for (s, _), m in zip(self.pending, host) if not bool(m["finite"])]
        if bad and not self.skip_nonfinite:
            raise NonFiniteError(f"non-finite loss or gradient at step {bad[0]}; last good "
                                 f"checkpoint: {self.manager.latest_step()} in "
                                 f"{self.manager.directory}")
        if bad:
            loop.skipped_updates += len(bad)
            log.warning("non-finite loss or gradient at step(s) %s: update(s) skipped (%d so far)",
                        bad, loop.skipped_updates)
            host = [m for m in host if bool(m["finite"])] or host
        now = time.perf_counter()
        # loss, ab_mae, grad_norm, and each companion's <name>_loss / <name>_term
        row = {k: float(np.mean([m[k] for m in host])) for k in host[0] if k != "finite"}
        row["learning_rate"] = float(self.trainer.schedule(step))
        row["examples_per_s"] = ((step - self.last_step) * self.config.batch_size
                                 / max(now - self.last_time, 1e-9))
        row["skipped_files"] = loop.skipped_files
        if self.skipped_at_prepare is not None:
            row["skipped_files_at_prepare"] = self.skipped_at_prepare
        if self.dropped_gray is not None:
            row["dropped_gray_files"] = self.dropped_gray
        if self.skip_nonfinite:
            row["skipped_updates"] = loop.skipped_updates
        self.logbook.write(step, row)
        self.progress.set_postfix(loss=f"{row['loss']:.4f}", ex_s=f"{row['examples_per_s']:.0f}")
        self.pending, self.last_time, self.last_step = [], now, step


def _train(config, workdir, should_stop, trainer, logbook, record, manager, state, iterator,
           loop: LoopState) -> dict:
    """Steps from `loop.step` to the end (or a stop); each step asks `itstime` what else to do."""
    is_main = jax.process_index() == 0
    root = step_root(config.seed)
    total = config.num_steps
    if loop.step >= total or loop.stopped_early:
        log.info("nothing to do: the run in %s already ended at step %d", workdir, loop.step)
    val_records = pipeline.eval_records(config.data, config.data.val_split)
    preview_batch = next(pipeline.eval_batches(
        config.data, config.data.val_split, min(config.num_preview_images, len(val_records)),
        records=val_records[: config.num_preview_images]))
    state = trainer.to_step_form(state)
    batches = parallel.prefetch(_host_batches(iterator),
                                put=lambda item: (trainer.put(item[0]), *item[1:]),
                                size=max(1, config.prefetch))
    progress = _progress(is_main, loop.step, total)
    rows = _MetricRows(config, trainer, logbook, loop, manager, progress)
    data_state, last_eval, interrupted = None, None, False
    try:
        while loop.step < total and not loop.stopped_early:
            batch, data_state, loop.skipped_files = next(batches)
            state, metrics = trainer.train_step(state, batch, jax.random.fold_in(root, loop.step))
            loop.step += 1
            rows.add(loop.step, metrics)
            progress.update(1)
            if itstime(loop.step, config.log_every, total):
                rows.write(loop.step)
            val_loss = None
            if itstime(loop.step, config.eval_every, total):
                rows.write(loop.step)
                last_eval = trainer.evaluate(state, val_records)
                val_loss = last_eval["loss"]
                logbook.write(loop.step, {f"val_{k}": v for k, v in last_eval.items()})
                if is_main:
                    logbook.image("val/gray_pred_truth", trainer.preview(state, preview_batch),
                                  loop.step)
                loop.validated(loop.step, val_loss, config.patience)
            interrupted = loop.step < total and should_stop(loop.step)
            if (itstime(loop.step, config.checkpoint_every, total) or interrupted
                    or loop.stopped_early or val_loss is not None and loop.best_step == loop.step):
                rows.write(loop.step)
                checkpoint.save(manager, loop.step, trainer.to_global_form(state), data_state,
                                loop.record(), val_loss)
                # The save is asynchronous, but it began by finishing the previous one: run.json
                # names the newest checkpoint complete on disk, never one still being written.
                record.progress(checkpoint.last_complete_step(str(manager.directory)))
            if interrupted:
                log.warning("stop requested: checkpointed step %d in %s; rerun to resume",
                            loop.step, manager.directory)
                break
        rows.write(loop.step)
    finally:
        batches.close()  # stops the prefetch thread before the iterator goes away
        progress.close()
        _finish_writes(manager, failing=sys.exc_info()[0] is not None)
    record.progress(checkpoint.last_complete_step(str(manager.directory)))
    if interrupted:
        record.end("interrupted", manager.latest_step(),
                   "stop request (SIGTERM/SIGINT or should_stop)")
        return {"interrupted": True, "step": int(manager.latest_step())}
    if last_eval is None:
        last_eval = trainer.evaluate(state, val_records)
    if is_main:
        images.save_png(trainer.preview(state, preview_batch), os.path.join(workdir, "preview.png"))
        _write_summary(workdir, manager, loop, last_eval)
        record.end("finished", manager.latest_step())
    return last_eval


def _finish_writes(manager, failing: bool) -> None:
    """Waits for the pending checkpoint write. A failed last write is this run's error, unless
    another error is already in flight: that one is reported, and this only lets the write end."""
    if not failing:
        checkpoint.wait(manager)
        return
    try:
        manager.wait_until_finished()
    except Exception:  # noqa: BLE001
        log.warning("the pending checkpoint write failed too")


def _write_summary(workdir: str, manager, loop: LoopState, last_eval: dict) -> None:
    """summary.json and the one line a user reads at the end of a run."""
    summary = {"step": int(manager.latest_step() or 0), "interrupted": False, **last_eval,
               "best_step": loop.best_step, "best_val_loss": loop.best_val_loss,
               "stopped_early": loop.stopped_early, "skipped_updates": loop.skipped_updates}
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"validation ab error (mean |ab| error, LAB units) on {last_eval['count']} images: "
          f"model {last_eval['ab_mae']:.3f} vs gray baseline (a=b=0) "
          f"{last_eval['gray_ab_mae']:.3f}")


def _progress(enabled: bool, start: int, total: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, dynamic_ncols=True,
                desc="train", file=sys.stderr)
