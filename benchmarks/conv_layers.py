"""Time each convolution of the skip autoencoder alone, against its own roofline; one JSON line.

The H100 trace of the train step (benchmarks/RESULTS.md) puts the convolution kernels at 24.5 ms
of a 50.8 ms step, 3.1x what their FLOPs and bytes allow, but a kernel trace does not say which
layer a kernel belongs to. This script answers that: every conv of the model, as `ops` computes
it (the same Flax modules), is compiled on its own at the model's shapes and timed forward and
forward + backward (input gradient where the model needs one, weight gradient), with the layer's
FLOPs and its least bytes (forward reads X and writes Y; the input gradient reads dY and writes
dX; the weight gradient reads X and dY) turned into a roofline time where a peak is given.

    python benchmarks/conv_layers.py --size 128 --batch 512 --dtype bfloat16 \
        --peak_tflops 989 --hbm_tbps 3.35 --no_cpu_flags
    python benchmarks/conv_layers.py --size 16 --batch 2 --steps 2   # a quick check on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from train_step import autoencoder_conv_layers  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--ops", default="phase", help="jaxcolor.models.autoencoder.OPS key")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--steps", type=int, default=20, help="timed calls per layer and direction")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--peak_tflops", type=float, default=0.0, help="adds roofline_ms per layer")
    p.add_argument("--hbm_tbps", type=float, default=0.0, help="memory bandwidth, TB/s")
    p.add_argument("--no_cpu_flags", dest="cpu_flags", action="store_false",
                   help="do not apply jaxcolor.perf.cpu_flags() (as benchmarks/train_step.py)")
    p.add_argument("--label", default="")
    return p.parse_args(argv)


def layer_modules(size: int, width: float, ops: str, dtype):
    """(name, module, inputs, output shape) for every conv of SkipAutoencoder(ops=ops), where
    inputs are (shape without the batch, whether the model needs its gradient, multiply-adds per
    output pixel and input channel as computed: 9, or 4 for a phase-folded upsample-conv)."""
    import flax.linen as nn

    from jaxcolor.models import autoencoder as ae

    upsample_form, concat_form, _ = ae.OPS[ops]
    im2col = concat_form == "split_im2col"
    rows = []
    for name, h, w, c_in, c_out in autoencoder_conv_layers(size, width):
        if name in ("dec128", "dec64"):  # the conv of upsample2x(x): x at half the resolution
            taps = 9 if upsample_form == "materialize" else 4
            inputs = [((h // 2, w // 2, c_in), True, taps)]
            module = ae.UpsampleConv(c_out, dtype=dtype) if upsample_form == "phase" else (
                nn.Sequential([ae.upsample2x, nn.Conv(c_out, (3, 3), padding="SAME", dtype=dtype)]))
        elif name == "skip64":  # the decoder's map and the 1-channel model input
            inputs = [((h, w, c_in - 1), True, 9), ((h, w, 1), False, 9)]
            module = ae.SplitInputConv(c_out, dtype, im2col)
        else:
            inputs = [((h, w, c_in), name != "enc16", 9)]
            module = (ae.SplitInputConv(c_out, dtype, True) if im2col and c_in == 1
                      else nn.Conv(c_out, (3, 3), padding="SAME", dtype=dtype))
        rows.append((name, module, inputs, (h, w, c_out)))
    return rows


def _median_ms(fn, args, steps, warmup):
    import jax

    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main(argv=None):
    args = parse_args(argv)
    if args.cpu_flags:
        from jaxcolor import perf

        perf.apply_cpu_flags("")
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcolor.models import autoencoder as ae

    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype]
    item = jnp.dtype(dtype).itemsize
    rng = np.random.default_rng(0)
    layers, totals = [], {"forward_ms": 0.0, "train_ms": 0.0, "roofline_train_ms": 0.0}
    for name, module, inputs, out_shape in layer_modules(args.size, args.width, args.ops, dtype):
        shapes = [s for s, _, _ in inputs]
        grads = [g for _, g, _ in inputs]
        xs = [jnp.asarray(rng.uniform(-1, 1, (args.batch, *s)), dtype) for s in shapes]
        takes_list = isinstance(module, ae.SplitInputConv)
        call = lambda p, *v, m=module, t=takes_list: m.apply(p, list(v) if t else v[0])  # noqa: E731
        params = jax.jit(lambda key, m=module, t=takes_list: m.init(key, xs if t else xs[0]))(
            jax.random.key(0))
        dy = jnp.asarray(rng.standard_normal((args.batch, *out_shape)), dtype)
        forward = jax.jit(call)

        def train(p, *v, call=call, dy=dy, grads=grads):
            _, vjp = jax.vjp(call, p, *v)
            d_params, *d_inputs = vjp(dy)
            return d_params, [d for d, g in zip(d_inputs, grads) if g]  # XLA drops the others

        train = jax.jit(train)
        fwd_ms = _median_ms(forward, (params, *xs), args.steps, args.warmup)
        train_ms = _median_ms(train, (params, *xs), args.steps, args.warmup)
        n_y = int(np.prod(out_shape))
        train_flops = elements = 0
        for shape, grad, taps in inputs:  # forward, weight gradient (, input gradient)
            train_flops += (3 if grad else 2) * 2 * taps * n_y * shape[-1] * args.batch
            elements += (3 if grad else 2) * int(np.prod(shape))  # X twice (, dX once)
        elements += 3 * n_y  # Y written, dY read twice
        train_bytes = item * args.batch * elements
        row = {"layer": name, "input": [list(s) for s in shapes], "output": list(out_shape),
               "forward_ms": fwd_ms, "train_ms": train_ms,
               "train_gflop": train_flops / 1e9, "train_min_mb": train_bytes / 1e6}
        if args.peak_tflops > 0 and args.hbm_tbps > 0:
            compute_ms = 1e3 * train_flops / (args.peak_tflops * 1e12)
            memory_ms = 1e3 * train_bytes / (args.hbm_tbps * 1e12)
            row["roofline_train_ms"] = max(compute_ms, memory_ms)
            row["bound_by"] = "compute" if compute_ms > memory_ms else "memory"
            row["train_over_roofline"] = train_ms / row["roofline_train_ms"]
            totals["roofline_train_ms"] += row["roofline_train_ms"]
        totals["forward_ms"] += fwd_ms
        totals["train_ms"] += train_ms
        layers.append(row)
    dev = jax.devices()[0]
    print(json.dumps({"benchmark": "conv_layers", "size": args.size, "batch": args.batch,
                      "width": args.width, "ops": args.ops, "dtype": args.dtype,
                      "steps": args.steps, "device_kind": dev.device_kind,
                      "jax_version": jax.__version__, "label": args.label,
                      "peak_tflops": args.peak_tflops, "hbm_tbps": args.hbm_tbps,
                      **totals, "layers": layers}))


if __name__ == "__main__":
    main()
