"""`python -m jaxcolor.study STUDY.py --workdir studies/NAME [--parallel N]`

Runs a reproducibility study: a grid of cells (a config file plus overrides) times seeds, each
member its own training run, then evaluates every member on one split and reports, per cell, the
mean, standard deviation (ddof=1) and 95% confidence interval (Student t) of each metric over the
seeds, with the number of seeds and the training time.

`STUDY.py` defines `get_study()` returning a dict:

    cells:          {name: (config_path, {field: value})}  # path relative to STUDY.py's folder
    seeds:          [0, 1, 2]
    overrides:      {field: value}  # applied to every cell first (optional)
    split:          "test"          # evaluation split: validation | test | train | a spec
    eval_overrides: {"data.eval_examples": 256}  # evaluate's `--config.data.*` overrides
    metrics:        ["ab_mae", "psnr", "ssim", "auc"]  # keys of `jaxcolor.evaluate`'s results

Layout of `--workdir`: `cells/<cell>/seed_<s>/` is each member's training workdir (its
`run.json` says how it ended), `logs/<cell>_seed_<s>.log` its output (appended across reruns),
`study.json` the grid, and `summary.json`, `summary.md`, `summary.png` the results.

Members are independent processes (`python -m jaxcolor.train --config ... --workdir ...
--config.seed=S --config.FIELD=VALUE ...`); `--parallel N` runs N at once. Rerunning the same
command skips members whose `run.json` says `finished` (and evaluations already written), and
reruns the others, which resume from their last checkpoint. SIGTERM or Ctrl-C stops the runner:
running members are told to checkpoint (they exit with status 75) and the runner exits with 75.
If the runner itself is killed, its members get SIGTERM from the kernel (Linux `PR_SET_PDEATHSIG`)
and checkpoint too.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from jaxcolor import config as config_lib
from jaxcolor import run_record

EXIT_INTERRUPTED = run_record.EXIT_INTERRUPTED
DEFAULT_METRICS = ("ab_mae", "ab_rmse", "psnr", "ssim", "auc")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Two-sided 95% Student t quantiles t(0.975, df) for df = 1..30, used when scipy is missing.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    try:
        from scipy import stats

        return float(stats.t.ppf(0.975, df))
    except ImportError:
        return T975[df - 1] if df <= len(T975) else 1.96


def describe(values) -> dict:
    """n, mean, std (ddof=1) and the 95% Student-t confidence interval of the mean."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None, "values": []}
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    half = t975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half],
            "values": x.tolist()}


# ---------------------------------------------------------------------------------------------
# The grid


def load_study(path: str) -> dict:
    spec = importlib.util.spec_from_file_location("jaxcolor_study_file", path)
    if spec is None or not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such study file (a .py defining get_study())")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_study"):
        raise ValueError(f"{path}: defines no get_study()")
    study = dict(module.get_study())
    if not study.get("cells") or not study.get("seeds"):
        raise ValueError(f"{path}: get_study() must give non-empty 'cells' and 'seeds'")
    base = os.path.dirname(os.path.abspath(path))
    cells = {}
    for name, cell in study["cells"].items():
        config, overrides = (cell, {}) if isinstance(cell, str) else cell
        if not os.path.isabs(config):
            config = os.path.join(base, config)
        if not os.path.isfile(config):
            raise FileNotFoundError(f"{path}: cell {name!r}: config file {config} not found")
        cells[name] = {"config": config, "overrides": {**study.get("overrides", {}), **overrides}}
    study["cells"] = cells
    study["seeds"] = [int(s) for s in study["seeds"]]
    study.setdefault("split", "test")
    study.setdefault("eval_overrides", {})
    study["metrics"] = list(study.get("metrics", DEFAULT_METRICS))
    study["path"] = os.path.abspath(path)
    return study


