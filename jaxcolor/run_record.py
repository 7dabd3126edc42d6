"""`WORKDIR/run.json`: what a run was, so that its numbers can be explained and defended later.

One file per workdir, rewritten atomically (temporary file + rename, so a kill never leaves half
a record):

- `config`, `seed`: the full resolved config of the latest session;
- `dataset`: what was really read (`dataset_info`, also the `data` of every `evaluate` record):
  the source and, per source, its folder, file count and a digest of the sorted file list
  (folder, sample), the shard directory with its manifest's origin, crop, size, encoding, count
  and each shard's SHA-256 (shards), or the TFDS dataset's name, version and data_dir (tfds);
  and per split its spec, size and record digest. So two machines can check they trained on the
  same photos;
- `machine`: what decides whether two runs can be bitwise equal: CPU model and SIMD flags,
  `XLA_FLAGS`, accelerator kind and driver (`machine_info`);
- `status`: `running` | `finished` | `interrupted` (stop request, rerun to resume) | `failed`;
  a session that never wrote its end (SIGKILL, power loss) is marked `killed` by the next one;
- `start_time`, `end_time` (UTC ISO 8601) of the whole run;
- `command`, `versions`, `devices`, `machine`, `process_count`, `git`: those of the latest
  session;
- `history`: one entry per session (each start of `python -m jaxcolor.train` in this workdir):
  its start and end, the steps it covered, how it ended, its command line, versions, devices,
  machine, git commit and the config fields it changed (with `--allow_config_change`). Resuming
  appends.

`config_diff` compares a saved `config.json` with a new config; `train` refuses to start when
they differ in any field outside `HARMLESS_FIELDS` unless told `--allow_config_change`.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import subprocess
import sys
from typing import Any

RUN_JSON = "run.json"
# The exit status of a run stopped by a request (SIGTERM, SIGINT) after its checkpoint: rerun to
# resume. EX_TEMPFAIL. One definition for `train` and `study` (which waits for its members).
EXIT_INTERRUPTED = 75
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy")

# Fields that change how a run is logged, checkpointed or fed, never the numbers it computes:
# changing them on resume needs no --allow_config_change. Everything else does - including
# `num_steps` (the cosine schedule depends on it) and `eval_every` (it moves the best checkpoint
# and early stopping).
HARMLESS_FIELDS = frozenset({
    "log_every", "checkpoint_every", "keep", "prefetch", "num_preview_images",
    "data.worker_count", "data.worker_buffer_size", "data.eval_threads",
})

# Fields added to the config after runs were saved without them, with the value that does what
# those runs did: a config.json lacking one compares as if it held that value, so they resume.
ADDED_FIELDS = {"data.augment_on": "host"}

LOCK_FILE = "train.lock"


class ConfigChangedError(ValueError):
    """The workdir's saved config differs from the one a new session was started with."""


class WorkdirBusyError(RuntimeError):
    """Another live process is training in this workdir."""


