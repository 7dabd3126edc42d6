import os

import numpy as np
import pytest

from conftest import tiny_config, write_images
from jaxcolor.data import pipeline, sources, transforms


def _take(ds_iter, n):
    return [next(ds_iter) for _ in range(n)]


def _folder_config(path, **kw):
    c = tiny_config(**{"data.source": "folder", "data.path": path, "data.crop": 24, **kw})
    return c.data


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("[:10%]", list(range(0, 10))),
        ("[10%:25%]", list(range(10, 25))),
        ("[25%:]", list(range(25, 100))),
        ("[5:8]", [5, 6, 7]),
        ("[-3:]", [97, 98, 99]),
    ],
)
def test_tfds_style_slices(spec, expected):
    name, start, stop = sources.parse_split(spec)
    assert name == ""
    assert sources.apply_slice(list(range(100)), start, stop) == expected


def test_bad_split_string_is_a_clear_error():
    with pytest.raises(ValueError, match="TFDS-style split"):
        sources.parse_split("train[1:2")


def test_folder_is_recursive_sorted_and_split(tmp_path):
    write_images(str(tmp_path / "b"), 3, seed=1)
    write_images(str(tmp_path / "a"), 3, seed=2, ext="jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    files = sources.list_image_files(str(tmp_path))
    assert files == sorted(files) and len(files) == 6 and files[0].startswith("a")
    test = sources.folder_records(str(tmp_path), "[:50%]")
    rest = sources.folder_records(str(tmp_path), "[50%:]")
    assert len(test) == 3 and len(rest) == 3
    assert {r["path"] for r in test}.isdisjoint(r["path"] for r in rest)


def test_celeba_partition_file_is_used(tmp_path):
    paths = write_images(str(tmp_path / "img_align_celeba"), 6, ext="jpg")
    codes = ["0", "0", "1", "2", "0", "1"]
    (tmp_path / "list_eval_partition.txt").write_text(
        "".join(f"{os.path.basename(p)} {c}\n" for p, c in zip(paths, codes))
    )
    root = str(tmp_path / "img_align_celeba")
    val = [os.path.basename(r["path"]) for r in sources.folder_records(root, "validation")]
    assert val == ["000002.jpg", "000005.jpg"]
    assert len(sources.folder_records(root, "train")) == 3
    assert len(sources.folder_records(root, "train[:2]")) == 2


def test_missing_folder_names_the_option(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.data.path"):
        sources.folder_records(str(tmp_path / "nope"), "train")


def test_examples_have_model_shapes_and_ranges(image_folder):
    cfg = _folder_config(image_folder)
    batch = next(iter(pipeline.train_dataset(cfg, global_batch=4, seed=0)))
    assert batch["L"].shape == (4, 16, 16, 1) and batch["ab"].shape == (4, 16, 16, 2)
    assert batch["L"].dtype == np.float32
    assert 0.0 <= batch["L"].min() and batch["L"].max() <= 1.0
    assert np.abs(batch["ab"]).max() <= 1.0
    assert batch["L"].max() > 0.2  # not the reference's /255/255 bug


def test_pipeline_is_deterministic_for_a_seed(image_folder):
    cfg = _folder_config(image_folder)
    a = _take(iter(pipeline.train_dataset(cfg, 4, seed=3)), 5)
    b = _take(iter(pipeline.train_dataset(cfg, 4, seed=3)), 5)
    c = _take(iter(pipeline.train_dataset(cfg, 4, seed=4)), 5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["L"], y["L"])
        np.testing.assert_array_equal(x["ab"], y["ab"])
    assert any(not np.array_equal(x["ab"], z["ab"]) for x, z in zip(a, c))


def test_iterator_state_restores_the_same_batches(image_folder):
    cfg = _folder_config(image_folder)
    it = iter(pipeline.train_dataset(cfg, 4, seed=0))
    _take(it, 2)
    state = it.get_state()
    expected = _take(it, 3)
    it2 = iter(pipeline.train_dataset(cfg, 4, seed=0))
    it2.set_state(state)
    for x, y in zip(expected, _take(it2, 3)):
        np.testing.assert_array_equal(x["ab"], y["ab"])


def test_worker_processes_give_the_same_batches(image_folder):
    cfg = _folder_config(image_folder)
    a = _take(iter(pipeline.train_dataset(cfg, 4, seed=0)), 4)
    cfg.worker_count = 2
    b = _take(iter(pipeline.train_dataset(cfg, 4, seed=0)), 4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["ab"], y["ab"])


def test_process_shards_are_disjoint_and_cover_the_split(image_folder):
    records = sources.folder_records(image_folder, "[:100%]")
    shards = [pipeline.shard_records(records, i, 2) for i in range(2)]
    paths = [{r["path"] for r in s} for s in shards]
    assert paths[0].isdisjoint(paths[1])
    assert paths[0] | paths[1] == {r["path"] for r in records}


def test_process_streams_split_each_global_batch(image_folder):
    """Two processes' training streams are disjoint, cover an epoch, and stacked in process
    order they are exactly the one-process global batches (augmentation included)."""
    cfg = _folder_config(image_folder, **{"data.train_split": "[:100%]"})
    whole = _take(iter(pipeline.train_dataset(cfg, 6, seed=0)), 4)
    parts = [_take(iter(pipeline.train_dataset(cfg, 6, seed=0, process_index=i,
                                                process_count=2)), 4) for i in range(2)]
    epoch = [{b.tobytes() for batch in p[:2] for b in batch["L"]} for p in parts]
    assert epoch[0].isdisjoint(epoch[1]) and len(epoch[0] | epoch[1]) == 12
    for step, batch in enumerate(whole):
        for key in ("L", "ab"):
            stacked = np.concatenate([parts[0][step][key], parts[1][step][key]])
            np.testing.assert_array_equal(stacked, batch[key])


def test_corrupt_files_are_skipped_and_counted(tmp_path, caplog):
    folder = tmp_path / "imgs"
    write_images(str(folder), 6)
    (folder / "000100.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (folder / "000101.png").write_bytes(b"")
    cfg = _folder_config(str(folder))
    it = iter(pipeline.train_dataset(cfg, 4, seed=0))
    batches = _take(it, 6)  # three epochs of 6 good + 2 bad files
    assert [int(b["skipped"].max()) for b in batches][-3:] == [2, 2, 2]  # files, not epochs
    logged = [r.getMessage() for r in caplog.records if "skipping unreadable" in r.getMessage()]
    assert any("000100.jpg" in m for m in logged) and any("000101.png" in m for m in logged)
    assert len(logged) == 2  # each path once, however many epochs
    # A resumed iterator keeps the count and does not log the paths again.
    resumed = iter(pipeline.train_dataset(cfg, 4, seed=0))
    resumed.set_state(it.get_state())
    caplog.clear()
    assert [int(b["skipped"].max()) for b in _take(resumed, 3)] == [2, 2, 2]
    assert not [r for r in caplog.records if "skipping unreadable" in r.getMessage()]
    evals = list(pipeline.eval_batches(cfg, "[:100%]", 4))
    assert sum(float(b["weight"].sum()) for b in evals) == 6


def test_eval_batches_pad_to_equal_counts_per_process(image_folder):
    cfg = _folder_config(image_folder)
    records = sources.folder_records(image_folder, "[:11]")
    per_process = [list(pipeline.eval_batches(cfg, "", 4, i, 3, records=records)) for i in range(3)]
    assert len({len(b) for b in per_process}) == 1
    assert sum(float(b["weight"].sum()) for bs in per_process for b in bs) == 11


def test_sample_source_holds_out_whole_photos():
    train = {r["path"] for r in sources.sample_records("train", 50)}
    val = {r["path"] for r in sources.sample_records("validation", 50)}
    assert train.isdisjoint(val) and len(train) >= 4 and len(val) >= 1
    cfg = tiny_config().data
    a = next(pipeline.eval_batches(cfg, "validation", 4))
    b = next(pipeline.eval_batches(cfg, "validation", 4))
    np.testing.assert_array_equal(a["ab"], b["ab"])  # fixed validation crops


def test_decode_converts_modes(tmp_path):
    from PIL import Image

    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red -> white
    rgba.save(tmp_path / "a.png")
    Image.new("L", (8, 8), 100).save(tmp_path / "g.jpg")
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    gray16 = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    gray16.save(tmp_path / "16.png")
    assert (transforms.decode(str(tmp_path / "a.png")) == 255).all()
    assert transforms.decode(str(tmp_path / "g.jpg")).shape == (8, 8, 3)
    cmyk = transforms.decode(str(tmp_path / "c.jpg"))
    assert cmyk[..., 0].mean() > 200 and cmyk[..., 1].mean() < 60
    assert (transforms.decode(str(tmp_path / "16.png")) == 255).all()


def test_crop_or_pad_and_rotation():
    img = np.arange(10 * 6 * 3, dtype=np.uint8).reshape(10, 6, 3)
    out = transforms.center_crop_or_pad(img, 8)
    assert out.shape == (8, 8, 3)
    assert (out[:, 0] == 0).all() and (out[:, -1] == 0).all()  # padded width
    np.testing.assert_array_equal(out[:, 1:7], img[1:9])  # cropped height
    rot = transforms.rotate(np.full((16, 16, 3), 77, np.uint8), 15.0)
    assert rot.shape == (16, 16, 3) and (rot == 77).all()  # reflection leaves no black corners


def test_shared_celeba_folder_works_as_is(celeba_dir):
    records = sources.folder_records(celeba_dir, "[:10%]")
    assert len(records) == 1000 and records[0]["path"].endswith("000001.jpg")
    cfg = tiny_config(**{"data.source": "folder", "data.path": celeba_dir, "data.crop": 75,
                         "data.image_size": 64}).data
    batch = next(iter(pipeline.train_dataset(cfg, 2, seed=0)))
    assert batch["L"].shape == (2, 64, 64, 1) and batch["L"].max() > 0.5


def test_read_ahead_is_bounded_in_examples():
    # grain's default reads 500 elements ahead with 16 threads, in every worker: with whole
    # batches as elements, 16 workers tried to hold 500 batches each on a GPU host.
    cfg = tiny_config(**{"data.worker_count": 16}).data
    whole = pipeline.read_options(cfg, share=512, whole_batches=True)
    assert (whole.num_threads, whole.prefetch_buffer_size) == (2, 2)
    single = pipeline.read_options(cfg, share=512, whole_batches=False)
    assert single.prefetch_buffer_size == 2 * 512
    in_process = pipeline.read_options(tiny_config().data, share=64, whole_batches=True)
    assert 1 <= in_process.num_threads <= 16
    assert in_process.prefetch_buffer_size == in_process.num_threads
