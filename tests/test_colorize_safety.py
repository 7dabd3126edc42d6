"""colorize's safety: it never replaces a file it did not write, refuses a file as -o, survives
pictures one pixel wide, refuses arrays out of range and non-finite predictions, and stays within
a bounded memory on large pictures (strips, --max_pixels, a failure skips one file only).

No training: the model is a tiny Flax module wrapped with `Colorizer.from_module`, and the
command's `runs.load_colorizer` is replaced by a spy that hands it over (and tells whether the
model was loaded at all)."""

import os
import platform
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from jaxcolor import color, colorize, images as images_lib, runs
from jaxcolor.data.transforms import decode

SIZE = 16


class TinyNet(nn.Module):
    """(B, S, S, 1) L/100 -> (B, S, S, 2) ab/128: one conv, compiles in a fraction of a second."""

    @nn.compact
    def __call__(self, x, train=False):
        return jnp.tanh(nn.Conv(2, (3, 3))(x - 0.5))


@pytest.fixture(scope="module")
def variables():
    return TinyNet().init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)))


@pytest.fixture(scope="module")
def model(variables):
    return runs.Colorizer.from_module(TinyNet(), variables, SIZE)


class Loader:
    """Stands in for `runs.load_colorizer`: counts the calls, returns the tiny model."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.model


@pytest.fixture
def loader(model, monkeypatch):
    spy = Loader(model)
    monkeypatch.setattr(runs, "load_colorizer", spy)
    return spy


def picture(path, width, height, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = rng.integers(0, 256, 3) + 60 * np.sin(xx[..., None] / 5.0 + yy[..., None] / 3.0)
    Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).convert(mode).save(path)
    return str(path)


def picture_folder(folder, sizes: dict) -> None:
    """One picture per {name: (width, height)} in a new `folder`."""
    folder.mkdir()
    for i, (name, (w, h)) in enumerate(sizes.items()):
        picture(folder / name, w, h, seed=i)


def run(*argv):
    """colorize.main's exit status: its return value, or a usage error's SystemExit code."""
    try:
        return colorize.main([str(a) for a in argv] + ["--workdir", "unused-run"])
    except SystemExit as exc:
        return exc.code


def size_of(path):
    with Image.open(path) as img:
        return img.size


def files_in(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, fs in os.walk(folder) for f in fs)


# --- item 2: never replace a file this run did not write --------------------------------------


def test_a_file_input_never_replaces_a_file_already_in_the_output_folder(tmp_path, loader,
                                                                         capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    source = picture(photos / "photo.jpg", 30, 20)
    mine = photos / "photo.png"  # the user's own picture, not an output of this command
    picture(mine, 5, 5, seed=1)
    before = mine.read_bytes()
    assert run(source, "-o", photos) == colorize.EXIT_USAGE
    err = capsys.readouterr().err
    assert str(mine) in err and "--overwrite" in err
    assert mine.read_bytes() == before
    assert loader.calls == 0  # refused before the model loads


def test_overwrite_replaces_outputs_but_never_an_input(tmp_path, loader, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    source = picture(photos / "photo.jpg", 30, 20)
    earlier = photos / "photo.png"
    picture(earlier, 5, 5, seed=1)
    jpg_bytes = open(source, "rb").read()
    assert run(source, "-o", photos, "--overwrite") == 0
    assert size_of(earlier) == (30, 20) and open(source, "rb").read() == jpg_bytes

    png_bytes = earlier.read_bytes()  # now an input itself: never overwritten
    assert run(earlier, source, "-o", photos, "--overwrite") == colorize.EXIT_USAGE
    assert "would overwrite an input file" in capsys.readouterr().err
    assert earlier.read_bytes() == png_bytes

    out = tmp_path / "out"
    out.mkdir()
    os.link(source, out / "photo.png")  # the output name is the input file under another name
    assert run(source, "-o", out, "--overwrite") == colorize.EXIT_USAGE
    assert "would overwrite an input file" in capsys.readouterr().err
    assert open(source, "rb").read() == jpg_bytes


def test_compare_outputs_and_main_outputs_never_share_a_name(tmp_path, loader):
    folder, sizes = tmp_path / "in", {"x.jpg": (30, 20), "x_compare.jpg": (25, 15), "a.jpg": (20, 10), "a.png": (10, 20)}
    picture_folder(folder, sizes)
    out = tmp_path / "out"
    assert run(folder, "-o", out, "--compare") == 0
    assert files_in(out) == sorted([
        "a.png", "a_compare.png", "a.png.png", "a.png_compare.png", "x.png", "x_compare.png",
        "x_compare.jpg.png", "x_compare.jpg_compare.png"])
    for job in colorize.plan_outputs(colorize.find_inputs([str(folder)]), str(out), True):
        w, h = sizes[os.path.basename(job.source)]
        assert size_of(job.output) == (w, h), job
        assert size_of(colorize.compare_path(job.output)) == (3 * w + 8, h), job

    # the other order: the main output x_compare.png comes first, x.jpg must step aside
    found = [(str(folder / "x_compare.jpg"), "x_compare.jpg"), (str(folder / "x.jpg"), "x.jpg")]
    names = [os.path.basename(j.output) for j in colorize.plan_outputs(found, "o", True)]
    assert names == ["x_compare.png", "x.jpg.png"]
    assert [os.path.basename(j.output) for j in colorize.plan_outputs(found, "o")] == [
        "x_compare.png", "x.png"]  # without --compare there is no clash
    found = [("A.jpg", "A.jpg"), ("a.png", "a.png")]  # one file on macOS and Windows
    assert [j.output for j in colorize.plan_outputs(found, "")] == ["A.png", "a.png.png"]


def test_an_output_that_appears_after_the_check_is_not_replaced(tmp_path, model):
    source = picture(tmp_path / "pic.jpg", 12, 9)
    out = tmp_path / "out"
    jobs = colorize.plan_outputs(colorize.find_inputs([source]), str(out))
    colorize.check_outputs([source], jobs, str(out), compare=False)
    out.mkdir()
    (out / "pic.png").write_bytes(b"someone else's file")
    report = colorize.colorize_files(model, jobs, progress=False)
    assert not report.written and "FileExistsError" in report.skipped[0][-1]
    assert (out / "pic.png").read_bytes() == b"someone else's file"


def test_outputs_that_cannot_be_files_are_refused_up_front(tmp_path):
    folder = tmp_path / "in"
    os.makedirs(folder / "sub")
    picture(folder / "sub" / "p.jpg", 8, 8)
    jobs = colorize.plan_outputs(colorize.find_inputs([str(folder)]), str(tmp_path / "out"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").write_bytes(b"")  # a file where a folder must go
    with pytest.raises(colorize.UsageError, match="is a file where the outputs need a folder"):
        colorize.check_outputs([str(folder)], jobs, str(tmp_path / "out"), False, True)
    os.remove(tmp_path / "out" / "sub")
    os.makedirs(tmp_path / "out" / "sub" / "p.png")  # a folder where a picture must go
    with pytest.raises(colorize.UsageError, match="is a folder"):
        colorize.check_outputs([str(folder)], jobs, str(tmp_path / "out"), False, True)


# --- item 13: -o FILE -------------------------------------------------------------------------


def test_an_existing_file_as_output_folder_is_a_usage_error_before_the_model_loads(
        tmp_path, loader, capsys):
    source = picture(tmp_path / "pic.jpg", 12, 9)
    target = tmp_path / "result.png"
    target.write_bytes(b"mine")
    assert run(source, "-o", target) == colorize.EXIT_USAGE
    assert "exists and is not a folder" in capsys.readouterr().err
    assert loader.calls == 0 and target.read_bytes() == b"mine"


# --- item 8: pictures one pixel wide or tall --------------------------------------------------


def test_compare_on_one_pixel_wide_tall_and_single_pixel_pictures(tmp_path, loader, model):
    folder, sizes = tmp_path / "in", {"row.png": (7, 1), "column.png": (1, 7), "dot.png": (1, 1), "normal.png": (9, 6)}
    picture_folder(folder, sizes)
    out = tmp_path / "out"
    assert run(folder, "-o", out, "--compare") == 0
    for name, (w, h) in sizes.items():
        stem = os.path.splitext(name)[0]
        assert size_of(out / f"{stem}.png") == (w, h), name
        strip = np.asarray(Image.open(out / f"{stem}_compare.png"))
        assert strip.shape == (h, 3 * w + 8, 3), name
        original = decode(str(folder / name))
        np.testing.assert_array_equal(strip[:, :w], original)
        gray = strip[:, w + 4 : 2 * w + 4]
        assert (gray.max(-1) - gray.min(-1) <= 1).all(), name  # the gray panel is gray
        assert colorize.colorize_array(model, original).shape == (h, w, 3)


# --- item 14: arrays out of range -------------------------------------------------------------


def test_arrays_out_of_range_or_not_finite_are_errors(model):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 5, 3)).astype(np.float32)
    rgb[0, 0] = 255.0
    with pytest.raises(ValueError, match=r"float image with values in \[0, 255\]: expected "
                                         r"values in \[0, 1\]"):
        colorize.colorize_array(model, rgb)
    with pytest.raises(ValueError, match=r"\[-0\.5, 1\]"):
        colorize.as_rgb_uint8(np.array([[-0.5, 1.0]]))
    nan = rgb / 255
    nan[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="1 NaN or infinite values: expected finite"):
        colorize.colorize_array(model, nan)
    with pytest.raises(ValueError, match="infinite"):
        colorize.as_rgb_uint8(np.full((2, 2), np.inf))
    with pytest.raises(ValueError,
                       match=r"int32 image with values in \[0, 300\]: expected 0\.\.255"):
        colorize.colorize_array(model, np.array([[0, 300]], np.int32))
    with pytest.raises(ValueError, match=r"int16 image with values in \[-5, 9\]"):
        colorize.as_rgb_uint8(np.array([[-5, 9]], np.int16))


def test_arrays_in_range_are_still_accepted(model):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 5, 3), np.uint8)
    expected = colorize.colorize_array(model, rgb)
    np.testing.assert_array_equal(colorize.colorize_array(model, rgb.astype(np.int64)), expected)
    np.testing.assert_array_equal(colorize.colorize_array(model, rgb / 255.0), expected)
    assert colorize.colorize_array(model, rgb.astype(np.uint16) * 257).shape == (6, 5, 3)
    assert colorize.as_rgb_uint8(np.eye(3, dtype=bool)).max() == 255
    rgba = np.concatenate([rgb, np.full((6, 5, 1), 128, np.uint8)], -1)
    assert colorize.colorize_array(model, rgba).shape == (6, 5, 3)
    with pytest.raises(ValueError, match="no pixels"):
        colorize.as_rgb_uint8(np.zeros((0, 4, 3), np.uint8))


# --- item 5: a damaged checkpoint -------------------------------------------------------------


def test_non_finite_predictions_are_skipped_not_written(tmp_path, variables, monkeypatch,
                                                        capsys):
    damaged = jax.tree.map(lambda x: x * jnp.nan, variables)
    model = runs.Colorizer.from_module(TinyNet(), damaged, SIZE)
    with pytest.raises(ValueError, match="non-finite values .* checkpoint may be damaged"):
        colorize.colorize_array(model, np.zeros((4, 4, 3), np.uint8))
    monkeypatch.setattr(runs, "load_colorizer", Loader(model))
    source = picture(tmp_path / "pic.jpg", 12, 9)
    out = tmp_path / "out"
    assert run(source, "-o", out) == colorize.EXIT_NOTHING_COLORIZED
    err = capsys.readouterr().err
    assert f"skipped file {source} (the model produced non-finite values" in err
    assert "checkpoint may be damaged" in err
    assert not out.exists() or files_in(out) == []  # no black picture


# --- item 7: memory ---------------------------------------------------------------------------


def resize_whole(channel, height, width):
    img = Image.fromarray(np.ascontiguousarray(channel, np.float32), mode="F")
    return np.asarray(img.resize((width, height), Image.BILINEAR), np.float32)


def whole_picture(rgb, ab_scaled):
    """The computation as it was before strips: every step on whole-picture float arrays."""
    h, w = rgb.shape[:2]
    l_full = color.rgb_to_lab(rgb.astype(np.float32) / 255.0)[..., 0].astype(np.float32)
    ab = np.stack([resize_whole(ab_scaled[..., c], h, w) for c in range(2)], axis=-1)
    lab = np.concatenate([l_full[..., None], ab * np.float32(color.AB_SCALE)], axis=-1)
    return l_full, images_lib.to_uint8(color.lab_to_rgb(lab))


@pytest.mark.parametrize("height, width, size, strip_pixels", [
    (300, 257, 16, 5000),  # taller than the model: Pillow's horizontal pass, then rows
    (10, 3000, 16, 2000),  # shorter than the model: vertical first, then rows
    (3000, 7, 64, 100),
    (1, 5000, 16, 300),
    (5000, 1, 16, 300),
    (16, 2000, 16, 3000),  # exactly the model's height: no vertical pass
])
def test_strips_give_the_whole_picture_result(height, width, size, strip_pixels):
    rng = np.random.default_rng(height + width)
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = (rng.integers(0, 256, 3) + 80 * np.sin(xx[..., None] / 13.0 + yy[..., None] / 7.0)
           + rng.normal(0, 20, (height, width, 3))).clip(0, 255).astype(np.uint8)
    ab = np.tanh(rng.standard_normal((size, size, 2))).astype(np.float32)
    l_whole, rgb_whole = whole_picture(rgb, ab)
    assert height * width > strip_pixels  # the strip path, not the one-strip whole picture
    assert len(colorize.row_strips(height, width, strip_pixels)) > 3 or height == 1
    l_strips = colorize.lightness(rgb, strip_pixels)
    np.testing.assert_array_equal(l_strips, l_whole)
    np.testing.assert_array_equal(colorize.model_input(l_strips, size),
                                  (resize_whole(l_whole, size, size) / 100.0)[..., None])
    rgb_strips = colorize.recombine(l_strips, ab, strip_pixels)
    assert np.abs(rgb_strips.astype(int) - rgb_whole).max() <= 1
    if platform.machine() in ("x86_64", "AMD64"):  # Pillow without fused multiply-add
        np.testing.assert_array_equal(rgb_strips, rgb_whole)


def test_colorize_arrays_in_strips_equals_the_whole_picture(model):
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (123, 217, 3), np.uint8)
    l_full = color.rgb_to_lab(rgb.astype(np.float32) / 255.0)[..., 0].astype(np.float32)
    ab = model.predict_ab((resize_whole(l_full, SIZE, SIZE) / 100.0)[None, ..., None])[0]
    [out] = colorize.colorize_arrays(model, [rgb], batch_size=1, strip_pixels=1000)
    np.testing.assert_array_equal(out, whole_picture(rgb, ab)[1])


def test_read_rgb_reads_what_decode_reads(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (23, 31, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (23, 31, 4), np.uint8)).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.jpg")
    Image.fromarray(rgb).convert("LA").save(tmp_path / "la.png")
    Image.fromarray(rgb).convert("1").save(tmp_path / "bits.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 65536, (23, 31), np.uint16)).save(tmp_path / "deep.png")
    palette = Image.fromarray(rgb).convert("P")
    palette.info["transparency"] = 3
    palette.save(tmp_path / "palette.png", transparency=3)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: decode turns it upright
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    for path in sorted(tmp_path.iterdir()):
        expected = decode(str(path))
        np.testing.assert_array_equal(colorize.read_rgb(str(path), strip_pixels=100), expected,
                                      err_msg=path.name)
    assert colorize.read_rgb(str(tmp_path / "rotated.jpg")).shape == (31, 23, 3)


def test_max_pixels_skips_from_the_header_and_replaces_pillows_guard(tmp_path, model,
                                                                     monkeypatch):
    big, small = picture(tmp_path / "big.png", 30, 20), picture(tmp_path / "small.png", 10, 10)
    jobs = colorize.plan_outputs(colorize.find_inputs([big, small]), str(tmp_path / "o1"))
    report = colorize.colorize_files(model, jobs, max_pixels=500, progress=False)
    assert report.written == [jobs[1].output]
    [(source, kind, reason)] = report.skipped
    assert (source, kind) == (big, "too large file")
    assert "30x20 = 0.0 megapixels, over --max_pixels=500" in reason and "--max_pixels 0" in reason

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 600 pixels: a "bomb" to Pillow
    jobs = colorize.plan_outputs(colorize.find_inputs([big, small]), str(tmp_path / "o2"))
    report = colorize.colorize_files(model, jobs, max_pixels=0, progress=False)
    assert len(report.written) == 2 and Image.MAX_IMAGE_PIXELS == 100


def test_one_picture_running_out_of_memory_skips_only_that_picture(tmp_path, loader,
                                                                   monkeypatch, capsys):
    big, small = picture(tmp_path / "big.png", 60, 50), picture(tmp_path / "small.png", 10, 10)
    lab_to_rgb = color.lab_to_rgb

    def short_of_memory(lab, *args, **kwargs):
        if lab[..., 0].size > 1000:
            raise MemoryError("Unable to allocate 1.2 TiB")
        return lab_to_rgb(lab, *args, **kwargs)

    monkeypatch.setattr(color, "lab_to_rgb", short_of_memory)
    out = tmp_path / "out"
    assert run(big, small, "-o", out, "--batch", "1") == 0
    err = capsys.readouterr().err
    assert f"skipped file {big} (out of memory (MemoryError: Unable to allocate" in err
    assert files_in(out) == ["small.png"]


def test_max_pixels_option():
    assert colorize.parse_args(["a", "--workdir", "w", "-o", "o"]).max_pixels == 120_000_000
    assert colorize.parse_args(["a", "--workdir", "w", "-o", "o", "--max_pixels", "2e8"]
                               ).max_pixels == 200_000_000
    with pytest.raises(SystemExit) as exit_info:
        colorize.parse_args(["a", "--workdir", "w", "-o", "o", "--max_pixels", "-1"])
    assert exit_info.value.code == colorize.EXIT_USAGE


LIMITED_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import jax, jax.numpy as jnp, numpy as np
    import flax.linen as nn
    from jaxcolor import colorize, runs

    class TinyNet(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return jnp.tanh(nn.Conv(2, (3, 3))(x - 0.5))

    variables = TinyNet().init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
    model = runs.Colorizer.from_module(TinyNet(), variables, 16)
    colorize.colorize_array(model, np.zeros((4, 4, 3), np.uint8))  # compiled before the limit
    runs.load_colorizer = lambda *args, **kwargs: model

    def status(field):
        with open("/proc/self/status") as f:
            return int(next(l for l in f if l.startswith(field + ":")).split()[1]) * 1024

    # JAX has reserved its address space by now: what is left is the pictures' budget
    budget = int(sys.argv[1]) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (status("VmSize") + budget, resource.RLIM_INFINITY))
    code = colorize.main(sys.argv[2:] + ["--workdir", "unused-run", "--batch", "1"])
    print("peak RSS MB", status("VmHWM") // 2**20)
    sys.exit(code)
    """
)
BUDGET_MB = 400  # the 8-MP picture needs about 180 MB in strips; whole-picture floats took 900


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory):
    """13000 x 13000 = 169 megapixels of 1-bit PNG: 20 KB on disk, 2 GB to decode as decode
    does, 20 GB of floats to colorize whole."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    Image.new("1", (13000, 13000)).save(path)
    return str(path)


def limited(*argv):
    return subprocess.run([sys.executable, "-c", LIMITED_SCRIPT, str(BUDGET_MB), *map(str, argv)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_large_pictures_are_skipped_or_colorized_within_a_memory_limit(tmp_path, huge_png):
    mid = tmp_path / "mid.png"
    yy, xx = np.mgrid[0:2000, 0:4000].astype(np.float32)
    rgb = np.stack([xx / 4000, yy / 2000, (xx + yy) / 6000], axis=-1) * 255
    Image.fromarray(rgb.astype(np.uint8)).save(mid)
    done = limited(huge_png, mid, "-o", tmp_path / "out")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert (f"skipped too large file {huge_png} (13000x13000 = 169.0 megapixels, over "
            "--max_pixels=120000000") in done.stderr
    assert size_of(tmp_path / "out" / "mid.png") == (4000, 2000)
    assert "colorized 1 of 2 files" in done.stdout

    # no size limit: decoding it runs out of memory, which skips it, and the run goes on
    small = picture(tmp_path / "small.png", 40, 30)
    done = limited(huge_png, small, "-o", tmp_path / "out2", "--max_pixels", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert f"skipped file {huge_png} (out of memory" in done.stderr
    assert files_in(tmp_path / "out2") == ["small.png"]


def test_a_broken_link_among_the_inputs_is_skipped_not_a_usage_error(tmp_path, loader, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    picture(folder / "good.png", 8, 6)
    os.symlink(tmp_path / "gone.png", folder / "broken.png")
    assert run(folder, "-o", tmp_path / "out") == 0
    assert f"skipped unreadable file {folder / 'broken.png'}" in capsys.readouterr().err
    assert files_in(tmp_path / "out") == ["good.png"]