class WorkdirLock:
    """An exclusive `flock` on `WORKDIR/train.lock` for the life of a session, so that two
    processes never train into one workdir (say a rerun started while a preempted process is
    still writing its last checkpoint). The kernel drops the lock when the process dies, even by
    SIGKILL, so a stale file never blocks anything."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd: int | None = None

    def acquire(self, timeout: float = 0.0) -> WorkdirLock:
        import fcntl
        import time

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 100, 0).decode(errors="replace").strip()
                    os.close(fd)
                    raise WorkdirBusyError(
                        f"{os.path.dirname(self.path)}: another process ({holder or 'unknown'}) "
                        "is training in this workdir; wait for it to end or stop it") from None
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {platform.node()}".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def held_elsewhere(self) -> bool:
        """Whether some other process holds the lock now (without taking it)."""
        try:
            self.acquire()
        except WorkdirBusyError:
            return True
        self.release()
        return False


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------
# Config comparison


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_as_json(config) -> dict:
    """The config as plain JSON values (tuples become lists), as config.json stores it."""
    return json.loads(config.to_json_best_effort(sort_keys=True))


def config_diff(saved: dict, new: dict, ignore=HARMLESS_FIELDS) -> list[tuple[str, Any, Any]]:
    """[(dotted field, saved value, new value)] for every field that differs; a field one side
    lacks shows as '<missing>'."""
    a, b = {**ADDED_FIELDS, **_flatten(saved)}, {**ADDED_FIELDS, **_flatten(new)}
    missing = "<missing>"
    return [(k, a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
            if k not in ignore and a.get(k, missing) != b.get(k, missing)]


def format_diff(diff) -> str:
    return "\n".join(f"  {name}: {old!r} -> {new!r}" for name, old, new in diff)


def check_config(workdir: str, config, allow_change: bool) -> list[tuple[str, Any, Any]]:
    """Compares `WORKDIR/config.json` (if any) with `config`; raises ConfigChangedError listing
    the differing fields unless `allow_change`. Returns the differences.

    Only a run that saved a checkpoint is protected: the config.json of a session that failed
    before its first checkpoint describes nothing on disk, and refusing the corrected rerun
    would only be in the way."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path) or not _has_checkpoint(workdir):
        return []
    with open(path) as f:
        saved = json.load(f)
    diff = config_diff(saved, config_as_json(config))
    if diff and not allow_change:
        raise ConfigChangedError(
            f"{workdir} holds a run with a different config ({path}); differing fields "
            f"(saved -> new):\n{format_diff(diff)}\nUse another --workdir, or pass "
            "--allow_config_change to continue this run with the new config.")
    return diff


def _has_checkpoint(workdir: str) -> bool:
    directory = os.path.join(workdir, "checkpoints")
    return os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))


# ---------------------------------------------------------------------------------------------
# Environment


def versions() -> dict[str, str | None]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def devices() -> dict:
    import jax

    devs = jax.devices()
    return {"platform": devs[0].platform, "kind": devs[0].device_kind, "count": len(devs),
            "local_count": jax.local_device_count()}


def git_info(path: str | None = None) -> dict:
    """{'commit', 'dirty'} of the checkout holding this package; nulls when it is not a git
    checkout or git is missing (a run never fails for that)."""
    path = path or os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], check=False,
                                capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(["git", "-C", path, "status", "--porcelain",
                                 "--untracked-files=no"], check=False, capture_output=True,
                                text=True,
                                timeout=10)
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return {"commit": commit.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def files_digest(names) -> str:
    """A short digest of a sorted list of relative file names: the folder source's listing and a
    shard manifest's listing of the same folder give the same digest."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def _folder_data(data_config) -> dict:
    from jaxcolor.data import sources

    root = os.path.abspath(data_config.path)
    files = sources.list_image_files(root)
    return {"path": root, "num_files": len(files), "files_digest": files_digest(files)}


def _sample_data(data_config) -> dict:
    from jaxcolor.data import sources

    files = sorted({p for names in sources.SAMPLE_PHOTOS.values() for p in names})
    return {"path": sources.sample_dir(), "num_files": len(files),
            "files_digest": files_digest(files)}


def _shards_data(data_config) -> dict:
    """The shard directory and what its manifest says of it: the folder it was prepared from,
    crop, size, encoding, records, and each shard's SHA-256 as `prepare shards` computed it when
    writing (not rehashed here: that would read the whole dataset at every start)."""
    from jaxcolor.data import shards

    root = os.path.abspath(data_config.path)
    manifest = shards.read_manifest(root)
    sha256 = {row["name"]: row["sha256"] for row in manifest["shards"]}
    digest = hashlib.sha256(json.dumps(sha256, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "path": root, "prepared_from": manifest["source"], "crop": manifest["crop"],
        "size": manifest["size"], "encoding": manifest["encoding"], "count": manifest["count"],
        "num_files": manifest["listed"],
        "files_digest": files_digest([name for name, _ in manifest["files"]]),
        "shards_sha256": sha256,
        "shards_digest": digest,
    }


def _tfds_data(data_config) -> dict:
    """Name, version and data_dir of a TFDS dataset, from the dataset_info of the prepared data
    the source opens (already open: listing the records opened it), else as the config gives
    them (`name:version`)."""
    from jaxcolor.data import sources

    name, _, version = str(data_config.name).partition(":")
    out = {"name": name, "version": version or None, "config": None,
           "data_dir": os.path.abspath(data_config.data_dir) if data_config.data_dir else None}
    try:
        info = sources.tfds_source(data_config.name, data_config.data_dir,
                                   data_config.train_split).dataset_info
        out.update(name=info.name, version=str(info.version), config=info.config_name or None,
                   data_dir=info.data_dir,
                   num_examples={k: int(v.num_examples) for k, v in info.splits.items()})
    except Exception as exc:  # noqa: BLE001 - the record says why, the run goes on
        out["info_error"] = f"{type(exc).__name__}: {exc}"[:500]
    return out


_DESCRIBE = {"folder": _folder_data, "sample": _sample_data, "shards": _shards_data,
             "tfds": _tfds_data}


def dataset_info(data_config) -> dict:
    """What a run or an evaluation really read: the source's own description (see the module
    docstring) plus, per split, its spec, record count and record digest. The one place both
    `run.json` and `evaluate`'s records take it from, so the two always say the same."""
    from jaxcolor.data import sources

    describe = _DESCRIBE.get(data_config.source)
    info: dict[str, Any] = {"source": data_config.source, **(describe(data_config) if describe
                                                             else {})}
    splits = {}
    for name, field in (("train", "train_split"), ("validation", "val_split"),
                        ("test", "test_split")):
        spec = data_config[field]
        try:
            records = sources.records_for(data_config, spec)
        except (ValueError, FileNotFoundError) as exc:
            splits[name] = {"spec": spec, "error": str(exc)}
            continue
        splits[name] = {"spec": spec, "count": len(records), "digest": sources.digest(records)}
    info["splits"] = splits
    return info


