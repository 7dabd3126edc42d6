"""Shared fixtures: tiny configs, generated image folders, the shared CelebA photos."""

from __future__ import annotations

import getpass
import os
import tempfile

# One XLA compilation cache for the whole test run, its xdist workers and the subprocesses they
# start (set before anything imports jax): the suite compiles the same tiny train steps dozens of
# times, and reading them back instead cut a sample of the loop tests from 210 s to 127 s on a
# 2-core CPU, cache cold at the start. Entries are keyed by the program, the compile options,
# the devices and the jax version, so a hit is the executable a compile would have produced
# (the bitwise tests still compare what runs compute). Set JAX_COMPILATION_CACHE_DIR to move it.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"jaxcolor-tests-xla-cache-{getpass.getuser()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from jaxcolor.configs.default import get_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CELEBA = os.path.normpath(
    os.path.join(ROOT, "..", "shared", "data", "celeba-10k", "img_align_celeba")
)


def tiny_config(**overrides):
    """A config that trains in about a second: 16x16 crops of the sample photos, width 1/8."""
    c = get_config()
    c.data.image_size = 16
    c.data.sample_train_examples = 64
    c.data.sample_eval_examples = 16
    c.data.eval_threads = 1
    c.model.width = 0.125
    c.batch_size = 8
    c.num_steps = 6
    c.log_every = 2
    c.eval_every = 3
    c.checkpoint_every = 3
    c.num_preview_images = 4
    for key, value in overrides.items():
        target = c
        *path, leaf = key.split(".")
        for part in path:
            target = target[part]
        target[leaf] = value
    return c


def require(module: str):
    """`pytest.importorskip` for a package of the `test` extra, except in CI (CI=true), where a
    missing one is an installation error to fail on, not a reason to skip tests silently."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module)


@pytest.fixture
def celeba_dir():
    if not os.path.isdir(CELEBA):
        pytest.skip(f"shared CelebA photos not found at {CELEBA} (../shared is beside the repo)")
    return CELEBA


def write_images(folder, n, size=(40, 30), seed=0, ext="png"):
    """n random color images with a smooth color field (so they compress and resize sanely)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = size
        yy, xx = np.mgrid[0:h, 0:w]
        base = rng.integers(0, 256, 3)
        img = (base + 60 * np.sin(xx[..., None] / (3 + i) + yy[..., None] / 5)).clip(0, 255)
        path = os.path.join(folder, f"{i:06d}.{ext}")
        Image.fromarray(img.astype(np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    write_images(str(folder), 12)
    return str(folder)


def script_val_loss(monkeypatch, losses: dict):
    """Trainer.evaluate computes the real metrics but reports `losses[step]` as the validation
    loss, so a test chooses where the best step is (not simply the latest) and when patience
    runs out."""
    from jaxcolor import parallel, trainer as trainer_lib

    real = trainer_lib.Trainer.evaluate

    def evaluate(self, state, records):
        out = real(self, state, records)
        out["loss"] = losses[int(np.asarray(parallel.fetch(self.to_global_form(state).step)))]
        return out

    monkeypatch.setattr(trainer_lib.Trainer, "evaluate", evaluate)
