"""Time one training step of a colorizer; print one JSON line.

JAX (default): what `python -m jaxcolor.train` runs, built the same way: the package's config
(`jaxcolor.configs.default`, with the model, size, batch and dtype of the flags, Adam 1e-3 at a
constant rate, the reference loss), `jaxcolor.trainer.Trainer` (its compiled jit step over the
device mesh, state donated) and its initial state, on a fixed random batch already on the
devices. The compiled step is timed
after warm-up, `jax.block_until_ready` after every step; the median, 10th and 90th percentile of
the per-step times are reported, with the compile time, the training FLOPs per example that XLA's
cost analysis counts, and (autoencoder) a hand count of the conv FLOPs.

PyTorch (`--framework torch`, autoencoder only): the same autoencoder layer for layer, BatchNorm
momentum 0.01 (PyTorch's convention for Keras' 0.99) and eps 1e-3, LeakyReLU 0.3, nearest x2
upsampling, Adam 1e-3, the reference loss 2 ** mean_c |pred - target|; channels_last, optionally
`torch.compile` (`--torch_compile`). torch is imported only on this path.

    python benchmarks/train_step.py --model autoencoder --size 128 --batch 64 --steps 5 --warmup 2
    python benchmarks/train_step.py --framework torch --torch_compile --batch 64 --steps 5

XLA flags: `--cpu_flags` (default) appends `jaxcolor.perf.cpu_flags()` to XLA_FLAGS before JAX
starts (CPU-only flags; accelerators ignore them); `--no_cpu_flags` measures XLA's defaults;
`--xla_flags "..."` adds more. The flags in force are part of the JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

MODELS = ("autoencoder", "resnet50_seed", "resnet50_unet")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, default="autoencoder")
    p.add_argument("--framework", choices=("jax", "torch"), default="jax")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--width", type=float, default=1.0, help="autoencoder width multiplier")
    p.add_argument("--ops", default="auto",
                   help="autoencoder: how upsample-convs, concat and pooling are computed "
                        "(phase | im2col | plain | auto; jaxcolor.models.autoencoder.OPS)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    p.add_argument("--peak_tflops", type=float, default=0.0,
                   help="the device's peak TFLOP/s for this dtype; adds peak_fraction")
    p.add_argument("--no_cpu_flags", dest="cpu_flags", action="store_false",
                   help="do not apply jaxcolor.perf.cpu_flags() to XLA_FLAGS (JAX only): XLA's defaults")
    p.add_argument("--xla_flags", default="", help="extra XLA_FLAGS (JAX only)")
    p.add_argument("--torch_compile", action="store_true", help="torch.compile the step (torch)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--profile_dir", default="",
                   help="after timing, trace 3 steps with jax.profiler into this folder "
                        "(with a Perfetto JSON trace of the device kernels)")
    p.add_argument("--label", default="", help="free text copied into the JSON line")
    return p.parse_args(argv)


def _scaled(channels: int, width: float) -> int:
    """jaxcolor.models.autoencoder.scaled, repeated so the torch side needs no JAX/Flax."""
    return max(1, int(round(channels * width)))


# ---------------------------------------------------------------------------------------------
# Hand count of the skip autoencoder's conv FLOPs (multiply-add = 2 FLOPs).

def autoencoder_conv_layers(size: int, width: float = 1.0):
    """(name, H, W, C_in, C_out) of every 3x3 conv of the skip autoencoder at size x size x 1."""
    c = lambda n: _scaled(n, width)  # noqa: E731
    s, h, q = size, size // 2, size // 4
    return [
        ("enc16", s, s, 1, c(16)),
        ("enc32", s, s, c(16), c(32)),
        ("enc64", h, h, c(32), c(64)),
        ("enc128", q, q, c(64), c(128)),
        ("enc256", q, q, c(128), c(256)),
        ("dec128", h, h, c(256), c(128)),
        ("dec64", s, s, c(128), c(64)),
        ("skip64", s, s, c(64) + 1, c(64)),
        ("skip32", s, s, c(64), c(32)),
        ("out", s, s, c(32), 2),
    ]


def autoencoder_hand_flops(size: int, width: float = 1.0) -> dict:
    """Forward conv FLOPs per example, the usual x3 training estimate, and the exact conv count
    (forward + weight gradient everywhere + input gradient everywhere but the first layer)."""
    layers = autoencoder_conv_layers(size, width)
    fwd = [2 * hh * ww * 9 * ci * co for _, hh, ww, ci, co in layers]
    forward = sum(fwd)
    # As jaxcolor computes it: the convs after the two upsamplings (dec128, dec64) are folded
    # into four 2x2 convs at the low resolution (UpsampleConv), 16 instead of 36 MACs.
    folded = sum(f * 16 // 36 if name in ("dec128", "dec64") else f
                 for f, (name, *_) in zip(fwd, layers))
    return {
        "conv_fwd_flops_per_example": forward,
        "conv_train_flops_per_example_x3": 3 * forward,
        "conv_train_flops_per_example_exact": 3 * forward - fwd[0],
        "conv_train_flops_per_example_x3_as_computed": 3 * folded,
    }


# ---------------------------------------------------------------------------------------------

def _percentiles(times):
    times = sorted(times)
    pick = lambda q: times[min(len(times) - 1, max(0, round(q * (len(times) - 1))))]  # noqa: E731
    return statistics.median(times), pick(0.1), pick(0.9)


def _cpu_seconds():
    """User + system CPU time of this process (all threads), for a load-independent view."""
    t = os.times()
    return t.user + t.system


def _common(args, times, compile_s, flops_xla, extra):
    med, p10, p90 = _percentiles(times)
    out = {
        "framework": args.framework,
        "model": args.model,
        "size": args.size,
        "batch": args.batch,
        "dtype": args.dtype,
        "steps": len(times),
        "warmup": args.warmup,
        "examples_per_s": args.batch / med,
        "step_s_median": med,
        "step_s_p10": p10,
        "step_s_p90": p90,
        "compile_s": compile_s,
        "flops_per_example": flops_xla,
    }
    if args.model == "autoencoder":
        out.update(autoencoder_hand_flops(args.size, args.width))
        out["width"] = args.width
    flops = flops_xla or out.get("conv_train_flops_per_example_x3")
    if flops:
        out["achieved_tflops"] = flops * args.batch / med / 1e12
        out["achieved_tflops_basis"] = "flops_per_example" if flops_xla else "hand_x3"
        if args.peak_tflops > 0:
            out["peak_fraction"] = out["achieved_tflops"] / args.peak_tflops
    if args.model == "autoencoder":  # the reference architecture's FLOPs per second of step
        out["effective_tflops_reference_flops"] = (
            out["conv_train_flops_per_example_x3"] * args.batch / med / 1e12)
    out.update(extra)
    out["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    out["cpu_count"] = os.cpu_count()
    out["host"] = platform.node()
    if args.label:
        out["label"] = args.label
    return out


# ---------------------------------------------------------------------------------------------
# JAX

def run_jax(args):
    from jaxcolor import perf

    if args.cpu_flags:
        perf.apply_cpu_flags(args.xla_flags)
    elif args.xla_flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()

    import jax
    import numpy as np

    from jaxcolor.configs.default import get_config
    from jaxcolor.trainer import Trainer, init_key

    # What `python -m jaxcolor.train` runs: the package's config, Trainer (model, optimizer,
    # compiled jit step over the device mesh, donated state) and its initial state.
    config = get_config()
    config.model.name, config.model.width, config.model.ops = args.model, args.width, args.ops
    config.dtype, config.batch_size, config.data.image_size = args.dtype, args.batch, args.size
    config.optimizer.update(name="adam", learning_rate=1e-3, schedule="constant",
                            warmup_steps=0, weight_decay=0.0, grad_clip=0.0)
    trainer = Trainer(config)
    model = trainer.model
    state, _ = trainer.init_state(init_key(0))
    rng = np.random.default_rng(0)
    batch = trainer.put({
        "L": rng.uniform(0, 1, (args.batch, args.size, args.size, 1)).astype(np.float32),
        "ab": rng.uniform(-0.5, 0.5, (args.batch, args.size, args.size, 2)).astype(np.float32),
    })
    key = jax.random.key(1)
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    n_stats = sum(x.size for x in jax.tree.leaves(state.batch_stats))

    jitted = trainer.train_step
    t0 = time.perf_counter()
    compiled = jitted.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    cost = cost or {}
    flops_total = float(cost.get("flops", 0.0))
    bytes_total = float(cost.get("bytes accessed", 0.0))

    for _ in range(args.warmup):
        state, metrics = compiled(state, batch, key)
        jax.block_until_ready((state, metrics))
    times = []
    cpu0 = _cpu_seconds()
    for _ in range(args.steps):
        t = time.perf_counter()
        state, metrics = compiled(state, batch, key)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t)
    cpu_per_step = (_cpu_seconds() - cpu0) / max(1, args.steps)
    if args.profile_dir:
        with jax.profiler.trace(args.profile_dir, create_perfetto_trace=True):
            for _ in range(3):
                state, metrics = compiled(state, batch, key)
            jax.block_until_ready((state, metrics))
    loss = float(metrics["loss"])

    dev = jax.devices()[0]
    extra = {
        "device_kind": dev.device_kind,
        "platform": dev.platform,
        "device_count": jax.device_count(),
        "jax_version": jax.__version__,
        "jaxlib_version": __import__("jaxlib").__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "params": n_params,
        "batch_stats": n_stats,
        "xla_flops_per_step": flops_total,
        "xla_bytes_accessed_per_step": bytes_total,
        "final_loss": loss,
        "ops": getattr(model, "ops", None),
        "cpu_s_per_step": cpu_per_step,
    }
    return _common(args, times, compile_s, flops_total / args.batch if flops_total else None, extra)


# ---------------------------------------------------------------------------------------------
# PyTorch (imported only here)

def run_torch(args):
    if args.model != "autoencoder":
        raise SystemExit("--framework torch implements the autoencoder only")
    import numpy as np
    import torch
    from torch import nn
    import torch.nn.functional as F

    if args.threads:
        torch.set_num_threads(args.threads)
    c = lambda n: _scaled(n, args.width)  # noqa: E731

    class Block(nn.Module):
        def __init__(self, cin, cout, bn=True):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=True)
            self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01) if bn else None

        def forward(self, x):
            x = self.conv(x)
            if self.bn is not None:
                x = self.bn(x)
            return F.leaky_relu(x, 0.3)

    class SkipAutoencoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc16, self.enc32 = Block(1, c(16), bn=False), Block(c(16), c(32))
            self.enc64, self.enc128, self.enc256 = Block(c(32), c(64)), Block(c(64), c(128)), Block(c(128), c(256))
            self.dec128, self.dec64 = Block(c(256), c(128)), Block(c(128), c(64))
            self.skip64, self.skip32 = Block(c(64) + 1, c(64)), Block(c(64), c(32))
            self.out = nn.Conv2d(c(32), 2, 3, padding=1)

        def forward(self, inp):
            x = self.enc32(self.enc16(inp))
            x = F.max_pool2d(x, 2)
            x = F.max_pool2d(self.enc64(x), 2)
            x = self.enc256(self.enc128(x))
            x = self.dec128(F.interpolate(x, scale_factor=2, mode="nearest"))
            x = self.dec64(F.interpolate(x, scale_factor=2, mode="nearest"))
            x = torch.cat([x, inp], dim=1)
            x = self.skip32(self.skip64(x))
            return torch.tanh(self.out(x))

    torch.manual_seed(0)
    fmt = torch.channels_last
    model = SkipAutoencoder().to(memory_format=fmt).train()
    n_params = sum(p.numel() for p in model.parameters())
    n_stats = sum(b.numel() for n, b in model.named_buffers() if "running" in n)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    L = torch.from_numpy(rng.uniform(0, 1, (args.batch, 1, args.size, args.size)).astype(np.float32))
    ab = torch.from_numpy(rng.uniform(-0.5, 0.5, (args.batch, 2, args.size, args.size)).astype(np.float32))
    L, ab = L.contiguous(memory_format=fmt), ab.contiguous(memory_format=fmt)
    autocast = args.dtype == "bfloat16"

    def loss_of(L, ab):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            pred = model(L)
        return (2.0 ** (pred.float() - ab).abs().mean(dim=1)).mean()

    fwd_bwd = torch.compile(loss_of) if args.torch_compile else loss_of

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = fwd_bwd(L, ab)
        loss.backward()
        opt.step()
        return loss

    t0 = time.perf_counter()
    loss = train_step()  # first step: torch.compile traces and compiles here
    compile_s = time.perf_counter() - t0
    for _ in range(args.warmup):
        loss = train_step()
    times = []
    cpu0 = _cpu_seconds()
    for _ in range(args.steps):
        t = time.perf_counter()
        loss = train_step()
        times.append(time.perf_counter() - t)
    cpu_per_step = (_cpu_seconds() - cpu0) / max(1, args.steps)
    extra = {
        "device_kind": "cpu",
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_compile": bool(args.torch_compile),
        "memory_format": "channels_last",
        "params": n_params,
        "batch_stats": n_stats,
        "final_loss": float(loss.detach()),
        "cpu_s_per_step": cpu_per_step,
    }
    return _common(args, times, compile_s, None, extra)


def main(argv=None):
    args = parse_args(argv)
    if not os.environ.get("PYTHONPATH"):  # PYTHONPATH may point at another jaxcolor tree
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = run_torch(args) if args.framework == "torch" else run_jax(args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
