"""Adversarial training: the PatchGAN discriminator as a companion network (jaxcolor/companions.py,
jaxcolor/models/discriminator.py). Its losses against hand-computed cases, DeOldify's NoGAN
schedule, 8 simulated devices (jit and pmap) against one, and stop + resume bitwise."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, tiny_config

from jaxcolor import checkpoint, companions, loop, parallel
from jaxcolor import trainer as trainer_lib

GAN = {"loss.name": "l1", "loss.terms.l1": 1.0, "loss.terms.adversarial": 0.1,
       "discriminator.width": 8, "discriminator.layers": 2}


def test_hinge_and_least_squares_losses_and_accuracies_by_hand():
    real, fake = jnp.array([2.0, 0.5, -1.0]), jnp.array([-2.0, 0.2, 1.5])
    logits = jnp.concatenate([real, fake])[:, None, None, None]
    value, acc = companions.discriminator_loss("hinge")(logits, None)
    # relu(1 - real) = 0, 0.5, 2 -> mean 5/6; relu(1 + fake) = 0, 1.2, 2.5 -> mean 3.7/3
    assert float(value) == pytest.approx(2.5 / 3 + 3.7 / 3, rel=1e-6)
    assert float(acc["acc_real"]) == pytest.approx(2 / 3) and float(acc["acc_fake"]) == \
        pytest.approx(1 / 3)
    assert float(companions.adversarial_term("hinge", 0.5)(logits, None)) == pytest.approx(
        -0.5 * (-2.0 + 0.2 + 1.5) / 3, rel=1e-6)
    value, acc = companions.discriminator_loss("lsgan")(logits, None)
    want = np.mean((np.array([2.0, 0.5, -1.0]) - 1) ** 2) + np.mean(np.array([-2.0, 0.2, 1.5]) ** 2)
    assert float(value) == pytest.approx(want, rel=1e-6)
    assert float(acc["acc_real"]) == pytest.approx(1 / 3)  # > 0.5: only 2.0
    assert float(companions.adversarial_term("lsgan", 2.0)(logits, None)) == pytest.approx(
        2.0 * np.mean((np.array([-2.0, 0.2, 1.5]) - 1) ** 2), rel=1e-6)


def flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_nogan_schedule_colorizer_alone_then_discriminator_alone_then_both():
    """generator_steps=2, discriminator_steps=2: steps 1-2 move only the colorizer, steps 3-4 only
    the discriminator, step 5 both; the adversarial term is 0 until step 5."""
    c = tiny_config(**GAN, **{"discriminator.generator_steps": 2,
                              "discriminator.discriminator_steps": 2})
    t = trainer_lib.Trainer(c)
    state, _ = t.init_state(trainer_lib.init_key(0))
    rng = np.random.default_rng(0)
    snapshots, terms = [flat(parallel.fetch(state))], []
    for i in range(5):
        b = {"L": rng.random((8, 16, 16, 1), np.float32),
             "ab": rng.random((8, 16, 16, 2), np.float32) - 0.5}
        state, m = t.train_step(state, t.put(b), jax.random.key(i))
        snapshots.append(flat(parallel.fetch(state)))
        terms.append(float(m["discriminator_term"]))

    def moved(a, b, part):
        keys = [k for k in snapshots[a] if k.startswith(part) and "step" not in k
                and "count" not in k]
        assert keys, part
        return any(not np.array_equal(snapshots[a][k], snapshots[b][k]) for k in keys)

    colorizer, critic = ".params", ".companions['discriminator'].params"
    assert moved(0, 2, colorizer) and not moved(0, 2, critic)
    assert not moved(2, 4, colorizer) and not moved(2, 4, ".opt_state") and moved(2, 4, critic)
    assert moved(4, 5, colorizer) and moved(4, 5, critic)
    assert terms[:4] == [0.0] * 4 and terms[4] != 0.0
    assert int(snapshots[5][".step"]) == 5  # the schedule's clock counts every step


SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from jax.sharding import Mesh
    sys.path.insert(0, "tests")
    from conftest import tiny_config
    from test_gan import GAN
    from jaxcolor import parallel, trainer as trainer_lib

    assert jax.device_count() == 8
    rng = np.random.default_rng(0)
    batches = [{"L": rng.random((16, 16, 16, 1), np.float32),
                "ab": rng.random((16, 16, 16, 2), np.float32) - 0.5} for _ in range(4)]
    out = {}
    init = None
    for name, mode, n in (("1 device", "jit", 1), ("jit x8", "jit", 8), ("pmap x8", "pmap", 8)):
        c = tiny_config(**GAN, **{"batch_size": 16, "parallel": mode, "optimizer.name": "sgd",
                                  "optimizer.schedule": "constant", "optimizer.warmup_steps": 0,
                                  "optimizer.learning_rate": 1e-2, "discriminator.optimizer": "sgd",
                                  "discriminator.learning_rate": 1e-2})
        t = trainer_lib.Trainer(c, Mesh(np.asarray(jax.devices()[:n]), (parallel.DATA_AXIS,)))
        state, _ = t.init_state(trainer_lib.init_key(0))
        if init is None:
            init = parallel.fetch(state)
        state = t.to_step_form(state)
        metrics = []
        for i, b in enumerate(batches):
            state, m = t.train_step(state, t.put(b), jax.random.key(i))
            metrics.append({k: float(v) for k, v in t.fetch(m).items()})
        final = parallel.fetch(t.to_global_form(state))
        out[name] = {"metrics": metrics, "leaves": {
            jax.tree_util.keystr(p): np.asarray(x).tolist()
            for p, x in jax.tree_util.tree_flatten_with_path(final)[0]}}
    out["init"] = {jax.tree_util.keystr(p): np.asarray(x).tolist()
                   for p, x in jax.tree_util.tree_flatten_with_path(init)[0]}
    json.dump(out, open(sys.argv[1], "w"))
    print("OK")
    """
)
TOL = 1e-5  # what the issue asks (SGD); measured differences are in the assertion messages


