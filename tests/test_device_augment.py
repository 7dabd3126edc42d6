"""config.data.augment_on="device": the jnp rotation, flip and LAB conversion against the host's
(PIL, NumPy) ones, the pipeline's device-path examples, and training with them.

Measured agreement of the rotation (jaxcolor/data/device_augment.py, float32) with the host's
(PIL's affine bilinear, float64), CPU: at most 0.16% of channel values differ (noise images,
odd sizes; 0.001-0.07% on CelebA crops), never by more than one uint8 level; 0 and 90 degrees
are exact. The tests allow 0.5% and one level. The LAB conversions agree to 1e-6.
"""

import glob
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, tiny_config, write_images

from jaxcolor import loop, trainer as trainer_lib
from jaxcolor.data import device_augment, pipeline, transforms
from jaxcolor.logbook import read_metrics

MAX_DIFFERING = 0.005  # share of channel values allowed one uint8 level off the host's


def host_augment(images, degrees, flips):
    out = []
    for img, deg, flip in zip(images, degrees, flips):
        img = transforms.rotate(img, float(deg))
        out.append(img[:, ::-1] if flip else img)
    return np.stack(out)


def device_augment_np(images, degrees, flips):
    fn = jax.jit(device_augment.rotate_flip)
    return np.asarray(fn(images, jnp.asarray(degrees, jnp.float32), jnp.asarray(flips)))


def assert_close_uint8(got, want):
    assert got.dtype == want.dtype == np.uint8 and got.shape == want.shape
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.max() <= 1, diff.max()
    assert (diff > 0).mean() <= MAX_DIFFERING, (diff > 0).mean()


@pytest.mark.parametrize("size", [(16, 16), (17, 23), (33, 33)])
def test_rotation_matches_host_on_noise(size):
    degrees = np.array([0.0, 15.0, -15.0, 7.3, -0.01, 14.999, -45.0, 2.0], np.float32)
    flips = np.array([False, True] * 4)
    images = np.random.default_rng(size[0]).integers(0, 256, (8, *size, 3), dtype=np.uint8)
    got = device_augment_np(images, degrees, flips)
    assert_close_uint8(got, host_augment(images, degrees, flips))
    np.testing.assert_array_equal(got[0], images[0])  # 0 degrees is the identity, exactly


def test_quarter_turns_are_exact():
    images = np.random.default_rng(0).integers(0, 256, (4, 19, 19, 3), dtype=np.uint8)
    degrees, flips = np.array([90.0, -90.0, 90.0, 0.0]), np.array([False, False, True, True])
    got = device_augment_np(images, degrees, flips)
    np.testing.assert_array_equal(got, host_augment(images, degrees, flips))
    np.testing.assert_array_equal(got[0], np.rot90(images[0]))  # PIL: positive = counter-clockwise


def celeba_crops(celeba_dir, size, n=6):
    files = sorted(glob.glob(os.path.join(celeba_dir, "*.jpg")))[:n]
    return np.stack([transforms.resize(transforms.center_crop_or_pad(transforms.decode(f), 150),
                                       size) for f in files])


@pytest.mark.parametrize("size", [64, 31])
def test_rotation_matches_host_on_celeba(celeba_dir, size):
    images = celeba_crops(celeba_dir, size)
    rng = np.random.default_rng(size)
    degrees = np.concatenate([[15.0, -15.0], rng.uniform(-15, 15, len(images) - 2)])
    flips = rng.random(len(images)) < 0.5
    assert_close_uint8(device_augment_np(images, degrees, flips),
                       host_augment(images, degrees, flips))


def test_flip_is_the_mirror_of_the_rotation():
    images = np.random.default_rng(3).integers(0, 256, (2, 12, 15, 3), dtype=np.uint8)
    plain = device_augment_np(images, [0.0, 12.5], [False, False])
    mirrored = device_augment_np(images, [0.0, 12.5], [True, True])
    np.testing.assert_array_equal(mirrored[0], images[0][:, ::-1])
    np.testing.assert_array_equal(mirrored[1], plain[1][:, ::-1])


