"""Where the time of the compiled autoencoder train step goes, per XLA op; JSON lines.

Compiles the same step as train_step.py, runs it under `jax.profiler` for --steps steps, reads
the trace back (`jax.profiler.ProfileData`) and sums the duration of every XLA:CPU thunk event
by name, divided by the steps. With the HLO text dumped by `XLA_FLAGS=--xla_dump_to=DIR
--xla_dump_hlo_as_text` (this script sets that up in a temporary directory), each op is tied to
its shape and the JAX op it came from (e.g. `dec128/conv/conv_general_dilated`).

Caveat: thunks that hand work to a thread pool (XLA's Eigen convolutions) may end their event
before the pool finishes, so their time is under-counted; YNNPACK fusions and XLA's own loop
fusions are timed whole. Per-op totals over both threads can exceed the wall time.

    python benchmarks/profile_step.py --batch 8 --top 30
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, os.path.dirname(HERE))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--no_cpu_flags", dest="cpu_flags", action="store_false")
    p.add_argument("--dir", default="", help="where the trace and HLO dump go (default: a temp dir)")
    args = p.parse_args(argv)
    workdir = args.dir or tempfile.mkdtemp(prefix="jaxcolor_profile_")
    dump = os.path.join(workdir, "hlo")
    from jaxcolor import perf

    if args.cpu_flags:
        perf.apply_cpu_flags()
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_dump_to={dump} --xla_dump_hlo_as_text").strip()

    import functools

    import jax
    import jax.numpy as jnp
    import ml_collections
    import numpy as np
    from jax.profiler import ProfileData

    from jaxcolor import losses, step
    from jaxcolor.models import build_model

    model = build_model(ml_collections.ConfigDict({"name": "autoencoder", "width": 1.0}))
    opt = ml_collections.ConfigDict(dict(name="adam", learning_rate=1e-3, schedule="constant",
                                         warmup_steps=0, b1=0.9, b2=0.999, weight_decay=0.0,
                                         grad_clip=0.0))
    tx, _ = step.make_optimizer(opt, 1)
    state = jax.jit(lambda r: step.create_state(model, tx, r, args.size))(jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = {"L": jnp.asarray(rng.uniform(0, 1, (args.batch, args.size, args.size, 1)).astype(np.float32)),
             "ab": jnp.asarray(rng.uniform(-.5, .5, (args.batch, args.size, args.size, 2)).astype(np.float32))}
    f = jax.jit(functools.partial(step.train_step, loss_fn=losses.reference_loss), donate_argnums=0)
    key = jax.random.key(1)
    state, m = f(state, batch, key)
    jax.block_until_ready(m)
    trace_dir = os.path.join(workdir, "trace")
    jax.profiler.start_trace(trace_dir)
    for _ in range(args.steps):
        state, m = f(state, batch, key)
        jax.block_until_ready(m)
    jax.profiler.stop_trace()

    hlo_files = [h for h in glob.glob(os.path.join(dump, "*train_step*after_optimizations.txt"))]
    hlo = open(sorted(hlo_files)[-1]).read() if hlo_files else ""
    data = ProfileData.from_file(sorted(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True))[-1])
    skip = ("ThunkExecutor", "block_until_ready", "stop_trace", "SlinkyThreadPool", "Await")
    total = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if line.name == "python":
                continue
            for ev in line.events:
                if not any(s in ev.name for s in skip):
                    total[ev.name] += ev.duration_ns
    all_ms = sum(total.values()) / args.steps / 1e6
    print(json.dumps({"batch": args.batch, "size": args.size, "steps": args.steps,
                      "sum_of_op_ms_per_step": all_ms, "xla_flags": os.environ["XLA_FLAGS"],
                      "workdir": workdir}), flush=True)
    for name, ns in total.most_common(args.top):
        m = re.search(r"^\s*(?:ROOT )?%" + re.escape(name) + r" = (\S+) .*?op_name=\"([^\"]*)\"", hlo, re.M)
        print(json.dumps({"op": name, "ms_per_step": ns / args.steps / 1e6,
                          "share": ns / args.steps / 1e6 / all_ms if all_ms else None,
                          "shape": m.group(1) if m else None,
                          "source": m.group(2) if m else None}), flush=True)


if __name__ == "__main__":
    main()
