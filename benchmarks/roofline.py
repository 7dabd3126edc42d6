"""Analytic roofline of the skip autoencoder's training step; one JSON line per device/dtype.

    bound examples/s = min(peak FLOP/s / FLOPs per example, memory B/s / bytes per example)

FLOPs per example: the hand count of the convs as jaxcolor computes them (2 FLOPs per
multiply-add; dec128 and dec64 as four 2x2 convs at the low resolution, 16/36 of a 3x3 conv on the
upsampled map), forward x3 for forward + input gradient + weight gradient (the usual estimate).
`reference_flops_per_example` is the same count for the plain architecture. Everything else (BatchNorm, LeakyReLU, pooling, loss, Adam)
is under 1% of the FLOPs and counted in bytes only.

Bytes per example, two estimates of the activation traffic to and from memory, each tensor of
N elements costing N * bytes-per-element (2 for bfloat16, 4 for float32) per pass:

* unfused: every op reads its inputs and writes its output once. Per conv+BN+LeakyReLU block
  with input X and output Y: forward conv reads X and writes Y, BN statistics read Y, normalize
  + LeakyReLU read Y and write Z (|X| + 4|Y|); backward LeakyReLU+BN read dZ and Y for the
  reductions, read them again and write dY, the input-gradient conv reads dY and writes dX, the
  weight-gradient conv reads X and dY (2|X| + 7|Y|): 3|X| + 11|Y| in all. Blocks without BN:
  3|X| + 6|Y|. dec128/dec64 read the low-resolution X and pay 4|Y| more for interleaving their
  four phase outputs and splitting dY back. Pooling and its gradient read and write their
  tensors; the concatenation is free (the model convolves the two parts separately).
* fused: the least a step can move: every activation written once and read once in the
  forward pass, read again for the weight gradient, each gradient written once and read once
  (convs with fused BN/activation prologues and epilogues and phase interleaving): 2|X| + 3|Y|
  per block.

The Adam update moves 4 bytes x 819,234 parameters x (param, grad, m, v read + param, m, v
written) = 7 passes per step, divided over the batch. Measured examples/s over the bound is the
fraction of the roofline reached.

    python benchmarks/roofline.py                      # H100: bf16 989 TFLOP/s, f32 67 / TF32 494
    python benchmarks/roofline.py --dtype bfloat16 --peak_tflops 989 --hbm_tbps 3.35 --batch 1024
    python benchmarks/roofline.py --measured_examples_per_s 12345 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from train_step import autoencoder_conv_layers, autoencoder_hand_flops  # noqa: E402

# H100 SXM dense peaks (NVIDIA's datasheet): bf16 tensor 989, TF32 tensor 494, FP32 67 TFLOP/s.
H100_DEFAULTS = [("bfloat16", 989.0, "bf16 tensor core"), ("float32", 67.0, "fp32 (no TF32)"),
                 ("float32", 494.0, "tf32 tensor core")]
BYTES = {"bfloat16": 2, "float32": 4}
PARAMS = 819_234


def activation_elements(size: int, width: float = 1.0):
    """Per example: (unfused, fused) element passes over all activations of one training step,
    for the model as jaxcolor computes it (dec128/dec64 convolve the low-resolution map in four
    phases and interleave the results; skip64 convolves its two inputs separately)."""
    layers = autoencoder_conv_layers(size, width)
    unfused = fused = 0
    for name, h, w, ci, co in layers:
        x, y = h * w * ci, h * w * co
        if name in ("dec128", "dec64"):
            x //= 4  # the input is the map before upsampling
            unfused += 4 * y  # interleave the phases (read + write) and split dY back (read + write)
        bn = name not in ("enc16", "out")
        unfused += 3 * x + (11 if bn else 6) * y
        fused += 2 * x + 3 * y
    by_name = {n: (h, w, co) for n, h, w, _, co in layers}
    # max-pools after enc32 and enc64: forward read + write, backward read dY (+ int8 index) and write dX
    for src in ("enc32", "enc64"):
        h, w, c = by_name[src]
        unfused += (h * w * c + h * w * c // 4) * 2
        fused += (h * w * c + h * w * c // 4) * 2
    return unfused, fused


def bound(dtype, peak_tflops, hbm_tbps, size, batch, width, note, measured=None):
    counts = autoencoder_hand_flops(size, width)
    flops = counts["conv_train_flops_per_example_x3_as_computed"]
    unfused, fused = activation_elements(size, width)
    b = BYTES[dtype]
    opt_bytes = 7 * 4 * PARAMS / batch
    out = {"model": "autoencoder", "size": size, "batch": batch, "width": width, "dtype": dtype,
           "peak_tflops": peak_tflops, "hbm_tbps": hbm_tbps, "peak_note": note,
           "flops_per_example": flops,
           "reference_flops_per_example": counts["conv_train_flops_per_example_x3"]}
    for kind, elems in (("unfused", unfused), ("fused", fused)):
        bytes_per_example = elems * b + opt_bytes
        compute_bound = peak_tflops * 1e12 / flops
        memory_bound = hbm_tbps * 1e12 / bytes_per_example
        out[f"bytes_per_example_{kind}"] = bytes_per_example
        out[f"arithmetic_intensity_{kind}"] = flops / bytes_per_example
        out[f"compute_bound_examples_per_s"] = compute_bound
        out[f"memory_bound_examples_per_s_{kind}"] = memory_bound
        out[f"bound_examples_per_s_{kind}"] = min(compute_bound, memory_bound)
        out[f"limited_by_{kind}"] = "compute" if compute_bound < memory_bound else "memory"
    if measured:
        out["measured_examples_per_s"] = measured
        out["fraction_of_bound_unfused"] = measured / out["bound_examples_per_s_unfused"]
        out["fraction_of_bound_fused"] = measured / out["bound_examples_per_s_fused"]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=256, help="only spreads the optimizer's bytes")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--dtype", choices=tuple(BYTES), default=None, help="one line for this dtype")
    p.add_argument("--peak_tflops", type=float, default=None)
    p.add_argument("--hbm_tbps", type=float, default=3.35)
    p.add_argument("--measured_examples_per_s", type=float, default=None)
    args = p.parse_args(argv)
    if args.dtype:
        peak = args.peak_tflops or {"bfloat16": 989.0, "float32": 67.0}[args.dtype]
        rows = [(args.dtype, peak, "given" if args.peak_tflops else "H100 default")]
    else:
        rows = H100_DEFAULTS
    for dtype, peak, note in rows:
        print(json.dumps(bound(dtype, peak, args.hbm_tbps, args.size, args.batch, args.width, note,
                               args.measured_examples_per_s)), flush=True)


if __name__ == "__main__":
    main()