class Member:
    def __init__(self, root: str, cell: str, seed: int, spec: dict):
        self.cell, self.seed, self.spec = cell, seed, spec
        self.name = f"{cell}/seed_{seed}"
        self.workdir = os.path.join(root, "cells", cell, f"seed_{seed}")
        self.log = os.path.join(root, "logs", f"{cell}_seed_{seed}.log")

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "jaxcolor.train", "--config", self.spec["config"],
               "--workdir", self.workdir, f"--config.seed={self.seed}"]
        return cmd + [f"--config.{k}={v}" for k, v in self.spec["overrides"].items()]

    def record(self) -> dict | None:
        try:
            return run_record.read(self.workdir)
        except (OSError, ValueError):
            return None

    def finished(self) -> bool:
        return (self.record() or {}).get("status") == "finished"

    def eval_files(self, split: str) -> list[str]:
        from jaxcolor import evaluate

        # eval_<split>_<step>.json only: not the variants (_T<temperature>, _x<ab scale>)
        prefix = os.path.basename(evaluate.result_path(self.workdir, split, 0))[: -len("0.json")]
        files = glob.glob(os.path.join(self.workdir, prefix + "*.json"))
        plain = [f for f in files if os.path.basename(f)[len(prefix):-len(".json")].isdigit()]
        return sorted(plain, key=lambda f: int(os.path.basename(f)[len(prefix):-len(".json")]))


# ---------------------------------------------------------------------------------------------
# Running


# Starts a member: asks the kernel for SIGTERM when the runner dies (Linux PR_SET_PDEATHSIG,
# which survives exec), then execs the training command. Done in a small exec'd shim rather than a
# `preexec_fn`, so no Python runs between fork and exec in the (multithreaded) runner.
_SHIM = """import ctypes, os, signal, sys
try:
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(75)  # the runner died before the request took effect
os.execv(sys.argv[2], sys.argv[2:])
"""


def _with_parent_death_signal(cmd: list[str]) -> list[str]:
    if not sys.platform.startswith("linux"):
        return cmd
    return [sys.executable, "-c", _SHIM, str(os.getpid()), *cmd]


