"""evaluate / colorize / plot on a tiny trained run: the commands as subprocesses, the error
paths, and the pieces (run loading, output planning, full-resolution recombination) directly."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, tiny_config, write_images
from jaxcolor import color, loop, run_record, runs


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    loop.train_and_evaluate(tiny_config(), workdir)  # 6 steps, evaluations and checkpoints at 3 and 6
    return workdir


def cli(*args, timeout=120, env=None):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def metrics_rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


# --- run loading ------------------------------------------------------------------------------


def test_load_run_picks_the_best_checkpoint(run_dir):
    val = [r for r in metrics_rows(run_dir) if "val_loss" in r]
    best = min(val, key=lambda r: r["val_loss"])["step"]
    assert runs.checkpoint_steps(run_dir) == [3, 6]
    assert runs.select_step(run_dir) == best
    assert runs.select_step(run_dir, 3) == 3
    with pytest.raises(runs.RunError, match="no checkpoint for step 4; available: \\[3, 6\\]"):
        runs.select_step(run_dir, 4)
    model = runs.load_colorizer(run_dir)
    assert (model.step, model.image_size) == (best, 16)


def test_missing_pieces_are_named(tmp_path):
    with pytest.raises(runs.RunError, match="no such run directory"):
        runs.read_config(str(tmp_path / "nowhere"))
    with pytest.raises(runs.RunError, match="config.json: missing"):
        runs.read_config(str(tmp_path))
    (tmp_path / "config.json").write_text(tiny_config().to_json())
    with pytest.raises(runs.RunError, match="checkpoints: no checkpoints directory"):
        runs.load_run(str(tmp_path))
    os.makedirs(tmp_path / "checkpoints")
    with pytest.raises(runs.RunError, match="no complete checkpoint"):
        runs.load_colorizer(str(tmp_path))


def test_a_checkpoint_of_another_model_is_a_clear_error(run_dir, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    config = json.loads((other / "config.json").read_text())
    config["model"]["width"] = 0.25  # the checkpoint was trained at 0.125
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(runs.RunError, match="does not hold the model .* checkpoint \\(8,\\), model \\(16,\\)"):
        runs.load_colorizer(str(other))

def test_overrides_are_typed_and_limited_to_data():
    config = runs.apply_overrides(tiny_config(), ["--data.eval_examples=5", "data.hflip=false",
                                                  "--data.path=/x"])
    assert (config.data.eval_examples, config.data.hflip, config.data.path) == (5, False, "/x")
    with pytest.raises(ValueError, match="--model.width"):
        runs.apply_overrides(tiny_config(), ["--model.width=2"])
    with pytest.raises(ValueError, match="expected a int"):
        runs.apply_overrides(tiny_config(), ["--data.image_size=big"])
    with pytest.raises(ValueError, match="unknown field"):
        runs.apply_overrides(tiny_config(), ["--data.imagesize=3"])


# --- evaluate ---------------------------------------------------------------------------------


def test_evaluate_cli_writes_json_and_prints_model_and_gray(run_dir):
    done = cli("jaxcolor.evaluate", "--workdir", run_dir, "--split", "validation")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["PSNR", "dB", "SSIM"]
    assert lines[2].startswith("model") and lines[3].startswith("gray")
    assert "16x16" in done.stdout and "data range 1.0" in done.stdout
    step = runs.select_step(run_dir)
    with open(os.path.join(run_dir, f"eval_validation_{step}.json")) as f:
        result = json.load(f)
    assert result["count"] == 16 and result["step"] == step
    for row in ("model", "gray"):
        assert {"psnr", "ssim", "ab_mae", "ab_rmse", "auc", "colorfulness",
                "colorfulness_ratio", "colorfulness_delta"} <= set(result[row])
    # the same split and checkpoint as training's own evaluation: the same ab errors
    logged = next(r for r in metrics_rows(run_dir) if r.get("val_loss") and r["step"] == step)
    assert result["model"]["ab_mae"] == pytest.approx(logged["val_ab_mae"], rel=1e-4)
    assert result["gray"]["ab_mae"] == pytest.approx(logged["val_gray_ab_mae"], rel=1e-4)
    assert result["gray"]["colorfulness"] < 1.0 < result["model"]["colorfulness_true"]
    # what was read, as run.json says it (one function: run_record.dataset_info)
    assert result["data"] == run_record.read(run_dir)["dataset"]
    assert result["data"]["source"] == "sample" and "data_path" not in result


def test_evaluate_cli_errors(run_dir, tmp_path):
    done = cli("jaxcolor.evaluate", "--workdir", str(tmp_path / "missing"))
    assert done.returncode == 2 and "no such run directory" in done.stderr
    from jaxcolor import evaluate

    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error
        evaluate.main(["--workdir", run_dir, "--model.width=2"])
    assert exit_info.value.code == 2


MESH_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax, numpy as np
    from jax.sharding import Mesh
    from jaxcolor import parallel
    from jaxcolor.evaluate import evaluate

    assert jax.device_count() == 2, jax.devices()
    results = [evaluate(sys.argv[1], write=False,
                        mesh=Mesh(np.asarray(devices), (parallel.DATA_AXIS,)))
               for devices in (jax.devices()[:1], jax.devices())]
    for row in ("model", "gray"):
        for key, value in results[0][row].items():
            other = results[1][row][key]
            if value != value:  # NaN (the gray baseline's wrong-hue share): NaN on both
                assert other != other, (row, key)
                continue
            assert abs(other - value) <= 1e-5 * max(1.0, abs(value)), (row, key)
    print("OK", results[1]["model"]["ab_mae"])
    """
)


