"""The study runner without training: grid loading, skip/resume decisions, statistics, reports.

The members themselves are ordinary `python -m jaxcolor.train` runs (tested in
test_reproducibility.py); here they are faked with the files a finished run leaves.
"""

import json
import math
import os

import numpy as np
import pytest
from conftest import ROOT

from jaxcolor import run_record, study

STUDY = """
def get_study():
    return {
        "cells": {"small": ("cfg.py", {"model.width": 0.25}), "big": "cfg.py"},
        "seeds": [0, 1, 2],
        "overrides": {"num_steps": 5},
        "split": "test",
        "eval_overrides": {"data.eval_examples": 8},
        "metrics": ["ab_mae", "psnr"],
    }
"""


@pytest.fixture
def study_file(tmp_path):
    (tmp_path / "cfg.py").write_text("from jaxcolor.configs.default import get_config\n")
    (tmp_path / "grid.py").write_text(STUDY)
    return str(tmp_path / "grid.py")


def fake_finished(member, ab_mae, psnr, seconds=10.0):
    os.makedirs(member.workdir, exist_ok=True)
    run_record.write(member.workdir, {
        "status": "finished", "train_seconds": seconds,
        "history": [{"status": "finished", "start_step": 0, "end_step": 5}]})
    result = {"count": 8, "model": {"ab_mae": ab_mae, "psnr": psnr},
              "gray": {"ab_mae": 20.0, "psnr": 25.0}}
    with open(os.path.join(member.workdir, "eval_test_5.json"), "w") as f:
        json.dump(result, f)


def test_study_grid_commands_and_t_statistics(study_file, tmp_path):
    spec = study.load_study(study_file)
    assert spec["cells"]["small"]["overrides"] == {"num_steps": 5, "model.width": 0.25}
    assert spec["cells"]["big"]["config"] == str(tmp_path / "cfg.py")
    runner = study.Runner(spec, str(tmp_path / "out"))
    assert [m.name for m in runner.members] == [
        "small/seed_0", "small/seed_1", "small/seed_2", "big/seed_0", "big/seed_1", "big/seed_2"]
    cmd = runner.members[1].command()
    assert cmd[1:3] == ["-m", "jaxcolor.train"] and "--config.seed=1" in cmd
    assert "--config.model.width=0.25" in cmd and "--config.num_steps=5" in cmd

    d = study.describe([1.0, 2.0, 3.0])
    assert d["n"] == 3 and d["mean"] == 2.0 and d["std"] == 1.0
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2)
    np.testing.assert_allclose(d["ci95"], [2 - half, 2 + half], rtol=1e-4)
    assert study.T975[1] == pytest.approx(4.303, abs=1e-3)
    assert math.isnan(study.describe([5.0])["std"])


def test_finished_members_are_skipped_and_reports_written(study_file, tmp_path):
    spec = study.load_study(study_file)
    root = str(tmp_path / "out")
    runner = study.Runner(spec, root, echo=lambda s: None)
    for i, m in enumerate(runner.members[:3]):
        fake_finished(m, ab_mae=10.0 + i, psnr=30.0 - i, seconds=10.0 + i)
    interrupted = runner.members[3]
    os.makedirs(interrupted.workdir)
    run_record.write(interrupted.workdir, {"status": "interrupted", "history": [{"end_step": 2}]})

    assert [m.finished() for m in runner.members] == [True] * 3 + [False] * 3
    runner.stopping.set()  # decides without launching: finished -> skipped, others not started
    assert runner.train(runner.members[0]) == "finished"
    assert runner.train(interrupted) == "interrupted"

    summary = study.write_summary(spec, runner.members, root)
    small = summary["cells"]["small"]
    assert small["n"] == 3 and small["seeds"] == [0, 1, 2] and small["steps"] == [5]
    assert small["metrics"]["ab_mae"]["mean"] == 11.0 and small["metrics"]["ab_mae"]["std"] == 1.0
    assert small["train_seconds"]["mean"] == 11.0
    assert summary["cells"]["big"]["n"] == 0
    with open(os.path.join(root, "summary.md")) as f:
        md = f.read()
    assert "| small | 3 | 5 | 11.000 ± 1.000 [" in md and "| big | 0 | - | - | - | - |" in md
    assert os.path.getsize(os.path.join(root, "summary.png")) > 1000
    with open(os.path.join(root, "summary.json")) as f:
        assert json.load(f)["cells"]["small"]["n"] == 3


def test_seed_models_study_file_loads():
    spec = study.load_study(os.path.join(ROOT, "experiments", "study_seed_models.py"))
    assert spec["seeds"] == [0, 1, 2] and len(spec["cells"]) == 2
    assert spec["cells"]["resnet50_seed"]["overrides"]["model.weights"] == "none"


TINY = {"data.image_size": 16, "model.width": 0.125, "batch_size": 8, "num_steps": 30,
        "log_every": 1, "eval_every": 30, "checkpoint_every": 5, "num_preview_images": 2,
        "data.sample_train_examples": 64, "data.sample_eval_examples": 16,
        "data.eval_threads": 1}


def test_a_member_interrupted_by_the_runner_resumes_and_is_evaluated(tmp_path):
    """A real member process: the runner is stopped while it trains (the member checkpoints and
    exits 75), and the rerun resumes it from that checkpoint to the end and evaluates it. (That
    a resumed run ends bitwise where an uninterrupted one does: test_reproducibility.py.)"""
    import threading
    import time

    (tmp_path / "cfg.py").write_text("from jaxcolor.configs.default import get_config\n")
    (tmp_path / "grid.py").write_text(
        f"def get_study():\n    return {{'cells': {{'tiny': ('cfg.py', {TINY!r})}}, "
        "'seeds': [3], 'split': 'validation', 'eval_overrides': {'data.eval_examples': 8}, "
        "'metrics': ['ab_mae']}\n")
    spec = study.load_study(str(tmp_path / "grid.py"))
    root = str(tmp_path / "study")
    runner = study.Runner(spec, root, echo=lambda s: None)
    member = runner.members[0]

    def stop_once_training():
        path = os.path.join(member.workdir, "metrics.jsonl")
        while not (os.path.exists(path) and os.path.getsize(path) > 0):
            time.sleep(0.05)
        runner.stop()

    watcher = threading.Thread(target=stop_once_training, daemon=True)
    watcher.start()
    assert runner.run()[0]["status"] == "interrupted"
    stopped_at = run_record.read(member.workdir)["history"][0]["end_step"]
    assert 0 < stopped_at < 30

    rerun = study.Runner(spec, root, echo=lambda s: None)
    result = rerun.run()[0]
    assert result["status"] == "finished" and result["eval"]["count"] == 8
    history = run_record.read(member.workdir)["history"]
    assert [h["status"] for h in history] == ["interrupted", "finished"]
    assert history[1]["start_step"] == stopped_at



def test_a_member_reads_its_newest_plain_evaluation_not_a_variant(tmp_path):
    """`evaluate --temperature` / `--ab_scale` write eval_<split>_<step>_T.. / _x.. beside the
    plain record; the study must read eval_<split>_<newest step>.json, by number (100 > 99)."""
    from jaxcolor.study import Member

    member = Member(str(tmp_path), "cell", 0, {})
    os.makedirs(member.workdir)
    for name in ("eval_test_99.json", "eval_test_100.json", "eval_test_100_x1.2.json",
                 "eval_test_100_T0.json", "eval_validation_200.json"):
        open(os.path.join(member.workdir, name), "w").close()
    assert [os.path.basename(f) for f in member.eval_files("test")] == [
        "eval_test_99.json", "eval_test_100.json"]
