"""Reproducibility: run records, bitwise determinism, seed sensitivity, config-change refusal,
incomplete checkpoints, non-finite guard, and real SIGTERM/SIGKILL of a training process.

One uninterrupted reference run (in-process, module-scoped) is shared: every interrupted or
repeated run must end with parameters bitwise equal to it.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import ROOT, tiny_config

from jaxcolor import checkpoint, loop, run_record, train, trainer as trainer_lib
from jaxcolor import step as step_lib
from jaxcolor.configs.default import get_config
from jaxcolor.data import pipeline

STEPS = 160
RUN = {"num_steps": STEPS, "log_every": 5, "eval_every": STEPS, "checkpoint_every": 20,
       "num_preview_images": 2}


def config(**overrides):
    return tiny_config(**{**RUN, **overrides})


def as_flags(c) -> list[str]:
    """`--config.X=Y` for every field where `c` differs from the default config file."""
    new, old = run_record._flatten(c.to_dict()), run_record._flatten(get_config().to_dict())
    return [f"--config.{k}={v}" for k, v in new.items() if old.get(k) != v]


def final_params(workdir):
    directory = os.path.join(workdir, "checkpoints")
    step = max(int(d) for d in os.listdir(directory) if d.isdigit())
    return step, checkpoint.read_state_arrays(os.path.join(directory, str(step), "state"))


def assert_trees_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) and la
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def metric_rows(workdir):
    """metrics.jsonl without the wall-clock column."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if k != "examples_per_s"} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reference"))
    loop.train_and_evaluate(config(), workdir)
    return workdir


def test_same_seed_is_bitwise_identical_and_run_json_explains_the_run(reference, tmp_path):
    loop.train_and_evaluate(config(), str(tmp_path))
    assert_trees_equal(final_params(reference), final_params(tmp_path))
    assert metric_rows(reference) == metric_rows(tmp_path)

    record = run_record.read(str(tmp_path))
    assert record["status"] == "finished" and record["seed"] == 0
    assert record["config"] == run_record.config_as_json(config())
    assert set(record["versions"]) == {"python", *run_record.PACKAGES}
    assert record["devices"]["count"] == jax.device_count() and record["process_count"] == 1
    assert set(record["git"]) == {"commit", "dirty"}
    assert record["dataset"]["source"] == "sample" and record["dataset"]["num_files"] == 6
    assert len(record["dataset"]["files_digest"]) == 16
    assert record["dataset"]["splits"]["train"]["count"] == 64
    [session] = record["history"]
    assert (session["start_step"], session["end_step"], session["status"]) == (0, STEPS, "finished")
    # what decides bitwise equality (tests/test_run_record.py checks the values)
    assert record["machine"] == session["machine"] == run_record.machine_info()
    assert set(record["machine"]) == {"cpu", "xla_flags", "accelerator"}
    assert record["start_time"] <= record["end_time"] and record["train_seconds"] > 0


def test_a_different_seed_changes_parameters_metrics_and_data_order(reference, tmp_path):
    loop.train_and_evaluate(config(seed=1), str(tmp_path))
    a, b = final_params(reference)[1], final_params(tmp_path)[1]
    assert any(not np.array_equal(x, y) for x, y in
               zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])))
    losses = lambda w: [r["loss"] for r in metric_rows(w) if "loss" in r]
    assert losses(reference) != losses(tmp_path)

    c = config()
    first = lambda seed: next(iter(pipeline.train_dataset(c.data, 8, seed)))["L"]
    np.testing.assert_array_equal(first(0), first(0))
    assert not np.array_equal(first(0), first(1))
    # step keys: fold_in(step root of the seed, step) - equal for equal (seed, step) only
    data = lambda k: np.asarray(jax.random.key_data(k))
    np.testing.assert_array_equal(
        data(trainer_lib.step_key(0, 7)), data(jax.random.fold_in(trainer_lib.step_root(0), 7)))
    assert not np.array_equal(data(trainer_lib.step_key(0, 7)), data(trainer_lib.step_key(1, 7)))
    assert not np.array_equal(data(trainer_lib.step_key(0, 7)), data(trainer_lib.step_key(0, 8)))