class Runner:
    def __init__(self, study: dict, root: str, parallel: int = 1, echo=print):
        self.study, self.root, self.parallel, self.echo = study, root, max(1, parallel), echo
        self.members = [Member(root, cell, seed, spec) for cell, spec in study["cells"].items()
                        for seed in study["seeds"]]
        self.stopping = threading.Event()
        self.procs: dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.eval_lock = threading.Lock()

    def say(self, text: str) -> None:
        with self.lock:
            self.echo(f"[study {time.strftime('%H:%M:%S')}] {text}")

    def stop(self, signum=None, frame=None) -> None:
        if not self.stopping.is_set():
            self.say("stop requested: members checkpoint and stop; rerun to resume")
        self.stopping.set()
        with self.lock:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)

    def train(self, member: Member) -> str:
        """'finished' | 'interrupted' | 'failed (...)' for one member, launching it if needed."""
        if member.finished():
            self.say(f"skip {member.name}: already finished")
            return "finished"
        if self.stopping.is_set():
            return "interrupted"
        lock = run_record.WorkdirLock(member.workdir)
        if os.path.isdir(member.workdir) and lock.held_elsewhere():
            # e.g. a member of a killed runner still writing its last checkpoint
            self.say(f"wait for {member.name}: another process still holds its workdir")
            try:
                lock.acquire(timeout=600).release()
            except run_record.WorkdirBusyError as exc:
                self.say(f"FAILED {member.name}: {exc}")
                return f"failed ({exc})"
            if member.finished():
                self.say(f"skip {member.name}: finished by the other process")
                return "finished"
        previous = member.record()
        step = (previous or {}).get("history", [{}])[-1].get("end_step") if previous else None
        self.say(f"run {member.name}" + (f" (resuming; last recorded step {step})"
                                          if previous else " (new)"))
        os.makedirs(os.path.dirname(member.log), exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH"))
                                              if p))
        start = time.time()
        with open(member.log, "a") as log:
            log.write(f"\n=== {run_record.now()} {' '.join(member.command())}\n")
            log.flush()
            with self.lock:
                proc = subprocess.Popen(_with_parent_death_signal(member.command()), stdout=log,
                                        stderr=subprocess.STDOUT, env=env)
                self.procs[member.name] = proc
            if self.stopping.is_set():
                proc.send_signal(signal.SIGTERM)
            rc = proc.wait()
            with self.lock:
                self.procs.pop(member.name, None)
        took = time.time() - start
        if rc == 0:
            self.say(f"done {member.name} in {took:.0f} s")
            return "finished"
        if rc == EXIT_INTERRUPTED or self.stopping.is_set():
            self.say(f"interrupted {member.name} (exit {rc}) after {took:.0f} s; checkpointed")
            return "interrupted"
        self.say(f"FAILED {member.name}: exit {rc}; see {member.log}")
        return f"failed (exit {rc}; see {member.log})"

    def evaluate(self, member: Member) -> dict | None:
        split = self.study["split"]
        files = member.eval_files(split)
        if files:
            with open(files[-1]) as f:
                return json.load(f)
        from jaxcolor import evaluate

        with self.eval_lock:  # one evaluation at a time in this process
            self.say(f"evaluate {member.name} on {split}")
            overrides = {k if k.startswith("data.") else f"data.{k}": v
                         for k, v in self.study["eval_overrides"].items()}
            return evaluate.evaluate(member.workdir, split, overrides=overrides)

    def member(self, member: Member) -> dict:
        status = self.train(member)
        out = {"cell": member.cell, "seed": member.seed, "status": status}
        if status == "finished" and not self.stopping.is_set():
            out["eval"] = self.evaluate(member)
        return out

    def run(self) -> list[dict]:
        os.makedirs(self.root, exist_ok=True)
        with open(os.path.join(self.root, "study.json"), "w") as f:
            json.dump({k: v for k, v in self.study.items()}, f, indent=2, default=str)
        done = sum(m.finished() for m in self.members)
        self.say(f"{len(self.members)} members ({len(self.study['cells'])} cells x "
                 f"{len(self.study['seeds'])} seeds); {done} already finished")
        with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
            return list(pool.map(self.member, self.members))


# ---------------------------------------------------------------------------------------------
# Summary


def summarize(study: dict, members: list[Member]) -> dict:
    """Per cell: describe() of each metric (model and gray baseline) and of the training time."""
    split = study["split"]
    cells = {}
    for cell in study["cells"]:
        rows = [m for m in members if m.cell == cell]
        evals, seconds, steps, seeds = [], [], [], []
        for m in rows:
            record = m.record() or {}
            files = m.eval_files(split)
            if record.get("status") != "finished" or not files:
                continue
            with open(files[-1]) as f:
                evals.append(json.load(f))
            seconds.append(record.get("train_seconds"))
            steps.append(record.get("history", [{}])[-1].get("end_step"))
            seeds.append(m.seed)
        cells[cell] = {
            "config": study["cells"][cell]["config"],
            "overrides": study["cells"][cell]["overrides"],
            "seeds": seeds,
            "n": len(evals),
            "steps": sorted(set(steps)),
            "eval_count": sorted({e["count"] for e in evals}),
            "metrics": {k: describe([e["model"].get(k) for e in evals]) for k in study["metrics"]},
            "gray": {k: describe([e["gray"].get(k) for e in evals]) for k in study["metrics"]},
            "train_seconds": describe(seconds),
        }
    return {"study": study["path"], "split": split, "eval_overrides": study["eval_overrides"],
            "seeds": study["seeds"], "cells": cells}


