"""Port a Keras-layout ResNet50 file, train the reference transfer recipe on it: the loss falls and
the frozen layers stay bitwise as loaded."""

import json
import os
import subprocess
import sys

import numpy as np

from conftest import ROOT
from test_resnet import random_flax_layers, random_weight, write_legacy_h5
from test_train import saved_params


def plausible_layers():
    """ResNet50's layers with values a trained network could have (positive variances)."""
    rng = np.random.default_rng(0)
    return [(layer, [(name, random_weight(rng, name, w.shape)) for name, w in weights])
            for layer, weights in random_flax_layers(False)]


def test_port_then_train_seed_resnet50_keeps_frozen_layers(tmp_path):
    layers = plausible_layers()
    h5 = write_legacy_h5(str(tmp_path / "notop.h5"), layers)
    port = subprocess.run([sys.executable, "-m", "jaxcolor.port", "--keras_h5", h5,
                           "--out", str(tmp_path / "ported")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert port.returncode == 0, port.stderr[-2000:]
    workdir = tmp_path / "run"
    flags = [
        "--config", "experiments/seed_resnet50.py", "--workdir", str(workdir),
        f"--config.model.weights={tmp_path / 'ported'}", "--config.data.source=sample",
        "--config.data.crop=0", "--config.data.image_size=32", "--config.batch_size=8",
        "--config.data.worker_count=0", "--config.data.sample_train_examples=64",
        "--config.data.sample_eval_examples=8", "--config.num_steps=30", "--config.log_every=5",
        "--config.eval_every=30", "--config.checkpoint_every=30", "--config.optimizer.learning_rate=3e-3",
        "--config.model.freeze=stem", "--config.num_preview_images=2",
    ]
    done = subprocess.run([sys.executable, "-m", "jaxcolor.train", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert np.mean(losses[-2:]) < losses[0], losses

    _, state = saved_params(workdir)
    loaded = dict(layers)
    encoder = state["params"]["encoder"]
    stats = state["batch_stats"]["encoder"]
    # the frozen stem: bitwise as in the file, parameters and BatchNorm statistics alike
    kernel, bias = (w for _, w in loaded["conv1_conv"])
    np.testing.assert_array_equal(encoder["conv1_conv"]["kernel"], kernel)
    np.testing.assert_array_equal(encoder["conv1_conv"]["bias"], bias)
    bn = dict(loaded["conv1_bn"])
    np.testing.assert_array_equal(encoder["conv1_bn"]["scale"], bn["gamma"])
    np.testing.assert_array_equal(stats["conv1_bn"]["mean"], bn["moving_mean"])
    np.testing.assert_array_equal(stats["conv1_bn"]["var"], bn["moving_variance"])
    # the unfrozen stage trained
    conv2 = dict(loaded["conv2_block1_2_conv"])["kernel"]
    assert not np.array_equal(encoder["conv2_block1_2_conv"]["kernel"], conv2)
    assert os.path.exists(workdir / "preview.png")
