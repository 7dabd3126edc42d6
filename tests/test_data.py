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


def _quadrants():
    """A 40 wide x 20 high picture whose every symmetry is visible: red top-left, blue
    top-right, green bottom-left, yellow bottom-right."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:10, :20], arr[:10, 20:] = (255, 0, 0), (0, 0, 255)
    arr[10:, :20], arr[10:, 20:] = (0, 255, 0), (255, 255, 0)
    return arr


# What a viewer shows for each EXIF orientation (the TIFF/EXIF definitions), written in NumPy
# independently of PIL, with the corner where the red quadrant lands.
ORIENTED = {
    1: (lambda a: a, "top-left"),
    2: (lambda a: a[:, ::-1], "top-right"),  # mirrored left-right
    3: (lambda a: a[::-1, ::-1], "bottom-right"),  # rotated 180
    4: (lambda a: a[::-1], "bottom-left"),  # mirrored top-bottom
    5: (lambda a: a.transpose(1, 0, 2), "top-left"),  # transposed
    6: (lambda a: np.rot90(a, -1), "top-right"),  # rotated 90 clockwise
    7: (lambda a: a[::-1, ::-1].transpose(1, 0, 2), "bottom-right"),  # transversed
    8: (lambda a: np.rot90(a, 1), "bottom-left"),  # rotated 90 counter-clockwise
}


def _corner(rgb):
    h, w = rgb.shape[:2]
    return {"top-left": rgb[2, 2], "top-right": rgb[2, w - 3],
            "bottom-left": rgb[h - 3, 2], "bottom-right": rgb[h - 3, w - 3]}


@pytest.mark.parametrize("ext", ["jpg", "png"])
@pytest.mark.parametrize("orientation", [3, 6, 8, 2, 5, 7])
def test_decode_applies_the_exif_orientation(tmp_path, ext, orientation):
    from PIL import Image, ImageOps

    arr = _quadrants()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = str(tmp_path / f"rotated.{ext}")
    options = {"quality": 95, "subsampling": 0} if ext == "jpg" else {}
    Image.fromarray(arr).save(path, exif=exif, **options)
    got = transforms.decode(path)
    transpose, red_corner = ORIENTED[orientation]
    expected = transpose(arr)
    assert got.shape == expected.shape and got.dtype == np.uint8
    assert got.shape[:2] == ((40, 20) if orientation >= 5 else (20, 40))
    # JPEG at quality 95 without chroma subsampling is within 9 of the pixels (measured); PNG exact
    tol = 16 if ext == "jpg" else 0
    assert np.abs(got.astype(int) - expected).max() <= tol
    for corner, value in _corner(got).items():
        is_red = np.abs(value.astype(int) - (255, 0, 0)).max() <= tol
        assert is_red == (corner == red_corner), (corner, value)
    with Image.open(path) as img:
        np.testing.assert_array_equal(got, np.asarray(ImageOps.exif_transpose(img).convert("RGB")))


def _on_white(rgb, alpha):
    """The composite of a color with alpha 0..255 over opaque white, before rounding."""
    a = np.asarray(alpha, np.float64)[..., None] / 255.0
    return np.asarray(rgb, np.float64) * a + 255.0 * (1.0 - a)


def test_decode_composites_palette_transparency_on_white(tmp_path):
    """'P' images: a transparent palette entry (tRNS with one index, or per-entry alpha) is
    composited on white as the docstring says; opaque entries keep their palette color exactly."""
    from PIL import Image

    palette = [(200, 30, 10), (10, 180, 60), (20, 40, 220), (0, 0, 0), (90, 90, 250)]
    index = np.arange(12 * 10).reshape(12, 10) % len(palette)
    img = Image.fromarray(index.astype(np.uint8), "P")
    img.putpalette([c for rgb in palette for c in rgb])
    img.save(tmp_path / "one.png", transparency=3)  # index 3 (black) is see-through
    got = transforms.decode(str(tmp_path / "one.png"))
    assert got.shape == (12, 10, 3) and got.dtype == np.uint8
    expected = np.asarray(palette)[index]
    expected[index == 3] = 255
    np.testing.assert_array_equal(got.astype(int), expected)

    alphas = [255, 255, 128, 0, 40]  # per-entry alpha: opaque, opaque, half, clear, faint
    img.save(tmp_path / "alpha.png", transparency=bytes(alphas))
    got = transforms.decode(str(tmp_path / "alpha.png")).astype(int)
    want = _on_white(np.asarray(palette)[index], np.asarray(alphas)[index])
    assert np.abs(got - want).max() <= 0.5 + 1e-9  # correctly rounded composite
    for i, a in enumerate(alphas):
        if a in (0, 255):  # exact: white, or the palette color itself
            np.testing.assert_array_equal(got[index == i], want[index == i])


@pytest.mark.parametrize("mode", ["LA", "RGBA", "PA"])
def test_decode_composites_alpha_on_white(tmp_path, mode):
    """Partial alpha is composited on white; clear pixels are white, opaque ones unchanged. 'LA'
    and 'RGBA' go through a PNG file and `decode`; 'PA' (no file format stores it) through
    `to_rgb`, the conversion `decode` applies."""
    from PIL import Image

    rng = np.random.default_rng(0)
    alpha = np.tile(np.array([0, 255, 128, 1, 254, 64], np.uint8), (8, 1))  # (8, 6)
    rgb = rng.integers(0, 256, (8, 6, 3)).astype(np.uint8)
    if mode == "LA":
        rgb[..., 1] = rgb[..., 2] = rgb[..., 0]
        img = Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA")
    elif mode == "RGBA":
        img = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    else:  # a palette holding each pixel's color, with alpha per pixel
        index = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(8, 6), "L")
        img = Image.merge("PA", [index, Image.fromarray(alpha, "L")])
        img.putpalette(rgb.reshape(-1).tolist())
    assert img.mode == mode
    if mode == "PA":
        got = np.asarray(transforms.to_rgb(img))
    else:
        img.save(tmp_path / "alpha.png")
        got = transforms.decode(str(tmp_path / "alpha.png"))
    assert got.shape == (8, 6, 3) and got.dtype == np.uint8
    want = _on_white(rgb, alpha)
    assert np.abs(got.astype(int) - want).max() <= 0.5 + 1e-9  # correctly rounded composite
    np.testing.assert_array_equal(got[alpha == 0], 255)  # clear: white exactly
    np.testing.assert_array_equal(got[alpha == 255], rgb[alpha == 255])  # opaque: unchanged
