"""Devices, meshes and how host data becomes global arrays.

One `data` mesh axis over every device of every process: the batch is split along it, the train
state is replicated. Under `jax.jit` the step is written for the global batch (BatchNorm sees the
global batch statistics); under `jax.pmap` the same step runs per device with `lax.pmean` over the
`batch` axis, which computes the same numbers.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
PMAP_AXIS = "batch"


def maybe_initialize_distributed(coordinator: str = "", num_processes: int = 0,
                                 process_id: int = -1) -> None:
    """Start JAX's multi-controller runtime when the run spans several processes.

    Explicit flags win; otherwise JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID;
    on Cloud TPU VMs and under SLURM with several tasks JAX detects the cluster itself.
    """
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    num_processes = num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0") or 0)
    if process_id < 0:
        process_id = int(os.environ.get("JAX_PROCESS_ID", "-1") or -1)
    explicit = bool(coordinator) or num_processes > 1
    detected = int(os.environ.get("SLURM_NTASKS", "1")) > 1 or bool(
        os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",")
    )
    if not (explicit or detected):
        return
    # CPU-only clusters (and CPU tests over loopback) need a collectives backend: gloo.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(
            coordinator_address=coordinator or None,
            num_processes=num_processes or None,
            process_id=process_id if process_id >= 0 else None,
        )
    else:
        jax.distributed.initialize()


def make_mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch(global_batch: int, mesh: Mesh | None = None) -> None:
    n = jax.device_count() if mesh is None else mesh.devices.size
    if global_batch % n:
        raise ValueError(
            f"config.batch_size={global_batch} must be divisible by the number of devices "
            f"({n}: {jax.process_count()} process(es) x {jax.local_device_count()} local)"
        )


def to_global(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """This process's rows -> one global array per key, split along the `data` axis."""
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in batch.items()
    }


def full_to_global(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """An array every process holds in full (e.g. fixed preview images) -> a global array."""
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def _local_stack_sharding() -> NamedSharding:
    """Leading axis split over this process's devices: the layout `jax.pmap` arguments have."""
    return NamedSharding(Mesh(np.asarray(jax.local_devices()), (PMAP_AXIS,)), P(PMAP_AXIS))


def to_pmap(batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows -> (local_devices, rows/device, ...) on the local devices."""
    n, sharding = jax.local_device_count(), _local_stack_sharding()
    return {
        k: jax.device_put(np.asarray(v).reshape(n, -1, *v.shape[1:]), sharding)
        for k, v in batch.items()
    }


def fetch(tree):
    """Device arrays -> NumPy, also for replicated arrays spanning several processes (each
    process reads its own copy)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array)
                        else x, tree)


def pmap_replicate(state):
    """Global replicated state -> one copy per local device, the form `jax.pmap` steps take."""
    n, sharding = jax.local_device_count(), _local_stack_sharding()
    return jax.tree.map(lambda x: jax.device_put(np.stack([x] * n), sharding), fetch(state))


def first_replica(tree):
    """Per-device values from a pmap step -> NumPy, the copy on this process's first device."""
    return jax.tree.map(
        lambda x: np.asarray(x.addressable_shards[0].data).reshape(x.shape[1:]), tree
    )


def pmap_unreplicate(state, sharding: NamedSharding):
    """Per-device copies from a pmap step -> the global replicated state checkpoints hold."""
    return jax.tree.map(lambda x: full_to_global(x, sharding), first_replica(state))


def prefetch(iterator: Iterator, put, size: int = 2) -> Iterator:
    """Moves the next `size` batches to the devices on a background thread, so the host's
    transfer overlaps the device's step. `put` maps a host batch to device arrays."""
    queue: collections.deque = collections.deque()
    done = threading.Event()
    lock = threading.Condition()

    def worker():
        try:
            for item in iterator:
                placed = put(item)
                with lock:
                    while len(queue) >= size and not done.is_set():
                        lock.wait()
                    if done.is_set():
                        return
                    queue.append((placed, None))
                    lock.notify_all()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            with lock:
                queue.append((None, exc))
                lock.notify_all()
            return
        with lock:
            queue.append((None, StopIteration()))
            lock.notify_all()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            with lock:
                while not queue:
                    lock.wait()
                item, exc = queue.popleft()
                lock.notify_all()
            if isinstance(exc, StopIteration):
                return
            if exc is not None:
                raise exc
            yield item
    finally:
        done.set()
        with lock:
            queue.clear()
            lock.notify_all()
        thread.join(timeout=30)
