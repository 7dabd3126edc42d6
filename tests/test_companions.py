"""A second network in the train state (`jaxcolor.companions`): the linear probe trains beside
the colorizer with its own parameters, BatchNorm statistics and Adam state, all saved in the
checkpoint, and a run stopped and resumed ends bitwise where an uninterrupted one does.

Across devices (jit over 8 devices, pmap over 8, checkpoints restored on another device count)
the probe's leaves are compared by tests/test_sharding.py, which trains it in every run.
"""

import json
import os

import jax
import numpy as np
import pytest
from conftest import tiny_config

from jaxcolor import checkpoint, loop

STEPS = 6


def config(**overrides):
    return tiny_config(**{"num_steps": STEPS, "eval_every": STEPS, "checkpoint_every": 3,
                          "log_every": 1, "probe.enabled": True, **overrides})


def state_at(workdir, step):
    return checkpoint.read_state_arrays(os.path.join(workdir, "checkpoints", str(step), "state"))


def flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "examples_per_s"} for line in f]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("probe_run"))
    loop.train_and_evaluate(config(), workdir)
    return workdir


def test_the_probe_has_its_own_parameters_statistics_and_optimizer_and_they_train(uninterrupted):
    start, end = flat(state_at(uninterrupted, 3)), flat(state_at(uninterrupted, STEPS))
    probe = {k: v for k, v in end.items() if k.startswith("['companions']['probe']")}
    kinds = {"params": "['params']", "batch_stats": "['batch_stats']", "mu": "['mu']",
             "nu": "['nu']"}
    for kind, marker in kinds.items():
        leaves = [k for k in probe if marker in k]
        assert leaves, f"no {kind} leaves in the probe's saved state: {sorted(probe)}"
        assert any(not np.array_equal(start[k], end[k]) for k in leaves), (
            f"the probe's {kind} did not change between steps 3 and {STEPS}")
    assert int(end["['companions']['probe']['step']"]) == STEPS
    assert int(end["['companions']['probe']['opt_state'][0]['count']"]) == STEPS
    losses = [r["probe_loss"] for r in rows(uninterrupted) if "probe_loss" in r]
    assert len(losses) == STEPS and all(np.isfinite(losses)) and min(losses) > 0, losses


def test_a_probe_run_stopped_and_resumed_ends_bitwise_as_an_uninterrupted_one(uninterrupted,
                                                                             tmp_path):
    workdir = str(tmp_path)
    out = loop.train_and_evaluate(config(), workdir, should_stop=lambda step: step == 2)
    assert out == {"interrupted": True, "step": 2}
    loop.train_and_evaluate(config(), workdir)
    a, b = flat(state_at(uninterrupted, STEPS)), flat(state_at(workdir, STEPS))
    assert set(a) == set(b) and any(k.startswith("['companions']['probe']") for k in a)
    differ = [k for k in a if a[k].dtype != b[k].dtype or a[k].tobytes() != b[k].tobytes()]
    assert not differ, f"after the resume these leaves differ: {differ}"
    assert rows(workdir) == rows(uninterrupted)


def test_a_watching_probe_leaves_the_colorizer_bitwise_as_without_it(uninterrupted, tmp_path):
    """The probe adds no term to the colorizer's loss, so the colorizer must train exactly as
    without it: same parameters, statistics and optimizer state, same colorizer metrics."""
    loop.train_and_evaluate(config(**{"probe.enabled": False}), str(tmp_path))
    with_probe, without = flat(state_at(uninterrupted, STEPS)), flat(state_at(tmp_path, STEPS))
    colorizer = {k: v for k, v in with_probe.items() if not k.startswith("['companions']")}
    assert set(colorizer) == set(without)
    assert not [k for k in without if without[k].tobytes() != colorizer[k].tobytes()]
    plain = [{k: v for k, v in r.items() if k != "probe_loss"} for r in rows(uninterrupted)]
    assert plain == rows(tmp_path)
