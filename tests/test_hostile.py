"""A hostile but realistic user: damaged workdirs and checkpoints, full and read-only disks,
unreadable splits, bad configs, relaunches. Nothing saved may be lost, nothing wrong reported as
a result, and every refusal is one clear line.

Each test sets the failure up so that it really happens (a best checkpoint that is not the
latest, bytes flipped inside a state file, a disk that fills between two checkpoints) and checks
every quantity the behaviour claims. The cases that already held up when this file was written
(incomplete checkpoints, busy workdirs, decompression bombs, pickle-free loading, launch.sh
quoting) are kept here too, so they stay that way.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from conftest import ROOT, tiny_config, write_images

from jaxcolor import checkpoint, evaluate, loop, run_record, runs
from jaxcolor import config as config_lib
from jaxcolor.data import pipeline


def cli(args, timeout=300, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def flip_bytes(path: str, count: int = 64) -> None:
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    for i in range(min(count, len(data) - middle)):
        data[middle + i] ^= 0xFF
    with open(path, "wb") as f:
        f.write(data)


def state_data_files(workdir: str, step: int) -> list[str]:
    """The files holding the saved arrays of one step (OCDBT data files)."""
    pattern = os.path.join(workdir, "checkpoints", str(step), "state", "**", "d", "*")
    return [f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f)]


def folder_config(images: str, **overrides):
    """tiny_config on a folder of images: train = the first half, validation = the second."""
    return tiny_config(**{"data.source": "folder", "data.path": images,
                          "data.train_split": "[:50%]", "data.val_split": "[50%:]", **overrides})


def assert_same_state(workdir_a: str, workdir_b: str, step: int) -> None:
    a = checkpoint.read_state_arrays(os.path.join(workdir_a, "checkpoints", str(step), "state"))
    b = checkpoint.read_state_arrays(os.path.join(workdir_b, "checkpoints", str(step), "state"))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A 6-step run on a folder of 12 images (train = first half, validation = second half),
    checkpoints at 3 and 6; and the folder."""
    root = tmp_path_factory.mktemp("folder_run")
    images = str(root / "images")
    write_images(images, 12, size=(24, 20))
    c = folder_config(images)
    workdir = str(root / "run")
    loop.train_and_evaluate(c, workdir)
    return workdir, images


# --- 1. the best checkpoint survives resumes: tests/test_training_loop.py ----------------------


# --- 3. launch.sh tpu-vm keeps workdirs -------------------------------------------------------


FAKE_GCLOUD = """#!/usr/bin/env bash
# Stands in for the Cloud SDK: scp copies into $FAKE_HOME, ssh runs --command there.
set -euo pipefail
if [[ "$4" == scp ]]; then cp "$5" "$FAKE_HOME/jaxcolor.tar.gz"; exit 0; fi
while [[ "$1" != --command ]]; do shift; done
HOME="$FAKE_HOME" PATH="$FAKE_REMOTE_BIN:$PATH" bash -c "$2"
"""
FAKE_PYTHON = """#!/usr/bin/env bash
# `python3 -m jaxcolor.train --workdir W`: appends a line to W/checkpoint, as a resumed run would.
workdir=runs/default
for arg in "$@"; do [[ "$arg" == --workdir=* ]] && workdir="${arg#--workdir=}"; done
mkdir -p "$workdir" && echo step >> "$workdir/checkpoint"
"""