def test_a_changed_config_is_refused_with_the_differing_fields(reference):
    c = config()
    c.optimizer.learning_rate = 2e-3
    c.batch_size = 4
    c.log_every = 1  # harmless: not reported
    with pytest.raises(run_record.ConfigChangedError) as err:
        loop.train_and_evaluate(c, reference)
    message = str(err.value)
    assert "optimizer.learning_rate: 0.001 -> 0.002" in message
    assert "batch_size: 8 -> 4" in message and "log_every" not in message
    assert "--allow_config_change" in message
    assert run_record.read(reference)["status"] == "finished"  # nothing was touched
    assert len(run_record.read(reference)["history"]) == 1


def test_a_workdir_in_use_is_refused(tmp_path):
    lock = run_record.WorkdirLock(str(tmp_path)).acquire()
    try:
        with pytest.raises(run_record.WorkdirBusyError, match=f"another process \\(pid {os.getpid()}"):
            loop.train_and_evaluate(config(), str(tmp_path))
    finally:
        lock.release()
    assert not run_record.WorkdirLock(str(tmp_path)).held_elsewhere()


def test_incomplete_checkpoints_are_set_aside_and_training_continues(reference, tmp_path):
    """The reference run's checkpoints with the newest replaced by damaged ones: resuming takes
    the last complete step, sets the others aside, and ends bitwise equal, metrics included."""
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    ckpt = workdir / "checkpoints"
    last, previous = sorted(int(d) for d in os.listdir(ckpt) if d.isdigit())[-2:][::-1]
    # the last step directory missing an item, a higher one whose array files are truncated,
    # and a temporary directory orbax left behind when killed mid-write
    shutil.rmtree(ckpt / str(last) / "state")
    shutil.copytree(ckpt / str(previous), ckpt / "1000")
    for dirpath, _, files in os.walk(ckpt / "1000" / "state"):
        for name in files:
            os.truncate(os.path.join(dirpath, name), 0)
    shutil.copytree(ckpt / str(previous), ckpt / "1100.orbax-checkpoint-tmp-1234567")

    loop.train_and_evaluate(config(), str(workdir))
    assert_trees_equal(final_params(reference), final_params(workdir))
    assert metric_rows(reference) == metric_rows(workdir)
    aside = sorted(int(d.split("-")[0]) for d in os.listdir(workdir / "checkpoints_incomplete"))
    assert aside == [last, 1000]
    assert not any("tmp" in d for d in os.listdir(ckpt))
    history = run_record.read(str(workdir))["history"]
    assert [(h["status"], h["start_step"]) for h in history] == [("finished", 0),
                                                                ("finished", previous)]


def _poison(monkeypatch, bad_index):
    """Makes the `bad_index`-th training batch (0-based) NaN."""
    original = loop._host_batches

    def host_batches(iterator):
        for i, (batch, state, skipped) in enumerate(original(iterator)):
            if i == bad_index:
                batch = dict(batch, ab=np.full_like(batch["ab"], np.nan))
            yield batch, state, skipped

    monkeypatch.setattr(loop, "_host_batches", host_batches)


def test_a_non_finite_update_is_skipped_and_counted(monkeypatch, tmp_path):
    """(The default, stopping with the step and the last good checkpoint: test_train.py.)"""
    c = config(num_steps=12, checkpoint_every=4, eval_every=12, log_every=1)
    _poison(monkeypatch, 5)  # step 6
    c.skip_nonfinite = True
    loop.train_and_evaluate(c, str(tmp_path / "skip"))
    with open(tmp_path / "skip" / "summary.json") as f:
        assert json.load(f)["skipped_updates"] == 1
    rows = metric_rows(tmp_path / "skip")
    assert [r["skipped_updates"] for r in rows if "loss" in r] == [0] * 5 + [1] * 7
    _, state = final_params(tmp_path / "skip")
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))


