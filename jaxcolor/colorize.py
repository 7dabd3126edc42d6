"""`python -m jaxcolor.colorize INPUT... --workdir RUN -o OUT_DIR [--compare] [--overwrite]
[--max_pixels N] [--batch N] [--step N] [--temperature T]`

Colorizes pictures of any size and aspect ratio with a trained run. Each picture becomes gray
first (its CIE L; color inputs lose their color, so a color photo tests the model fairly); the
model sees L resized to its square `image_size` (resized, not cropped: the whole picture, squeezed)
and predicts ab there; ab is upsampled bilinearly back to the picture's size and recombined with
the picture's own full-resolution L, then clipped to the sRGB gamut. The output keeps every detail
of the input's lightness; only the color is at the model's resolution.

Inputs are files and folders (searched recursively; hidden files skipped). PNG with alpha
(composited on white), grayscale, palette and 16-bit images are read as
`jaxcolor.data.transforms.decode` reads training data.

Outputs: `OUT_DIR/<name>.png`, keeping the folder structure below each input folder, and with
`--compare` `OUT_DIR/<name>_compare.png` = original | gray | colorized. Every output of the run
(both files of every picture) gets its own name: a name already taken (`a.jpg` and `a.png`, or
`x.jpg --compare` beside an input `x_compare.jpg`) keeps its extension for the later picture
(`a.jpg.png`), then gets a counter (`a_2.png`). Nothing that exists is replaced: an output file
that exists before the run is refused up front (exit 2, naming it) unless `--overwrite`, and an
input is never overwritten, even with `--overwrite`. `-o` must be a folder (created if missing),
not inside an input folder.

Memory: the full-resolution work (L, ab upsampling, LAB -> sRGB) runs in float32 row strips of
about a megapixel (about 100 MB of temporaries), with the same result as the whole picture gave
(bit for bit in the tests, at most 1 uint8 level in any case; see `ab_rows`). A picture costs
about 9 bytes per pixel beyond the model (its RGB, L and output image) plus those 100 MB: 13
per pixel measured on a 24-MP photo and 8.8 on a 169-MP one, where whole-picture float arrays
took 115 (`benchmarks/colorize_memory.py`); about 23 with `--compare`, whose 3-panel picture is
built whole. `--max_pixels` (default 120 megapixels, about 1.2 GB; 0 = no limit) skips larger
pictures from their header, before any pixel is decoded.

Every file is tried: one that cannot be decoded, is over `--max_pixels`, runs out of memory, gets
non-finite predictions from the model (a damaged checkpoint) or cannot be written is skipped and
listed with its reason, and the others go on. Exit status: 0 if at least one picture was
colorized, 1 if none could be, 2 for a usage error, reported before the model loads (missing
input, empty folder, OUT_DIR inside an input folder or an existing file, an output that exists
without `--overwrite` or that is an input) or when the run is not found.

In Python: `jaxcolor.colorize_array(load_colorizer(RUN), image) -> uint8 RGB`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import math
import os
import sys
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageOps

from jaxcolor import color, images as images_lib
from jaxcolor import config as config_lib

if TYPE_CHECKING:  # JAX loads only once a model is needed: usage errors are reported at once
    from jaxcolor.runs import Colorizer

log = logging.getLogger(__name__)

EXIT_NOTHING_COLORIZED = 1
EXIT_USAGE = 2

# The largest picture colorized by default: above the largest camera photos (100-megapixel
# medium format, 11656 x 8742 = 102 MP), and at about 9 bytes per pixel 1.2 GB of memory (2.8 GB
# with --compare), which a laptop has. A 200-MP phone photo or a stitched panorama needs a larger
# --max_pixels (or 0); a 13000 x 13000 PNG of a few KB is skipped before it takes 1.5 GB.
DEFAULT_MAX_PIXELS = 120_000_000
# Full-resolution float work is done this many pixels at a time: float32 temporaries of a strip
# stay around 100 MB, whatever the picture's size.
STRIP_PIXELS = 1 << 20
# Pictures waiting for one model call hold their L (and with --compare their RGB) in memory: a
# batch is run early once it holds this many pixels, so 16 large photos are not held at once.
BATCH_PIXELS = 1 << 25


class UsageError(ValueError):
    """Inputs or output folder that the command refuses (reported with exit status 2)."""


class TooLarge(ValueError):
    """A picture over `--max_pixels` (found from its header, before decoding)."""


class NonFiniteOutput(ValueError):
    """The model predicted NaN or infinite ab: its weights are damaged, nothing to write."""


# ---------------------------------------------------------------------------------------------
# Arrays


def row_strips(height: int, width: int, strip_pixels: int = STRIP_PIXELS) -> list[slice]:
    """Row ranges of about `strip_pixels` pixels each (at least one row) covering the picture."""
    rows = max(1, strip_pixels // max(1, width))
    return [slice(y, min(height, y + rows)) for y in range(0, height, rows)]


def as_rgb_uint8(image, strip_pixels: int = STRIP_PIXELS) -> np.ndarray:
    """An image array -> (H, W, 3) uint8 RGB by `jaxcolor.images.rgb_uint8`'s rule (the one the
    training data's arrays follow), strip by strip so that its float temporaries stay small.

    Accepts (H, W) or (H, W, 1) gray, (H, W, 3) RGB and (H, W, 4) RGBA (composited on white),
    as uint8 (or other integers, 0..255), uint16 (0..65535), float (0..1) or bool. Values
    outside those ranges (float 0..255, NaN) are a ValueError naming the whole picture's range.
    """
    arr = images_lib.checked_image(image)
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[-1] == 3:
        return np.ascontiguousarray(arr)
    out = np.empty(arr.shape[:2] + (3,), np.uint8)
    for rows in row_strips(*arr.shape[:2], strip_pixels):  # float64 temporaries per strip only
        out[rows] = images_lib.rgb_uint8(arr[rows])
    return out


def lightness(rgb: np.ndarray, strip_pixels: int = STRIP_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) float32 CIE L in [0, 100]: the gray picture the model colors.
    Per row strip (the conversion is per pixel, so strips give the same values)."""
    out = np.empty(rgb.shape[:2], np.float32)
    for rows in row_strips(*rgb.shape[:2], strip_pixels):
        out[rows] = color.rgb_to_lab(rgb[rows].astype(np.float32) / 255.0)[..., 0]
    return out


