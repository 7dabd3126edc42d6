"""The training loop's own state, set up so that each behaviour really happens: a validation loss
that is not monotonic (scripted), a stop right after an evaluation, patience running out, files
skipped while training; each compared after a resume with the uninterrupted run."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from conftest import script_val_loss, tiny_config, write_images

from jaxcolor import checkpoint, loop, runs
from jaxcolor.data import pipeline
from jaxcolor.logbook import read_metrics

# best at 4; 6, 8 and 10 are worse: with patience 3 the run stops early at 10, before num_steps
LOSSES = {2: 1.0, 4: 0.5, 6: 0.8, 8: 0.9, 10: 0.95, 12: 0.4, 14: 0.3}


def loop_config():
    return tiny_config(num_steps=14, eval_every=2, checkpoint_every=2, log_every=1, patience=3,
                       keep=1)


def final_loop(workdir):
    """The loop record of the newest checkpoint, as a resume would read it."""
    manager = runs._manager(workdir)
    try:
        return {k: v for k, v in runs._loop(manager, max(manager.all_steps())).items()
                if k != checkpoint.CHECKSUMS}
    finally:
        manager.close()


def test_early_stopping_best_step_and_loop_record_survive_a_stop_after_an_evaluation(
        monkeypatch, tmp_path):
    script_val_loss(monkeypatch, LOSSES)
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    loop.train_and_evaluate(loop_config(), straight)
    summary = json.load(open(os.path.join(straight, "summary.json")))
    # the setup does what it is for: patience ran out at 10, and the best is not the latest
    assert (summary["stopped_early"], summary["step"], summary["best_step"]) == (True, 10, 4)
    assert summary["best_val_loss"] == 0.5
    assert final_loop(straight) == {"best_val_loss": 0.5, "best_step": 4, "bad_evals": 3,
                                    "stopped_early": True, "skipped_files": 0,
                                    "skipped_updates": 0}
    # stopped right after the evaluations at 6 and at 8 (bad_evals 1, then 2), resumed each time,
    # the second time with --allow_config_change; keep=1, so only the best protects step 4
    assert loop.train_and_evaluate(loop_config(), resumed, should_stop=lambda s: s == 6)["interrupted"]
    assert final_loop(resumed)["bad_evals"] == 1 and runs.checkpoint_steps(resumed) == [4, 6]
    assert loop.train_and_evaluate(loop_config(), resumed, should_stop=lambda s: s == 8)["interrupted"]
    assert final_loop(resumed)["bad_evals"] == 2 and runs.checkpoint_steps(resumed) == [4, 8]
    changed = loop_config()
    changed.skip_nonfinite = True  # a change that needs --allow_config_change
    loop.train_and_evaluate(changed, resumed, allow_config_change=True)
    assert runs.checkpoint_steps(resumed) == [4, 10]
    assert json.load(open(os.path.join(resumed, "summary.json"))) == summary
    assert final_loop(resumed) == final_loop(straight)
    step, why = runs.choose_step(resumed)
    assert step == 4 and why == "the best by validation loss (0.5; the latest is 10)"
    assert runs.load_colorizer(resumed).step_reason == why
    # The third session compiled another step (skip_nonfinite adds a select), so from step 8 on
    # the numbers agree to float rounding, not bitwise; up to step 8 the logs are identical.
    # (Bitwise resumes of real processes: test_reproducibility.py.)
    a = checkpoint.read_state_arrays(os.path.join(straight, "checkpoints", "10", "state"))
    b = checkpoint.read_state_arrays(os.path.join(resumed, "checkpoints", "10", "state"))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    ignore = {"examples_per_s", "skipped_updates"}  # wall clock; logged once skip_nonfinite is on
    rows = lambda w: [{k: v for k, v in r.items() if k not in ignore}  # noqa: E731
                      for r in read_metrics(w)]
    early = lambda w: [r for r in rows(w) if r["step"] <= 8]  # noqa: E731
    assert early(resumed) == early(straight)
    late = [(a, b) for a, b in zip(rows(resumed), rows(straight), strict=True) if a["step"] > 8]
    for a, b in late:
        assert a.keys() == b.keys() and a["step"] == b["step"]
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (a["step"], k)


def test_skipped_files_are_exact_in_every_row_across_a_resume(tmp_path):
    folder = str(tmp_path / "images")
    write_images(folder, 9, size=(24, 20))
    for name in ("bad_a.png", "bad_b.jpg", "bad_c.png"):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(b"not an image")
    c = tiny_config(**{"data.source": "folder", "data.path": folder,
                       "data.train_split": "[:100%]", "data.val_split": "[:25%]",
                       "batch_size": 4, "num_steps": 8, "log_every": 1, "eval_every": 8,
                       "checkpoint_every": 4})
    # what the pipeline itself counts after each batch: the loop must log exactly that
    it = iter(pipeline.train_dataset(c.data, c.batch_size, c.seed))
    expected = [int(next(it)["skipped"].max()) for _ in range(c.num_steps)]
    assert expected[-1] == 3 and expected[0] < 3  # the count grows during the run
    workdir = str(tmp_path / "run")
    assert loop.train_and_evaluate(c, workdir, should_stop=lambda s: s == 3)["interrupted"]
    loop.train_and_evaluate(c, workdir)
    logged = [r["skipped_files"] for r in read_metrics(workdir) if "loss" in r]
    assert logged == expected
    assert final_loop(workdir)["skipped_files"] == 3


def test_itstime_fires_every_n_steps_and_at_the_end():
    fired = [s for s in range(1, 11) if loop.itstime(s, 4, 10)]
    assert fired == [4, 8, 10]
    assert [s for s in range(1, 4) if loop.itstime(s, 1, 3)] == [1, 2, 3]


def test_the_preview_is_compiled_once_and_never_copies_the_optimizer_state(monkeypatch):
    from jaxcolor import trainer as trainer_lib

    c = tiny_config(num_preview_images=2)
    trainer = trainer_lib.Trainer(c)
    state, _ = trainer.init_state(trainer_lib.init_key(0))
    state = trainer.to_step_form(state)
    batch = next(pipeline.eval_batches(c.data, c.data.val_split, 2))
    monkeypatch.setattr(trainer, "to_global_form", lambda s: pytest.fail("whole state copied"))
    first = trainer.preview(state, batch)
    second = trainer.preview(state, batch)
    np.testing.assert_array_equal(first, second)
    assert first.shape[0] > 2 * c.data.image_size  # two rows of three panels
    assert trainer.predict._cache_size() == 1  # one compilation for every preview of the run
