"""One orbax CheckpointManager saving, together, the train state, the data iterator and a small
JSON record of the loop (best validation loss, early-stopping counter).

orbax writes each step into a temporary directory (`<step>.orbax-checkpoint-tmp-*`) and renames
it when complete; the manager lists only renamed step directories and deletes leftover temporary
ones when it starts, so a process killed mid-write never leaves a checkpoint that restore would
pick. A step directory that is incomplete anyway (an item or orbax's metadata missing, files
truncated by a full disk or a copy gone wrong) would make orbax's restore crash: `restore_latest`
moves such directories aside to `checkpoints_incomplete/` with a warning naming them and restores
the newest complete step instead. It keeps the last `keep` steps and the best one by validation
loss.
"""

from __future__ import annotations

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


def make_manager(workdir: str, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
    policy = checkpoint_managers.AnyPreservationPolicy(
        [
            checkpoint_managers.LatestN(n=keep),
            checkpoint_managers.BestN(
                get_metric_fn=lambda m: m["val_loss"],
                reverse=True,  # ascending sort keeps the last n: reversed, the lowest loss
                n=1,
                keep_checkpoints_without_metrics=False,
            ),
        ]
    )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
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
    """(step, state, data state, loop) of the newest complete checkpoint, or None if none.

    Newer step directories that are incomplete (see the module docstring) are set aside with a
    warning rather than crashing the resume; an older complete one is used instead. When no step
    restores at all, the first error is raised and nothing is moved: that is a state that does
    not match the config (a different model), not damage.
    """
    for step in sorted(manager.all_steps(), reverse=True):
        missing = missing_parts(os.path.join(str(manager.directory), str(step)))
        if missing:
            set_aside(manager, step, f"missing {', '.join(missing)}")
    failed: list[tuple[int, Exception]] = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = restore(manager, step, abstract_state)
        except Exception as exc:  # noqa: BLE001 - orbax raises many kinds for damaged files
            failed.append((step, exc))
            continue
        for bad, exc in failed:
            set_aside(manager, bad, f"restore failed: {type(exc).__name__}: {exc}"[:500])
        return (step, *restored)
    if failed:
        raise failed[0][1]
    return None


def save(manager, step: int, state, data_state: dict, loop: dict, val_loss: float | None):
    metrics = None if val_loss is None else {"val_loss": float(val_loss)}
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


def restore(manager, step: int, abstract_state) -> tuple[Any, dict, dict]:
    """Restores `step` into the shapes and shardings of `abstract_state`."""
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=grain.checkpoint.CheckpointRestore(IteratorState()),
            loop=ocp.args.JsonRestore(),
        ),
    )
    return restored["state"], restored["data"].state, dict(restored["loop"])


def restore_state(manager, step: int, abstract_state):
    """Only the train state (for evaluation and inference)."""
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
    )
    return restored["state"]


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
