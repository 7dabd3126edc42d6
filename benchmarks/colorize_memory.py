"""Peak memory of `jaxcolor.colorize` on one large photo: one JSON line.

    python benchmarks/colorize_memory.py [--rev REV] [--width 6000 --height 4000] [--format png]
                                         [--compare] [--image_size 64]

Writes a synthetic smooth-gradient photo (24 megapixels by default) to a temporary folder, then
colorizes it in a fresh child process with a tiny random-weight autoencoder (width 1/8; the
model's size does not matter here, the full-resolution work does) through the code's own
`plan_outputs` + `colorize_files`. After building the model and colorizing a small picture
(compiling it; `setup_peak_mb`, ru_maxrss) the child resets its peak RSS (`/proc/self/clear_refs`)
and notes its RSS (`baseline_mb`: Python, JAX, XLA, the model); `peak_mb` is the peak RSS
(VmHWM) while the photo is colorized, and `bytes_per_pixel` = (peak - baseline) / pixels is what
the picture itself costs. (Without clear_refs, ru_maxrss is used, and a peak below the
compilation's is hidden.)

`--rev REV` runs `jaxcolor/colorize.py` as it was at git revision REV (read with `git show`,
loaded as a separate module; the rest of the package is the working tree's) instead of the
working tree's, e.g. `--rev 4d43fcd` for the code before strips.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_photo(path: str, width: int, height: int) -> None:
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], axis=-1)
    rgb = (rgb * 200 + 30 + 20 * np.sin(xx / 97.0)[..., None]).clip(0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def load_module(rev: str | None, tmp: str):
    if rev is None:
        from jaxcolor import colorize

        return colorize
    import importlib.util

    source = subprocess.run(["git", "show", f"{rev}:jaxcolor/colorize.py"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    path = os.path.join(tmp, "colorize_at_rev.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("colorize_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024.0  # kB


def reset_peak() -> bool:
    """Resets this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0), so that the
    peak measured next is the photo's and not the model compilation's, which is larger than the
    new code's whole photo."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(args) -> dict:
    import jax.numpy as jnp
    import numpy as np
    from PIL import Image

    from jaxcolor import losses, runs
    from jaxcolor.configs.default import get_config
    from jaxcolor.models import build_model

    tmp = os.path.dirname(args.photo)
    colorize = load_module(args.rev, tmp)
    config = get_config()
    config.model.width = 0.125
    module = build_model(config.model, config.dtype, **losses.head(config.loss))
    size = args.image_size
    import jax

    variables = module.init(jax.random.key(0), jnp.zeros((1, size, size, 1)), train=False)
    model = runs.Colorizer.from_module(module, variables, size,
                                       decode=losses.make_decode(config.loss))
    warm = os.path.join(tmp, "warm.png")
    Image.fromarray(np.full((40, 30, 3), 128, np.uint8)).save(warm)
    out = os.path.join(tmp, "out")
    import inspect  # the code before --max_pixels has no limit to lift

    no_size_limit = ({"max_pixels": 0} if "max_pixels" in
                     inspect.signature(colorize.colorize_files).parameters else {})
    for photo, name in ((warm, "warm"), (args.photo, "photo")):
        jobs = colorize.plan_outputs(colorize.find_inputs([photo]), os.path.join(out, name))
        if name == "photo":
            setup_peak = maxrss_mb()
            exact = reset_peak()
            baseline = status_mb("VmRSS") if exact else setup_peak
            start = time.perf_counter()
        report = colorize.colorize_files(model, jobs, compare=args.compare, batch_size=1,
                                         progress=False, **no_size_limit)
        assert report.written, report.skipped
    seconds = time.perf_counter() - start
    peak = status_mb("VmHWM") if exact else maxrss_mb()
    return {"peak_source": "VmHWM after clear_refs" if exact else "ru_maxrss",
            "setup_peak_mb": round(setup_peak, 1),
            "baseline_mb": round(baseline, 1), "peak_mb": round(peak, 1),
            "bytes_per_pixel": round((peak - baseline) * 2**20 / (args.width * args.height), 1),
            "colorize_s": round(seconds, 2)}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default=None, help="git revision of jaxcolor/colorize.py to "
                                                    "measure (default: the working tree's)")
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--format", default="png", choices=("png", "jpg"))
    parser.add_argument("--compare", action="store_true", help="also write the comparison")
    parser.add_argument("--image_size", type=int, default=64, help="the model's square size")
    parser.add_argument("--photo", help=argparse.SUPPRESS)  # set in the child
    parser.add_argument("--make", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.photo:
        if args.make:
            make_photo(args.photo, args.width, args.height)
        else:
            print(json.dumps(child(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        photo = os.path.join(tmp, f"photo.{args.format}")
        command = [sys.executable, os.path.abspath(__file__), "--photo", photo,
                   "--width", str(args.width), "--height", str(args.height),
                   "--image_size", str(args.image_size)]
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        # the photo is made in a process of its own: a child inherits its parent's peak RSS
        subprocess.run(command + ["--make"], check=True, env=env)
        command += ["--rev", args.rev] if args.rev else []
        command += ["--compare"] if args.compare else []
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode:
            sys.exit(f"the child failed ({done.returncode}):\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        file_kb = os.path.getsize(photo) / 1024
    print(json.dumps({
        "benchmark": "colorize_memory", "code": f"git {args.rev}" if args.rev else "working tree",
        "width": args.width, "height": args.height, "megapixels": args.width * args.height / 1e6,
        "format": args.format, "file_kb": round(file_kb, 1), "compare": args.compare,
        "image_size": args.image_size, **result, "cpu": cpu_name(), "cpus": os.cpu_count(),
        "loadavg": round(os.getloadavg()[0], 2),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }))


if __name__ == "__main__":
    main()