# ---------------------------------------------------------------------------------------------
# Machine


# /proc/cpuinfo flags that change the code XLA:CPU emits (it compiles for the host's own vector
# units), hence float rounding: x86 SSE/AVX/AVX-512/AMX/FMA/F16C, Arm NEON/SVE.
SIMD_FLAG_PREFIXES = ("sse", "ssse3", "avx", "fma", "f16c", "amx", "asimd", "sve", "neon")


def cpu_info(path: str = "/proc/cpuinfo") -> dict:
    """{'model', 'simd_flags' (sorted), 'flags_digest' (all flags, short SHA-256)} of the first
    CPU in `path` (x86's 'model name'/'flags', Arm's 'Features'); nulls where it is unreadable."""
    fields: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = fields.get("model name") or fields.get("Processor") or platform.processor() or None
    raw = fields.get("flags", fields.get("Features"))
    flags = sorted(set(raw.split())) if raw is not None else None
    return {
        "model": model,
        "simd_flags": None if flags is None else [f for f in flags
                                                  if f.startswith(SIMD_FLAG_PREFIXES)],
        "flags_digest": None if flags is None
        else hashlib.sha256(" ".join(flags).encode()).hexdigest()[:16],
    }


def _nvidia_driver(path: str = "/proc/driver/nvidia/version") -> str | None:
    """The NVIDIA kernel driver's version, from 'NVRM version: NVIDIA UNIX [Open] Kernel Module
    [for x86_64]  550.54.15  ...' (a file read: no nvidia-smi, no CUDA call)."""
    try:
        with open(path) as f:
            first = f.readline()
    except OSError:
        return None
    found = re.search(r"\b\d+\.\d+(?:\.\d+)?\b", first)
    return found.group(0) if found else first.strip() or None


