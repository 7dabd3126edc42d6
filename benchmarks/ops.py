"""Per-op timing of the skip autoencoder's pieces under jax.jit; one JSON line per case.

Each case is one jitted function on arrays shaped as in the autoencoder at --size and --batch:
the 3x3 convs at every resolution (forward, input gradient, weight gradient; NHWC/HWIO and
NCHW/OIHW), BatchNorm in training mode (forward and forward+backward), the three nearest x2
upsampling formulations, the max-pool and output_stride pool formulations, the concatenation and
LeakyReLU, each forward and forward+backward. "model" marks the formulation jaxcolor.models.autoencoder uses now. The median of --reps timed calls (after one warm-up call) is reported.

    python benchmarks/ops.py --batch 8 --only conv
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution python benchmarks/ops.py --only conv

`--cpu_flags` applies `jaxcolor.perf.cpu_flags()` first (off by default here, so that XLA_FLAGS
alone says what ran).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--only", default="", help="comma-separated substrings of case names to run")
    p.add_argument("--layouts", default="NHWC,NCHW", help="conv layouts to time")
    p.add_argument("--cpu_flags", action="store_true", help="apply jaxcolor.perf.cpu_flags()")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.cpu_flags:
        from jaxcolor import perf

        perf.apply_cpu_flags()
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcolor.models import autoencoder as ae
    from train_step import autoencoder_conv_layers

    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype]
    rng = np.random.default_rng(0)
    B, S = args.batch, args.size
    only = [s for s in args.only.split(",") if s]

    def arr(*shape):
        return jnp.asarray(rng.standard_normal(shape).astype(np.float32), dtype)

    def bench(name, fn, *inputs, flops=None, **info):
        if only and not any(s in name for s in only):
            return
        f = jax.jit(fn)
        t0 = time.perf_counter()
        compiled = f.lower(*inputs).compile()
        compile_s = time.perf_counter() - t0
        jax.block_until_ready(compiled(*inputs))
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            jax.block_until_ready(compiled(*inputs))
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        out = {"op": name, "batch": B, "dtype": args.dtype, "ms_median": med * 1e3,
               "ms_min": min(times) * 1e3, "compile_s": compile_s, **info}
        if flops:
            out["gflop"] = flops / 1e9
            out["gflop_per_s"] = flops / med / 1e9
        out["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        out["xla_flags"] = os.environ.get("XLA_FLAGS", "")
        print(json.dumps(out), flush=True)

    # --- convolutions: forward, input gradient, weight gradient ------------------------------
    def wgrad_taps(x, g):
        """dK[i, j] = sum_bhw xpad[b, h+i, w+j, :]^T g[b, h, w, :]: nine (Ci x N) @ (N x Co)."""
        b, h, w, ci = x.shape
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        g2 = g.reshape(-1, g.shape[-1])
        taps = [xp[:, i:i + h, j:j + w, :].reshape(-1, ci).T @ g2 for i in range(3) for j in range(3)]
        return jnp.stack(taps).reshape(3, 3, ci, g.shape[-1])

    def wgrad_im2col(x, g):
        """The same as one (9 Ci x N) @ (N x Co) product on an im2col copy of x."""
        b, h, w, ci = x.shape
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        cols = jnp.concatenate([xp[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)], -1)
        return (cols.reshape(-1, 9 * ci).T @ g.reshape(-1, g.shape[-1])).reshape(3, 3, ci, -1)

    for layout in [s for s in args.layouts.split(",") if s]:
        dn = ("NHWC", "HWIO", "NHWC") if layout == "NHWC" else ("NCHW", "OIHW", "NCHW")
        for lname, h, w, ci, co in autoencoder_conv_layers(S):
            if layout == "NHWC":
                x, k, ct = arr(B, h, w, ci), arr(3, 3, ci, co), arr(B, h, w, co)
            else:
                x, k, ct = arr(B, ci, h, w), arr(co, ci, 3, 3), arr(B, co, h, w)
            conv = lambda x, k, dn=dn: jax.lax.conv_general_dilated(  # noqa: E731
                x, k, (1, 1), "SAME", dimension_numbers=dn)
            fl = 2 * B * h * w * 9 * ci * co
            meta = dict(layer=lname, layout=layout, shape=[B, h, w, ci, co])
            bench(f"conv_fwd/{layout}/{lname}", conv, x, k, flops=fl, **meta)
            bench(f"conv_dgrad/{layout}/{lname}",
                  lambda x, k, ct, conv=conv: jax.vjp(lambda x: conv(x, k), x)[1](ct)[0],
                  x, k, ct, flops=fl, **meta)
            bench(f"conv_wgrad/{layout}/{lname}",
                  lambda x, k, ct, conv=conv: jax.vjp(lambda k: conv(x, k), k)[1](ct)[0],
                  x, k, ct, flops=fl, **meta)
            if layout == "NHWC":  # the weight gradient as matrix products
                bench(f"conv_wgrad_taps/{layout}/{lname}", wgrad_taps, x, ct, flops=fl, **meta)
                bench(f"conv_wgrad_im2col/{layout}/{lname}", wgrad_im2col, x, ct, flops=fl, **meta)

    def fwd_bwd(f):
        """x, ct -> (f(x), the input gradient of <f(x), ct>)."""
        def g(x, ct):
            y, vjp = jax.vjp(f, x)
            return y, vjp(ct)[0]
        return g

    # --- BatchNorm (training mode, Keras momentum/epsilon), LeakyReLU ---------------------------
    for h, c in ((S, 32), (S // 2, 64), (S // 4, 256), (S // 2, 128), (S, 64)):
        x = arr(B, h, h, c)
        bn = nn.BatchNorm(use_running_average=False, momentum=ae.BN_MOMENTUM, epsilon=ae.BN_EPSILON,
                          dtype=dtype)
        v = bn.init(jax.random.key(0), x)
        f = lambda x, v=v, bn=bn: bn.apply(v, x, mutable=["batch_stats"])[0]  # noqa: E731
        bench(f"bn_fwd/{h}x{c}", f, x, shape=[B, h, h, c])
        bench(f"bn_fwdbwd/{h}x{c}", fwd_bwd(f), x, x, shape=[B, h, h, c])
        lrelu = lambda x: nn.leaky_relu(x, ae.LEAKY_SLOPE)  # noqa: E731
        bench(f"leaky_fwdbwd/{h}x{c}", fwd_bwd(lrelu), x, x, shape=[B, h, h, c])

    # --- nearest x2 upsampling ----------------------------------------------------------------
    def up_broadcast(x):
        b, h, w, c = x.shape
        return jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)

    def up_repeat(x):
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)

    def up_resize(x):
        b, h, w, c = x.shape
        return jax.image.resize(x, (b, 2 * h, 2 * w, c), "nearest")

    for h, c in ((S // 4, 256), (S // 2, 128)):
        x, ct = arr(B, h, h, c), arr(B, 2 * h, 2 * h, c)
        for name, f in (("broadcast", up_broadcast), ("repeat", up_repeat), ("resize", up_resize),
                        ("model", ae.upsample2x)):
            bench(f"up_fwd/{name}/{h}x{c}", f, x, shape=[B, h, h, c])
            bench(f"up_fwdbwd/{name}/{h}x{c}", fwd_bwd(f), x, ct, shape=[B, h, h, c])

    # --- 3x3 conv of the x2 upsampled map: conv(upsample(x)) vs the phase-folded UpsampleConv ---
    for name, h, c_in, c_out in (("dec128", S // 4, 256, 128), ("dec64", S // 2, 128, 64)):
        x = arr(B, h, h, c_in)
        conv = nn.Conv(c_out, (3, 3), padding="SAME", dtype=dtype)
        v = conv.init(jax.random.key(0), up_broadcast(x))
        up = ae.UpsampleConv(c_out, dtype=dtype)
        fl = 2 * B * (2 * h) ** 2 * 9 * c_in * c_out  # FLOPs of the conv on the upsampled map
        meta = dict(layer=name, shape=[B, h, h, c_in, c_out])

        def train_both(v, x, f):
            y, vjp = jax.vjp(f, v, x)
            return vjp(y)  # gradients w.r.t. kernel, bias and input

        ref = lambda v, x, conv=conv: conv.apply(v, up_broadcast(x))  # noqa: E731
        new = lambda v, x, up=up: up.apply(v, x)  # noqa: E731
        bench(f"upconv_fwd/reference/{name}", ref, v, x, flops=fl, **meta)
        bench(f"upconv_fwd/model/{name}", new, v, x, flops=fl, **meta)
        bench(f"upconv_fwdbwd/reference/{name}", lambda v, x, f=ref: train_both(v, x, f), v, x,
              flops=3 * fl, **meta)
        bench(f"upconv_fwdbwd/model/{name}", lambda v, x, f=new: train_both(v, x, f), v, x,
              flops=3 * fl, **meta)

    # --- 2x2 max-pool -------------------------------------------------------------------------
    from jaxcolor.models.autoencoder import max_pool_2x2 as pool_new  # the model's formulation

    def pool_window(x):
        return nn.max_pool(x, (2, 2), (2, 2))

    def pool_reshape_max(x):
        b, h, w, c = x.shape
        return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

    for h, c in ((S, 32), (S // 2, 64)):
        x, ct = arr(B, h, h, c), arr(B, h // 2, h // 2, c)
        for name, f in (("reduce_window", pool_window), ("reshape_max", pool_reshape_max),
                        ("model", pool_new)):
            bench(f"pool_fwd/{name}/{h}x{c}", f, x, shape=[B, h, h, c])
            bench(f"pool_fwdbwd/{name}/{h}x{c}", fwd_bwd(f), x, ct, shape=[B, h, h, c])

    # --- output_stride pooling (mean over s x s blocks before a reduced-resolution head) ------
    from jaxcolor.ab_bins import pool as stride_pool  # the model's (and the loss's) formulation

    for s in (2, 4):
        x, ct = arr(B, S, S, 32), arr(B, S // s, S // s, 32)
        for name, f in (("avg_pool", lambda x, s=s: nn.avg_pool(x, (s, s), strides=(s, s))),
                        ("model", lambda x, s=s: stride_pool(x, s))):
            bench(f"stride_pool_fwdbwd/{name}/{s}", fwd_bwd(f), x, ct, shape=[B, S, S, 32])

    # --- concatenation of the input ------------------------------------------------------------
    x, inp, ct = arr(B, S, S, 64), arr(B, S, S, 1), arr(B, S, S, 65)
    cat = lambda x, inp: jnp.concatenate([x, inp], axis=-1)  # noqa: E731
    bench("concat_fwd", cat, x, inp, shape=[B, S, S, 65])
    bench("concat_fwdbwd", lambda x, inp, ct: jax.vjp(lambda x: cat(x, inp), x)[1](ct)[0],
          x, inp, ct, shape=[B, S, S, 65])


if __name__ == "__main__":
    main()
