"""`python -m jaxcolor.evaluate --workdir RUN [--split validation|test] [--step N] [--config.data.KEY=VALUE]`

Scores a trained run on a split: PSNR, SSIM, ab errors, AuC (plain and, with `--ab_prior`,
class-rebalanced) and colorfulness (see `jaxcolor.metrics`), for the model and for the gray
baseline (a = b = 0) in the same pass, at the model's resolution. The batches go through the same
padded `pipeline.eval_batches` and the same device mesh as training's evaluation; the metric sums
stay on the devices until the end. Prints a table (with the step used and why: asked for, the
best by validation loss, or the latest), then writes the record to `--out FILE` (default
`RUN/eval_<split>_<step>.json`, atomically: an earlier record is replaced only by a complete new
one). A split none of whose images could be read is an error (exit 1, nothing written), never a
score; one partly unreadable reports how many it skipped. `evaluate(workdir, ...)` is the same
as a Python function.

`--config.data.FIELD=VALUE` overrides a data field of the run's saved config, with train's
syntax (`--config.data.path=DIR` evaluates the run on another folder); the other sections
describe the checkpoint and cannot change. Exit status: 0 done; 1 nothing could be evaluated (no
readable image) or the record could not be written; 2 a usage error (a flag, an override, a
missing run or data path), one line naming it, before anything is written.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys

import jax
import jax.numpy as jnp

from jaxcolor import ab_prior as ab_prior_lib
from jaxcolor import color, losses, metrics, parallel, run_record, runs
from jaxcolor import config as config_lib
from jaxcolor.data import pipeline

SPLITS = ("validation", "test", "train")
# The config sections a command line may override: the rest describes the trained checkpoint.
OVERRIDABLE = ("data",)
COLUMNS = (  # (key, header, format)
    ("psnr", "PSNR dB", "{:.2f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("ab_mae", "ab MAE", "{:.2f}"),
    ("ab_rmse", "ab RMSE", "{:.2f}"),
    ("auc", "AuC", "{:.4f}"),
    ("auc_rebalanced", "AuC rebal.", "{:.4f}"),
    ("colorfulness", "CF", "{:.2f}"),
    ("colorfulness_ratio", "CF ratio", "{:.3f}"),
    ("colorfulness_delta", "dCF", "{:.2f}"),
    ("wrong_hue", "wrong hue", "{:.4f}"),
)


def split_spec(config, split: str) -> str:
    """'validation' / 'test' / 'train' -> the split the run's config names for it; any other
    string is taken as a split spec itself (e.g. '[:100]')."""
    fields = {"validation": "val_split", "test": "test_split", "train": "train_split"}
    return config.data[fields[split]] if split in fields else split


def eval_step(apply, variables, batch, prior=None, ab_scale: float = 1.0):
    """Model and gray-baseline metric sums of one batch (L/100, ab/128 -> LAB units).
    `apply(variables, L/100) -> ab/128` is the model's inference-mode forward pass; `ab_scale`
    multiplies its ab (the RGB metrics clip to the gamut as always): the simplest way to make a
    model more or less colorful, the line a vivid recipe must beat at equal colorfulness."""
    pred = apply(variables, batch["L"])
    if ab_scale != 1.0:
        pred = pred * ab_scale
    l = batch["L"] * color.L_SCALE
    ab_true = batch["ab"] * color.AB_SCALE
    return {
        "model": metrics.batch_sums(l, ab_true, pred * color.AB_SCALE, batch["weight"], prior),
        "gray": metrics.batch_sums(l, ab_true, jnp.zeros_like(ab_true), batch["weight"], prior),
    }


def evaluate(workdir: str, split: str = "validation", step: int | None = None, overrides=(),
             ab_prior: str | None = None, write: bool = True, mesh=None,
             temperature: float | None = None, ab_scale: float = 1.0) -> dict:
    """Evaluates the best (or given) checkpoint of `workdir` on `split`; returns the record
    {'model': {...}, 'gray': {...}, 'count', 'skipped', ...}, also written (atomically) to
    `RUN/eval_<split>_<step>.json` when `write`. `temperature` is the annealed-mean T of a classification run (default: its
    config's). `ab_scale` multiplies the predicted ab (`eval_step`).
    `pipeline.NothingEvaluatedError` if no image of the split could be read."""
    mesh = parallel.make_mesh() if mesh is None else mesh
    repl, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
    run = runs.load_run(workdir, step, overrides, sharding=repl, temperature=temperature)
    config = run.config
    parallel.check_batch(config.batch_size, mesh)
    prior = ab_prior_lib.load(ab_prior) if ab_prior else None  # training's prior type and bins
    spec = split_spec(config, split)

    compiled = jax.jit(functools.partial(eval_step, run.apply, prior=prior, ab_scale=ab_scale),
                       in_shardings=(repl, data), out_shardings=repl)
    share = pipeline.per_process_batch(config.batch_size, jax.process_count())
    records = _records(config, spec, workdir)
    sums = None
    for batch in pipeline.eval_batches(config.data, spec, share, jax.process_index(),
                                       jax.process_count(), records):
        sums = metrics.add(sums, compiled(run.variables, parallel.to_global(batch, data)))
    host = parallel.fetch(sums)
    count = int(round(float(host["model"]["count"])))
    skipped = pipeline.count_skipped(count, records, spec)  # none read: an error, not a score
    result = {
        "workdir": os.path.abspath(workdir),
        "split": split,
        "split_spec": spec,
        "step": run.step,
        "step_reason": run.step_reason,
        "image_size": int(config.data.image_size),
        "crop": int(config.data.crop),
        "data": run_record.dataset_info(config.data),  # what was read, as run.json's `dataset`
        "rgb_data_range": metrics.DATA_RANGE,
        "ab_prior": os.path.abspath(ab_prior) if ab_prior else None,
        "loss": config.loss.name,
        "loss_terms": losses.terms_of(config.loss),
        "temperature": float(config.loss.temperature) if losses.is_classification(config.loss)
        else None,
        "ab_scale": float(ab_scale),
        "model": metrics.summarize(host["model"]),
        "gray": metrics.summarize(host["gray"]),
    }
    result["count"] = result["model"]["count"]
    result["skipped"] = skipped
    if write and jax.process_index() == 0:
        write_result(result, result_path(workdir, split, run.step, temperature, ab_scale))
    return result


def write_result(result: dict, path: str) -> None:
    """Writes the record atomically: a failed write leaves an earlier file as it was."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _records(config, spec: str, workdir: str):
    """The split's records, with a hint when a relative data path no longer resolves (config
    paths are relative to where training was started)."""
    try:
        return pipeline.eval_records(config.data, spec)
    except FileNotFoundError as exc:
        path = config.data.path
        if path and not os.path.isabs(path):
            raise FileNotFoundError(
                f"{exc}; {os.path.join(workdir, 'config.json')} records a relative data path, "
                f"resolved from the current directory {os.getcwd()}: run from where training "
                "ran or pass --config.data.path=DIR") from None
        raise


def result_path(workdir: str, split: str, step: int, temperature: float | None = None,
                ab_scale: float = 1.0) -> str:
    """RUN/eval_<split>_<step>.json; with an explicit --temperature, eval_<split>_<step>_T<T>.json,
    with --ab_scale, ..._x<scale> (so variants do not overwrite each other)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", split).strip("_") or "split"
    suffix = "" if temperature is None else f"_T{temperature:g}"
    suffix += "" if ab_scale == 1.0 else f"_x{ab_scale:g}"
    return os.path.join(workdir, f"eval_{safe}_{step}{suffix}.json")


def format_table(result: dict) -> str:
    """Rows model / gray, one column per metric, then what the numbers were measured on."""
    cols = [c for c in COLUMNS if c[0] in result["model"]]
    rows = [("", *[h for _, h, _ in cols])]
    for name in ("model", "gray"):
        rows.append((name, *[f.format(result[name][k]) for k, _, f in cols]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                       enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    size = result["image_size"]
    lines.append(
        f"{result['count']} images of split {result['split']} ({result['split_spec']})"
        + (f", {result['skipped']} unreadable ones skipped," if result.get("skipped") else "")
        + f" at {size}x{size} (model resolution), step {result['step']}"
        + (f" ({result['step_reason']})" if result.get("step_reason") else "")
        + f". RGB metrics on sRGB in [0, 1] "
        f"(data range {result['rgb_data_range']}), true L + predicted ab; ab errors in LAB units; "
        f"AuC over ab thresholds 0..{metrics.AUC_MAX_THRESHOLD:.0f}; CF = colorfulness (0..255 "
        f"RGB; ground truth {result['model']['colorfulness_true']:.2f}); gray = a=b=0 baseline."
        + (f" Classification decoded by the annealed mean at T = {result['temperature']:g}."
           if result.get("temperature") is not None else "")
        + (f" Predicted ab x {result['ab_scale']:g}." if result.get("ab_scale", 1.0) != 1.0
           else "")
    )
    return "\n".join(lines)


def parse_args(argv):
    """(the options, the `--config.data.KEY=VALUE` overrides as (KEY, VALUE) pairs); a bad flag
    is a usage error (exit 2). The earlier `--data.KEY=VALUE` spelling is still read."""
    parser = config_lib.command_parser(
        "python -m jaxcolor.evaluate",
        "Evaluate a trained run: model vs gray baseline on a split.",
        epilog="Any --config.data.KEY=VALUE overrides that field of the run's config, e.g. "
               "--config.data.path=DIR or --config.data.eval_examples=0 (the whole split).")
    parser.add_argument("--workdir", required=True, help="the training run's directory")
    parser.add_argument("--split", default="validation",
                        help="validation | test | train (the run's splits) or a split spec "
                             "such as '[:100]'")
    parser.add_argument("--step", type=int, default=None,
                        help="checkpoint step (default: the best by validation loss)")
    parser.add_argument("--ab_prior", default=None,
                        help="an ab prior file of jaxcolor.ab_prior (a run's "
                             "RUN/data/ab_prior.npz, or ab_prior.save of ab_prior.from_ab): "
                             "adds the class-rebalanced AuC")
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="where the JSON record goes (default: RUN/eval_<split>_<step>.json)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="classification runs: annealed-mean temperature T (0 = the mode, "
                             "1 = the mean; default: the run's config.loss.temperature, 0.38)")
    parser.add_argument("--ab_scale", type=float, default=1.0,
                        help="multiply the predicted ab by this before scoring (the scaled-L1 "
                             "baseline of a colorfulness comparison; default 1)")
    return config_lib.parse_with_overrides(parser, argv, legacy_sections=OVERRIDABLE)


def main(argv=None) -> int:
    """The command; a usage error exits (SystemExit, status 2) rather than returning."""
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    if args.out and os.path.isdir(args.out):
        config_lib.usage_error(f"--out {args.out}: is a folder; expected a file name for the "
                               "JSON record")
    try:  # the overrides are checked against the saved config first: one line naming the flag
        config_lib.apply_config_overrides(runs.read_config(args.workdir), overrides, OVERRIDABLE)
        result = evaluate(args.workdir, args.split, args.step, dict(overrides), args.ab_prior,
                          write=False, temperature=args.temperature, ab_scale=args.ab_scale)
    except pipeline.NothingEvaluatedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as exc:
        config_lib.usage_error(exc)
    if jax.process_index() != 0:
        return 0
    print(format_table(result), flush=True)  # first: a failed write below loses no numbers
    path = args.out or result_path(args.workdir, args.split, result["step"], args.temperature,
                                   args.ab_scale)
    try:
        write_result(result, path)
    except OSError as exc:
        print(f"error: could not write {path} ({exc.strerror or exc}); the table above is the "
              "result; pass --out FILE to write it elsewhere", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
