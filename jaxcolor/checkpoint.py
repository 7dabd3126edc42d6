"""One orbax CheckpointManager saving, together, the train state, the data iterator and a small
JSON record of the loop (best validation loss, early-stopping counter).

orbax writes each step into a temporary directory and renames it when complete, so a crash never
leaves a half-written checkpoint that restore would pick. It keeps the last `keep` steps and the
best one by validation loss.
"""

from __future__ import annotations

import json
import os
from typing import Any

import grain
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers


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
        item_names=("state", "data", "loop"),
        options=options,
    )


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