def test_a_tiny_gan_on_eight_devices_trains_as_on_one(tmp_path):
    out = tmp_path / "gan.json"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    one, init = report["1 device"], report["init"]
    critic = [k for k in one["leaves"] if k.startswith(".companions['discriminator'].params")]
    assert critic and any(".params" in k for k in one["leaves"] if "companions" not in k)
    for key in ("params", "companions['discriminator'].params"):
        moved = max(np.abs(np.asarray(one["leaves"][k]) - np.asarray(init[k])).max()
                    for k in one["leaves"] if k.startswith("." + key))
        assert moved > 100 * TOL, (key, moved)  # they train: agreeing means something
    for name in ("jit x8", "pmap x8"):
        for k, v in one["leaves"].items():
            diff = float(np.abs(np.asarray(v, np.float64) - np.asarray(report[name]["leaves"][k])).max())
            assert diff <= TOL, f"{name}: {k} differs by {diff:.3g} from 1 device"
        for i, (a, b) in enumerate(zip(one["metrics"], report[name]["metrics"], strict=True)):
            for k in a:
                assert abs(a[k] - b[k]) <= TOL * max(1.0, abs(a[k])), (name, i, k, a[k], b[k])
    assert one["metrics"][-1]["discriminator_term"] != 0.0


def test_a_gan_run_stopped_and_resumed_ends_bitwise_as_an_uninterrupted_one(tmp_path):
    c = tiny_config(**GAN, **{"discriminator.generator_steps": 1,
                              "discriminator.discriminator_steps": 1, "checkpoint_every": 2})
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    loop.train_and_evaluate(c, straight)
    assert loop.train_and_evaluate(c, resumed, should_stop=lambda s: s == 3)["interrupted"]
    loop.train_and_evaluate(c, resumed)
    a, b = (checkpoint.read_state_arrays(os.path.join(w, "checkpoints", "6", "state"))
            for w in (straight, resumed))
    fa, fb = flat(a), flat(b)
    assert set(fa) == set(fb) and any("discriminator" in k for k in fa)
    assert not [k for k in fa if fa[k].tobytes() != fb[k].tobytes()]
    rows = [[{k: v for k, v in json.loads(line).items() if k != "examples_per_s"}
             for line in open(os.path.join(w, "metrics.jsonl"))] for w in (straight, resumed)]
    assert rows[0] == rows[1]
    assert any("discriminator_acc_real" in r for r in rows[0])