def test_evaluate_over_two_devices_matches_one(run_dir):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", MESH_SCRIPT, run_dir], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr[-3000:]


def test_ab_scale_zero_is_the_gray_baseline_and_above_one_is_more_colorful(run_dir):
    """`--ab_scale`: the scaled-prediction line of a colorfulness comparison. x 0 must score
    exactly as the gray baseline (every metric), x 3 must be more colorful than x 1."""
    from jaxcolor import evaluate

    plain = evaluate.evaluate(run_dir, write=False)
    zero = evaluate.evaluate(run_dir, write=False, ab_scale=0.0)
    vivid = evaluate.evaluate(run_dir, write=False, ab_scale=3.0)
    for key, value in zero["gray"].items():
        assert zero["model"][key] == pytest.approx(value, rel=1e-6, nan_ok=True), key
    assert plain["model"]["ab_mae"] != pytest.approx(zero["model"]["ab_mae"], rel=1e-3)
    assert vivid["model"]["colorfulness_ratio"] > 1.5 * plain["model"]["colorfulness_ratio"]
    assert vivid["ab_scale"] == 3.0 and plain["ab_scale"] == 1.0
    assert evaluate.result_path(run_dir, "validation", 6, None, 3.0).endswith("_x3.json")


# --- colorize ---------------------------------------------------------------------------------


def mixed_folder(root):
    """Readable pictures of several sizes and kinds (-> their sizes), plus two bad files."""
    root.mkdir()
    sizes = {}
    for path in write_images(str(root), 2, size=(37, 23)):
        sizes[os.path.relpath(path, root)] = (37, 23)
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (21, 30, 4), np.uint8), "RGBA").save(root / "alpha.png")
    sizes["alpha.png"] = (30, 21)
    (root / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (50, 13), np.uint8), "L").save(root / "sub" / "gray.jpg")
    sizes[os.path.join("sub", "gray.jpg")] = (13, 50)
    Image.fromarray(rng.integers(0, 65536, (17, 19), np.uint16)).save(root / "sub" / "deep.png")
    sizes[os.path.join("sub", "deep.png")] = (19, 17)
    (root / "notes.txt").write_text("not a picture")
    (root / "corrupt.jpg").write_bytes((root / "000000.png").read_bytes()[:120])
    return sizes


