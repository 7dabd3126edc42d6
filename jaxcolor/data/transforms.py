"""Per-record transforms: decode, crop-or-pad, resize, augment, RGB -> LAB, scale.

Every random choice draws from the `np.random.Generator` that grain's `random_map` derives from
(seed, index in the repeated dataset), so a given (seed, epoch, index) always gives the same
example, in any worker, after any restart.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageOps

from jaxcolor import color, images
from jaxcolor.data import shards, sources

BAD = "bad"  # key of the marker record that replaces an undecodable file


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: alpha composited on white, 16-bit and float rescaled.

    16-bit modes (I;16*) follow the array rule, `jaxcolor.images.rgb_uint8`: / 65535, whatever
    the content. The 32-bit modes I and F do not say what range their values stand for (a
    16-bit file can open as I, a float TIFF holds 0..1 or 0..255), so for them the content has
    to decide: / 65535 if a value is over 255, else / 255."""
    if img.mode.startswith("I;16"):
        img = Image.fromarray(images.rgb_uint8(np.asarray(img, dtype=np.uint16)))
    elif img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def decode(path: str) -> np.ndarray:
    """File -> (H, W, 3) uint8 RGB; raises on anything that is not a whole, readable image."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        img.load()
        return np.asarray(to_rgb(img))


@functools.lru_cache(maxsize=16)
def _decoded_photo(path: str) -> np.ndarray:
    """The sample photos are few and reused for every crop: decode each once per worker."""
    return decode(path)


def center_crop_or_pad(rgb: np.ndarray, size: int) -> np.ndarray:
    """Center crop to size x size where larger, zero-pad (black) where smaller, as
    `tf.image.resize_with_crop_or_pad`. size <= 0 crops the largest centered square instead."""
    h, w = rgb.shape[:2]
    th = tw = size if size > 0 else min(h, w)
    top, left = max(0, (h - th) // 2), max(0, (w - tw) // 2)
    rgb = rgb[top : top + th, left : left + tw]
    h, w = rgb.shape[:2]
    if (h, w) == (th, tw):
        return rgb
    out = np.zeros((th, tw, 3), rgb.dtype)
    oy, ox = (th - h) // 2, (tw - w) // 2
    out[oy : oy + h, ox : ox + w] = rgb
    return out


def resize(rgb: np.ndarray, size: int) -> np.ndarray:
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))


def rotate(rgb: np.ndarray, degrees: float) -> np.ndarray:
    """Bilinear rotation about the center, filling the corners by reflection (Keras'
    RandomRotation default), done as reflect-pad, then one affine warp that samples only the
    centered output window: the same pixels as rotating the whole padded image and cropping it,
    without computing the border that the crop would throw away."""
    if degrees == 0:
        return rgb
    h, w = rgb.shape[:2]
    theta = math.radians(abs(degrees))
    need_h = h * math.cos(theta) + w * math.sin(theta)
    need_w = w * math.cos(theta) + h * math.sin(theta)
    ph, pw = math.ceil((need_h - h) / 2) + 1, math.ceil((need_w - w) / 2) + 1
    padded = np.pad(rgb, ((ph, ph), (pw, pw), (0, 0)), mode="reflect")
    # PIL's Image.rotate matrix (output -> input) about the padded center, shifted by the crop.
    cx, cy = (w + 2 * pw) / 2.0, (h + 2 * ph) / 2.0
    t = -math.radians(degrees % 360.0)
    a, b = round(math.cos(t), 15), round(math.sin(t), 15)
    d, e = round(-math.sin(t), 15), round(math.cos(t), 15)
    c = a * -cx + b * -cy + cx + a * pw + b * ph
    f = d * -cx + e * -cy + cy + d * pw + e * ph
    out = Image.fromarray(padded).transform(
        (w, h), Image.Transform.AFFINE, (a, b, c, d, e, f), Image.BILINEAR
    )
    return np.asarray(out)


def random_square_crop(rgb: np.ndarray, rng: np.random.Generator, lo=0.2, hi=0.6) -> np.ndarray:
    """A square crop whose side is a random fraction of the photo's shorter side."""
    h, w = rgb.shape[:2]
    side = max(8, int(min(h, w) * rng.uniform(lo, hi)))
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    return rgb[top : top + side, left : left + side]


# uint8 sRGB -> LAB, specialised for the pipeline (color.rgb_to_lab is the general, shared one):
# a 256-entry table replaces the per-pixel pow of the sRGB decoding, the reference white is
# folded into the matrix, and the channels stay planar. Agrees with color.rgb_to_lab to ~1e-6
# (tests/test_data_sources.py) at 3-7x the speed; over a whole batch at once it was slower than
# per example (the per-example arrays stay in cache; RESULTS.md, "Input pipeline at scale").
_LINEAR = color._srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0, np).astype(np.float32)
_XYZ_N = (color.XYZ_FROM_RGB / color.WHITE_D65[:, None]).astype(np.float32)
_EPS, _KAPPA, _DELTA = (np.float32(v) for v in (color._EPSILON, color._KAPPA, color._DELTA))


