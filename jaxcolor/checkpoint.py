"""One orbax CheckpointManager saving, together, the train state, the data iterator and a small
JSON record of the loop (best validation loss, early-stopping counter).

orbax writes each step into a temporary directory (`<step>.orbax-checkpoint-tmp-*`) and renames
it when complete; the manager lists only renamed step directories and deletes leftover temporary
ones when it starts, so a process killed mid-write never leaves a checkpoint that restore would
pick. A step directory that is incomplete anyway (an item or orbax's metadata missing, files
truncated by a full disk or a copy gone wrong) would make orbax's restore crash: `restore_latest`
moves such directories aside to `checkpoints_incomplete/` with a warning naming them and restores
the newest complete step instead. It keeps the last `keep` steps and the best one by validation
loss: that step's `val_loss` is written with it (orbax's `metrics` item, which the manager writes
only when `best_fn` is set) so that a restarted manager still knows which step is the best; kept
only in memory, a resume would forget it and delete the best step at the next save.

Damage that leaves every file in place (flipped bytes, a bad disk) is caught by `checksums`: each
checkpoint's `loop` item holds a SHA-256 of every saved array of each part of the state and of
the data iterator's state, taken from the values being saved; `restore` recomputes them from what
it read and raises `DamagedCheckpointError` on a mismatch. orbax offers no such check of array
data (its zarr chunk index has a CRC, the chunks do not), hence this one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
from typing import Any

import grain
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

log = logging.getLogger("jaxcolor")

ITEMS = ("state", "data", "loop")
STEP_METADATA = "_CHECKPOINT_METADATA"  # written by orbax into every finalized step directory
CHECKSUMS = "checksums"  # key of the loop record holding the digests of the saved values
STATE_PARTS = ("step", "params", "batch_stats", "opt_state", "companions")


class DamagedCheckpointError(ValueError):
    """A checkpoint whose restored values differ from the ones that were saved."""


class CheckpointWriteError(OSError):
    """Saving a checkpoint failed (most often: no space left on the device)."""


class _NoMetricsWarning(logging.Filter):
    """orbax warns at every save without metrics once `best_fn` is set; only evaluated steps have
    a validation loss, so for us that is the normal case, not news."""

    def filter(self, record):
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoMetricsWarning())


class IteratorState:
    """The data iterator's state as of the last batch the train step consumed.

    Batches are prefetched ahead of the step, so the live iterator is ahead of the model; this
    holds the state captured right after the batch in use was produced. grain's orbax handler
    writes one JSON file per process.
    """

    def __init__(self, state: dict | None = None):
        self.state = state

    def get_state(self) -> bytes:
        return json.dumps(self.state).encode()

    def set_state(self, state: bytes) -> None:
        self.state = json.loads(state)

    def start_prefetch(self) -> None:  # called by grain's handler after restore
        pass


def _val_loss(metrics: dict) -> float:
    return metrics["val_loss"]


def make_manager(workdir: str, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
    policy = checkpoint_managers.AnyPreservationPolicy(
        [
            checkpoint_managers.LatestN(n=keep),
            checkpoint_managers.BestN(
                get_metric_fn=_val_loss,
                reverse=True,  # ascending sort keeps the last n: reversed, the lowest loss
                n=1,
                keep_checkpoints_without_metrics=False,
            ),
        ]
    )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        best_fn=_val_loss,  # makes the manager write each step's metrics to disk (see above)
        best_mode="min",
        enable_async_checkpointing=async_save,
        create=True,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        item_names=ITEMS,
        options=options,
    )


def missing_parts(step_dir: str) -> list[str]:
    """What a finalized step directory lacks (its items, orbax's step metadata); [] if whole."""
    want = [*ITEMS, STEP_METADATA]
    return [name for name in want if not os.path.exists(os.path.join(step_dir, name))]


def set_aside(manager, step: int, why: str) -> None:
    """Moves an incomplete step directory to `<workdir>/checkpoints_incomplete/` (kept for
    inspection, out of the manager's sight) and reloads the manager's step list."""
    import jax

    src = os.path.join(str(manager.directory), str(step))
    dst_root = os.path.join(os.path.dirname(str(manager.directory)), "checkpoints_incomplete")
    dst = os.path.join(dst_root, f"{step}-{time.strftime('%Y%m%dT%H%M%S')}")
    log.warning("ignoring incomplete checkpoint %s (%s); moved to %s", src, why, dst)
    if jax.process_index() == 0 and os.path.isdir(src):
        os.makedirs(dst_root, exist_ok=True)
        shutil.move(src, dst)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"jaxcolor_set_aside_{step}")
    manager.reload()


def restore_latest(manager, abstract_state) -> tuple[int, Any, dict, dict] | None:
    """(step, state, data state, loop) of the newest complete, undamaged checkpoint, or None.

    Newer step directories that are incomplete or damaged (see the module docstring) are set
    aside with a warning rather than crashing or corrupting the resume; an older good one is used
    instead. When no step restores at all for another reason, the first error is raised and
    nothing is moved: that is a state that does not match the config (a different model), not
    damage.
    """
    for step in sorted(manager.all_steps(), reverse=True):
        missing = missing_parts(os.path.join(str(manager.directory), str(step)))
        if missing:
            set_aside(manager, step, f"missing {', '.join(missing)}")
    failed: list[tuple[int, Exception]] = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = restore(manager, step, abstract_state)
        except DamagedCheckpointError as exc:
            set_aside(manager, step, str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - orbax raises many kinds for damaged files
            failed.append((step, exc))
            continue
        for bad, exc in failed:
            set_aside(manager, bad, f"restore failed: {type(exc).__name__}: {exc}"[:500])
        return (step, *restored)
    if failed:
        raise failed[0][1]
    return None


def digest(tree) -> str:
    """SHA-256 of every array of `tree` with its path, dtype and shape (host or device arrays;
    a replicated array is read from this process's copy)."""
    import jax
    import numpy as np

    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.Array):
            leaf = leaf.addressable_data(0)
        arr = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def checksums(state, data_state) -> dict[str, str]:
    """The digests a checkpoint carries: one per part of the train state, one of the iterator."""
    out = {part: digest(getattr(state, part)) for part in STATE_PARTS
           if getattr(state, part, None) is not None}
    out["data"] = hashlib.sha256(json.dumps(data_state, sort_keys=True).encode()).hexdigest()
    return out


