"""Multi-process and elastic runs on simulated CPU devices: launch.sh's local cluster of 2
processes x 2 devices trains the same parameters as 1 process x 4 devices, and a checkpoint
written on 8 devices resumes on 4 and then on 1."""

import os
import subprocess
import sys

import numpy as np

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


def test_two_processes_match_one_process(tmp_path):
    steps = ["--config.num_steps=6", "--config.eval_every=6", "--config.checkpoint_every=6"]
    two = _launch(["local-multiprocess", "2", "--cpu-devices", "2",
                   "--workdir", str(tmp_path / "two"), *TINY, *steps])
    assert "[process 1]" in two.stdout and "gray baseline" in two.stdout
    _launch(["local", "--workdir", str(tmp_path / "one"), *TINY, *steps], devices=4)
    step_two, params_two = saved_params(tmp_path / "two")
    step_one, params_one = saved_params(tmp_path / "one")
    assert step_two == step_one == 6
    assert _max_diff(params_two, params_one) < 1e-5
    # each process wrote its own data-iterator state into the shared checkpoint
    data_dir = tmp_path / "two" / "checkpoints" / "6" / "data"
    assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(os.listdir(data_dir))


def test_checkpoint_restores_on_fewer_devices(tmp_path):
    workdir = str(tmp_path / "elastic")
    for devices, steps in ((8, 4), (4, 8), (1, 12)):
        # continuing with more steps is a config change: said explicitly (recorded in run.json)
        _launch(["local", "--workdir", workdir, *TINY, f"--config.num_steps={steps}",
                 f"--config.eval_every={steps}", f"--config.checkpoint_every={steps}",
                 "--allow_config_change"], devices=devices)
        assert saved_params(workdir)[0] == steps
    # the same 12 steps on one device from the start give the same parameters
    _launch(["local", "--workdir", str(tmp_path / "straight"), *TINY, "--config.num_steps=12",
             "--config.eval_every=12", "--config.checkpoint_every=12"])
    assert _max_diff(saved_params(workdir)[1], saved_params(tmp_path / "straight")[1]) < 1e-5
