"""`jaxcolor.images.rgb_uint8`: the one rule by which an image array of any dtype and layout
becomes uint8 RGB, and the callers that must follow it (colorize's row strips, the tfds source,
16-bit files through `transforms.to_rgb`)."""

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

from jaxcolor import colorize, images
from jaxcolor.data import sources, transforms


def gray(values, dtype):
    """A 1 x N gray image of `values`, as `dtype`."""
    return np.asarray([values], dtype)


def test_each_dtype_has_one_rule():
    np.testing.assert_array_equal(images.rgb_uint8(gray([0, 7, 255], np.uint8))[0, :, 0],
                                  [0, 7, 255])
    np.testing.assert_array_equal(images.rgb_uint8(gray([0, 257 * 7, 65535], np.uint16))[0, :, 0],
                                  [0, 7, 255])
    np.testing.assert_array_equal(images.rgb_uint8(gray([False, True], bool))[0, :, 0], [0, 255])
    # float: x * 255 rounded, half a level either side of 7 / 255 and the ends
    eps = 1e-3  # of a level: above float32 precision
    floats = gray([0.0, (6.5 + eps) / 255, (7.5 - eps) / 255, (7.5 + eps) / 255, 1.0], np.float64)
    np.testing.assert_array_equal(images.rgb_uint8(floats)[0, :, 0], [0, 7, 7, 8, 255])
    np.testing.assert_array_equal(images.rgb_uint8(floats.astype(np.float32))[0, :, 0],
                                  [0, 7, 7, 8, 255])
    for dtype in (np.int16, np.int32, np.int64, np.uint32):  # other integers: 0..255 as is
        np.testing.assert_array_equal(images.rgb_uint8(gray([0, 9, 255], dtype))[0, :, 0],
                                      [0, 9, 255])


def test_uint16_is_scaled_by_its_dtype_not_by_its_content():
    """A dark 16-bit picture stays dark: the old tfds rule divided by 255 when no value was over
    255, so it came out 257 times brighter, and a crop's scale depended on what it held."""
    dark = gray([0, 257, 2570], np.uint16)
    np.testing.assert_array_equal(images.rgb_uint8(dark)[0, :, 0], [0, 1, 10])
    darker = gray([0, 100, 200], np.uint16)  # every value <= 255
    np.testing.assert_array_equal(images.rgb_uint8(darker)[0, :, 0], [0, 0, 1])
    with_bright = np.concatenate([darker, gray([65535], np.uint16)], axis=1)
    np.testing.assert_array_equal(images.rgb_uint8(with_bright)[0, :3], images.rgb_uint8(darker)[0])


def test_values_outside_their_dtype_range_are_errors_not_clipped():
    for arr, message in ((gray([-0.5, 1.0], np.float64), r"\[-0\.5, 1\]: expected values in"),
                         (gray([0.0, 255.0], np.float32), "divide it by 255"),
                         (gray([0.0, np.nan], np.float64), "1 NaN or infinite"),
                         (gray([-5, 9], np.int16), r"int16 image with values in \[-5, 9\]"),
                         (gray([0, 300], np.int32), "16-bit data must be uint16"),
                         (gray(["a"], np.str_), "image dtype")):
        with pytest.raises(ValueError, match=message):
            images.rgb_uint8(arr)


def test_layouts_gray_rgb_and_alpha_on_white_as_a_decoded_file(tmp_path):
    rng = np.random.default_rng(0)
    plane = rng.integers(0, 256, (5, 7), np.uint8)
    expected = np.repeat(plane[..., None], 3, axis=-1)
    np.testing.assert_array_equal(images.rgb_uint8(plane), expected)
    np.testing.assert_array_equal(images.rgb_uint8(plane[..., None]), expected)
    rgb = rng.integers(0, 256, (5, 7, 3), np.uint8)
    np.testing.assert_array_equal(images.rgb_uint8(rgb), rgb)
    # every (color, alpha) pair: the same values as decoding a PNG with that alpha
    value, alpha = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8))
    rgba = np.stack([value, 255 - value, value // 2, alpha], axis=-1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    composited = images.rgb_uint8(rgba)
    np.testing.assert_array_equal(composited, transforms.decode(str(tmp_path / "alpha.png")))
    np.testing.assert_array_equal(composited[alpha == 0], 255)  # clear: white
    np.testing.assert_array_equal(composited[alpha == 255], rgba[alpha == 255][:, :3])
    for shape in ((5, 7, 2), (5, 7, 5), (7,), (2, 5, 7, 3)):
        with pytest.raises(ValueError, match="expected \\(H, W\\), \\(H, W, 1\\)"):
            images.rgb_uint8(np.zeros(shape, np.uint8))
    with pytest.raises(ValueError, match="no pixels"):
        images.rgb_uint8(np.zeros((0, 4, 3), np.uint8))


def test_16_bit_files_decode_by_the_array_rule(tmp_path):
    deep = np.random.default_rng(1).integers(0, 65536, (9, 11), np.uint16)
    deep[0, :4] = [0, 100, 257, 65535]
    Image.fromarray(deep).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode.startswith("I;16")
    np.testing.assert_array_equal(transforms.decode(str(tmp_path / "deep.png")),
                                  images.rgb_uint8(deep))


ARRAYS = {  # (16, 16) pictures of each accepted kind, including those the old rules split on
    "uint8 rgb": lambda rng: rng.integers(0, 256, (16, 16, 3), np.uint8),
    "uint8 gray with a channel": lambda rng: rng.integers(0, 256, (16, 16, 1), np.uint8),
    "uint8 rgba": lambda rng: rng.integers(0, 256, (16, 16, 4), np.uint8),
    "uint16 rgb": lambda rng: rng.integers(0, 65536, (16, 16, 3), np.uint16),
    "dark uint16 gray": lambda rng: rng.integers(0, 256, (16, 16), np.uint16),
    "uint16 rgba": lambda rng: rng.integers(0, 65536, (16, 16, 4), np.uint16),
    "float rgb": lambda rng: rng.random((16, 16, 3)),
    "float32 gray": lambda rng: rng.random((16, 16)).astype(np.float32),
    "bool gray": lambda rng: rng.random((16, 16)) < 0.5,
    "int64 rgb": lambda rng: rng.integers(0, 256, (16, 16, 3), np.int64),
}


@pytest.mark.parametrize("kind", list(ARRAYS))
def test_colorize_and_the_tfds_source_make_the_same_uint8_of_an_array(kind, monkeypatch):
    arr = ARRAYS[kind](np.random.default_rng(2))
    # colorize: the array in strips of 3 rows (48 pixels), as a large picture would be
    by_colorize = colorize.as_rgb_uint8(arr, strip_pixels=48)
    np.testing.assert_array_equal(by_colorize, images.rgb_uint8(arr))
    # the tfds source: the example's `image` feature through the pipeline's own load_example
    monkeypatch.setattr(sources, "tfds_load", lambda record: arr)
    cfg = tiny_config(**{"data.crop": 0, "data.image_size": 16}).data
    record = {"tfds": "stand_in", "data_dir": "", "split": "validation", "index": 0}
    example = transforms.load_example(record, np.random.default_rng(0), cfg, train=False)
    assert transforms.BAD not in example, example
    expected = transforms.to_model_arrays(by_colorize)
    for key in ("L", "ab"):
        np.testing.assert_array_equal(example[key], expected[key])
