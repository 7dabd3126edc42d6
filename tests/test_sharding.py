"""Training and evaluation over 8 simulated CPU devices compute what one device computes.

JAX fixes the device count at start-up, so everything runs in one subprocess started with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (`SCRIPT`, run once per module). It trains
the same initial state on the same batches with jit on 1 device, jit on 8 and pmap on 8, for SGD
and Adam, with a second network in the state (the linear probe of `jaxcolor.companions`: its own
parameters, BatchNorm statistics and Adam state, compared leaf by leaf like the colorizer's),
evaluates, round-trips checkpoints between pmap and jit (the probe's state included), and writes
what it measured (every metric of every step; per leaf of params, batch_stats and opt_state the movement
|final - initial| and the 1-vs-8 difference; ...) to a JSON file. The tests below hold those
numbers against tolerances, so a failure names the quantity, the run and the leaf.

Tolerances are absolute per group of leaves (relative for metrics and evaluation sums), a few
times above the differences measured on XLA:CPU with jax 0.10.2, and every group must also move
by at least `MIN_MOVEMENT_RATIO` (100) times its tolerance, so that a run that barely trains (the
warm-up's learning rate near 0, a step that does nothing) cannot pass by agreeing on nothing: the
runs use a constant learning rate without warm-up. Measured on an AMD EPYC (Zen 4, AVX-512), SGD
over 4 steps and Adam over 2 (see `STEPS`); max over leaves; diff: 1 device vs the worse of jit x8
and pmap x8:

  group                  SGD lr 1e-2: move / diff / tol   Adam lr 1e-3: move / diff / tol
  params (all others)    1.1e-2 / 3.0e-8 / 1e-7           2.0e-3 / 5.6e-6 / 1.5e-5
  params, zero-gradient  8e-10 (tight tol above)          1.4e-3 / 1.8e-3 / 4.0e-3 (bound)
  batch_stats mean       8.5e-2 / 7.5e-9 / 1e-7           4.3e-2 / 9.8e-6 / 2.0e-5 (bound)
  batch_stats var        3.9e-2 / 6.0e-8 / 2e-7           1.9e-2 / 1.2e-7 / 2e-7
  opt_state trace        4.1e-1 / 9.3e-8 / 5e-7           -
  opt_state mu           -                                2.3e-2 / 2.0e-8 / 3e-7
  opt_state nu           -                                3.0e-5 / 7.3e-12 / 1e-10
  probe (own Adam)       see PROBE_TOL                    see PROBE_TOL
  step, counts           exact (4)                        exact (2)
  metrics (relative)     diff <= 1.8e-7, tol 3e-6 (probe_loss included); loss 1.364 -> 1.354
                         (SGD), 1.364 -> 1.351 (Adam)
  eval sums (relative)   diff <= 9.6e-8, tol 5e-7; count exact

Adam's parameter tolerance is the loosest because Adam divides each gradient by its own running
magnitude: rounding-level differences in small gradients become relative differences in the
update. The zero-gradient conv biases in front of each BatchNorm and the running means after
them: see `zero_grad_biases` and `tolerance`.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

# SGD trains 4 steps; Adam 2: Adam divides each gradient by its own running magnitude, so from
# the second step on, rounding differences in gradients that change sign become lr-sized
# differences in a few parameters, and through them in later gradients. Measured, AMD EPYC (Zen 4,
# AVX-512), largest parameter difference 1 device vs 8: 5.6e-6 after 2 steps, 2.4e-5 after 4
# (7.4e-6 after 4 on an Intel Xeon): after 4 steps Adam's comparison would measure that noise,
# not the sharding. SGD's 4 steps are the multi-step evidence; Adam's 2 show its moments, count
# and bias correction handled the same way.
STEPS = {"sgd": 4, "adam": 2}
LR = {"sgd": 1e-2, "adam": 1e-3}
MIN_MOVEMENT_RATIO = 100

SCRIPT = textwrap.dedent(
    """
    import json, sys, tempfile
    import jax, numpy as np
    from jax.sharding import Mesh
    sys.path.insert(0, "tests")
    from conftest import tiny_config
    from jaxcolor import checkpoint, parallel, trainer as trainer_lib
    from jaxcolor.data import pipeline

    out_path, STEPS, LR = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    assert jax.device_count() == 8, jax.devices()
    KEY = jax.random.key(0, impl="rbg")
    rng = np.random.default_rng(0)
    batches = [{"L": rng.random((16, 16, 16, 1), np.float32),
                "ab": (rng.random((16, 16, 16, 2), np.float32) - 0.5)}
               for _ in range(max(STEPS.values()) + 1)]
    RUNS = (("1 device", "jit", 1), ("jit x8", "jit", 8), ("pmap x8", "pmap", 8))
    from jaxcolor.models import autoencoder
    report = {"train": {}, "init": {}, "bn_momentum": autoencoder.BN_MOMENTUM}

    def config(optimizer, mode, batch_size=16):
        # A learning rate that trains from the first step: constant, no warm-up.
        return tiny_config(**{"batch_size": batch_size, "parallel": mode,
                              "optimizer.name": optimizer, "optimizer.schedule": "constant",
                              "optimizer.warmup_steps": 0, "optimizer.learning_rate": LR[optimizer],
                              "data.sample_eval_examples": 24, "probe.enabled": True})

    def mesh(n):
        return Mesh(np.asarray(jax.devices()[:n]), (parallel.DATA_AXIS,))

    def flat(tree):
        return {jax.tree_util.keystr(p): np.asarray(x)
                for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}

    def abstract_of(trainer):
        # What trainer.init_state returns as its abstract state, without compiling an init.
        return trainer.with_sharding(jax.eval_shape(trainer.init_fn, KEY))

    def place(trainer, host):
        # One host state (NumPy) as this trainer's global replicated state: every run starts from
        # the same values, with the trainer's own apply_fn (pmap's BatchNorm has an axis name).
        leaves = [parallel.full_to_global(np.asarray(x), trainer.repl)
                  for x in jax.tree.leaves(host)]
        return jax.tree.unflatten(jax.tree.structure(abstract_of(trainer)), leaves)

    def host(trainer, state):
        return parallel.fetch(trainer.to_global_form(state))

    def floats(metrics):
        return {k: float(v) for k, v in metrics.items()}

    def bitwise(a, b):
        # Leaves of two trees that differ in dtype, shape or any bit.
        fa, fb = flat(a), flat(b)
        bad = sorted(set(fa) ^ set(fb))
        for k in sorted(set(fa) & set(fb)):
            x, y = fa[k], fb[k]
            if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                bad.append(k)
        return bad

    trainers = {}
    for optimizer in ("sgd", "adam"):
        for name, mode, n in RUNS:
            trainers[optimizer, name] = trainer_lib.Trainer(config(optimizer, mode), mesh(n))
        # One compiled init per optimizer, shared by the three runs: on 1 device for SGD, on 8
        # (the pmap trainer's) for Adam, and the two inits are compared below.
        init_on = "1 device" if optimizer == "sgd" else "pmap x8"
        state, _ = trainers[optimizer, init_on].init_state(KEY)
        init = parallel.fetch(state)
        report["init"][optimizer] = {"params": flat(init.params),
                                     "batch_stats": flat(init.batch_stats)}
        runs = {}
        for name, mode, n in RUNS:
            t = trainers[optimizer, name]
            state, steps = t.to_step_form(place(t, init)), []
            for i, b in enumerate(batches[:STEPS[optimizer]]):
                state, metrics = t.train_step(state, t.put(b), jax.random.key(i))
                steps.append(floats(t.fetch(metrics)))
            final = host(t, state)
            runs[name] = {"final": flat(final), "tree": final, "metrics": steps, "state": state}
            print(f"trained {optimizer} {name}", flush=True)
        ref, start = runs["1 device"]["final"], flat(init)
        report["train"][optimizer] = {
            "metrics": {name: r["metrics"] for name, r in runs.items()},
            "leaves": {k: {"movement": float(np.abs(ref[k].astype(np.float64) - start[k]).max()),
                           "final_absmax": float(np.abs(ref[k]).max()),
                           "diff": {name: float(np.abs(ref[k].astype(np.float64)
                                                       - r["final"][k]).max())
                                    for name, r in runs.items() if name != "1 device"},
                           "movement_l2": float(np.linalg.norm(ref[k].astype(np.float64)
                                                               - start[k])),
                           "diff_l2": {name: float(np.linalg.norm(ref[k].astype(np.float64)
                                                                  - r["final"][k]))
                                       for name, r in runs.items() if name != "1 device"}}
                       for k in ref},
        }
        states = {name: r["state"] for name, r in runs.items()}

    # Evaluation (the Adam trainers): the same state on each; 21 records = 16 + 5 in batches of
    # 16, so the second batch has 11 padded rows (pmap: devices 2-7 hold padding, 3-7 only it).
    ref_state = runs["1 device"]["tree"]
    t1 = trainers["adam", "1 device"]
    records = pipeline.eval_records(t1.config.data, t1.config.data.val_split)[:21]
    weight = np.array([1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0], np.float32)
    direct = dict(batches[-1], weight=weight)  # padded rows hold real-looking data
    report["eval"] = {}
    for name, mode, n in RUNS:
        t = trainers["adam", name]
        s = t.to_step_form(place(t, ref_state))
        report["eval"][name] = {"summary": t.evaluate(s, records),
                                "sums": floats(t.fetch(t.eval_step(s, t.put(direct))))}
    report["eval_records"], report["eval_direct_count"] = len(records), float(weight.sum())

    # Checkpoints: written under pmap x8, restored under jit x8 and jit x1; written under jit x8,
    # restored under pmap x8. Then one more step from each restored state and from the original.
    P, J8, J1 = (trainers["adam", name] for name in ("pmap x8", "jit x8", "1 device"))
    original = states["pmap x8"]
    saved = host(P, original)
    nxt, nxt_key = batches[-1], jax.random.key(len(batches) - 1)

    def step(t, state):
        # One more train step from a global state (donated: the caller keeps no reference).
        state, metrics = t.train_step(t.to_step_form(state), t.put(nxt), nxt_key)
        return host(t, state), floats(t.fetch(metrics))

    ck = report["checkpoint"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        manager = checkpoint.make_manager(tmp, keep=3, async_save=False)
        try:
            checkpoint.save(manager, 1, P.to_global_form(original), {}, {}, None)
            checkpoint.wait(manager, 1)
            for label, t in (("pmap x8 -> jit x8", J8), ("pmap x8 -> jit x1", J1)):
                restored = checkpoint.restore(manager, 1, abstract_of(t))[0]
                shardings = {x.sharding for x in jax.tree.leaves(restored)}
                entry = ck[label] = {"mismatch": bitwise(parallel.fetch(restored), saved),
                                     "sharded_as_trainer": shardings == {t.repl}}
                if t is J8:
                    checkpoint.save(manager, 2, restored, {}, {}, None)
                    checkpoint.wait(manager, 2)
                from_restored, m_restored = step(t, restored)
                from_original, m_original = step(t, place(t, saved))
                entry["step_mismatch"] = bitwise(from_restored, from_original)
                entry["step_metrics"] = [m_restored, m_original]
            restored = checkpoint.restore(manager, 2, abstract_of(P))[0]
            entry = ck["jit x8 -> pmap x8"] = {"mismatch": bitwise(parallel.fetch(restored), saved)}
            from_restored, m_restored = step(P, restored)
            state, metrics = P.train_step(original, P.put(nxt), nxt_key)
            entry["step_mismatch"] = bitwise(from_restored, host(P, state))
            entry["step_metrics"] = [m_restored, floats(P.fetch(metrics))]
        finally:
            checkpoint.close(manager)

    # A batch the devices cannot split evenly.
    report["indivisible"] = {}
    for mode in ("jit", "pmap"):
        for label, m in (("mesh of 8", mesh(8)), ("default mesh", None)):
            try:
                trainer_lib.Trainer(config("adam", mode, batch_size=12), m)
                error = None
            except ValueError as exc:
                error = str(exc)
            report["indivisible"][f"{mode}, {label}"] = error

    def jsonable(x):
        if isinstance(x, dict):
            return {k: jsonable(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [jsonable(v) for v in x]
        if isinstance(x, np.ndarray):
            return x.tolist()
        if isinstance(x, np.generic):
            return x.item()
        return x

    with open(out_path, "w") as f:
        json.dump(jsonable(report), f)
    print("OK")
    """
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharding") / "report.json"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out), json.dumps(STEPS), json.dumps(LR)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    with open(out) as f:
        return json.load(f)


RUN_NAMES = ("jit x8", "pmap x8")
# Absolute tolerance per group of leaves and optimizer (measured differences: module docstring).
# The probe (a companion network, trained by its own Adam whichever the colorizer's optimizer)
# has groups of its own; measured (difference of 1 device vs the worse of jit x8 and pmap x8, of
# a group's largest movement): params 3.4e-8 of 1.2e-2, mu 1.1e-6 of 0.33, nu 4.6e-8 of 1.9e-2,
# running mean 1.9e-9 of 8.3e-3, running var equal (of 3.4e-2).
PROBE_TOL = {"probe.params": 1e-7, "probe.batch_stats.mean": 1e-8,
             "probe.batch_stats.var": 1e-8, "probe.opt_state.mu": 3e-6,
             "probe.opt_state.nu": 1.5e-7}
TOL = {
    "sgd": {"params": 1e-7, "batch_stats.mean": 1e-7, "batch_stats.var": 2e-7,
            "opt_state.trace": 5e-7, **PROBE_TOL},
    "adam": {"params": 1.5e-5, "batch_stats.mean": None, "batch_stats.var": 2e-7,
             "opt_state.mu": 3e-7, "opt_state.nu": 1e-10, **PROBE_TOL},
}
METRIC_RTOL = 3e-6  # relative; measured <= 7.3e-7 (grad_norm, Adam), loss and ab_mae 2.7e-7
EVAL_RTOL = 5e-7  # relative; measured <= 9.6e-8
BN_MOMENTUM = 0.99  # jaxcolor.models.autoencoder.BN_MOMENTUM (the script reports it; checked)


def group(path):
    """The tolerance group of a leaf path as jax.tree_util.keystr writes it; a companion's leaves
    (the probe's: `.companions['probe']...`) form groups of their own, `probe.params` etc."""
    m = re.fullmatch(r"\.companions\['(\w+)'\](\..*)", path)
    if m:
        inner = group(m.group(2))
        return inner if inner == "integer" else f"{m.group(1)}.{inner}"
    if path in (".step",) or path.endswith(".count"):
        return "integer"
    if path.startswith(".params["):
        return "params"
    m = re.fullmatch(r"\.batch_stats\[.*\]\['(mean|var)'\]", path)
    if m:
        return f"batch_stats.{m.group(1)}"
    m = re.fullmatch(r"\.opt_state\[\d+\]\.(\w+)\[.*", path)
    if m:
        return f"opt_state.{m.group(1)}"
    raise AssertionError(f"leaf {path} belongs to no tolerance group: give it one")


def zero_grad_biases(leaves):
    """The conv biases right in front of a BatchNorm: BatchNorm subtracts the batch mean, so their
    gradient is exactly 0 in exact arithmetic and float rounding noise (~1e-10) in practice."""
    out = []
    for path in leaves:
        m = re.fullmatch(r"\.params\['(\w+)'\]\['conv'\]\['bias'\]", path)
        if m and f".params['{m.group(1)}']['bn']['scale']" in leaves:
            out.append(path)
    return out


def adam_step_bound(steps, b1=0.9, b2=0.999):
    """The most one Adam step can move a parameter, in units of the learning rate, within the
    first `steps` steps whatever the gradients: Cauchy-Schwarz on the bias-corrected moments,
    |m_hat| / sqrt(v_hat) <= sqrt(sum_i a_i^2 / c_i) (a, c: the EMA weights), 1.007 for 4 steps."""
    worst = 0.0
    for t in range(1, steps + 1):
        a = [(1 - b1) * b1 ** (t - i) / (1 - b1 ** t) for i in range(1, t + 1)]
        c = [(1 - b2) * b2 ** (t - i) / (1 - b2 ** t) for i in range(1, t + 1)]
        worst = max(worst, sum(x * x / y for x, y in zip(a, c)) ** 0.5)
    return worst


def tolerance(optimizer, path, zero_grad):
    """Adam, on the zero-gradient biases: Adam divides their noise by its own magnitude, so each
    run takes (up to) learning-rate-sized steps in a direction set by the rounding, and two runs
    can end up to 2 * lr * bound * steps apart. That is where the gap between Adam runs comes from;
    the biases do not change what a training step computes (BatchNorm removes them), which
    `test_zero_gradient_biases_are_zero_gradient` checks. The running means of the BatchNorms
    after them average `mean(x + b)` with weight (1 - momentum) per step, so they may differ by
    (1 - momentum) * sum_t 2 * lr * bound * t on top of the tight tolerance of the variances."""
    g = group(path)
    if optimizer != "adam":
        return TOL[optimizer][g]
    steps = STEPS["adam"]
    lr, k = LR["adam"], adam_step_bound(steps)
    if path in zero_grad:
        return 2 * lr * k * steps
    if g == "batch_stats.mean":
        return TOL["adam"]["batch_stats.var"] + (1 - BN_MOMENTUM) * sum(
            2 * lr * k * t for t in range(steps))
    return TOL["adam"][g]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_train_step_metrics_match_at_every_step(report, optimizer):
    runs = report["train"][optimizer]["metrics"]
    one = runs["1 device"]
    assert len(one) == STEPS[optimizer]
    keys = set(one[0])
    assert {"loss", "ab_mae", "grad_norm", "finite"} <= keys, keys
    for key in sorted(keys - {"finite"}):
        values = [m[key] for m in one]
        scale = max(abs(v) for v in values)
        movement = max(values) - min(values)
        assert movement > MIN_MOVEMENT_RATIO * METRIC_RTOL * scale, (
            f"{optimizer}: metric {key} barely changes over {STEPS[optimizer]} steps ({values}): the "
            "comparison below would not show a difference in how it is computed")
    for name in RUN_NAMES:
        for i, (a, b) in enumerate(zip(one, runs[name], strict=True)):
            assert set(b) == set(a), (
                f"{optimizer} {name} step {i}: metric keys {set(b)} != {set(a)} on 1 device")
            for key in sorted(a):
                if key == "finite":
                    assert a[key] == b[key] == 1.0, f"{optimizer} {name} step {i}: finite"
                    continue
                assert abs(a[key] - b[key]) <= METRIC_RTOL * abs(a[key]), (
                    f"{optimizer} {name} step {i}: metric {key} = {b[key]!r}, on 1 device "
                    f"{a[key]!r} (difference {abs(a[key] - b[key]):.3g}, tolerance "
                    f"{METRIC_RTOL * abs(a[key]):.3g})")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_params_batch_stats_and_opt_state_match_leaf_by_leaf(report, optimizer):
    assert report["bn_momentum"] == BN_MOMENTUM
    leaves = report["train"][optimizer]["leaves"]
    zero_grad = zero_grad_biases(leaves)
    assert len(zero_grad) >= 8, zero_grad  # enc32 .. dec64: every block with a BatchNorm
    movement, seen = {}, set()
    for path, leaf in leaves.items():
        g = group(path)
        seen.add(g.split(".")[0] if g != "integer" else g)
        if g == "integer":  # the step counters: exact, and they counted every step
            assert leaf["movement"] == STEPS[optimizer], (path, leaf)
            assert all(d == 0 for d in leaf["diff"].values()), (optimizer, path, leaf["diff"])
            continue
        tol = tolerance(optimizer, path, zero_grad)
        if path not in zero_grad:
            movement[g] = max(movement.get(g, 0.0), leaf["movement"])
        for name, d in leaf["diff"].items():
            assert d <= tol, (f"{optimizer} 1 device vs {name}: {path} differs by {d:.3g} "
                              f"(tolerance {tol:.3g}, the leaf moved {leaf['movement']:.3g})")
    assert seen == {"integer", "params", "batch_stats", "opt_state", "probe"}, seen
    assert set(movement) == {g for g, t in TOL[optimizer].items()}, movement
    for g, moved in movement.items():
        tol = max(tolerance(optimizer, p, zero_grad) for p in leaves
                  if group(p) == g and p not in zero_grad)
        assert moved >= MIN_MOVEMENT_RATIO * tol, (
            f"{optimizer}: {g} moved at most {moved:.3g} in {STEPS[optimizer]} steps, less than "
            f"{MIN_MOVEMENT_RATIO} x its tolerance {tol:.3g}: the run does not train enough "
            "for the comparison to mean anything")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_zero_gradient_biases_are_zero_gradient(report, optimizer):
    """What justifies their looser Adam tolerance: in every run their gradient accumulator
    (SGD's momentum trace, Adam's first moment) stays at rounding-noise level, 1e-6 of the
    others'; if the model changes so that they train, this fails and they get the tight bound."""
    leaves = report["train"][optimizer]["leaves"]
    zero_grad = zero_grad_biases(leaves)
    acc = ".opt_state[0].trace" if optimizer == "sgd" else ".opt_state[0].mu"
    others = max(leaf["final_absmax"] for p, leaf in leaves.items()
                 if p.startswith(acc) and p.replace(acc, ".params", 1) not in zero_grad)
    for path in zero_grad:
        noise = leaves[path.replace(".params", acc, 1)]["final_absmax"]
        assert noise <= 1e-6 * others, (optimizer, path, noise, others)


def test_init_on_eight_devices_equals_init_on_one(report):
    """SGD's state was initialised on 1 device, Adam's on 8 (the pmap trainer's mesh)."""
    for part in ("params", "batch_stats"):
        sgd, adam = report["init"]["sgd"][part], report["init"]["adam"][part]
        assert sgd.keys() == adam.keys()
        bad = [k for k in sgd if sgd[k] != adam[k]]
        assert not bad, (part, bad)


def test_evaluation_over_eight_devices_sums_what_one_device_sums(report):
    """Trainer.evaluate over 21 records (one full batch of 16, one with 11 rows of padding) and
    one eval step on a batch whose weight vector has zeros between ones; every key, and the count
    exactly: a device's padding or a missing psum changes `count` first."""
    ev = report["eval"]
    one = ev["1 device"]
    assert one["summary"]["count"] == report["eval_records"] == 21, one["summary"]
    assert one["summary"]["skipped"] == 0, one["summary"]
    assert one["sums"]["count"] == report["eval_direct_count"] == 10.0, one["sums"]
    for name in RUN_NAMES:
        for what in ("summary", "sums"):
            a, b = one[what], ev[name][what]
            assert set(a) == set(b), (name, what, set(a), set(b))
            for key in sorted(a, key=lambda k: (k not in ("count", "skipped"), k)):
                if key in ("count", "skipped"):
                    assert a[key] == b[key], f"eval {what} on {name}: {key} {b[key]} != {a[key]}"
                else:
                    assert abs(a[key] - b[key]) <= EVAL_RTOL * abs(a[key]), (
                        f"eval {what} on {name}: {key} = {b[key]!r}, on 1 device {a[key]!r}")


@pytest.mark.parametrize("direction", ["pmap x8 -> jit x8", "pmap x8 -> jit x1",
                                       "jit x8 -> pmap x8"])
def test_checkpoint_restores_bitwise_across_pmap_and_jit(report, direction):
    """Written from one form, restored with the other trainer's abstract state (from
    `init_state`'s recipe): every leaf bitwise, on that trainer's devices, and the next train step
    from it is bitwise the step from the state that was saved."""
    entry = report["checkpoint"][direction]

    def some(paths):
        return f"{len(paths)} leaves, e.g. {', '.join(paths[:4])}"

    assert not entry["mismatch"], f"{direction}: restored leaves differ: {some(entry['mismatch'])}"
    assert entry.get("sharded_as_trainer", True), f"{direction}: not on the trainer's devices"
    assert not entry["step_mismatch"], (
        f"{direction}: the step after restore differs in {some(entry['step_mismatch'])}")
    restored, original = entry["step_metrics"]
    assert restored == original, direction


def test_batch_size_not_divisible_by_devices_is_a_clear_error(report):
    for where, error in report["indivisible"].items():
        assert error is not None, f"batch_size 12 on 8 devices ({where}) was accepted"
        assert "config.batch_size=12" in error and "8" in error, (where, error)