def verify(where: str, saved: dict | None, restored: dict[str, str]) -> None:
    """Raises DamagedCheckpointError if a digest in `restored` differs from the saved one.
    Checkpoints written before checksums existed (`saved` None) pass unverified."""
    if not saved:
        return
    bad = [part for part, value in restored.items() if part in saved and saved[part] != value]
    if bad:
        raise DamagedCheckpointError(
            f"{where}: checksum mismatch in {', '.join(bad)} (the files changed after they were "
            "written: damaged disk or copy)")


def save(manager, step: int, state, data_state: dict, loop: dict, val_loss: float | None):
    """Starts writing `step` (asynchronously); an OSError is raised as CheckpointWriteError."""
    metrics = None if val_loss is None else {"val_loss": float(val_loss)}
    loop = dict(loop, **{CHECKSUMS: checksums(state, data_state)})
    try:
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(IteratorState(data_state)),
                loop=ocp.args.JsonSave(loop),
            ),
            metrics=metrics,
            force=True,
        )
    except Exception as exc:  # noqa: BLE001 - orbax wraps the OSError of a failed write
        raise write_error(manager, step, exc) from exc


def wait(manager, step: int | None = None) -> None:
    """Waits for the pending save; a failed write is raised as CheckpointWriteError."""
    try:
        manager.wait_until_finished()
    except Exception as exc:  # noqa: BLE001 - see save
        raise write_error(manager, step, exc) from exc


def close(manager, failing: bool = False) -> None:
    """Closes the manager (finishing its pending write). When the caller is already failing,
    an error here is logged, not raised, so that the first error is the one the user sees."""
    try:
        # orbax (0.12) starts deleting leftover temporary directories on a thread when the
        # manager is made, and close() does not wait for it: a run that fails at start-up then
        # exits under that thread, which prints "cannot schedule new futures after interpreter
        # shutdown" after the run's own error. Wait for it first.
        getattr(manager, "_maybe_await_cleanup_tmp_directory", lambda: None)()
        manager.close()
    except Exception as exc:  # noqa: BLE001 - see save
        if not failing:
            raise write_error(manager, None, exc) from exc
        log.warning("closing the checkpoint manager failed too: %s", f"{exc}"[:200])


def write_error(manager, step: int | None, exc: BaseException) -> Exception:
    """`exc` if it is not a write failure, else a CheckpointWriteError saying what was lost."""
    cause = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if cause is None and "No space left" not in str(exc):
        return exc if isinstance(exc, Exception) else RuntimeError(str(exc))
    complete = last_complete_step(str(manager.directory))
    full = (cause is not None and cause.errno == errno.ENOSPC) or "No space left" in str(exc)
    what = (f"no space left on {mount_point(str(manager.directory))}" if full
            else f"{type(cause or exc).__name__}: {cause or exc}"[:300])
    return CheckpointWriteError(
        f"{what} while saving checkpoint {step if step is not None else '(pending)'} in "
        f"{manager.directory}; the last complete checkpoint is "
        f"{complete if complete is not None else 'none'}")


def mount_point(path: str) -> str:
    """The mount point of the filesystem holding `path` (what "the device" is, for a user)."""
    path = os.path.realpath(path)
    while not os.path.ismount(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def last_complete_step(directory: str) -> int | None:
    """The newest finalized step directory holding every part, read from disk (not from the
    manager, which lists a step as soon as its save starts)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return None
    steps = sorted((int(n) for n in names if n.isdigit()), reverse=True)
    return next((s for s in steps if not missing_parts(os.path.join(directory, str(s)))), None)


def restore(manager, step: int, abstract_state) -> tuple[Any, dict, dict]:
    """Restores `step` into the shapes and shardings of `abstract_state`, checked against its
    checksums (DamagedCheckpointError)."""
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=grain.checkpoint.CheckpointRestore(IteratorState()),
            loop=ocp.args.JsonRestore(),
        ),
    )
    loop = dict(restored["loop"])
    saved = loop.pop(CHECKSUMS, None)
    state, data_state = restored["state"], restored["data"].state
    verify(f"{manager.directory}/{step}", saved, checksums(state, data_state))
    return state, data_state, loop


def read_state_arrays(state_dir: str):
    """A saved train state as a tree of NumPy arrays, whatever devices wrote it.

    For inspection, tests and tools that do not rebuild the model: the arrays are restored onto
    this process's first device (so a checkpoint from 8 devices or 2 hosts reads anywhere).
    """
    import jax
    import numpy as np

    checkpointer = ocp.StandardCheckpointer()
    metadata = checkpointer.metadata(state_dir)
    tree = getattr(metadata, "item_metadata", metadata)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    return jax.tree.map(np.asarray, checkpointer.restore(state_dir, target))