def _fmt(d: dict, digits: int = 3) -> str:
    if not d["n"]:
        return "-"
    if d["n"] == 1:
        return f"{d['mean']:.{digits}f} (n=1)"
    lo, hi = d["ci95"]
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def format_markdown(summary: dict) -> str:
    metrics = list(next(iter(summary["cells"].values()))["metrics"])
    head = ["cell", "n seeds", "steps", *metrics, "train time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, cell in summary["cells"].items():
        steps = ",".join(str(s) for s in cell["steps"]) or "-"
        lines.append("| " + " | ".join([name, str(cell["n"]), steps,
                                        *[_fmt(cell["metrics"][k]) for k in metrics],
                                        _fmt(cell["train_seconds"], 0)]) + " |")
    gray = next(iter(summary["cells"].values()))["gray"]
    counts = sorted({c for cell in summary["cells"].values() for c in cell["eval_count"]})
    lines += [
        "",
        f"Model metrics on split `{summary['split']}` ({', '.join(map(str, counts))} images per "
        f"member; evaluation overrides {summary['eval_overrides']}): mean ± standard deviation "
        "(ddof=1) over seeds, [95% confidence interval of the mean, Student t]. Train time: wall "
        "seconds per member, summed over its sessions, each from after model initialisation "
        "to its end (compilation, validation and checkpoints included; process start-up and "
        "the study's evaluation not). Gray baseline (a=b=0) on the same images: "
        + ", ".join(f"{k} {gray[k]['mean']:.3f}" for k in metrics if gray[k]["n"]) + ".",
    ]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["cells"])
    metrics = list(summary["cells"][names[0]]["metrics"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4), squeeze=False)
    for ax, key in zip(axes[0], metrics):
        for i, name in enumerate(names):
            d = summary["cells"][name]["metrics"][key]
            if not d["n"]:
                continue
            ax.scatter([i] * d["n"], d["values"], s=12, color="0.6", zorder=1)
            err = None
            if d["n"] > 1:
                err = [[d["mean"] - d["ci95"][0]], [d["ci95"][1] - d["mean"]]]
            ax.errorbar([i], [d["mean"]], yerr=err, fmt="o", color="C0", capsize=4, zorder=2)
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_title(key, fontsize=10)
    fig.suptitle(f"split {summary['split']}: mean and 95% CI over seeds (dots: seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_summary(study: dict, members: list[Member], root: str) -> dict:
    summary = summarize(study, members)
    with open(os.path.join(root, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(root, "summary.md"), "w") as f:
        f.write(format_markdown(summary))
    if any(c["n"] for c in summary["cells"].values()):
        plot(summary, os.path.join(root, "summary.png"))
    return summary


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    """The command: 0, 1 (a member failed) or 75 (stopped); a usage error (the study file)
    exits (SystemExit, status 2) rather than returning."""
    parser = config_lib.command_parser("python -m jaxcolor.study", __doc__.split("\n\n")[1],
                                       formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", help="STUDY.py defining get_study()")
    parser.add_argument("--workdir", required=True, help="the study's directory")
    parser.add_argument("--parallel", type=int, default=1, help="members trained at once")
    args = parser.parse_args(argv)
    try:
        study = load_study(args.study)
    except (FileNotFoundError, ValueError) as exc:
        config_lib.usage_error(exc)
    runner = Runner(study, args.workdir, args.parallel, echo=lambda s: print(s, flush=True))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, runner.stop)
    start = time.time()
    results = runner.run()
    summary = write_summary(study, runner.members, args.workdir)
    failed = [r for r in results if r["status"].startswith("failed")]
    runner.say(f"wrote {os.path.join(args.workdir, 'summary.md')} "
               f"({sum(c['n'] for c in summary['cells'].values())}/{len(runner.members)} members "
               f"in the summary) after {time.time() - start:.0f} s")
    if runner.stopping.is_set():
        return EXIT_INTERRUPTED
    if failed:
        for r in failed:
            runner.say(f"{r['cell']}/seed_{r['seed']}: {r['status']}")
        return 1
    print(format_markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