def accelerator_info() -> dict:
    """Platform, device kind, the runtime's platform version (the CUDA version on GPU, libtpu's
    on TPU) and, on an NVIDIA GPU, the kernel driver's version (else null)."""
    import jax

    device = jax.devices()[0]
    try:
        version = str(device.client.platform_version)
    except Exception:  # noqa: BLE001 - not every backend exposes it
        version = None
    return {"platform": device.platform, "kind": device.device_kind,
            "platform_version": version,
            "driver": _nvidia_driver() if device.platform == "gpu" else None}


def machine_info() -> dict:
    """What decides whether two runs of the same code, config and data are bitwise equal: the
    CPU (XLA:CPU compiles for the host's instruction set, so an AVX-512 machine rounds
    differently from an AVX2 one), the XLA_FLAGS in force and the accelerator and its driver."""
    return {"cpu": cpu_info(), "xla_flags": os.environ.get("XLA_FLAGS"),
            "accelerator": accelerator_info()}


# ---------------------------------------------------------------------------------------------
# The record


def read(workdir: str) -> dict | None:
    path = os.path.join(workdir, RUN_JSON)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write(workdir: str, record: dict) -> None:
    """Replaces run.json atomically. A failed write (a full disk) leaves the previous record in
    place and is logged, never raised: the record must not turn into the run's error."""
    path = os.path.join(workdir, RUN_JSON)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(record, f, indent=2)
        os.replace(tmp, path)
    except OSError as exc:
        logging.getLogger("jaxcolor").warning("could not update %s (%s); it keeps its previous "
                                              "content", path, exc.strerror or exc)
        try:
            os.remove(tmp)
        except OSError:
            pass


class RunRecord:
    """Keeps `run.json` current during one session (only process 0 writes)."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.workdir = workdir
        self.enabled = enabled
        self.record: dict = {}

    def start(self, config, start_step: int, config_changes=(), command=None) -> None:
        if not self.enabled:
            return
        import jax

        record = read(self.workdir) or {"start_time": now(), "history": []}
        history = record.setdefault("history", [])
        if history and history[-1].get("status") == "running":
            history[-1]["status"] = "killed"  # it never wrote its end
            history[-1]["reason"] = "the process ended without recording its end (SIGKILL?)"
        session = {
            "start_time": now(),
            "end_time": None,
            "start_step": int(start_step),
            "end_step": int(start_step),
            "status": "running",
            "command": list(command if command is not None else sys.argv),
            "cwd": os.getcwd(),
            "host": platform.node(),
            "versions": versions(),
            "devices": devices(),
            "machine": machine_info(),
            "process_count": jax.process_count(),
            "git": git_info(),
            "config_changes": [{"field": k, "saved": a, "new": b} for k, a, b in config_changes],
        }
        history.append(session)
        record.update(
            config=config_as_json(config), seed=int(config.seed), dataset=dataset_info(config.data),
            status="running", end_time=None, command=session["command"],
            versions=session["versions"], devices=session["devices"],
            machine=session["machine"], process_count=session["process_count"],
            git=session["git"],
        )
        self.record = record
        write(self.workdir, record)

    def progress(self, step: int | None) -> None:
        """A checkpoint of `step` is complete on disk: a later kill still shows how far this got
        (None: none is complete yet)."""
        if self.enabled and self.record and step is not None:
            self.record["history"][-1]["end_step"] = int(step)
            write(self.workdir, self.record)

    def end(self, status: str, step: int | None, reason: str | None = None) -> None:
        if not self.enabled or not self.record:
            return
        session = self.record["history"][-1]
        session.update(status=status, end_time=now())
        if step is not None:
            session["end_step"] = int(step)
        if reason:
            session["reason"] = reason
        self.record.update(status=status, end_time=session["end_time"])
        self.record["train_seconds"] = train_seconds(self.record)
        write(self.workdir, self.record)


def train_seconds(record: dict) -> float:
    """Wall time summed over the sessions that recorded their end."""
    total = 0.0
    for s in record.get("history", []):
        if s.get("start_time") and s.get("end_time"):
            total += (datetime.datetime.fromisoformat(s["end_time"])
                      - datetime.datetime.fromisoformat(s["start_time"])).total_seconds()
    return total
