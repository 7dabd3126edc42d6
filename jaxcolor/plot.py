"""`python -m jaxcolor.plot --workdir RUN [--out DIR] [--num_images N] [--step N] [--config.data.KEY=VALUE]`

Figures of a run, as PNG files (matplotlib, Agg backend, no display needed), in `RUN/plots/`:

* `loss.png`: training loss per logged step and validation loss per evaluation;
* `val_metrics.png`: validation ab errors over steps, the model against the gray baseline
  (`val_ab_mae` vs `val_gray_ab_mae`, `val_ab_rmse` vs `val_gray_ab_rmse`);
* `examples.png`: the first N validation images as gray input | prediction | ground truth, by
  the restored best (or `--step`) checkpoint;
* `ab_channels.png`: the a and b channels of those images, prediction beside ground truth, on a
  diverging colormap centered on 0 (the reference work's channel maps).

The first two need only `metrics.jsonl`; the last two restore the model and read their images
from the run's saved data config, which `--config.data.KEY=VALUE` overrides as for
`jaxcolor.evaluate` (e.g. `--config.data.path=DIR`). Training also logs the example grid to
TensorBoard at every evaluation. Exit status: 0 done; 2 a usage error (a flag, an override, a
missing run or metrics file), one line naming it.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from jaxcolor import color, images as images_lib
from jaxcolor import config as config_lib

LOSS_PNG, VAL_PNG, EXAMPLES_PNG, AB_PNG = "loss.png", "val_metrics.png", "examples.png", "ab_channels.png"
OVERRIDABLE = ("data",)  # the config sections --config.* may change: the rest is the checkpoint


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the rows of metrics.jsonl that have `key`."""
    pairs = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
    if not pairs:
        return np.zeros((0,)), np.zeros((0,))
    steps, values = zip(*pairs)
    return np.asarray(steps), np.asarray(values, np.float64)


def plot_losses(rows: list[dict], path: str) -> str:
    """Training loss (every logged step) and validation loss (every evaluation)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, style in (("loss", "training", "-"), ("val_loss", "validation", "o-")):
        steps, values = series(rows, key)
        if len(steps):
            ax.plot(steps, values, style, label=label)
    if not ax.lines:
        plt.close(fig)
        raise ValueError("metrics.jsonl has no 'loss' or 'val_loss' rows to plot")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_val_metrics(rows: list[dict], path: str) -> str:
    """Validation ab MAE and RMSE (LAB units) over steps, model vs the gray baseline."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (name, label) in zip(axes, (("ab_mae", "mean |ab error|"), ("ab_rmse", "RMS ab error"))):
        for key, legend, style in ((f"val_{name}", "model", "o-"),
                                   (f"val_gray_{name}", "gray baseline (a=b=0)", "s--")):
            steps, values = series(rows, key)
            if len(steps):
                ax.plot(steps, values, style, label=legend)
        ax.set_xlabel("step")
        ax.set_ylabel(f"{label}, LAB units")
        ax.set_title(f"validation {label}")
        ax.grid(alpha=0.3)
        ax.legend()
    if not any(ax.lines for ax in axes):
        plt.close(fig)
        raise ValueError("metrics.jsonl has no validation rows (val_ab_mae) to plot yet")
    return _save(fig, path)


def plot_examples(l_input, ab_pred, ab_true, path: str) -> str:
    """Gray input | prediction | ground truth, one row per image (model units in)."""
    plt = _pyplot()
    n = len(l_input)
    gray = images_lib.rgb_from_model(l_input, np.zeros_like(ab_pred))
    pred = images_lib.rgb_from_model(l_input, ab_pred)
    true = images_lib.rgb_from_model(l_input, ab_true)
    fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n), squeeze=False)
    for i in range(n):
        for j, (title, img) in enumerate((("gray input", gray), ("prediction", pred),
                                          ("ground truth", true))):
            axes[i, j].imshow(img[i])
            axes[i, j].axis("off")
            if i == 0:
                axes[i, j].set_title(title)
    return _save(fig, path)