def _lab_f(t: np.ndarray) -> np.ndarray:
    out = np.cbrt(t)
    small = t <= _EPS
    if small.any():
        out[small] = _KAPPA * t[small] + _DELTA
    return out


def to_model_arrays(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """(..., H, W, 3) uint8 -> {'L': L/100 (..., 1), 'ab': ab/128 (..., 2)} float32."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        raise TypeError(f"to_model_arrays expects uint8 RGB, got {rgb.dtype}")
    r, g, b = _LINEAR[rgb[..., 0]], _LINEAR[rgb[..., 1]], _LINEAR[rgb[..., 2]]
    return linear_rgb_to_model_arrays(r, g, b, _lab_f, np)


def linear_rgb_to_model_arrays(r, g, b, lab_f, xp) -> dict:
    """Linear r, g, b planes -> {'L', 'ab'} in float32, in NumPy or jax.numpy (`xp`, with its
    `lab_f`): one definition for the host pipeline and `device_augment`, so the two agree."""
    m = _XYZ_N
    fx = lab_f(m[0, 0] * r + m[0, 1] * g + m[0, 2] * b)
    fy = lab_f(m[1, 0] * r + m[1, 1] * g + m[1, 2] * b)
    fz = lab_f(m[2, 0] * r + m[2, 1] * g + m[2, 2] * b)
    lightness = fy * np.float32(116.0 / color.L_SCALE) - np.float32(16.0 / color.L_SCALE)
    ab = xp.stack([(fx - fy) * np.float32(500.0 / color.AB_SCALE),
                   (fy - fz) * np.float32(200.0 / color.AB_SCALE)], axis=-1)
    return {"L": lightness[..., None], "ab": ab}


def load_example(record: dict, rng: np.random.Generator, cfg, train: bool) -> dict:
    """One record -> model arrays, or a {BAD: path} marker if the file cannot be decoded."""
    prepared = "shards" in record  # already cropped and resized by `prepare shards`
    try:
        if "crop_id" in record:  # sample source: random crops of a whole photo
            if not train:  # fixed crops: the same validation set at every evaluation
                rng = np.random.default_rng([cfg.sample_eval_seed, record["crop_id"]])
            rgb = random_square_crop(_decoded_photo(record["path"]), rng)
        elif prepared:
            rgb = shards.load(record)
        elif "tfds" in record:
            rgb = images.rgb_uint8(sources.tfds_load(record))  # the one array rule
        else:
            rgb = decode(record["path"])
    except Exception as exc:  # noqa: BLE001 - any undecodable file is skipped and counted
        where = record.get("path") or f"{record.get('tfds')}[{record.get('index')}]"
        return {BAD: where, "error": f"{type(exc).__name__}: {exc}"}
    return transform_rgb(rgb, rng, cfg, train, prepared=prepared)


AUGMENT_ON = ("host", "device")


def augment_on(cfg) -> str:
    """Where training examples are rotated, flipped and converted to LAB: 'host' (here, per
    example) or 'device' (`device_augment.to_model_batch`, inside the compiled train step).
    Configs saved before the option existed read as 'host', what they did."""
    value = cfg.get("augment_on", "host")
    if value not in AUGMENT_ON:
        raise ValueError(f"config.data.augment_on={value!r}: expected 'host' or 'device'")
    return value


def draw_augmentation(rng: np.random.Generator, cfg) -> tuple[float, bool]:
    """One training example's random choices, (degrees, flip): the same rng calls in the same
    order on either `augment_on` path, so a seed gives the same augmentation wherever it runs."""
    degrees = 0.0
    if cfg.rotate_degrees > 0:
        degrees = rng.uniform(-cfg.rotate_degrees, cfg.rotate_degrees)
    flip = bool(cfg.hflip and rng.random() < 0.5)
    return float(degrees), flip


def transform_rgb(rgb: np.ndarray, rng: np.random.Generator, cfg, train: bool,
                  prepared: bool = False) -> dict:
    """uint8 RGB -> model arrays; for training with augment_on='device' instead the cropped,
    resized uint8 'rgb' with its drawn 'degrees' and 'flip', which the train step applies."""
    if not prepared:
        rgb = center_crop_or_pad(rgb, cfg.crop)
        rgb = resize(rgb, cfg.image_size)
    if not train:
        return to_model_arrays(np.ascontiguousarray(rgb))
    degrees, flip = draw_augmentation(rng, cfg)
    if augment_on(cfg) == "device":
        return {"rgb": np.ascontiguousarray(rgb), "degrees": np.float32(degrees),
                "flip": np.bool_(flip)}
    rgb = rotate(rgb, degrees)  # a no-op at 0 degrees
    if flip:
        rgb = rgb[:, ::-1]
    return to_model_arrays(np.ascontiguousarray(rgb))