def test_a_skipped_step_keeps_the_state_bitwise():
    import functools

    from jaxcolor import losses
    from jaxcolor.models import build_model

    c = config()
    c.optimizer.warmup_steps = 0  # (a warmup's first learning rate is 0: nothing would move)
    model = build_model(c.model, c.dtype)
    tx, _ = step_lib.make_optimizer(c.optimizer, 10)
    state = jax.jit(functools.partial(step_lib.create_state, model, tx, image_size=16))(
        jax.random.key(0, impl="rbg"))
    batch = next(iter(pipeline.train_dataset(c.data, 8, 0)))
    batch = {"L": batch["L"], "ab": batch["ab"]}
    step = jax.jit(functools.partial(step_lib.train_step, loss_fn=losses.get_loss("reference"),
                                     skip_nonfinite=True))
    kept, m = step(state, dict(batch, ab=np.full_like(batch["ab"], np.nan)), None)
    assert not bool(m["finite"])
    assert_trees_equal(kept, state)
    moved, m = step(state, batch, None)
    assert bool(m["finite"]) and int(moved.step) == 1
    assert any(not np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(moved.params), jax.tree.leaves(state.params)))


def _wait_for_step(workdir, past: int, proc, timeout=180):
    """Until metrics.jsonl logs a step > `past` (the subprocess is training)."""
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            with open(path) as f:
                steps = [json.loads(line)["step"] for line in f if line.strip()]
            if steps and max(steps) > past:
                return max(steps)
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"no step past {past} in {path} (exit {proc.poll()})")


def test_sigterm_sigint_and_sigkill_at_random_moments_then_resume_bitwise(reference, tmp_path):
    """A real `python -m jaxcolor.train` process: SIGTERM at a random moment (checkpoint, exit
    75), resume, SIGINT (Ctrl-C: the same), resume, SIGKILL at a random moment, resume to the end:
    parameters bitwise equal to the uninterrupted reference run."""
    rng = random.Random(8)
    workdir = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "jaxcolor.train", "--workdir", workdir, *as_flags(config())]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = lambda: subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)

    proc = start()
    _wait_for_step(workdir, 0, proc)
    time.sleep(rng.uniform(0, 0.5))
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=180)[0].decode()
    assert proc.returncode == train.EXIT_INTERRUPTED, out[-3000:]
    stopped = final_params(workdir)[0]
    assert 0 < stopped < STEPS

    proc = start()
    _wait_for_step(workdir, stopped, proc)
    time.sleep(rng.uniform(0, 0.3))
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=180)[0].decode()
    assert proc.returncode == train.EXIT_INTERRUPTED, out[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    first_stop, stopped = stopped, final_params(workdir)[0]
    assert first_stop < stopped < STEPS

    proc = start()
    _wait_for_step(workdir, stopped, proc)
    time.sleep(rng.uniform(0, 0.5))
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_record = run_record.read(workdir)
    assert killed_record["history"][-1]["status"] == "running"  # it never wrote its end

    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gray baseline" in done.stdout
    step, params = final_params(workdir)
    assert step == STEPS
    assert_trees_equal(params, final_params(reference)[1])
    history = run_record.read(workdir)["history"]
    assert [h["status"] for h in history] == ["interrupted", "interrupted", "killed", "finished"]
    assert history[0]["end_step"] == first_stop == history[1]["start_step"]
    assert history[1]["end_step"] == stopped == history[2]["start_step"]
    assert history[3]["start_step"] >= history[2]["start_step"]
    assert history[0]["command"] == cmd

    # the command line refuses a changed config (exit 2) and names the field and the way out
    changed = subprocess.run(cmd + ["--config.optimizer.learning_rate=0.002"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert changed.returncode == train.EXIT_CONFIG_CHANGED, changed.stderr[-3000:]
    assert "optimizer.learning_rate: 0.001 -> 0.002" in changed.stderr
    assert "--allow_config_change" in changed.stderr
    assert len(run_record.read(workdir)["history"]) == 4


def test_a_metrics_line_torn_by_a_kill_is_dropped_on_resume(tmp_path):
    from jaxcolor.logbook import Logbook

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 5, "loss": 1.0}\n{"step": 10, "loss": 0.5}\n{"step": 15, "lo')
    book = Logbook(str(tmp_path), enabled=False)
    book.enabled = True  # (without opening TensorBoard files)
    book.truncate_after(10)
    assert path.read_text() == '{"step": 5, "loss": 1.0}\n{"step": 10, "loss": 0.5}\n'