def plot_ab_channels(ab_pred, ab_true, path: str) -> str:
    """a and b channels (LAB units), prediction beside ground truth, on one symmetric diverging
    scale so that equal colors are equal shades across the panels."""
    plt = _pyplot()
    pred = np.asarray(ab_pred) * color.AB_SCALE
    true = np.asarray(ab_true) * color.AB_SCALE
    limit = max(float(np.abs(pred).max()), float(np.abs(true).max()), 1.0)
    n = len(pred)
    fig, axes = plt.subplots(n, 4, figsize=(8, 2 * n + 0.6), squeeze=False)
    titles = ("a predicted", "a true", "b predicted", "b true")
    image = None
    for i in range(n):
        for j, img in enumerate((pred[i, ..., 0], true[i, ..., 0], pred[i, ..., 1], true[i, ..., 1])):
            image = axes[i, j].imshow(img, cmap="RdBu_r", vmin=-limit, vmax=limit)
            axes[i, j].axis("off")
            if i == 0:
                axes[i, j].set_title(titles[j])
    fig.colorbar(image, ax=axes, orientation="horizontal", fraction=0.04, pad=0.02,
                 label="LAB units (a: green- / red+, b: blue- / yellow+)")
    return _save(fig, path)


def _save(fig, path: str) -> str:
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def validation_examples(workdir: str, num_images: int, step: int | None = None, overrides=()):
    """(L/100, predicted ab/128, true ab/128) of the first `num_images` validation images."""
    from jaxcolor import runs
    from jaxcolor.data import pipeline

    config = runs.apply_overrides(runs.read_config(workdir), overrides)
    model = runs.load_colorizer(workdir, step)
    records = pipeline.eval_records(config.data, config.data.val_split)[:num_images]
    batch = next(pipeline.eval_batches(config.data, config.data.val_split, len(records),
                                       records=records))
    n = int(batch["weight"].sum())
    pred = model.predict_ab(batch["L"])
    return batch["L"][:n], pred[:n], batch["ab"][:n]


def make_plots(workdir: str, out_dir: str | None = None, num_images: int = 6,
               step: int | None = None, overrides=()) -> list[str]:
    """Writes the four figures; returns their paths."""
    from jaxcolor.logbook import read_metrics

    out_dir = out_dir or os.path.join(workdir, "plots")
    rows = read_metrics(workdir)
    written = [plot_losses(rows, os.path.join(out_dir, LOSS_PNG)),
               plot_val_metrics(rows, os.path.join(out_dir, VAL_PNG))]
    if num_images > 0:
        l_input, pred, true = validation_examples(workdir, num_images, step, overrides)
        written.append(plot_examples(l_input, pred, true, os.path.join(out_dir, EXAMPLES_PNG)))
        written.append(plot_ab_channels(pred, true, os.path.join(out_dir, AB_PNG)))
    return written


def main(argv=None) -> int:
    """The command; a usage error exits (SystemExit, status 2) rather than returning."""
    parser = config_lib.command_parser(
        "python -m jaxcolor.plot", "PNG figures of a training run.",
        epilog="Any --config.data.KEY=VALUE overrides that field of the run's config for the "
               "example figures, e.g. --config.data.path=DIR.")
    parser.add_argument("--workdir", required=True, help="the training run's directory")
    parser.add_argument("--out", default=None, help="output folder (default: RUN/plots)")
    parser.add_argument("--num_images", type=int, default=6,
                        help="validation images in the example figures (0: none, no model)")
    parser.add_argument("--step", type=int, default=None,
                        help="checkpoint for the examples (default: the best)")
    args, overrides = config_lib.parse_with_overrides(
        parser, sys.argv[1:] if argv is None else argv, legacy_sections=OVERRIDABLE)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
        if overrides:  # checked against the saved config first: one line naming the flag
            from jaxcolor import runs

            config_lib.apply_config_overrides(runs.read_config(args.workdir), overrides,
                                              OVERRIDABLE)
        paths = make_plots(args.workdir, args.out, args.num_images, args.step, dict(overrides))
    except (FileNotFoundError, ValueError) as exc:
        config_lib.usage_error(exc)
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
