"""Every command's command line: one flag spelling (underscores, the earlier dashed spellings of
port and launch.sh still read), one override syntax (`--config.a.b=value`, train's, also for
evaluate and plot on a restored run's saved config), and one way to refuse: a single line
`error: ...` on stderr naming the flag or file, exit status 2."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, tiny_config, write_images
from PIL import Image

from jaxcolor import config as config_lib


def cli(module, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def one_error_line(done) -> str:
    """The refusal's only stderr line; fails unless the command exited 2 with exactly one."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    return lines[0]


# Each command with arguments that are complete otherwise, so the unknown flag is the only fault.
COMMANDS = {
    "train": ("jaxcolor.train",),
    "evaluate": ("jaxcolor.evaluate", "--workdir", "RUN"),
    "colorize": ("jaxcolor.colorize", "in.png", "--workdir", "RUN", "-o", "OUT"),
    "plot": ("jaxcolor.plot", "--workdir", "RUN"),
    "prepare": ("jaxcolor.prepare",),
    "prepare shards": ("jaxcolor.prepare", "shards", "--source", "folder:IN", "--out", "OUT",
                       "--crop", "0", "--size", "16"),
    "prepare tfds-convert": ("jaxcolor.prepare", "tfds-convert", "--name", "x", "--data_dir",
                             "DIR"),
    "prepare ab-prior": ("jaxcolor.prepare", "ab-prior", "--config", "C.py", "--workdir", "RUN"),
    "study": ("jaxcolor.study", "STUDY.py", "--workdir", "DIR"),
    "port": ("jaxcolor.port", "--keras_h5", "W.h5", "--out", "OUT"),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_an_unknown_flag_in_one_line_exit_2(command):
    line = one_error_line(cli(*COMMANDS[command], "--no_such_flag=1"))
    assert "no_such_flag" in line, line


@pytest.mark.parametrize("args, expected", [
    (("jaxcolor.port", "--out", "OUT"), "--keras_h5"),  # missing required flag
    (("jaxcolor.colorize", "in.png", "--workdir", "RUN", "-o", "OUT", "--batch", "0"),
     "--batch=0: expected a positive number"),
    (("jaxcolor.colorize", "in.png", "--workdir", "RUN", "-o", "OUT", "--max-pixels", "9"),
     "--max-pixels: did you mean --max_pixels?"),
    (("jaxcolor.evaluate", "--workdir", "RUN", "--step", "best"),
     "argument --step: invalid int value: 'best'"),
    (("jaxcolor.evaluate", "--workdir", "RUN", "--config.data.path"),
     "--config.data.path: expected --config.data.path=VALUE"),
    (("jaxcolor.prepare", "shards", "--source", "IN", "--out", "OUT", "--crop", "0", "--size",
      "8"), "--source 'IN': expected folder:PATH"),
    (("jaxcolor.train", "extra"), "unexpected arguments extra"),
], ids=["port-required", "colorize-batch", "colorize-dashed", "evaluate-step", "override-value",
        "prepare-source", "train-positional"])
def test_usage_errors_are_one_line_naming_the_flag_and_what_was_expected(args, expected):
    line = one_error_line(cli(*args))
    assert expected in line, line


def test_port_accepts_both_spellings_and_lists_the_underscore_one(capsys):
    from jaxcolor import port

    new = port.parse_args(["--keras_h5", "w.h5", "--out", "o", "--include_top"])
    old = port.parse_args(["--keras-h5", "w.h5", "--out", "o", "--include-top"])
    assert vars(new) == vars(old) == {"keras_h5": "w.h5", "out": "o", "include_top": True}
    assert not port.parse_args(["--keras-h5", "w.h5", "--out", "o"]).include_top
    with pytest.raises(SystemExit):
        port.parse_args(["--help"])
    usage = capsys.readouterr().out
    assert "--keras_h5" in usage and "--include_top" in usage
    assert "--keras-h5" not in usage and "--include-top" not in usage
    # the dashed spelling reaches the file check: it is the file that is refused, not the flag
    done = cli("jaxcolor.port", "--keras-h5", "/nowhere/w.h5", "--out", "/nowhere/out")
    assert "/nowhere/w.h5" in one_error_line(done)


def test_launch_sh_accepts_both_spellings_of_cpu_devices():
    for flag in ("--cpu_devices", "--cpu-devices"):
        done = subprocess.run(["bash", "launch.sh", "local-multiprocess", "2", flag, "3",
                               "--workdir", "/nowhere"], cwd=ROOT, capture_output=True, text=True,
                              env=dict(os.environ, DRY_RUN="1"), timeout=60)
        assert done.returncode == 0, done.stderr
        assert "2 processes x 3 CPU device(s)" in done.stdout, done.stdout


# --- the shared parser pieces (jaxcolor.config) ------------------------------------------------


def test_split_config_overrides_takes_both_forms_and_leaves_the_rest():
    argv = ["--workdir", "w", "--config.data.path=/a", "--config.data.eval_examples", "5",
            "--data.crop=3", "--split", "test", "--", "--config.data.x=1"]
    overrides, rest = config_lib.split_config_overrides(argv, legacy_sections=("data",))
    assert overrides == [("data.path", "/a"), ("data.eval_examples", "5"), ("data.crop", "3")]
    assert rest == ["--workdir", "w", "--split", "test", "--", "--config.data.x=1"]
    overrides, rest = config_lib.split_config_overrides(["--data.crop=3"])
    assert overrides == [] and rest == ["--data.crop=3"]  # only named legacy sections
    with pytest.raises(config_lib.ConfigError, match="--config.seed: expected --config.seed="):
        config_lib.split_config_overrides(["--config.seed", "--workdir", "w"])


def test_apply_config_overrides_names_the_flag_as_typed():
    c = tiny_config()
    out = config_lib.apply_config_overrides(c, [("data.path", "/x"), ("data.eval_examples", "5")],
                                            allowed=("data",))
    assert (out.data.path, out.data.eval_examples, c.data.path) == ("/x", 5, "")
    assert config_lib.apply_config_overrides(c, [("seed", "3")]).seed == 3  # None: any field
    for pairs, message in (
            ([("data.pathh", "/x")], "--config.data.pathh: unknown config field 'pathh'; did "
                                     "you mean --config.data.path?"),
            ([("x", "1")], "--config.x: unknown config field 'x'"),
            ([("dat.path", "/x")], "--config.dat.path: unknown config section config.dat; did "
                                   "you mean --config.data?"),
            ([("model.width", "1")], "--config.model.width: only --config.data.* can be "
                                     "overridden here"),
            ([("data.image_size", "big")], "--config.data.image_size=big: expected a int")):
        with pytest.raises(config_lib.ConfigError) as info:
            config_lib.apply_config_overrides(c, pairs, allowed=("data",))
        assert str(info.value).startswith(message), str(info.value)


# --- evaluate and plot: --config.data.* on a restored run --------------------------------------


@pytest.fixture(scope="module")
def two_folders_run(tmp_path_factory):
    """A 1-step run trained on folder A (12 images: validation = the last 6), and a folder B of
    20 other images (validation = the last 10)."""
    root = tmp_path_factory.mktemp("cli_run")
    a, b = str(root / "a"), str(root / "b")
    write_images(a, 12, size=(24, 20))
    write_images(b, 20, size=(24, 20), seed=1)
    config = tiny_config(**{"data.source": "folder", "data.path": a, "data.train_split": "[:50%]",
                            "data.val_split": "[50%:]", "num_steps": 1, "log_every": 1,
                            "eval_every": 1, "checkpoint_every": 1})
    from jaxcolor import loop

    workdir = str(root / "run")
    loop.train_and_evaluate(config, workdir)
    return workdir, a, b


def evaluated(workdir, out, *flags) -> dict:
    from jaxcolor import evaluate

    assert evaluate.main(["--workdir", workdir, "--out", out, *flags]) == 0
    with open(out) as f:
        return json.load(f)


def test_evaluate_config_data_path_evaluates_the_other_folder(two_folders_run, tmp_path):
    workdir, a, b = two_folders_run
    own = evaluated(workdir, str(tmp_path / "a.json"))
    other = evaluated(workdir, str(tmp_path / "b.json"), f"--config.data.path={b}")
    assert (own["count"], other["count"]) == (6, 10)
    assert (own["data"]["path"], own["data"]["num_files"]) == (os.path.abspath(a), 12)
    assert (other["data"]["path"], other["data"]["num_files"]) == (os.path.abspath(b), 20)
    assert other["model"]["ab_mae"] != own["model"]["ab_mae"]
    # the earlier `--data.path=DIR` spelling still means the same
    legacy = evaluated(workdir, str(tmp_path / "legacy.json"), f"--data.path={b}")
    assert legacy["count"] == 10 and legacy["model"] == other["model"]


@pytest.mark.parametrize("flag, named", [
    ("--config.x=1", "--config.x: unknown config field 'x'"),
    ("--config.data.pathh=/x", "--config.data.pathh: unknown config field 'pathh'; did you "
                               "mean --config.data.path?"),
    ("--config.model.width=1", "--config.model.width: only --config.data.* can be overridden"),
], ids=["unknown", "misspelt", "model-field"])
def test_evaluate_refuses_a_bad_override_in_one_line_exit_2(two_folders_run, tmp_path, flag,
                                                            named):
    workdir, _, _ = two_folders_run
    out = tmp_path / "eval.json"
    line = one_error_line(cli("jaxcolor.evaluate", "--workdir", workdir, "--out", str(out), flag))
    assert line.startswith(f"error: {named}"), line
    assert not out.exists()


def test_plot_examples_follow_config_data_path_and_refuse_unknown_fields(two_folders_run,
                                                                          tmp_path, capsys):
    from jaxcolor import plot

    workdir, _, b = two_folders_run
    for name, flags in (("a", []), ("b", [f"--config.data.path={b}"])):
        assert plot.main(["--workdir", workdir, "--out", str(tmp_path / name), "--num_images",
                          "2", *flags]) == 0
    own, other = (np.asarray(Image.open(tmp_path / name / plot.EXAMPLES_PNG)) for name in "ab")
    assert own.shape == other.shape and (own != other).any()  # other pictures
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        plot.main(["--workdir", workdir, "--out", str(tmp_path / "c"), "--config.data.pathh=/x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("error: --config.data.pathh: unknown config field"), err
    assert not os.path.exists(tmp_path / "c")
