"""Multi-process and elastic runs on simulated CPU devices: launch.sh's local cluster of 2
processes x 2 devices trains the same parameters as 1 process x 4 devices, a SIGTERM to one
process stops both at the same step, and a checkpoint written on 8 devices resumes on 4 and then
on 1."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT
from test_train import saved_params

TINY = [
    "--config.data.image_size=16", "--config.model.width=0.125", "--config.batch_size=8",
    "--config.data.sample_train_examples=64", "--config.data.sample_eval_examples=8",
    "--config.log_every=2", "--config.num_preview_images=2", "--config.data.eval_threads=1",
    # SGD: Adam would turn the rounding noise of the exactly-zero gradients of the conv biases in
    # front of BatchNorm into learning-rate-sized steps (see tests/test_sharding.py)
    "--config.optimizer.name=sgd", "--config.optimizer.schedule=constant",
    "--config.optimizer.warmup_steps=0",
]


def _env(devices):
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHON=sys.executable,
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def _launch(args, devices=1):
    done = subprocess.run(["bash", "launch.sh", *args], cwd=ROOT, env=_env(devices),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _max_diff(a, b):
    import jax

    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# Long enough that a signal sent after the first checkpoint lands mid-run; every checkpoint kept,
# so the one at step 6 can be compared with a 6-step run (the schedule is constant).
STEPS = ["--config.num_steps=120", "--config.eval_every=120", "--config.checkpoint_every=6",
         "--config.keep=25"]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """An uninterrupted run of 2 processes x 2 devices (the reference of the tests below)."""
    workdir = tmp_path_factory.mktemp("two")
    done = _launch(["local-multiprocess", "2", "--cpu_devices", "2", "--workdir", str(workdir),
                    *TINY, *STEPS])
    return workdir, done


def test_two_processes_match_one_process(two_processes, tmp_path):
    workdir, two = two_processes
    assert "[process 1]" in two.stdout and "gray baseline" in two.stdout
    six = ["--config.num_steps=6", "--config.eval_every=6", "--config.checkpoint_every=6"]
    _launch(["local", "--workdir", str(tmp_path / "one"), *TINY, *six], devices=4)
    _, params_two = saved_params(workdir, 6)
    step_one, params_one = saved_params(tmp_path / "one")
    assert step_one == 6 and saved_params(workdir)[0] == 120
    assert _max_diff(params_two, params_one) < 1e-5
    # each process wrote its own data-iterator state into the shared checkpoint
    data_dir = workdir / "checkpoints" / "6" / "data"
    assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(os.listdir(data_dir))


def _process_pid(workdir: str, index: int, timeout: float = 120) -> int:
    """The pid of training process `index` (JAX_PROCESS_ID) of the run in `workdir`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
                env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            except OSError:
                continue
            if (b"jaxcolor.train" in cmd and workdir.encode() in cmd
                    and f"JAX_PROCESS_ID={index}".encode() in env):
                return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"no training process {index} for {workdir}")


def test_sigterm_to_one_process_stops_every_process_at_the_same_step(two_processes, tmp_path):
    """A pod host preempted alone: SIGTERM to process 1 only, after the first checkpoint. Both
    processes checkpoint the same step and exit 75 (so does launch.sh), and the resumed run ends
    bitwise where the uninterrupted one did."""
    workdir = str(tmp_path / "run")
    cmd = ["bash", "launch.sh", "local-multiprocess", "2", "--cpu_devices", "2",
           "--workdir", workdir, *TINY, *STEPS]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(2), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    victim = _process_pid(workdir, 1)
    deadline = time.time() + 240
    while not os.path.exists(os.path.join(workdir, "checkpoints", "6", "commit_success.txt")):
        assert time.time() < deadline and proc.poll() is None, "no first checkpoint"
        time.sleep(0.05)
    os.kill(victim, signal.SIGTERM)
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 75, out[-4000:]
    stops = sorted(set(re.findall(r"\[process (\d)\].*stop requested: checkpointed step (\d+)",
                                  out)))
    assert [p for p, _ in stops] == ["0", "1"] and stops[0][1] == stops[1][1], stops
    stopped = int(stops[0][1])
    assert 6 <= stopped < 120 and saved_params(workdir)[0] == stopped
    resumed = _launch(cmd[2:])
    assert "gray baseline" in resumed.stdout
    step, params = saved_params(workdir)
    assert step == 120
    _, reference = saved_params(two_processes[0])
    import jax

    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(reference), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_checkpoint_restores_on_fewer_devices(two_processes, tmp_path):
    workdir = str(tmp_path / "elastic")
    for devices, steps in ((8, 4), (4, 8), (1, 12)):
        # continuing with more steps is a config change: said explicitly (recorded in run.json)
        _launch(["local", "--workdir", workdir, *TINY, f"--config.num_steps={steps}",
                 f"--config.eval_every={steps}", f"--config.checkpoint_every={steps}",
                 "--allow_config_change"], devices=devices)
        assert saved_params(workdir)[0] == steps
    # the same 12 steps without a change of devices (the reference run's step 12, on 2 processes
    # x 2 devices: the schedule is constant) give the same parameters
    _, straight = saved_params(two_processes[0], 12)
    assert _max_diff(saved_params(workdir)[1], straight) < 1e-5
