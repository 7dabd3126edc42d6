"""`python -m jaxcolor.colorize INPUT... --workdir RUN -o OUT_DIR [--compare] [--batch N] [--step N]`

Colorizes pictures of any size and aspect ratio with a trained run. Each picture becomes gray
first (its CIE L; color inputs lose their color, so a color photo tests the model fairly); the
model sees L resized to its square `image_size` (resized, not cropped: the whole picture, squeezed)
and predicts ab there; ab is upsampled bilinearly back to the picture's size and recombined with
the picture's own full-resolution L, then clipped to the sRGB gamut. The output keeps every detail
of the input's lightness; only the color is at the model's resolution.

Inputs are files and folders (searched recursively; hidden files skipped). Every file is tried:
what cannot be decoded is skipped and listed. PNG with alpha (composited on white), grayscale,
palette and 16-bit images are read as `jaxcolor.data.transforms.decode` reads training data.
Outputs: `OUT_DIR/<name>.png`, keeping the folder structure below each input folder, and with
`--compare` `OUT_DIR/<name>_compare.png` = original | gray | colorized. Exit status: 0 if at
least one picture was colorized, 1 if none could be, 2 for a usage error (missing input, empty
folder, OUT_DIR inside an input folder, run not found).

In Python: `jaxcolor.colorize_array(load_colorizer(RUN), image) -> uint8 RGB`.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
from typing import TYPE_CHECKING, Iterable, NamedTuple, Sequence

import numpy as np
from PIL import Image

from jaxcolor import color, images as images_lib

if TYPE_CHECKING:  # JAX loads only once a model is needed: usage errors are reported at once
    from jaxcolor.runs import Colorizer

log = logging.getLogger(__name__)

EXIT_NOTHING_COLORIZED = 1
EXIT_USAGE = 2


class UsageError(ValueError):
    """Inputs or output folder that the command refuses (reported with exit status 2)."""


# ---------------------------------------------------------------------------------------------
# Arrays


def as_rgb_uint8(image) -> np.ndarray:
    """An image array in a common layout -> (H, W, 3) uint8 RGB.

    Accepts (H, W) or (H, W, 1) gray, (H, W, 3) RGB and (H, W, 4) RGBA (composited on white),
    as uint8 (or other integers, 0..255), uint16 (0..65535), float (0..1) or bool.
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"image of shape {arr.shape}: expected (H, W), (H, W, 1), (H, W, 3) "
                         "or (H, W, 4)")
    if arr.dtype == np.uint16:
        arr = images_lib.to_uint8(arr.astype(np.float64) / 65535.0)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = images_lib.to_uint8(arr.astype(np.float64))
    elif np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        arr = np.clip(arr, 0, 255).astype(np.uint8) if arr.dtype != np.bool_ else arr * np.uint8(255)
    else:
        raise ValueError(f"image dtype {arr.dtype}: expected uint8, uint16 or float in [0, 1]")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.shape[-1] == 4:
        alpha = arr[..., 3:].astype(np.float32) / 255.0
        arr = (arr[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(arr)


def lightness(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) float32 CIE L in [0, 100]: the gray picture the model colors."""
    return color.rgb_to_lab(rgb.astype(np.float32) / 255.0)[..., 0].astype(np.float32)


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


def recombine(l_full: np.ndarray, ab_scaled: np.ndarray) -> np.ndarray:
    """Full-resolution L (H, W) and ab/128 at the model's size (S, S, 2) -> (H, W, 3) uint8:
    ab upsampled bilinearly to H x W, LAB -> sRGB clipped to the gamut."""
    h, w = l_full.shape
    ab = np.stack([resize_float(ab_scaled[..., c], h, w) for c in range(2)], axis=-1)
    lab = np.concatenate([l_full[..., None], ab * np.float32(color.AB_SCALE)], axis=-1)
    return images_lib.to_uint8(color.lab_to_rgb(lab))


def colorize_arrays(model: Colorizer, pictures: Sequence, batch_size: int = 16) -> list[np.ndarray]:
    """Colorizes several pictures of any sizes; returns uint8 RGB arrays of the same H x W.

    The model runs on fixed-size batches (the last one padded), so it compiles once.
    """
    ls = [lightness(as_rgb_uint8(p)) for p in pictures]
    out = []
    for start in range(0, len(ls), batch_size):
        chunk = ls[start : start + batch_size]
        ab = predict_batch(model, [model_input(l, model.image_size) for l in chunk], batch_size)
        out.extend(recombine(l, a) for l, a in zip(chunk, ab))
    return out


def colorize_array(model: Colorizer, image) -> np.ndarray:
    """One picture (any size; gray, RGB or RGBA; uint8, uint16 or float in [0, 1]) -> its
    colorized version, (H, W, 3) uint8 RGB of the same H x W. `model`: a `Colorizer`, e.g.
    `jaxcolor.runs.load_colorizer('runs/NAME')`."""
    return colorize_arrays(model, [image], batch_size=1)[0]


def predict_batch(model: Colorizer, inputs: list[np.ndarray], batch_size: int) -> np.ndarray:
    """Model inputs (S, S, 1) -> ab/128 (n, S, S, 2), padding to `batch_size` rows."""
    n = len(inputs)
    batch = np.zeros((max(batch_size, n), model.image_size, model.image_size, 1), np.float32)
    batch[:n] = np.stack(inputs)
    return model.predict_ab(batch)[:n]


def compare_strip(original: np.ndarray, colorized: np.ndarray, gap: int = 4) -> np.ndarray:
    """original | gray | colorized, side by side on white, (H, 3W + 2 gap, 3) uint8."""
    original = as_rgb_uint8(original)
    gray = images_lib.to_uint8(color.gray_rgb_from_l(lightness(original)))
    h, w, _ = original.shape
    strip = np.full((h, 3 * w + 2 * gap, 3), 255, np.uint8)
    for i, panel in enumerate((original, gray, colorized)):
        strip[:, i * (w + gap) : i * (w + gap) + w] = panel
    return strip


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


def plan_outputs(found: Iterable[tuple[str, str]], out_dir: str) -> list[Job]:
    """Output paths: `<relative name without extension>.png`; a name taken twice (a.jpg and
    a.png) keeps its extension for the later ones (a.jpg.png), then gets a counter."""
    jobs, taken = [], set()
    for source, rel in found:
        stem = os.path.splitext(rel)[0]
        candidates = itertools.chain([stem + ".png", rel + ".png"],
                                     (f"{stem}_{k}.png" for k in itertools.count(2)))
        name = next(c for c in candidates if os.path.normcase(c) not in taken)
        taken.add(os.path.normcase(name))
        jobs.append(Job(source, os.path.join(out_dir, name)))
    return jobs


def compare_path(output: str) -> str:
    return os.path.splitext(output)[0] + "_compare.png"


def check_outputs(inputs: Sequence[str], jobs: Sequence[Job], out_dir: str,
                  compare: bool) -> None:
    """Refuses OUT_DIR equal to or inside an input folder (the outputs would land among the
    inputs, and a folder run again would take them as inputs) and any output that is an input."""
    out_real = os.path.realpath(out_dir)
    for item in inputs:
        if os.path.isdir(item):
            folder = os.path.realpath(item)
            if out_real == folder or out_real.startswith(folder.rstrip(os.sep) + os.sep):
                raise UsageError(f"-o {out_dir}: the output folder is inside the input folder "
                                 f"{item}; its files could be overwritten. Choose a folder "
                                 "outside the inputs")
    sources = {os.path.realpath(j.source) for j in jobs}
    for job in jobs:
        for target in (job.output, compare_path(job.output)) if compare else (job.output,):
            if os.path.realpath(target) in sources:
                raise UsageError(f"{target}: writing it would overwrite an input file; choose "
                                 "another output folder")


class Report(NamedTuple):
    written: list[str]
    skipped: list[tuple[str, str]]  # (file, reason)


def colorize_files(model: Colorizer, jobs: Sequence[Job], compare: bool = False,
                   batch_size: int = 16, progress: bool = True) -> Report:
    """Decodes, colorizes and writes `jobs` in batches; unreadable files are skipped."""
    from tqdm import tqdm

    from jaxcolor.data.transforms import decode

    written, skipped = [], []
    bar = tqdm(total=len(jobs), desc="colorize", unit="img", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        for start in range(0, len(jobs), batch_size):
            ready = []
            for job in jobs[start : start + batch_size]:
                try:
                    ready.append((job, decode(job.source)))
                except Exception as exc:  # noqa: BLE001 - any undecodable file is skipped
                    skipped.append((job.source, f"{type(exc).__name__}: {exc}"))
                    bar.update(1)
            if not ready:
                continue
            results = colorize_arrays(model, [rgb for _, rgb in ready], batch_size)
            for (job, rgb), out in zip(ready, results):
                os.makedirs(os.path.dirname(os.path.abspath(job.output)), exist_ok=True)
                images_lib.save_png(out, job.output)
                if compare:
                    images_lib.save_png(compare_strip(rgb, out), compare_path(job.output))
                written.append(job.output)
                bar.update(1)
    finally:
        bar.close()
    return Report(written, skipped)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m jaxcolor.colorize",
        description="Colorize pictures (files or folders, recursively) with a trained run.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    parser.add_argument("--workdir", required=True, help="the training run's directory")
    parser.add_argument("-o", "--out", required=True, metavar="OUT_DIR",
                        help="output folder (must not be inside an input folder)")
    parser.add_argument("--compare", action="store_true",
                        help="also write <name>_compare.png: original | gray | colorized")
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
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from absl import logging as absl_logging

    from jaxcolor.runs import load_colorizer

    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
        jobs = plan_outputs(find_inputs(args.inputs), args.out)
        check_outputs(args.inputs, jobs, args.out, args.compare)
        model = load_colorizer(args.workdir, args.step, args.temperature)
    except (UsageError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = colorize_files(model, jobs, args.compare, args.batch)
    for path, reason in report.skipped:
        print(f"skipped unreadable file {path} ({reason})", file=sys.stderr)
    print(f"colorized {len(report.written)} of {len(jobs)} files into {args.out} with "
          f"{args.workdir} step {model.step} ({model.image_size}x{model.image_size} model); "
          f"{len(report.skipped)} skipped")
    if not report.written:
        print("error: nothing could be colorized", file=sys.stderr)
        return EXIT_NOTHING_COLORIZED
    return 0


if __name__ == "__main__":
    sys.exit(main())