def resize_float(channel: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of one float channel (Pillow's, antialiased when shrinking, as the
    training pipeline's resize)."""
    if channel.shape == (height, width):
        return channel.astype(np.float32)
    img = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32), mode="F")
    return np.asarray(img.resize((width, height), Image.BILINEAR), dtype=np.float32)


def model_input(l_full: np.ndarray, size: int) -> np.ndarray:
    """(H, W) L -> (size, size, 1) L/100, the whole picture resized (not cropped)."""
    return (resize_float(l_full, size, size) / color.L_SCALE)[..., None]


def bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's BILINEAR coefficients along one axis (its `precompute_coeffs`, whole box): for
    every output index the first input index and the normalized weights (out, K), so that a
    strip of output rows can be computed alone and equal the rows of Pillow's whole resize."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = filterscale  # the bilinear filter's support is 1, widened when shrinking
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    first = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    count = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - first
    weights = np.zeros((out_size, ksize))
    total = np.zeros(out_size)
    for k in range(ksize):  # summed in Pillow's order, so the normalization rounds the same
        t = np.abs(((first + k) - center + 0.5) / filterscale)
        w = np.where((k < count) & (t < 1.0), 1.0 - t, 0.0)
        weights[:, k] = w
        total += w
    return first, weights / np.where(total == 0.0, 1.0, total)[:, None]


