"""The benchmark scripts run and print well-formed JSON lines (no timings are asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jaxcolor import perf

from conftest import ROOT, write_images

BENCH = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCH)

import roofline  # noqa: E402
import train_step  # noqa: E402


def _run(script, *args, env=None):
    full_env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", **(env or {}))
    out = subprocess.run([sys.executable, os.path.join(BENCH, script), *args], env=full_env,
                         capture_output=True, text=True, timeout=300, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_hand_flop_count_of_the_autoencoder():
    counts = train_step.autoencoder_hand_flops(128)
    assert counts["conv_fwd_flops_per_example"] == 7_743_209_472
    assert counts["conv_train_flops_per_example_x3"] == 3 * 7_743_209_472
    # the exact count leaves out the first conv's input gradient (2 * 128 * 128 * 9 * 1 * 16)
    assert counts["conv_train_flops_per_example_exact"] == 3 * 7_743_209_472 - 4_718_592


def test_train_step_benchmark_prints_one_json_line():
    (line,) = _run("train_step.py", "--size", "16", "--batch", "2", "--width", "0.25",
                   "--steps", "2", "--warmup", "1", "--peak_tflops", "1")
    assert line["framework"] == "jax" and line["model"] == "autoencoder"
    for key in ("examples_per_s", "step_s_median", "step_s_p10", "step_s_p90", "compile_s",
                "flops_per_example", "achieved_tflops", "peak_fraction", "device_kind",
                "jax_version", "dtype", "batch", "size", "xla_flags", "cpu_s_per_step"):
        assert key in line, key
    assert line["step_s_p10"] <= line["step_s_median"] <= line["step_s_p90"]
    # XLA's count of the whole step and the hand count of the convs agree roughly (the convs
    # dominate; at width 1/4 and 16x16 the element-wise ops weigh a little more).
    ratio = line["flops_per_example"] / line["conv_train_flops_per_example_x3_as_computed"]
    assert 0.8 < ratio < 1.3, ratio
    assert perf.cpu_flags().split()[0] in line["xla_flags"]


def test_train_step_benchmark_without_cpu_flags_leaves_xla_flags_alone():
    (line,) = _run("train_step.py", "--size", "16", "--batch", "2", "--width", "0.25",
                   "--steps", "1", "--warmup", "0", "--no_cpu_flags", env={"XLA_FLAGS": ""})
    assert line["xla_flags"] == ""


@pytest.mark.parametrize("ops", ["phase", "im2col"])
def test_conv_layers_benchmark_times_every_conv_against_its_roofline(ops):
    (line,) = _run("conv_layers.py", "--size", "16", "--batch", "2", "--width", "0.25",
                   "--steps", "1", "--warmup", "0", "--ops", ops, "--peak_tflops", "1",
                   "--hbm_tbps", "1")
    names = [name for name, *_ in train_step.autoencoder_conv_layers(16, 0.25)]
    assert [r["layer"] for r in line["layers"]] == names and line["ops"] == ops
    # The layers' FLOPs add up to the hand count as computed, less the input gradients the
    # model never takes: the first conv's and that of skip64's 1-channel input part.
    hand = train_step.autoencoder_hand_flops(16, 0.25)
    enc16, skip64_input = 2 * 16 * 16 * 9 * 1 * 4, 2 * 16 * 16 * 9 * 1 * 16
    total = sum(r["train_gflop"] for r in line["layers"]) * 1e9 / 2
    assert round(total) == hand["conv_train_flops_per_example_x3_as_computed"] - enc16 - skip64_input
    for r in line["layers"]:
        assert r["forward_ms"] > 0 and r["train_ms"] > 0 and r["bound_by"] in ("compute", "memory")
        assert r["train_over_roofline"] == pytest.approx(r["train_ms"] / r["roofline_train_ms"])


def test_input_pipeline_benchmark(tmp_path):
    folder = str(tmp_path / "imgs")
    write_images(folder, 16, size=(40, 48), ext="jpg")
    lines = _run("input_pipeline.py", "--path", folder, "--settings", "20:16", "--workers", "0",
                 "--batch", "4", "--batches", "2", "--warmup_batches", "0")
    assert [line["worker_count"] for line in lines] == [0]
    assert lines[0]["shapes"]["L"] == [4, 16, 16, 1] and lines[0]["examples_per_s"] > 0
    (stages,) = _run("input_pipeline.py", "--path", folder, "--settings", "20:16", "--stages",
                     "--batch", "4", "--stage_examples", "8")
    assert set(stages["ms_per_example"]) == {"read", "decode", "crop", "resize", "rotate", "flip",
                                             "lab", "batch"}
    prepared, line = _run("input_pipeline.py", "--path", folder, "--settings", "20:16",
                          "--workers", "0", "--batch", "4", "--batches", "2",
                          "--warmup_batches", "0", "--source", "shards",
                          "--shards_dir", str(tmp_path / "shards"))
    assert prepared["mode"] == "prepare" and prepared["count"] == 16
    assert line["source"] == "shards" and line["shapes"]["L"] == [4, 16, 16, 1]
    assert line["examples_per_cpu_s"] > 0


def test_input_pipeline_benchmark_host_side_of_device_augmentation(tmp_path):
    folder = str(tmp_path / "imgs")
    write_images(folder, 16, size=(40, 48), ext="jpg")
    (line,) = _run("input_pipeline.py", "--path", folder, "--settings", "20:16", "--workers", "0",
                   "--batch", "4", "--batches", "2", "--warmup_batches", "0",
                   "--augment_on", "device")
    assert line["augment_on"] == "device" and line["shapes"]["rgb"] == [4, 16, 16, 3]
    assert line["shapes"]["degrees"] == [4] and "L" not in line["shapes"]


def test_device_augment_benchmark_prints_one_json_line():
    (line,) = _run("device_augment.py", "--batch", "4", "--size", "16", "--steps", "2",
                   "--warmup", "1")
    assert line["backend"] == "cpu" and line["batch"] == 4 and line["size"] == 16
    assert line["batch_s_median"] > 0 and line["lab_only_batch_s_median"] > 0


def test_input_pipeline_benchmark_skips_a_missing_folder(tmp_path):
    (line,) = _run("input_pipeline.py", "--path", str(tmp_path / "absent"))
    assert line["mode"] == "skipped" and "not found" in line["reason"]


def test_synthetic_folder(tmp_path):
    folder = str(tmp_path / "syn")
    lines = _run("input_pipeline.py", "--path", folder, "--make_synthetic", "3", "--make_only")
    assert lines[0]["mode"] == "make_synthetic" and len(os.listdir(folder)) == 3


def test_roofline_bound_is_the_smaller_of_compute_and_memory():
    line = roofline.bound("bfloat16", 989.0, 3.35, 128, 256, 1.0, "test")
    for kind in ("unfused", "fused"):
        assert line[f"bound_examples_per_s_{kind}"] == pytest.approx(min(
            line["compute_bound_examples_per_s"], line[f"memory_bound_examples_per_s_{kind}"]))
    assert line["bytes_per_example_fused"] < line["bytes_per_example_unfused"]


def test_apply_cpu_flags_keeps_what_the_environment_sets(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    name = perf.RECOMMENDED_CPU_FLAGS[0].split("=", 1)[0]
    monkeypatch.setenv("XLA_FLAGS", f"{name}=mine --xla_dump_to=/tmp/x")
    flags = perf.apply_cpu_flags("--xla_cpu_enable_fast_math=false")
    assert flags.split() == [f"{name}=mine", "--xla_dump_to=/tmp/x",
                             "--xla_cpu_enable_fast_math=false"]


def test_apply_cpu_flags_is_a_no_op_where_an_accelerator_is_expected(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    monkeypatch.setenv("XLA_FLAGS", "")
    assert perf.apply_cpu_flags() == ""
    assert perf.apply_cpu_flags(force=True) == perf.cpu_flags()