def test_colorize_cli_on_a_mixed_folder(run_dir, tmp_path):
    sizes = mixed_folder(tmp_path / "in")
    out = tmp_path / "out"
    done = cli("jaxcolor.colorize", str(tmp_path / "in"), "--workdir", run_dir, "-o", str(out),
               "--compare", "--batch", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    for rel, (w, h) in sizes.items():
        name = os.path.splitext(rel)[0]
        with Image.open(out / f"{name}.png") as img:
            assert (img.size, img.mode) == ((w, h), "RGB"), rel
        with Image.open(out / f"{name}_compare.png") as img:
            assert img.size == (3 * w + 8, h), rel
    produced = {os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs}
    assert len(produced) == 2 * len(sizes)
    for bad in ("notes.txt", "corrupt.jpg"):
        assert f"skipped unreadable file {tmp_path / 'in' / bad}" in done.stderr
    assert f"colorized {len(sizes)} of {len(sizes) + 2} files" in done.stdout


def test_colorize_cli_errors(run_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    done = cli("jaxcolor.colorize", str(tmp_path / "empty"), "--workdir", run_dir,
               "-o", str(tmp_path / "o1"))
    assert done.returncode == 2 and "the folder is empty" in done.stderr

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    done = cli("jaxcolor.colorize", str(tmp_path / "bad"), "--workdir", run_dir,
               "-o", str(tmp_path / "o2"))
    assert done.returncode == 1 and "nothing could be colorized" in done.stderr
    assert "a.jpg" in done.stderr

    done = cli("jaxcolor.colorize", str(tmp_path / "bad"), "--workdir", str(tmp_path / "nope"),
               "-o", str(tmp_path / "o3"))
    assert done.returncode == 2 and "no such run directory" in done.stderr


def test_refuses_to_write_among_the_inputs(tmp_path):
    from jaxcolor.colorize import UsageError, check_outputs, find_inputs, plan_outputs

    folder = tmp_path / "pics"
    write_images(str(folder / "deeper"), 1)
    (folder / "x.jpg").write_bytes(b"")
    (folder / "x.png").write_bytes(b"")
    jobs = plan_outputs(find_inputs([str(folder)]), str(tmp_path / "out"))
    assert [os.path.relpath(j.output, tmp_path / "out") for j in jobs] == [
        "x.png", "x.png.png", os.path.join("deeper", "000000.png")]
    for out in (folder, folder / "deeper", folder / "new"):
        with pytest.raises(UsageError, match="inside the input folder"):
            check_outputs([str(folder)], plan_outputs(find_inputs([str(folder)]), str(out)),
                          str(out), compare=False)
    single = str(folder / "x.png")
    with pytest.raises(UsageError, match="overwrite an input file"):
        check_outputs([single], plan_outputs(find_inputs([single]), str(folder)), str(folder),
                      compare=False)
    check_outputs([str(folder)], jobs, str(tmp_path / "out"), compare=True)  # fine


def test_colorize_array_keeps_size_and_full_resolution_lightness(run_dir):
    import jaxcolor

    model = jaxcolor.load_colorizer(run_dir)
    yy, xx = np.mgrid[0:45, 0:61]
    checker = np.where((yy + xx) % 2, 200, 40).astype(np.uint8)  # 1-pixel detail, far below 16px
    picture = np.stack([checker, checker // 2, 255 - checker], axis=-1)
    out = jaxcolor.colorize_array(model, picture)
    assert out.shape == (45, 61, 3) and out.dtype == np.uint8
    l_in = color.rgb_to_lab(picture)[..., 0]
    l_out = color.rgb_to_lab(out)[..., 0]
    assert np.median(np.abs(l_out - l_in)) < 1.5  # the picture's own L, not an upsampled one
    gray = jaxcolor.colorize_array(model, checker)  # (H, W) gray input
    assert gray.shape == (45, 61, 3)
    np.testing.assert_array_equal(out, jaxcolor.colorize_array(model, picture.astype(np.float32) / 255))


# --- plot -------------------------------------------------------------------------------------


def test_plot_writes_its_pngs(run_dir, tmp_path):
    from jaxcolor import plot

    assert plot.main(["--workdir", run_dir, "--out", str(tmp_path), "--num_images", "3"]) == 0
    for name in (plot.LOSS_PNG, plot.VAL_PNG, plot.EXAMPLES_PNG, plot.AB_PNG):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and min(img.size) > 100, name
    with pytest.raises(SystemExit) as exit_info:
        plot.main(["--workdir", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