def _vertical_pass(src: np.ndarray, first: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Rows of Pillow's vertical resampling pass of a float image: a double-precision sum over
    the taps in Pillow's order, stored as float32 (the zero-weight taps past the end add 0)."""
    acc = np.zeros((len(first), src.shape[1]), np.float64)
    last = src.shape[0] - 1
    for k in range(weights.shape[1]):
        acc += src[np.minimum(first + k, last)] * weights[:, k : k + 1]
    return acc.astype(np.float32)


def ab_rows(ab_scaled: np.ndarray, height: int, width: int) -> Callable[[slice], np.ndarray]:
    """ab/128 at the model's size (S, S, 2) -> a function giving rows of its bilinear upsample
    to height x width, (n, W, 2) float32, without ever holding the whole (H, W, 2) array.

    Pillow resizes in two passes, and the strips reproduce them: for a picture taller than S
    the horizontal pass first (Pillow's own, on the small S x S) and then the vertical one per
    strip (`bilinear_taps`); otherwise the vertical pass first (S x S -> H x S, small) and the
    horizontal one per strip (Pillow's own, rows are independent). Pillow picks its order
    itself, undocumented: for pictures taller than S it went horizontal first in all of 300
    random sizes, and for shorter ones vertical first in 197 of 200; in those cases the rows are
    bit-identical to the whole resize. Otherwise (and on a platform where Pillow's C code fuses
    multiply-adds) ab can differ in its last float32 bit, which can move a result by at most
    1 uint8 level.
    """
    size = ab_scaled.shape[0]
    channels = [ab_scaled[..., c] for c in range(2)]
    if height > size:
        wide = [resize_float(c, size, width) for c in channels]
        first, weights = bilinear_taps(size, height)
        return lambda rows: np.stack(
            [_vertical_pass(c, first[rows], weights[rows]) for c in wide], axis=-1)
    tall = [resize_float(c, height, size) for c in channels]
    return lambda rows: np.stack(
        [resize_float(c[rows], rows.stop - rows.start, width) for c in tall], axis=-1)


def _rgb_rows(l_rows: np.ndarray, ab_scaled_rows: np.ndarray) -> np.ndarray:
    """Rows of L (n, W) and of upsampled ab/128 (n, W, 2) -> (n, W, 3) uint8 sRGB, clipped."""
    lab = np.concatenate([l_rows[..., None], ab_scaled_rows * np.float32(color.AB_SCALE)],
                         axis=-1)
    return images_lib.to_uint8(color.lab_to_rgb(lab))


def colorized_rows(l_full: np.ndarray, ab_scaled: np.ndarray,
                   strip_pixels: int = STRIP_PIXELS) -> Iterator[tuple[slice, np.ndarray]]:
    """Full-resolution L (H, W) and ab/128 at the model's size (S, S, 2) -> (rows, (n, W, 3)
    uint8) strips of the colorized picture: ab upsampled bilinearly to H x W, LAB -> sRGB
    clipped to the gamut. A picture of one strip or less is computed whole, as it always was."""
    h, w = l_full.shape
    if h * w <= strip_pixels:
        ab = np.stack([resize_float(ab_scaled[..., c], h, w) for c in range(2)], axis=-1)
        yield slice(0, h), _rgb_rows(l_full, ab)
        return
    upsampled = ab_rows(ab_scaled, h, w)
    for rows in row_strips(h, w, strip_pixels):
        yield rows, _rgb_rows(l_full[rows], upsampled(rows))


def recombine(l_full: np.ndarray, ab_scaled: np.ndarray,
              strip_pixels: int = STRIP_PIXELS) -> np.ndarray:
    """`colorized_rows` as one (H, W, 3) uint8 array."""
    out = np.empty(l_full.shape + (3,), np.uint8)
    for rows, rgb in colorized_rows(l_full, ab_scaled, strip_pixels):
        out[rows] = rgb
    return out


def predict_batch(model: Colorizer, inputs: list[np.ndarray], batch_size: int) -> np.ndarray:
    """Model inputs (S, S, 1) -> ab/128 (n, S, S, 2), padding to `batch_size` rows."""
    n = len(inputs)
    batch = np.zeros((max(batch_size, n), model.image_size, model.image_size, 1), np.float32)
    batch[:n] = np.stack(inputs)
    return model.predict_ab(batch)[:n]


def check_finite(ab_scaled: np.ndarray) -> None:
    """A NaN or infinite prediction would be written as a black picture: refuse it instead."""
    if not np.isfinite(ab_scaled).all():
        raise NonFiniteOutput("the model produced non-finite values (NaN or inf) for this "
                              "picture; the checkpoint may be damaged")


def colorize_arrays(model: Colorizer, pictures: Iterable, batch_size: int = 16,
                    strip_pixels: int = STRIP_PIXELS) -> list[np.ndarray]:
    """Colorizes several pictures of any sizes; returns uint8 RGB arrays of the same H x W.

    The model runs on fixed-size batches (the last one padded), so it compiles once. Raises
    ValueError for values out of range (see `as_rgb_uint8`) and `NonFiniteOutput` when the
    model's prediction is not finite.
    """
    out, pictures = [], iter(pictures)
    while chunk := list(itertools.islice(pictures, batch_size)):
        ls = [lightness(as_rgb_uint8(p, strip_pixels), strip_pixels) for p in chunk]
        ab = predict_batch(model, [model_input(l, model.image_size) for l in ls], batch_size)
        for l, a in zip(ls, ab):
            check_finite(a)
            out.append(recombine(l, a, strip_pixels))
    return out


def colorize_array(model: Colorizer, image) -> np.ndarray:
    """One picture (any size; gray, RGB or RGBA; uint8, uint16 or float in [0, 1]) -> its
    colorized version, (H, W, 3) uint8 RGB of the same H x W. `model`: a `Colorizer`, e.g.
    `jaxcolor.runs.load_colorizer('runs/NAME')`."""
    return colorize_arrays(model, [image], batch_size=1)[0]


def gray_rows(l_rows: np.ndarray) -> np.ndarray:
    """L rows (n, W) -> the neutral gray they stand for, (n, W, 3) uint8. The channel axis is
    added here: `color.gray_rgb_from_l` would take an (H, 1) picture for one with a channel."""
    return images_lib.to_uint8(color.gray_rgb_from_l(l_rows[..., None]))


def compare_image(original: np.ndarray, l_full: np.ndarray, colorized: Image.Image,
                  gap: int = 4, strip_pixels: int = STRIP_PIXELS) -> Image.Image:
    """original | gray | colorized, side by side on white, a (3W + 2 gap) x H RGB image, built
    by pasting strips so that no full-size float (or second uint8) copy is made."""
    h, w = l_full.shape
    canvas = Image.new("RGB", (3 * w + 2 * gap, h), (255, 255, 255))
    canvas.paste(colorized, (2 * (w + gap), 0))
    for rows in row_strips(h, w, strip_pixels):
        canvas.paste(Image.fromarray(np.ascontiguousarray(original[rows])), (0, rows.start))
        canvas.paste(Image.fromarray(gray_rows(l_full[rows])), (w + gap, rows.start))
    return canvas


def compare_strip(original: np.ndarray, colorized: np.ndarray, gap: int = 4) -> np.ndarray:
    """original | gray | colorized, side by side on white, (H, 3W + 2 gap, 3) uint8."""
    original = as_rgb_uint8(original)
    image = compare_image(original, lightness(original), Image.fromarray(colorized), gap)
    return np.asarray(image)


# ---------------------------------------------------------------------------------------------
# Files


class Job(NamedTuple):
    source: str  # input file
    output: str  # OUT_DIR/<relative name>.png


def find_inputs(inputs: Sequence[str]) -> list[tuple[str, str]]:
    """(file, name relative to its input folder, or its base name) for every input file,
    folders searched recursively in sorted order, hidden files and folders skipped."""
    found = []
    for item in inputs:
        if os.path.isfile(item):
            found.append((item, os.path.basename(item)))
        elif os.path.isdir(item):
            inside = []
            for dirpath, dirnames, filenames in os.walk(item):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if not name.startswith("."):
                        path = os.path.join(dirpath, name)
                        inside.append((path, os.path.relpath(path, item)))
            if not inside:
                raise UsageError(f"{item}: the folder is empty (no files to colorize)")
            found.extend(inside)
        else:
            raise UsageError(f"{item}: no such file or folder")
    return found


def compare_path(output: str) -> str:
    return os.path.splitext(output)[0] + "_compare.png"


def plan_outputs(found: Iterable[tuple[str, str]], out_dir: str,
                 compare: bool = False) -> list[Job]:
    """Output paths: `<relative name without extension>.png`; a name taken (a.jpg and a.png)
    keeps its extension for the later ones (a.jpg.png), then gets a counter (a_2.png).

    With `compare` each job also writes `<name>_compare.png`, which can be another job's main
    output (`x.jpg` beside `x_compare.jpg`): both outputs of every job are taken together from
    one set. Names are compared case-insensitively, as macOS and Windows file systems do.
    """
    def key(name: str) -> str:
        return os.path.normcase(name).casefold()

    jobs, taken = [], set()
    for source, rel in found:
        stem = os.path.splitext(rel)[0]
        candidates = itertools.chain([stem + ".png", rel + ".png"],
                                     (f"{stem}_{k}.png" for k in itertools.count(2)))
        for name in candidates:
            names = [name, compare_path(name)] if compare else [name]
            if not any(key(n) in taken for n in names):
                break
        taken.update(key(n) for n in names)
        jobs.append(Job(source, os.path.join(out_dir, name)))
    return jobs


def job_outputs(job: Job, compare: bool) -> list[str]:
    return [job.output, compare_path(job.output)] if compare else [job.output]


def _identity(path: str):
    """(device, inode): the same file under another name (a hard or symbolic link) has the same.
    None for a path that cannot be stat'ed (a broken link among the inputs: skipped later)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_outputs(inputs: Sequence[str], jobs: Sequence[Job], out_dir: str, compare: bool,
                  overwrite: bool = False) -> None:
    """Refuses, before anything is loaded: OUT_DIR that exists but is not a folder; OUT_DIR
    equal to or inside an input folder (the outputs would land among the inputs, and a folder
    run again would take them as inputs); any output that is an input (by path or as the same
    file, e.g. a link), even with `overwrite`; an output that is a folder or whose folder is a
    file; and, without `overwrite`, any output that exists: this run did not write it."""
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"-o {out_dir}: exists and is not a folder; -o takes the folder to "
                         "write into (created if missing)")
    out_real = os.path.realpath(out_dir)
    for item in inputs:
        if os.path.isdir(item):
            folder = os.path.realpath(item)
            if out_real == folder or out_real.startswith(folder.rstrip(os.sep) + os.sep):
                raise UsageError(f"-o {out_dir}: the output folder is inside the input folder "
                                 f"{item}; its files could be overwritten. Choose a folder "
                                 "outside the inputs")
    sources = {os.path.realpath(j.source) for j in jobs}
    source_files = {_identity(j.source) for j in jobs} - {None}
    targets = [t for job in jobs for t in job_outputs(job, compare)]
    for target in targets:
        if os.path.realpath(target) in sources or (
                os.path.exists(target) and _identity(target) in source_files):
            raise UsageError(f"{target}: writing it would overwrite an input file; choose "
                             "another output folder")
        if os.path.isdir(target):
            raise UsageError(f"{target}: is a folder, where an output picture would go; "
                             "choose another output folder")
    for folder in sorted({os.path.dirname(t) for t in targets}):
        while folder and not os.path.lexists(folder):
            folder = os.path.dirname(folder)
        if folder and not os.path.isdir(folder):
            raise UsageError(f"{folder}: is a file where the outputs need a folder; choose "
                             "another output folder")
    if not overwrite:
        existing = [t for t in targets if os.path.lexists(t)]
        if existing:
            more = f" (and {len(existing) - 1} more outputs)" if len(existing) > 1 else ""
            raise UsageError(f"{existing[0]}: already exists{more}; this command does not "
                             "replace files it did not write. Pass --overwrite to replace "
                             "existing outputs, or choose another output folder")


def read_rgb(path: str, max_pixels: int = DEFAULT_MAX_PIXELS,
             strip_pixels: int = STRIP_PIXELS) -> np.ndarray:
    """File -> (H, W, 3) uint8 RGB, the pixels `jaxcolor.data.transforms.decode` gives (EXIF
    rotation, alpha on white, 16-bit rescaled), with two differences for large pictures:

    - the size is checked against `max_pixels` (0: no limit) from the header, before any pixel
      is decoded (`TooLarge`); that check replaces Pillow's own decompression-bomb guard
      (`Image.MAX_IMAGE_PIXELS`, a warning above 89 MP and an error above 179 MP), which is
      lifted while reading so that `--max_pixels` alone decides;
    - one copy at a time: `decode` holds the opened image, its EXIF-transposed copy, an RGB
      copy and two byte strings of the result (about 18 bytes per pixel); here the image is
      transposed in place, an RGB file is not converted, and the array is filled strip by strip.
    """
    from jaxcolor.data.transforms import to_rgb

    with pillow_limit_lifted():
        img = Image.open(path)
        try:
            w, h = img.size
            if max_pixels and w * h > max_pixels:
                raise TooLarge(f"{w}x{h} = {w * h / 1e6:.1f} megapixels, over --max_pixels="
                               f"{max_pixels} ({max_pixels / 1e6:g} MP); raise --max_pixels, or "
                               "pass --max_pixels 0 for no limit")
            ImageOps.exif_transpose(img, in_place=True)  # loads (and checks) the whole file
            if img.mode != "RGB":
                converted = to_rgb(img)
                img.close()  # frees the decoded pixels before the array is made
                img = converted
            w, h = img.size
            out = np.empty((h, w, 3), np.uint8)
            for rows in row_strips(h, w, strip_pixels):
                out[rows] = np.asarray(img.crop((0, rows.start, w, rows.stop)))
            return out
        finally:
            img.close()


@contextlib.contextmanager
def pillow_limit_lifted():
    """Pillow's decompression-bomb guard off while a file is read: `read_rgb` checks the size
    itself (`--max_pixels`), so a picture it accepts is never refused or warned about."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def save_png(image: Image.Image, path: str, overwrite: bool = False) -> None:
    """Writes `image` as a PNG at `path`, never replacing a file unless `overwrite`.

    Without `overwrite` the file is created exclusively (O_EXCL), so even a file that appeared
    after `check_outputs` is not replaced. With it, the PNG goes to a temporary file beside
    `path` that then replaces `path` (a link there is replaced, not the file it points to).
    A write that fails removes its partial file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    target = path if not overwrite else os.path.join(
        folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    f = open(target, "xb")
    try:
        with f:
            image.save(f, format="PNG")
        if overwrite:
            os.replace(target, path)
    except BaseException:
        os.remove(target)
        raise


class Skipped(NamedTuple):
    source: str
    kind: str  # "unreadable file", "too large file" or "file": how the report line names it
    reason: str


class Report(NamedTuple):
    written: list[str]  # the main output of every colorized picture
    skipped: list[Skipped]


class _Ready(NamedTuple):
    """A decoded picture waiting for its batch's model call."""

    job: Job
    rgb: np.ndarray | None  # kept for --compare only
    l_full: np.ndarray
    l_input: np.ndarray


def _reason(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return (f"out of memory ({type(exc).__name__}: {exc}); --max_pixels skips pictures "
                "this large")
    if isinstance(exc, (TooLarge, NonFiniteOutput)):  # their message is the whole reason
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def write_outputs(ready: _Ready, ab_scaled: np.ndarray, compare: bool, overwrite: bool,
                  strip_pixels: int = STRIP_PIXELS) -> None:
    """Recombines one picture strip by strip into an image and writes it (and its comparison);
    if anything fails, the outputs this call wrote are removed again: a skipped picture leaves
    nothing half-done behind."""
    job, (h, w) = ready.job, ready.l_full.shape
    out = Image.new("RGB", (w, h))
    for rows, rgb in colorized_rows(ready.l_full, ab_scaled, strip_pixels):
        out.paste(Image.fromarray(rgb), (0, rows.start))
    done = []
    try:
        save_png(out, job.output, overwrite)
        done.append(job.output)
        if compare:
            strip = compare_image(ready.rgb, ready.l_full, out, strip_pixels=strip_pixels)
            out.close()
            save_png(strip, compare_path(job.output), overwrite)
    except BaseException:
        for path in done:
            os.remove(path)
        raise


def colorize_files(model: Colorizer, jobs: Sequence[Job], compare: bool = False,
                   batch_size: int = 16, progress: bool = True, overwrite: bool = False,
                   max_pixels: int = DEFAULT_MAX_PIXELS,
                   strip_pixels: int = STRIP_PIXELS) -> Report:
    """Decodes, colorizes and writes `jobs` in batches of up to `batch_size` pictures (fewer
    once they hold `BATCH_PIXELS`). A file that cannot be read, is over `max_pixels`, fails
    (out of memory, non-finite prediction, write error) is skipped with its reason; the others
    go on. `overwrite=False` never replaces an existing file (see `save_png`)."""
    from tqdm import tqdm

    written, skipped = [], []
    bar = tqdm(total=len(jobs), desc="colorize", unit="img", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    ready: list[_Ready] = []

    def skip(job, kind, exc):
        skipped.append(Skipped(job.source, kind, _reason(exc)))
        bar.update(1)

    def run_batch():
        batch = ready[:]
        ready.clear()
        try:
            ab = predict_batch(model, [r.l_input for r in batch], batch_size)
        except Exception as exc:  # noqa: BLE001 - the batch's pictures are skipped, not the run
            for r in batch:
                skip(r.job, "file", exc)
            return
        for a in ab:
            r = batch.pop(0)  # released once written
            try:
                check_finite(a)
                write_outputs(r, a, compare, overwrite, strip_pixels)
                written.append(r.job.output)
                bar.update(1)
            except Exception as exc:  # noqa: BLE001 - one picture's failure skips that picture
                skip(r.job, "file", exc)
            del r

    try:
        for job in jobs:
            try:
                rgb = read_rgb(job.source, max_pixels, strip_pixels)
            except TooLarge as exc:
                skip(job, "too large file", exc)
                continue
            except MemoryError as exc:
                skip(job, "file", exc)
                continue
            except Exception as exc:  # noqa: BLE001 - any undecodable file is skipped
                skip(job, "unreadable file", exc)
                continue
            try:
                l_full = lightness(rgb, strip_pixels)
                if not compare:
                    rgb = None  # freed before model_input's copy of L: 8 bytes/pixel, not 11
                ready.append(_Ready(job, rgb, l_full, model_input(l_full, model.image_size)))
            except Exception as exc:  # noqa: BLE001 - e.g. MemoryError: skip this picture
                skip(job, "file", exc)
            rgb = l_full = None
            if len(ready) >= batch_size or sum(r.l_full.size for r in ready) >= BATCH_PIXELS:
                run_batch()
        if ready:
            run_batch()
    finally:
        bar.close()
    return Report(written, skipped)


def _pixel_count(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and value == int(value)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of pixels >= 0, e.g. "
                                         "120000000 or 120e6 (0 = no limit)")
    return int(value)


def parse_args(argv):
    parser = config_lib.command_parser(
        "python -m jaxcolor.colorize",
        "Colorize pictures (files or folders, recursively) with a trained run.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    parser.add_argument("--workdir", required=True, help="the training run's directory")
    parser.add_argument("-o", "--out", required=True, metavar="OUT_DIR",
                        help="output folder (created if missing; not inside an input folder)")
    parser.add_argument("--compare", action="store_true",
                        help="also write <name>_compare.png: original | gray | colorized")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace output files that exist (never an input); without it an "
                             "existing output is refused before anything runs")
    parser.add_argument("--max_pixels", type=_pixel_count, default=DEFAULT_MAX_PIXELS,
                        help="skip pictures with more pixels, checked from the file header "
                             f"(default {DEFAULT_MAX_PIXELS:_}, about 1 GB of memory; 0 = no "
                             "limit)")
    parser.add_argument("--batch", type=int, default=16, help="pictures per model call")
    parser.add_argument("--step", type=int, default=None,
                        help="checkpoint step (default: the best by validation loss)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="classification runs: annealed-mean temperature T (0 = the mode, "
                             "1 = the mean; default: the run's config.loss.temperature, 0.38)")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch={args.batch}: expected a positive number")
    if args.temperature is not None and args.temperature < 0:
        parser.error(f"--temperature={args.temperature}: expected T >= 0")
    return args


def main(argv=None) -> int:
    """The command: 0 or 1 (`EXIT_NOTHING_COLORIZED`); a usage error exits (SystemExit,
    `EXIT_USAGE`) rather than returning."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        jobs = plan_outputs(find_inputs(args.inputs), args.out, args.compare)
        check_outputs(args.inputs, jobs, args.out, args.compare, args.overwrite)
        from absl import logging as absl_logging  # JAX and the run load only from here

        from jaxcolor.runs import load_colorizer

        absl_logging.set_verbosity(absl_logging.WARNING)
        model = load_colorizer(args.workdir, args.step, args.temperature)
    except (UsageError, FileNotFoundError, ValueError) as exc:
        config_lib.usage_error(exc)
    report = colorize_files(model, jobs, args.compare, args.batch, overwrite=args.overwrite,
                            max_pixels=args.max_pixels)
    for source, kind, reason in report.skipped:
        print(f"skipped {kind} {source} ({reason})", file=sys.stderr)
    print(f"colorized {len(report.written)} of {len(jobs)} files into {args.out} with "
          f"{args.workdir} step {model.step}"
          + (f" ({model.step_reason})" if getattr(model, "step_reason", "") else "")
          + f", a {model.image_size}x{model.image_size} model; {len(report.skipped)} skipped")
    if not report.written:
        print("error: nothing could be colorized", file=sys.stderr)
        return EXIT_NOTHING_COLORIZED
    return 0


if __name__ == "__main__":
    sys.exit(main())
