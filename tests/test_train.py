"""End-to-end training on tiny shapes: loss falls, bfloat16, clear errors, the non-finite stop.

Stop, resume, keep-best and early stopping: tests/test_training_loop.py; real SIGTERM, SIGINT
and SIGKILL of a training subprocess: tests/test_reproducibility.py."""

import json
import os

import numpy as np
import pytest
from conftest import tiny_config

from jaxcolor import checkpoint, loop, run_record, trainer as trainer_lib


def saved_params(workdir, step=None):
    directory = os.path.join(workdir, "checkpoints")
    if step is None:
        step = max(int(d) for d in os.listdir(directory) if d.isdigit())
    return step, checkpoint.read_state_arrays(os.path.join(directory, str(step), "state"))


def assert_trees_equal(a, b):
    import jax

    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) and len(la) > 0
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def metrics_rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_a_few_steps_lower_the_loss(tmp_path):
    c = tiny_config(num_steps=40, log_every=5, eval_every=40, checkpoint_every=40)
    c.optimizer.learning_rate = 3e-3
    summary = loop.train_and_evaluate(c, str(tmp_path))
    losses = [r["loss"] for r in metrics_rows(tmp_path) if "loss" in r]
    assert len(losses) == 8
    assert np.mean(losses[-2:]) < losses[0]
    assert summary["count"] == 16 and summary["ab_mae"] > 0
    for name in ("preview.png", "summary.json", "config.json"):
        assert os.path.exists(tmp_path / name), name
    assert os.listdir(tmp_path / "tensorboard")


def test_bfloat16_trains_with_float32_parameters(tmp_path):
    c = tiny_config(num_steps=30, log_every=5, eval_every=30, checkpoint_every=30, dtype="bfloat16")
    c.optimizer.learning_rate = 3e-3
    loop.train_and_evaluate(c, str(tmp_path))
    losses = [r["loss"] for r in metrics_rows(tmp_path) if "loss" in r]
    assert np.isfinite(losses).all() and np.mean(losses[-2:]) < losses[0]
    _, state = saved_params(tmp_path)
    import jax

    leaves = jax.tree.leaves((state["params"], state["batch_stats"], state["opt_state"]))
    floats = {leaf.dtype for leaf in leaves if np.issubdtype(leaf.dtype, np.floating)}
    assert floats == {np.dtype("float32")}, floats  # (Adam's step count is an int32)


def test_batch_not_divisible_by_devices_is_a_clear_error(tmp_path):
    # one CPU device here: divisibility by processes is what can fail
    from jaxcolor.data import pipeline

    with pytest.raises(ValueError, match="config.batch_size=7"):
        pipeline.per_process_batch(7, 2)


def test_non_finite_loss_stops_with_step_and_last_checkpoint(tmp_path):
    c = tiny_config(num_steps=12, log_every=1, eval_every=100, checkpoint_every=2)
    c.optimizer.name = "sgd"
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_steps = 0
    good = loop.train_and_evaluate(c, str(tmp_path), should_stop=lambda step: step == 2)
    assert good["interrupted"]
    c.optimizer.learning_rate = 1e38  # the first update overflows the parameters
    with pytest.raises(trainer_lib.NonFiniteError, match=r"at step (3|4); last good checkpoint: 2"):
        loop.train_and_evaluate(c, str(tmp_path), allow_config_change=True)
    record = run_record.read(str(tmp_path))
    assert record["status"] == "failed" and "NonFiniteError" in record["history"][-1]["reason"]
    assert record["history"][-1]["config_changes"] == [
        {"field": "optimizer.learning_rate", "saved": 0.001, "new": 1e38}]