def test_lab_matches_the_host_table_conversion():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
    rgb[0, :4] = rng.integers(0, 12, (4, 50, 3))  # near black: the linear branch of f
    rgb[1, 0, :4] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 0, 255]]
    got = jax.jit(device_augment.to_model_arrays)(rgb)
    want = transforms.to_model_arrays(rgb)
    for key in ("L", "ab"):
        assert got[key].dtype == jnp.float32 and got[key].shape == want[key].shape
        np.testing.assert_allclose(np.asarray(got[key]), want[key], rtol=0, atol=1e-5)


def test_model_batch_replaces_the_augmentation_keys_and_passes_the_rest():
    rgb = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    batch = {"rgb": rgb, "degrees": np.zeros(2, np.float32), "flip": np.zeros(2, bool),
             "weight": np.ones(2, np.float32)}
    out = jax.jit(device_augment.to_model_batch)(batch)
    assert sorted(out) == ["L", "ab", "weight"]
    want = transforms.to_model_arrays(rgb)
    np.testing.assert_allclose(np.asarray(out["L"]), want["L"], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out["weight"]), batch["weight"])


def test_unknown_augment_on_names_the_option(image_folder):
    cfg = tiny_config(**{"data.augment_on": "gpu"})
    with pytest.raises(ValueError, match=r"config.data.augment_on='gpu'.*'host' or 'device'"):
        pipeline.train_dataset(cfg.data, 4, seed=0)
    with pytest.raises(ValueError, match="config.data.augment_on"):
        trainer_lib.Trainer(cfg)


def test_configs_saved_before_the_option_resume_as_host():
    from jaxcolor import run_record

    new = run_record.config_as_json(tiny_config())
    saved = run_record.config_as_json(tiny_config())
    del saved["data"]["augment_on"]
    assert run_record.config_diff(saved, new) == []
    new["data"]["augment_on"] = "device"
    assert run_record.config_diff(saved, new) == [("data.augment_on", "host", "device")]
    assert transforms.augment_on(tiny_config(**{"data.augment_on": "host"}).data) == "host"


# ------------------------------------------------------------------- pipeline: same decisions


def _source_config(kind, tmp_path, **kw):
    if kind == "sample":
        return tiny_config(**kw)
    folder = str(tmp_path / "images")
    write_images(folder, 12, size=(40, 30))
    if kind == "folder":
        return tiny_config(**{"data.source": "folder", "data.path": folder, "data.crop": 24, **kw})
    if kind == "shards":
        from jaxcolor import prepare

        out = str(tmp_path / "shards")
        prepare.write_shards(f"folder:{folder}", out, crop=24, size=16, workers=0)
        return tiny_config(**{"data.source": "shards", "data.path": out, "data.crop": 24, **kw})
    from test_data_sources import _tiny_tfds  # skips without tensorflow_datasets

    _tiny_tfds(str(tmp_path / "tfds"))
    return tiny_config(**{"data.source": "tfds", "data.name": "jaxcolor_tiny_faces",
                          "data.data_dir": str(tmp_path / "tfds"), "data.crop": 24, **kw})


@pytest.mark.parametrize("kind", ["sample", "folder", "shards", "tfds"])
def test_host_and_device_paths_draw_the_same_augmentation(kind, tmp_path, monkeypatch):
    c = _source_config(kind, tmp_path)
    host_degrees = []
    rotate = transforms.rotate

    def recording_rotate(rgb, degrees):
        host_degrees.append(degrees)
        return rotate(rgb, degrees)

    monkeypatch.setattr(transforms, "rotate", recording_rotate)
    host = next(iter(pipeline.train_dataset(c.data, 8, seed=5)))
    c.data.augment_on = "device"
    dev = next(iter(pipeline.train_dataset(c.data, 8, seed=5)))
    assert sorted(dev) == ["degrees", "flip", "rgb", "skipped"]
    assert dev["rgb"].dtype == np.uint8 and dev["rgb"].shape == (8, 16, 16, 3)
    assert dev["degrees"].dtype == np.float32 and dev["flip"].dtype == np.bool_
    np.testing.assert_array_equal(dev["skipped"], host["skipped"])
    # grain's prefetch threads run the host's rotations in any order (and beyond this batch):
    # each drawn angle must be one the host rotated by; the arrays below check which example.
    drawn = np.asarray(host_degrees)
    assert all(np.abs(drawn - d).min() < 1e-5 for d in dev["degrees"]), (dev["degrees"], drawn)
    assert dev["flip"].any() and not dev["flip"].all()  # both decisions are exercised
    # The same decisions give nearly the same model arrays: a flip or angle drawn differently
    # would differ everywhere; one uint8 level here and there moves L/100 and ab/128 by < 0.01
    # (measured: <= 0.005, on <= 0.03% of the values).
    out = jax.jit(device_augment.to_model_batch)(dev)
    for key in ("L", "ab"):
        diff = np.abs(np.asarray(out[key]) - host[key])
        assert diff.max() < 0.01, (key, diff.max())
        assert (diff > 1e-5).mean() < 0.005, (key, (diff > 1e-5).mean())


