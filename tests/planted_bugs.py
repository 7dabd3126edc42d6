"""Plants real bugs, one at a time, in a copy of the project and checks that the suite catches each.

    python tests/planted_bugs.py            # every bug (about 10 minutes on 2 cores)
    python tests/planted_bugs.py NAME ...   # some of them; --list names them

Each entry is a one-line change to the package, as a careless edit would make it, and the tests
that must fail because of it. For each, the project is copied (without .git, .venv and runs),
the change applied (its text must occur exactly once), and those tests run in the copy: the
harness reports CAUGHT when they fail and MISSED when they pass, and exits 1 if any was missed.
A bug that the suite stops catching is a test that stopped testing.

The first five are the ones an audit found surviving the suite (issue 15); the others undo the
fixes of issue 14. `tests/test_planted_bugs.py` checks, in CI, that every change still applies
to today's code, so that this file cannot rot silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Bug(NamedTuple):
    name: str
    what: str  # what the bug does, for the report
    path: str  # the file changed, relative to the repository root
    old: str  # text that occurs exactly once in it
    new: str
    tests: tuple[str, ...]  # pytest node ids that must fail


BUGS = (
    Bug("resume_drops_loop", "a resume forgets best step, patience and counters",
        "jaxcolor/loop.py",
        "loop = LoopState.restore(step, record)",
        "loop = LoopState(step=step)",
        ("tests/test_training_loop.py::"
         "test_early_stopping_best_step_and_loop_record_survive_a_stop_after_an_evaluation",)),
    Bug("pmap_ab_mae_not_averaged", "each device reports its own ab_mae under pmap",
        "jaxcolor/step.py",
        'ab_mae = _mean(jnp.abs(decode(pred) - batch["ab"]).mean(), axis_name)',
        'ab_mae = jnp.abs(decode(pred) - batch["ab"]).mean()',
        ("tests/test_sharding.py",)),
    Bug("lab_to_rgb_no_z_clamp", "wrong RGB for out-of-gamut LAB (z < 0 not clamped)",
        "jaxcolor/color.py",
        "fz = xp.maximum(fy - lab[..., 2] / 200.0, 0.0)",
        "fz = fy - lab[..., 2] / 200.0",
        ("tests/test_color.py",)),
    Bug("rebalanced_auc_counts_padding", "padded rows count in the rebalanced AuC",
        "jaxcolor/metrics.py",
        "pw = prior_weights(ab_true, prior) * w[:, None, None]",
        "pw = prior_weights(ab_true, prior)",
        ("tests/test_metrics.py",)),
    Bug("skipped_files_logged_as_zero", "metrics.jsonl says 0 files skipped",
        "jaxcolor/loop.py",
        'row["skipped_files"] = loop.skipped_files',
        'row["skipped_files"] = 0',
        ("tests/test_training_loop.py::test_skipped_files_are_exact_in_every_row_across_a_resume",)),
    # issue 14's fixes, undone
    Bug("best_metric_not_persisted", "orbax forgets the best step's val_loss on restart",
        "jaxcolor/checkpoint.py",
        "best_fn=_val_loss,",
        "best_fn=None,",
        ("tests/test_training_loop.py::"
         "test_early_stopping_best_step_and_loop_record_survive_a_stop_after_an_evaluation",)),
    Bug("checksums_not_verified", "a damaged checkpoint is restored",
        "jaxcolor/checkpoint.py",
        "    if not saved:\n        return\n",
        "    return\n",
        ("tests/test_hostile.py::test_values_that_differ_from_their_checksums_are_never_used",)),
    Bug("zero_images_scored", "an unreadable split scores as perfect",
        "jaxcolor/data/pipeline.py",
        "    if count <= 0:\n",
        "    if count < 0:\n",
        ("tests/test_hostile.py::test_evaluate_counts_skipped_files_and_refuses_zero",)),
    Bug("config_not_validated", "a bad config fails after compiling, having written config.json",
        "jaxcolor/loop.py",
        "    config_lib.validate(config)\n    is_main = jax.process_index() == 0",
        "    is_main = jax.process_index() == 0",
        ("tests/test_hostile.py::test_a_bad_config_is_refused_before_anything_is_written",)),
    # issue 16: a second network in the train state
    Bug("companion_not_updated", "the probe's new state is dropped at every step",
        "jaxcolor/step.py",
        "        new_state = _hold_colorizer(state, new_state, companions).replace(companions=states)",
        "        new_state = _hold_colorizer(state, new_state, companions)",
        ("tests/test_companions.py::"
         "test_the_probe_has_its_own_parameters_statistics_and_optimizer_and_they_train",)),
    Bug("probe_pulls_on_the_colorizer", "the watching probe adds its loss to the colorizer's",
        "jaxcolor/companions.py",
        "        loss=_probe_loss,\n",
        "        loss=_probe_loss, colorizer_loss=lambda out, batch: 1e-3 * _probe_error(out, batch),\n",
        ("tests/test_companions.py::test_a_watching_probe_leaves_the_colorizer_bitwise_as_without_it",)),
    Bug("companion_grads_not_averaged", "under pmap each device keeps its own probe",
        "jaxcolor/step.py",
        "    grads = _mean(grads, axis_name)\n    new = c_state.apply_gradients",
        "    new = c_state.apply_gradients",
        ("tests/test_sharding.py::test_params_batch_stats_and_opt_state_match_leaf_by_leaf",)),
    # issue 17: loss terms and adversarial training
    Bug("nogan_colorizer_not_held", "the colorizer keeps training in NoGAN's critic-only steps",
        "jaxcolor/step.py",
        "    if not held:\n        return new_state",
        "    if True:\n        return new_state",
        ("tests/test_gan.py::test_nogan_schedule_colorizer_alone_then_discriminator_alone_then_both",)),
    Bug("colorfulness_gradient_nan_at_gray", "the colorfulness term's gradient is NaN at gray",
        "jaxcolor/losses.py",
        "    cf = metrics.colorfulness(rgb(ab_pred), eps=1e-3)",
        "    cf = metrics.colorfulness(rgb(ab_pred))",
        ("tests/test_loss_terms.py::test_colorfulness_term_gradient_is_finite_at_gray",)),
    Bug("saturation_boost_at_evaluation", "validation scores against the boosted target",
        "jaxcolor/losses.py",
        "        if train and self.saturation != 1.0:",
        "        if self.saturation != 1.0:",
        ("tests/test_loss_terms.py::test_saturation_boost_scales_ab_and_stays_in_gamut",)),
)


def _copy_project(dest: str) -> None:
    ignore = shutil.ignore_patterns(".git", ".venv", "runs", "studies", "__pycache__",
                                    ".pytest_cache", "*.egg-info")
    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)


def plant(bug: Bug, root: str) -> None:
    path = os.path.join(root, bug.path)
    with open(path) as f:
        text = f.read()
    if text.count(bug.old) != 1:
        raise ValueError(f"{bug.name}: {bug.path} holds the text to change "
                         f"{text.count(bug.old)} times, expected once: {bug.old!r}")
    with open(path, "w") as f:
        f.write(text.replace(bug.old, bug.new))


def check(bug: Bug) -> tuple[bool, float, str]:
    """(caught, seconds, last lines of pytest's output) for one bug, in a fresh copy."""
    with tempfile.TemporaryDirectory(prefix=f"planted-{bug.name}-") as tmp:
        root = os.path.join(tmp, "project")
        _copy_project(root)
        plant(bug, root)
        env = dict(os.environ, PYTHONPATH=root)  # the copy's package, not the installed one
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p",
                               "no:cacheprovider", *bug.tests], cwd=root, env=env,
                              capture_output=True, text=True)
        tail = "\n".join(done.stdout.strip().splitlines()[-3:])
        return done.returncode == 1, time.perf_counter() - start, tail


def main(argv: list[str]) -> int:
    if "--list" in argv:
        for bug in BUGS:
            print(f"{bug.name}: {bug.what} ({bug.path})")
        return 0
    chosen = [b for b in BUGS if not argv or b.name in argv]
    unknown = set(argv) - {b.name for b in BUGS}
    if unknown:
        print(f"unknown bug(s): {sorted(unknown)}; --list names them", file=sys.stderr)
        return 2
    missed = []
    for bug in chosen:
        caught, seconds, tail = check(bug)
        print(f"{'CAUGHT' if caught else 'MISSED'} {bug.name} ({seconds:.0f} s): {bug.what}\n"
              f"    {tail.splitlines()[-1] if tail else ''}", flush=True)
        if not caught:
            missed.append(bug.name)
    print(f"{len(chosen) - len(missed)} of {len(chosen)} planted bugs caught"
          + (f"; missed: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