def test_tpu_vm_relaunch_keeps_relative_workdirs(tmp_path):
    bin_dir, remote_bin, home = tmp_path / "bin", tmp_path / "remote_bin", tmp_path / "home"
    for d in (bin_dir, remote_bin, home):
        d.mkdir()
    for path, text in ((bin_dir / "gcloud", FAKE_GCLOUD), (remote_bin / "python3", FAKE_PYTHON),
                       (remote_bin / "pip", "#!/bin/sh\nexit 0\n")):
        path.write_text(text)
        path.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_HOME=str(home),
               FAKE_REMOTE_BIN=str(remote_bin))
    for args in ([], ["--workdir=runs/mine"], [], ["--workdir=runs/mine"]):
        done = subprocess.run(["bash", "launch.sh", "tpu-vm", "pod", "zone", *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    code = home / "jaxcolor"
    assert (code / "runs" / "default" / "checkpoint").read_text() == "step\nstep\n"
    assert (code / "runs" / "mine" / "checkpoint").read_text() == "step\nstep\n"
    assert (code / "jaxcolor" / "train.py").is_file()  # and the code is there, fresh


# --- 4. an unreadable split is an error, not a score -------------------------------------------


def test_training_on_an_unreadable_validation_split_fails_before_recording_a_best(tmp_path):
    images = str(tmp_path / "images")
    write_images(images, 12, size=(24, 20))
    for path in sorted(glob.glob(os.path.join(images, "*")))[6:]:
        open(path, "wb").close()  # the validation half: zero-byte files
    c = folder_config(images)
    with pytest.raises(pipeline.NothingEvaluatedError, match="none of its 6 images"):
        loop.train_and_evaluate(c, str(tmp_path / "run"))
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert not any("val_loss" in r for r in rows)
    assert not (tmp_path / "run" / "summary.json").exists()
    assert run_record.read(str(tmp_path / "run"))["status"] == "failed"


def test_evaluate_counts_skipped_files_and_refuses_zero(folder_run, tmp_path, capsys):
    workdir, images = folder_run
    assert evaluate.main(["--workdir", workdir]) == 0
    record_path = glob.glob(os.path.join(workdir, "eval_validation_*.json"))[0]
    before = open(record_path).read()
    assert json.loads(before)["skipped"] == 0 and json.loads(before)["count"] == 6

    partly = str(tmp_path / "partly")
    shutil.copytree(images, partly)
    for path in sorted(glob.glob(os.path.join(partly, "*")))[6:8]:
        open(path, "wb").close()
    out = str(tmp_path / "partly.json")
    assert evaluate.main(["--workdir", workdir, f"--config.data.path={partly}", "--out", out]) == 0
    assert "4 images of split validation ([50%:]), 2 unreadable ones skipped," in \
        capsys.readouterr().out
    result = json.load(open(out))
    assert (result["count"], result["skipped"]) == (4, 2)
    assert result["model"]["count"] == 4

    broken = str(tmp_path / "broken")
    shutil.copytree(images, broken)
    for path in sorted(glob.glob(os.path.join(broken, "*")))[6:]:
        open(path, "wb").close()
    capsys.readouterr()
    assert evaluate.main(["--workdir", workdir, f"--config.data.path={broken}"]) == 1
    err = capsys.readouterr().err
    assert "none of its 6 images could be read" in err
    assert open(record_path).read() == before  # the earlier real record is untouched


# --- 5. a damaged checkpoint ---------------------------------------------------------------------


def test_a_damaged_checkpoint_is_set_aside_on_resume_and_skipped_by_evaluate(folder_run,
                                                                              tmp_path):
    workdir, images = folder_run
    damaged = str(tmp_path / "damaged")
    shutil.copytree(workdir, damaged)
    for path in state_data_files(damaged, 6):  # 64 bytes in each: params are among them
        flip_bytes(path)
    # evaluate/colorize: step 6 would be chosen (best and latest); 3 is used instead, and said
    run = runs.load_run(damaged)
    assert run.step == 3 and "step(s) 6 damaged" in run.step_reason
    with pytest.raises(runs.RunError, match="6: (checksum mismatch in params|unreadable)"):
        runs.load_run(damaged, step=6)
    # resume: 6 is moved aside, training redoes 3 -> 6 and ends where the intact run ended
    c = folder_config(images)
    loop.train_and_evaluate(c, damaged)
    aside = os.listdir(os.path.join(damaged, "checkpoints_incomplete"))
    assert len(aside) == 1 and aside[0].startswith("6-")
    assert_same_state(workdir, damaged, 6)


def test_values_that_differ_from_their_checksums_are_never_used(folder_run, tmp_path):
    """Damage the file format does not see (tensorstore reads the arrays without an error, as
    after bytes changed inside an uncompressed chunk): here the saved params digest no longer
    matches what is read back. evaluate/colorize fall back, resume sets the step aside."""
    workdir, images = folder_run
    changed = str(tmp_path / "changed")
    shutil.copytree(workdir, changed)
    path = os.path.join(changed, "checkpoints", "6", "loop", "metadata")
    loop_record = json.load(open(path))
    digest = loop_record[checkpoint.CHECKSUMS]["params"]
    loop_record[checkpoint.CHECKSUMS]["params"] = ("0" if digest[0] != "0" else "1") + digest[1:]
    json.dump(loop_record, open(path, "w"))
    run = runs.load_run(changed)
    assert run.step == 3 and "step(s) 6 damaged" in run.step_reason
    with pytest.raises(runs.RunError, match="6: checksum mismatch in params"):
        runs.load_run(changed, step=6)
    c = folder_config(images)
    loop.train_and_evaluate(c, changed)  # 6 set aside; 3 -> 6 trained again
    assert [d.split("-")[0] for d in os.listdir(os.path.join(changed, "checkpoints_incomplete"))
            ] == ["6"]
    assert_same_state(workdir, changed, 6)


def test_checksums_cover_every_part_of_the_state(folder_run):
    workdir, _ = folder_run
    loop = runs._loop(runs._manager(workdir), 6)
    assert set(loop[checkpoint.CHECKSUMS]) == {"step", "params", "batch_stats", "opt_state",
                                               "data"}
    with pytest.raises(checkpoint.DamagedCheckpointError, match="opt_state"):
        checkpoint.verify("x", loop[checkpoint.CHECKSUMS], {"params": loop["checksums"]["params"],
                                                            "opt_state": "0" * 64})


# --- 9. read-only run directory --------------------------------------------------------------


def test_evaluate_prints_before_writing_and_out_chooses_the_file(folder_run, tmp_path, capsys,
                                                                  monkeypatch):
    workdir, _ = folder_run

    def refuse(result, path):  # a read-only place (root ignores chmod, so refuse the write)
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(evaluate, "write_result", refuse)
    assert evaluate.main(["--workdir", workdir, "--step", "3"]) == 1
    captured = capsys.readouterr()
    assert "PSNR dB" in captured.out and "step 3 (asked for with --step)" in captured.out
    assert "could not write" in captured.err and "--out FILE" in captured.err
    monkeypatch.undo()
    out = str(tmp_path / "elsewhere.json")
    assert evaluate.main(["--workdir", workdir, "--step", "3", "--out", out]) == 0
    assert json.load(open(out))["step"] == 3
    with pytest.raises(SystemExit) as exit_info:  # a folder: a usage error
        evaluate.main(["--workdir", workdir, "--out", str(tmp_path)])
    assert exit_info.value.code == 2


# --- 10, 11. configs checked before anything is written or compiled -------------------------------


@pytest.mark.parametrize("field,value,message", [
    ("batch_size", -8, "config.batch_size=-8: expected an integer >= 1"),
    ("batch_size", 0, "config.batch_size=0"),
    ("data.image_size", 30, "config.data.image_size=30: the autoencoder model needs a multiple "
                            "of 4"),
    ("data.image_size", 0, "config.data.image_size=0"),
    ("log_every", 0, "config.log_every=0"),
    ("eval_every", 0, "config.eval_every=0"),
    ("checkpoint_every", -1, "config.checkpoint_every=-1"),
    ("num_steps", 0, "config.num_steps=0"),
    ("optimizer.learning_rate", float("nan"), "config.optimizer.learning_rate=nan"),
    ("optimizer.learning_rate", float("inf"), "config.optimizer.learning_rate=inf"),
    ("model.name", "resnet51", "config.model.name='resnet51': expected one of"),
    ("data.source", "folder", "config.data.path='': expected a directory of JPEG/PNG images"),
])
def test_a_bad_config_is_refused_before_anything_is_written(tmp_path, field, value, message):
    c = tiny_config(**{field: value})
    workdir = tmp_path / "run"
    with pytest.raises(config_lib.ConfigError) as info:
        loop.train_and_evaluate(c, str(workdir))
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not workdir.exists()


def test_resnet_unet_size_names_the_config_field():
    c = tiny_config(**{"model.name": "resnet50_unet", "data.image_size": 40})
    with pytest.raises(config_lib.ConfigError, match=r"config.data.image_size=40: the "
                       r"resnet50_unet model needs a multiple of 16 \(e.g. 32 or 48\)"):
        config_lib.validate(c)


def test_a_failed_start_does_not_poison_the_workdir(tmp_path):
    # a session that failed before its first checkpoint left a config.json; the corrected
    # rerun is not a "config change" (no checkpoint describes the old config)
    workdir = str(tmp_path)
    (tmp_path / "config.json").write_text(tiny_config(batch_size=-8).to_json())
    c = tiny_config(num_steps=2, eval_every=2, checkpoint_every=2)
    assert run_record.check_config(workdir, c, allow_change=False) == []
    loop.train_and_evaluate(c, workdir)
    assert json.load(open(tmp_path / "config.json"))["batch_size"] == 8
    other = tiny_config(num_steps=2, eval_every=2, checkpoint_every=2, seed=1)
    with pytest.raises(run_record.ConfigChangedError, match="seed: 0 -> 1"):
        loop.train_and_evaluate(other, workdir)  # once a checkpoint exists, the config is protected


def test_command_line_config_errors_are_one_line_exit_2(tmp_path):
    workdir = str(tmp_path / "run")
    for flag, expected in (
        ("--config.batch_sizee=3", 'error: --config.batch_sizee: unknown config field '
                                   "'batch_sizee' Did you mean \"batch_size\""),
        ("--config.batch_size=-8", "error: config.batch_size=-8: expected an integer >= 1"),
    ):
        done = cli(["-m", "jaxcolor.train", f"--workdir={workdir}", flag])
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith(expected), done.stderr
        assert not os.path.exists(workdir)


# --- 12, 15. a full disk; errors at start-up are the last line --------------------------------


FILL_DISK = textwrap.dedent("""
    # python FILL_DISK STEP train flags...: trains, and fills the disk after step STEP's
    # checkpoint has been written (at the stop check of step STEP + 1).
    import os, sys, time
    fill_at, sys.argv = int(sys.argv[1]), [sys.argv[0], *sys.argv[2:]]
    from absl import app
    from jaxcolor import loop, train
    workdir = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--workdir="))
    check = loop.StopSignal.__call__

    def fill_then_check(self, step):
        if step == fill_at:
            done = os.path.join(workdir, "checkpoints", str(fill_at - 1), "commit_success.txt")
            deadline = time.time() + 120
            while not os.path.exists(done) and time.time() < deadline:
                time.sleep(0.05)  # the previous checkpoint's write finishes first
            time.sleep(0.2)
            with open(os.path.join(workdir, "filler"), "wb") as f:
                try:
                    while True:
                        f.write(bytes(65536))
                        f.flush()
                except OSError:
                    pass
        return check(self, step)

    loop.StopSignal.__call__ = fill_then_check
    app.run(train.main, flags_parser=train.parse_flags)
""")


def test_a_full_disk_is_one_line_and_keeps_the_last_complete_checkpoint(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to mount a small tmpfs")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m t /mnt"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a mount namespace here: {probe.stderr!r}")
    script = tmp_path / "fill.py"
    script.write_text(FILL_DISK)
    flags = " ".join(f"--config.{k}={v}" for k, v in {
        "data.image_size": 16, "model.width": 0.125, "batch_size": 8, "num_steps": 8,
        "checkpoint_every": 2, "eval_every": 2, "log_every": 1,
        "data.sample_train_examples": 64, "data.sample_eval_examples": 16}.items())
    report = tmp_path / "report"
    inner = (f"mount -t tmpfs -o size=8m t /mnt && cd {ROOT} && {sys.executable} {script} 3 "
             f"--workdir=/mnt/w {flags} 2> {tmp_path}/stderr; echo $? > {report}; "
             f"ls /mnt/w/checkpoints >> {report}; cat /mnt/w/run.json > {tmp_path}/run.json")
    subprocess.run(["unshare", "-m", "sh", "-c", inner], timeout=300, check=True)
    status, *listing = report.read_text().split()
    assert status == "1"
    assert "2" in listing and "4" not in listing  # step 4's write failed, 2 is whole
    err = [line for line in (tmp_path / "stderr").read_text().splitlines()
           if not line.startswith("train:") and "\r" not in line]
    # whichever writer meets the full disk first (the checkpoint, metrics.jsonl, TensorBoard's
    # event file) is named; the last complete checkpoint is what matters
    assert re.fullmatch(r"error: no space left on /mnt while (saving checkpoint 4 in "
                        r"/mnt/w/checkpoints|writing .+); the last complete checkpoint is 2",
                        err[-1]), err
    assert len(err) <= 4, err  # no tracebacks: the line above and at most a few warnings
    assert not any("Traceback" in line for line in err), err
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["history"][-1]["end_step"] <= 2  # never a step that is not on disk


def test_a_start_up_error_is_the_last_line(tmp_path):
    images = str(tmp_path / "images")
    write_images(images, 4, size=(24, 20))
    done = cli(["-m", "jaxcolor.train", f"--workdir={tmp_path / 'run'}",
                "--config.data.source=folder", f"--config.data.path={images}",
                "--config.data.train_split=[:0%]", "--config.data.image_size=16",
                "--config.model.width=0.125", "--config.batch_size=2"])
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == "error: split '[:0%]' of 'folder' is empty", done.stderr[-2000:]
    assert "Traceback" not in done.stderr


# --- what already held up: keep it so -------------------------------------------------------------


def test_two_trainings_in_one_workdir_are_refused(tmp_path):
    lock = run_record.WorkdirLock(str(tmp_path)).acquire()
    try:
        with pytest.raises(run_record.WorkdirBusyError, match="another process"):
            loop.train_and_evaluate(tiny_config(), str(tmp_path))
    finally:
        lock.release()


def test_a_decompression_bomb_and_a_symlink_loop_are_skipped(tmp_path):
    from PIL import Image

    from jaxcolor.data import sources, transforms

    folder = tmp_path / "images"
    write_images(str(folder), 2, size=(24, 20))
    Image.new("1", (20000, 20000)).save(folder / "bomb.png")  # 400 MP in a few KB
    os.symlink(folder, folder / "loop")
    files = sources.list_image_files(str(folder))
    assert sorted(files) == ["000000.png", "000001.png", "bomb.png"]
    with pytest.raises(Exception, match="(?i)decompression|exceeds|pixels"):
        transforms.decode(str(folder / "bomb.png"))


def test_no_weights_or_data_are_read_with_pickle():
    offenders = []
    for path in glob.glob(os.path.join(ROOT, "jaxcolor", "**", "*.py"), recursive=True):
        text = open(path).read()
        if "import pickle" in text or "allow_pickle=True" in text or (
                "torch.load(" in text and "weights_only=True" not in text):
            offenders.append(os.path.relpath(path, ROOT))
    assert offenders == []


def test_launch_sh_quotes_every_argument(tmp_path):
    odd = "--config.data.path=/photos/my dir/$(touch pwned)"
    done = subprocess.run(["bash", "launch.sh", "local", odd], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, DRY_RUN="1"), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "my\\ dir/\\$\\(touch\\ pwned\\)" in done.stdout
    assert not os.path.exists(os.path.join(ROOT, "pwned"))


def test_prepare_on_an_empty_folder_is_one_line_exit_2(tmp_path, capsys):
    from jaxcolor import prepare

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["shards", "--source", f"folder:{tmp_path / 'empty'}", "--out",
                      str(tmp_path / "out"), "--crop", "0", "--size", "16", "--workers", "0",
                      "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: config.data.path=") and "no images" in err[0]
    assert not (tmp_path / "out" / "manifest.json").exists()