def test_device_path_skips_and_counts_bad_files(tmp_path):
    from test_data_sources import write_zoo

    folder = str(tmp_path / "zoo")
    write_zoo(folder)
    write_images(folder, 3, ext="jpg")
    c = tiny_config(**{"data.source": "folder", "data.path": folder, "data.crop": 24,
                       "data.train_split": "[:100%]", "data.augment_on": "device"})
    it = iter(pipeline.train_dataset(c.data, 8, seed=0))
    batches = [next(it) for _ in range(2)]  # 16 of 11 files, 3 of them unreadable
    assert int(batches[-1]["skipped"].max()) == 3
    assert all(b["rgb"].shape == (8, 16, 16, 3) for b in batches)


def test_device_path_whole_batches_from_shard_workers(tmp_path):
    c = _source_config("shards", tmp_path, **{"data.augment_on": "device",
                                               "data.worker_count": 1})
    it = iter(pipeline.train_dataset(c.data, 4, seed=0))
    batch = next(it)
    it.close()
    assert batch["rgb"].shape == (4, 16, 16, 3) and batch["flip"].shape == (4,)
    np.testing.assert_array_equal(batch["skipped"], np.zeros(4, np.int64))


# ------------------------------------------------------------------------------- training


def test_training_with_device_augmentation(tmp_path):
    """A few steps with augment_on='device' under jit and pmap: finite losses, and the first
    step's loss is the host path's (same parameters, nearly the same batch)."""
    kw = {"num_steps": 3, "log_every": 1, "eval_every": 3, "checkpoint_every": 3}
    losses = {}
    for where, mode in (("host", "jit"), ("device", "jit"), ("device", "pmap")):
        workdir = str(tmp_path / f"{where}_{mode}")
        loop.train_and_evaluate(tiny_config(**kw, **{"data.augment_on": where, "parallel": mode}), workdir)
        losses[where, mode] = [r["loss"] for r in read_metrics(workdir) if "loss" in r]
    for mode in ("jit", "pmap"):
        got = losses["device", mode]
        assert len(got) == 3 and np.isfinite(got).all(), (mode, got)
        np.testing.assert_allclose(got[0], losses["host", "jit"][0], rtol=2e-3)


SHARDED = textwrap.dedent(
    """
    import jax, numpy as np
    from jaxcolor import parallel
    from jaxcolor.data import device_augment

    assert jax.device_count() == 8, jax.devices()
    data = parallel.data_sharding(parallel.make_mesh())
    rng = np.random.default_rng(0)
    batch = {"rgb": rng.integers(0, 256, (16, 12, 12, 3), dtype=np.uint8),
             "degrees": rng.uniform(-15, 15, 16).astype(np.float32), "flip": rng.random(16) < 0.5}
    sharded = jax.jit(device_augment.to_model_batch, in_shardings=(data,), out_shardings=data)
    placed = parallel.to_global(batch, data)
    hlo = sharded.lower(placed).compile().as_text()
    found = [op for op in ("all-gather", "all-to-all", "collective-permute", "all-reduce")
             if op in hlo]
    assert not found, found
    out, ref = sharded(placed), jax.jit(device_augment.to_model_batch)(batch)
    for key in ("L", "ab"):
        np.testing.assert_array_equal(np.asarray(out[key]), np.asarray(ref[key]))
    print("OK")
    """
)


def test_sharded_augmentation_stays_per_device():
    """Over an 8-device mesh the augmentation needs no collective (each device gathers from its
    own rows) and computes what one device computes."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-c", SHARDED], cwd=ROOT, env=env, check=False,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
