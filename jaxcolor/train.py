"""`python -m jaxcolor.train --config experiments/NAME.py --workdir runs/NAME [--config.X=Y]`

Trains a colorizer: the flags, and a call to `jaxcolor.loop.train_and_evaluate(config, workdir)`,
which holds the loop (see its docstring for resuming, stops and reproducibility). Every process
of a multi-host run runs this same command (`launch.sh`); `--coordinator`, `--num_processes` and
`--process_id` (or JAX's environment variables, or the cluster's own) join them.

Exit status: 0 finished; 75 (`EXIT_INTERRUPTED`) stopped by SIGTERM/SIGINT after a checkpoint,
rerun to resume; 2 a bad flag, config field or data path (nothing written or compiled), or a
workdir that refuses the run (another config, in use); 1 a failure during training (a full
disk, a split with no readable image, a non-finite loss), said in one line.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from jaxcolor import checkpoint, parallel, run_record
from jaxcolor import config as config_lib
from jaxcolor.data import pipeline
from jaxcolor.loop import train_and_evaluate
from jaxcolor.trainer import NonFiniteError

EXIT_INTERRUPTED = run_record.EXIT_INTERRUPTED
EXIT_USAGE = 2  # a bad flag, config field or data path: nothing was written or compiled
EXIT_CONFIG_CHANGED = EXIT_USAGE  # the workdir holds a run with another config, or is in use
DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "default.py")


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
    config_lib.usage_error(_override_error(_exc, sys.argv))
flags.DEFINE_string("workdir", "runs/default", "Where checkpoints, logs and images go.")
flags.DEFINE_string("coordinator", "", "host:port of process 0, for multi-process runs.")
flags.DEFINE_integer("num_processes", 0, "Processes in a multi-process run.")
flags.DEFINE_integer("process_id", -1, "This process's index in a multi-process run.")
flags.DEFINE_bool("allow_config_change", False,
                  "Continue a run whose saved config.json differs from --config (the changes are "
                  "recorded in run.json); without it that is an error listing the fields.")


def main(argv):
    if len(argv) > 1:
        config_lib.usage_error(f"unexpected arguments {' '.join(argv[1:])}: train takes flags "
                               "only (--config FILE --workdir DIR --config.FIELD=VALUE ...)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and grain are chatty at INFO
    _quiet_disk_full()
    try:
        config_lib.validate(FLAGS.config)  # before the cluster forms: every process says it
    except config_lib.ConfigError as exc:
        config_lib.usage_error(exc)
    parallel.maybe_initialize_distributed(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
    try:
        summary = train_and_evaluate(
            FLAGS.config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change,
            command=[sys.executable, "-m", "jaxcolor.train", *sys.argv[1:]])
    except (run_record.ConfigChangedError, run_record.WorkdirBusyError,
            config_lib.ConfigError) as exc:
        config_lib.usage_error(exc)
    except (checkpoint.CheckpointWriteError, pipeline.NothingEvaluatedError, NonFiniteError) as exc:
        config_lib.exit_with(exc, 1)
    except (FileNotFoundError, ValueError) as exc:  # data that is not what the config says
        config_lib.usage_error(exc)
    except OSError as exc:
        if not _is_disk_full(exc):
            raise
        last = checkpoint.last_complete_step(os.path.join(FLAGS.workdir, "checkpoints"))
        config_lib.exit_with(f"no space left on {checkpoint.mount_point(FLAGS.workdir)} while "
                             f"writing {exc.filename or 'to ' + FLAGS.workdir}; the last complete "
                             f"checkpoint is {'none' if last is None else last}", 1)
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
        config_lib.usage_error(exc)
    except (AttributeError, KeyError) as exc:
        config_lib.usage_error(_override_error(exc, argv))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
