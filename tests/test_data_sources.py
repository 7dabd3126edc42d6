"""The shards and tfds sources, `prepare shards` (resume, bad files) and the bad-file zoo."""

import functools
import io
import json
import os
import re
import threading
import time

import numpy as np
import pytest
from conftest import require, tiny_config, write_images
from PIL import Image

from jaxcolor import prepare
from jaxcolor.data import pipeline, shards, sources


def _take(it, n):
    return [next(it) for _ in range(n)]


def _noise(h=40, w=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_zoo(folder) -> dict[str, bool]:
    """The bad-file zoo, written with PIL/numpy: file name -> whether it should be readable."""
    os.makedirs(folder, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(_noise(64, 64)).save(buf, format="JPEG", quality=95)
    files = {
        "truncated.jpg": (buf.getvalue()[: len(buf.getvalue()) // 2], False),
        "zero.jpg": (b"", False),
        "notes.jpg": (b"a text file renamed .jpg\n", False),
    }
    for name, (data, _) in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    ramp16 = (np.arange(40 * 48, dtype=np.uint32).reshape(40, 48) * 30).astype(np.uint16)
    Image.fromarray(ramp16).save(os.path.join(folder, "gray16.png"))
    Image.fromarray(_noise()).convert("CMYK").save(os.path.join(folder, "cmyk.jpg"))
    Image.fromarray(_noise()).convert("P").save(os.path.join(folder, "palette.png"))
    rgba = np.dstack([_noise(), np.full((40, 48), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(os.path.join(folder, "alpha.png"))
    Image.fromarray(_noise()[..., 0], "L").save(os.path.join(folder, "gray.jpg"))
    ok = ("gray16.png", "cmyk.jpg", "palette.png", "alpha.png", "gray.jpg")
    return {**{n: False for n in files}, **{n: True for n in ok}}


def _shards_config(path, **kw):
    return tiny_config(**{"data.source": "shards", "data.path": path, "data.crop": 24, **kw}).data


def test_shards_select_and_reproduce_the_folder_images(tmp_path):
    """Same split semantics (CelebA partition file, named splits, slices) and the same pixels."""
    root = tmp_path / "img_align_celeba"
    paths = write_images(str(root), 8, ext="jpg")
    codes = ["0", "1", "0", "2", "0", "1", "0", "0"]
    (tmp_path / "list_eval_partition.txt").write_text(
        "".join(f"{os.path.basename(p)} {c}\n" for p, c in zip(paths, codes)))
    out = str(tmp_path / "shards")
    m = prepare.write_shards(f"folder:{root}", out, crop=24, size=16, num_shards=3)
    assert m["count"] == 8 and len(m["shards"]) == 3 and m["skipped_count"] == 0
    cfg_f = tiny_config(**{"data.source": "folder", "data.path": str(root), "data.crop": 24}).data
    cfg_s = _shards_config(out)
    for split in ("train", "validation", "test", "train[1:3]", "[:50%]", "[25%:]"):
        folder = [os.path.basename(r["path"]) for r in sources.records_for(cfg_f, split)]
        assert [r["path"] for r in sources.records_for(cfg_s, split)] == folder, split
    a = list(pipeline.eval_batches(cfg_f, "train", 4))
    b = list(pipeline.eval_batches(cfg_s, "train", 4))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["L"], y["L"])
        np.testing.assert_array_equal(x["ab"], y["ab"])


def test_shards_training_stream_workers_state_and_mismatch(tmp_path):
    folder = str(tmp_path / "imgs")
    write_images(folder, 10, ext="jpg")
    out = str(tmp_path / "shards")
    prepare.write_shards(f"folder:{folder}", out, crop=24, size=16, num_shards=2, workers=2)
    cfg = _shards_config(out, **{"data.train_split": "[:100%]"})
    it = iter(pipeline.train_dataset(cfg, 4, seed=0))
    first = _take(it, 2)
    state = it.get_state()
    expected = _take(it, 3)
    assert first[0]["L"].shape == (4, 16, 16, 1) and first[0]["ab"].shape == (4, 16, 16, 2)
    it2 = iter(pipeline.train_dataset(cfg, 4, seed=0))
    it2.set_state(state)
    for x, y in zip(expected, _take(it2, 3)):
        np.testing.assert_array_equal(x["ab"], y["ab"])
    parts = [_take(iter(pipeline.train_dataset(cfg, 4, seed=0, process_index=i,
                                                process_count=2)), 2) for i in range(2)]
    for step, batch in enumerate(first):  # two processes' halves stack to the global batch
        np.testing.assert_array_equal(
            np.concatenate([parts[0][step]["ab"], parts[1][step]["ab"]]), batch["ab"])
    cfg.worker_count = 1  # a worker process opens its own reader and gives the same stream
    it3 = iter(pipeline.train_dataset(cfg, 4, seed=0))
    for x, y in zip(first + expected, _take(it3, 5)):
        np.testing.assert_array_equal(x["ab"], y["ab"])
    it3.close()
    with pytest.raises(ValueError, match="--crop 24 --size 16.*config.data.crop=30"):
        sources.records_for(_shards_config(out, **{"data.crop": 30}), "train")
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        sources.records_for(_shards_config(folder), "train")


def test_prepare_resumes_and_skips_complete_shards(tmp_path):
    folder = str(tmp_path / "imgs")
    write_images(folder, 9, ext="png")
    out = str(tmp_path / "shards")
    first = prepare.write_shards(f"folder:{folder}", out, crop=24, size=16, num_shards=3,
                                 encoding="png")
    kept = os.path.join(out, shards.shard_name(0, 3))
    mtime = os.stat(kept).st_mtime_ns
    # An interrupted run: shard 2 never finished (a temp file, no sidecar), no manifest yet.
    redo = os.path.join(out, shards.shard_name(2, 3))
    os.replace(redo, redo + ".incomplete")
    os.remove(redo + ".json")
    os.remove(os.path.join(out, shards.MANIFEST))
    second = prepare.write_shards(f"folder:{folder}", out, crop=24, size=16, num_shards=3,
                                  encoding="png")
    assert os.stat(kept).st_mtime_ns == mtime  # complete shards are not rewritten
    assert second["shards"] == first["shards"]  # the redone shard has the same bytes (sha256)
    with open(os.path.join(out, shards.MANIFEST)) as f:
        assert json.load(f)["files"] == first["files"]
    batch = next(iter(pipeline.train_dataset(_shards_config(out), 2, seed=0)))
    assert batch["L"].shape == (2, 16, 16, 1)


def test_bad_file_zoo_in_prepare_folder_pipeline_and_training_log(tmp_path):
    from jaxcolor import loop
    from jaxcolor.logbook import read_metrics

    folder = str(tmp_path / "zoo")
    zoo = write_zoo(folder)
    write_images(folder, 3, ext="jpg")
    bad = sorted(n for n, ok in zoo.items() if not ok)
    out = str(tmp_path / "shards")
    assert prepare.main(["shards", "--source", f"folder:{folder}", "--out", out, "--crop", "24",
                         "--size", "16", "--workers", "0", "--quiet"]) == 0
    with open(os.path.join(out, shards.MANIFEST)) as f:
        m = json.load(f)
    assert sorted(row["path"] for row in m["skipped"]) == bad and m["skipped_count"] == 3
    assert m["count"] == 8 and m["listed"] == 11
    for name in ("gray16.png", "cmyk.jpg", "palette.png", "alpha.png", "gray.jpg"):
        entry = dict(m["files"])[name]
        rgb = shards.load({"shards": out, "index": entry, "path": name})
        assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8, name
    # The folder source counts the same three files as it meets them.
    cfg_f = tiny_config(**{"data.source": "folder", "data.path": folder, "data.crop": 24,
                           "data.train_split": "[:100%]"}).data
    batches = _take(iter(pipeline.train_dataset(cfg_f, 8, seed=0)), 2)  # 16 of 11 files
    assert int(batches[-1]["skipped"].max()) == 3
    # Training on the shards logs the prepare-time count beside the run-time one.
    config = tiny_config(**{"data.source": "shards", "data.path": out, "data.crop": 24,
                            "data.train_split": "[:100%]", "data.val_split": "[:100%]",
                            "batch_size": 4, "num_steps": 2, "log_every": 1, "eval_every": 2,
                            "checkpoint_every": 2})
    summary = loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert np.isfinite(summary["loss"])
    rows = [r for r in read_metrics(str(tmp_path / "run")) if "loss" in r]
    assert rows and all(r["skipped_files_at_prepare"] == 3 and r["skipped_files"] == 0
                        for r in rows)


# ----------------------------------------------------------------------------- TFDS


def _tiny_tfds(data_dir) -> None:
    """A small dataset in the real TFDS layout (ArrayRecord files, dataset_info.json,
    features.json), written by a GeneratorBasedBuilder with TFDS's own writer, no TensorFlow."""
    builder = _tiny_tfds_builder()(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()


@functools.cache
def _tiny_tfds_builder():
    """The builder class, defined once per test session: TFDS registers builders by name and
    refuses a second class of the same name (other test modules write this dataset too)."""
    tfds = require("tensorflow_datasets")

    class JaxcolorTinyFaces(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            image = tfds.features.Image(shape=(None, None, 3), encoding_format="png")
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict({"image": image}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(10, 0),
                    "validation": self._generate_examples(4, 100)}

        def _generate_examples(self, n, seed):
            for i in range(n):  # PIL images: TFDS encodes those with PIL, not TensorFlow
                yield i, {"image": Image.fromarray(_noise(30 + i, 26, seed + i))}

    return JaxcolorTinyFaces


def test_tfds_source_reads_the_arrayrecord_layout(tmp_path):
    data_dir = str(tmp_path / "tfds")
    _tiny_tfds(data_dir)
    version_dir = os.path.join(data_dir, "jaxcolor_tiny_faces", "1.0.0")
    assert any(f.endswith("array_record-00000-of-00001") for f in os.listdir(version_dir))
    cfg = tiny_config(**{"data.source": "tfds", "data.name": "jaxcolor_tiny_faces",
                         "data.data_dir": data_dir, "data.crop": 24}).data
    assert len(sources.records_for(cfg, "train")) == 10
    assert len(sources.records_for(cfg, "train[:50%]")) == 5
    assert len(sources.records_for(cfg, "train[25%:]")) == 8  # TFDS slices it
    it = iter(pipeline.train_dataset(cfg, 4, seed=0))
    a = _take(it, 3)
    assert a[0]["L"].shape == (4, 16, 16, 1) and int(a[-1]["skipped"].max()) == 0
    evals = list(pipeline.eval_batches(cfg, "validation", 3))
    assert sum(float(b["weight"].sum()) for b in evals) == 4
    # The stored images themselves (TFDS orders examples by a hash of their keys).
    shapes = {sources.tfds_load(r).shape for r in sources.records_for(cfg, "validation")}
    assert shapes == {(30 + i, 26, 3) for i in range(4)}
    with pytest.raises(ValueError, match="config.data.name"):
        sources.records_for(tiny_config(**{"data.source": "tfds"}).data, "train")


def test_tfds_source_is_opened_once_and_by_one_thread_at_a_time(monkeypatch):
    """grain's read threads in a fresh worker process ask for the source at once; the first open
    imports tensorflow_datasets, which two threads at a time could deadlock (sources.tfds_source)."""
    inside, most, opened = [0], [0], []
    count = threading.Lock()

    real_open = sources._open_tfds_source

    def slow_open(name, data_dir, split):
        if name != "faces":  # read threads left running by an earlier test's iterator
            return real_open(name, data_dir, split)
        with count:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.2)
        with count:
            inside[0] -= 1
        opened.append(object())
        return opened[-1]

    monkeypatch.setattr(sources, "_open_tfds_source", slow_open)
    monkeypatch.setattr(sources, "_TFDS_SOURCES", {})
    barrier, got = threading.Barrier(4), []

    def read():
        barrier.wait()
        got.append(sources.tfds_source("faces", "/data", "train"))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert most[0] == 1 and len(opened) == 1 and len(got) == 4
    assert all(source is opened[0] for source in got)
    # A forked child opens its own (no file handles shared with the parent).
    pid = os.fork()
    if pid == 0:
        os._exit(0 if sources.tfds_source("faces", "/data", "train") is not opened[0] else 1)
    assert os.waitpid(pid, 0)[1] == 0


def test_pipeline_lab_matches_the_shared_conversion():
    from jaxcolor import color
    from jaxcolor.data import transforms

    rgb = np.random.default_rng(0).integers(0, 256, (2, 9, 7, 3), dtype=np.uint8)
    rgb[0, :3] = 0  # the linear branch of f near black
    lab = color.rgb_to_lab(rgb.astype(np.float64) / 255.0)
    out = transforms.to_model_arrays(rgb)
    assert out["L"].dtype == np.float32 and out["ab"].shape == (2, 9, 7, 2)
    np.testing.assert_allclose(out["L"][..., 0] * color.L_SCALE, lab[..., 0], atol=1e-4)
    np.testing.assert_allclose(out["ab"] * color.AB_SCALE, lab[..., 1:], atol=1e-4)


def test_windowed_rotation_equals_rotate_then_crop():
    from jaxcolor.data import transforms

    img = np.random.default_rng(1).integers(0, 256, (20, 17, 3), dtype=np.uint8)
    for degrees in (11.0, -14.3, 2.5):
        h, w = img.shape[:2]
        theta = np.radians(abs(degrees))
        ph = int(np.ceil((h * np.cos(theta) + w * np.sin(theta) - h) / 2)) + 1
        pw = int(np.ceil((w * np.cos(theta) + h * np.sin(theta) - w) / 2)) + 1
        padded = np.pad(img, ((ph, ph), (pw, pw), (0, 0)), mode="reflect")
        whole = np.asarray(Image.fromarray(padded).rotate(degrees, resample=Image.BILINEAR))
        np.testing.assert_array_equal(transforms.rotate(img, degrees),
                                      whole[ph : ph + h, pw : pw + w])


def test_prepare_dispatch_table(tmp_path, capsys):
    assert set(prepare.COMMANDS) >= {"shards", "tfds-convert"}
    for argv, expected in (
            ([], "expected a subcommand"),
            (["tfds-convert", "--name", "none", "--data_dir", str(tmp_path)],
             "not a directory|apache-beam|tensorflow"),
            (["shards", "--source", str(tmp_path), "--out", str(tmp_path / "o"), "--crop", "0",
              "--size", "8"], "folder:PATH")):
        with pytest.raises(SystemExit) as exit_info:  # usage errors: one line, exit status 2
            prepare.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1 and re.search(expected, err[0]), err
