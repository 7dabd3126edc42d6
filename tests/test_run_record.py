"""run.json says what was really read and where: `dataset_info` for every source (the shard
manifest, the TFDS dataset, the folder, the sample photos) and `machine_info`, what decides
bitwise determinism (CPU model and SIMD flags, XLA_FLAGS, accelerator), per session and on top."""

import hashlib
import json
import os

import jax
import pytest
from conftest import require, tiny_config, write_images

from jaxcolor import prepare, run_record
from jaxcolor.data import shards, sources


def test_shards_dataset_info_is_the_manifest_not_the_sample_folder(tmp_path):
    folder = str(tmp_path / "photos")
    write_images(folder, 5)
    out = str(tmp_path / "shards")
    prepare.write_shards(f"folder:{folder}", out, crop=24, size=16, num_shards=2, encoding="png")
    info = run_record.dataset_info(
        tiny_config(**{"data.source": "shards", "data.path": out, "data.crop": 24}).data)
    assert info["source"] == "shards" and info["path"] == os.path.abspath(out)
    assert sources.sample_dir() not in json.dumps(info)  # it used to name skimage's folder
    assert info["prepared_from"] == f"folder:{os.path.abspath(folder)}"
    assert (info["crop"], info["size"], info["encoding"]) == (24, 16, "png")
    assert info["count"] == info["num_files"] == 5
    # The manifest's SHA-256 of each shard: the files' real digests (hashed here by the test;
    # dataset_info itself reads only the manifest).
    names = [shards.shard_name(i, 2) for i in range(2)]
    assert info["shards_sha256"] == {
        n: hashlib.sha256(open(os.path.join(out, n), "rb").read()).hexdigest() for n in names}
    assert len(info["shards_digest"]) == 16
    # The same listing as the folder source would read from the original folder.
    folder_info = run_record.dataset_info(
        tiny_config(**{"data.source": "folder", "data.path": folder}).data)
    assert info["files_digest"] == folder_info["files_digest"]
    assert ({k: s["count"] for k, s in info["splits"].items()}
            == {k: s["count"] for k, s in folder_info["splits"].items()})


def test_tfds_dataset_info_is_the_prepared_dataset(tmp_path):
    require("tensorflow_datasets")
    from test_data_sources import _tiny_tfds

    data_dir = str(tmp_path / "tfds")
    _tiny_tfds(data_dir)
    info = run_record.dataset_info(tiny_config(**{
        "data.source": "tfds", "data.name": "jaxcolor_tiny_faces", "data.data_dir": data_dir,
        "data.crop": 24}).data)
    assert info["source"] == "tfds" and "info_error" not in info, info
    assert (info["name"], info["version"]) == ("jaxcolor_tiny_faces", "1.0.0")
    assert info["data_dir"] == os.path.join(data_dir, "jaxcolor_tiny_faces", "1.0.0")
    assert info["num_examples"] == {"train": 10, "validation": 4}
    assert sources.sample_dir() not in json.dumps(info)
    assert info["splits"]["train"]["count"] == 10 and info["splits"]["validation"]["count"] == 4
    assert "error" in info["splits"]["test"]  # the dataset has no test split: said, not hidden


def test_folder_and_sample_dataset_info(tmp_path):
    folder = str(tmp_path / "photos")
    paths = write_images(folder, 4)
    info = run_record.dataset_info(
        tiny_config(**{"data.source": "folder", "data.path": folder}).data)
    names = sorted(os.path.relpath(p, folder) for p in paths)
    assert (info["path"], info["num_files"]) == (os.path.abspath(folder), 4)
    assert info["files_digest"] == hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
    sample = run_record.dataset_info(tiny_config().data)
    assert (sample["source"], sample["path"], sample["num_files"]) == (
        "sample", sources.sample_dir(), 6)
    assert sample["splits"]["train"]["count"] == 64
    assert sample["splits"]["validation"]["count"] == 16


def cpuinfo_first_processor():
    """'model name' and 'flags' of the first processor, read independently of run_record."""
    if not os.path.isfile("/proc/cpuinfo"):
        pytest.skip("no /proc/cpuinfo on this machine")
    fields = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())
    return fields.get("model name"), set(fields.get("flags", fields.get("Features", "")).split())


def test_run_json_records_the_machine_per_session_and_on_top(tmp_path, monkeypatch):
    model, flags = cpuinfo_first_processor()
    record = run_record.RunRecord(str(tmp_path))
    sessions = ("--xla_cpu_use_thunk_runtime=false", None)
    for xla_flags in sessions:  # a session, then a resume on the same machine with other flags
        if xla_flags is None:
            monkeypatch.delenv("XLA_FLAGS", raising=False)
        else:
            monkeypatch.setenv("XLA_FLAGS", xla_flags)
        record.start(tiny_config(), 0, command=["test"])
        record.end("finished", 0)
    saved = run_record.read(str(tmp_path))
    history = saved["history"]
    assert [h["machine"]["xla_flags"] for h in history] == list(sessions)
    assert saved["machine"] == history[-1]["machine"]
    for machine in (h["machine"] for h in history):
        cpu = machine["cpu"]
        assert cpu["model"] == model
        assert set(cpu["simd_flags"]) <= flags and cpu["simd_flags"] == sorted(cpu["simd_flags"])
        for flag in ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_bf16",
                     "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8"):
            assert (flag in cpu["simd_flags"]) == (flag in flags), flag
        assert not {"fpu", "vme", "pae", "hypervisor"} & set(cpu["simd_flags"])
        digest = hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16]
        assert cpu["flags_digest"] == digest
        device = jax.devices()[0]
        assert machine["accelerator"]["platform"] == device.platform
        assert machine["accelerator"]["kind"] == device.device_kind
        if device.platform != "gpu":
            assert machine["accelerator"]["driver"] is None


def test_nvidia_driver_version_is_read_from_the_kernel_module_line(tmp_path):
    path = tmp_path / "version"
    path.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.15  Release "
                    "Build  (dvs-builder@U16)  Tue Mar  5 22:15:33 UTC 2024\nGCC version: 12.3\n")
    assert run_record._nvidia_driver(str(path)) == "550.54.15"
    path.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.129.03  Thu Oct 19 2023\n")
    assert run_record._nvidia_driver(str(path)) == "535.129.03"
    assert run_record._nvidia_driver(str(tmp_path / "absent")) is None
