"""Where a traced step's device time goes: total duration per kernel name in a Perfetto trace.

`benchmarks/train_step.py --profile_dir DIR` traces 3 steps with `jax.profiler`; this reads the
`perfetto_trace.json.gz` under DIR and prints one JSON line: for each traced process whose name
matches `--process` (default: the GPU devices) and each of its threads (streams, XLA ops), the
busy time per step and the top names by total time (per step, share of busy time, call count).

    python benchmarks/trace_summary.py DIR [--top 25] [--steps 3] [--process GPU]
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os


def load_events(trace_dir: str) -> list[dict]:
    paths = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True))
    if not paths:
        raise SystemExit(f"{trace_dir}: no perfetto_trace.json.gz below it (run train_step.py "
                         "with --profile_dir)")
    with gzip.open(paths[-1], "rt") as f:
        data = json.load(f)
    return data["traceEvents"] if isinstance(data, dict) else data


def summarize(events: list[dict], process: str, steps: int, top: int) -> dict:
    """Per (process, thread) of the matching processes: a GPU's trace has one thread per stream
    plus derived lines (XLA modules, XLA ops) that overlap the streams, so each is its own view."""
    procs = {e["pid"]: e.get("args", {}).get("name", "") for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    threads = {(e["pid"], e.get("tid")): e.get("args", {}).get("name", "") for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    per_line = collections.defaultdict(lambda: collections.defaultdict(lambda: [0.0, 0]))
    for e in events:
        if e.get("ph") != "X" or process.lower() not in procs.get(e.get("pid"), "").lower():
            continue
        key = (e["pid"], e.get("tid"))
        per_line[key][e["name"]][0] += float(e.get("dur", 0.0))
        per_line[key][e["name"]][1] += 1
    out = {}
    for (pid, tid), per_name in per_line.items():
        busy = sum(d for d, _ in per_name.values())
        rows = sorted(per_name.items(), key=lambda kv: -kv[1][0])[:top]
        out[f"{procs[pid]} | {threads.get((pid, tid), tid)}"] = {
            "busy_ms_per_step": busy / steps / 1e3,
            "distinct_names": len(per_name),
            "top": [{"name": n[:160], "ms_per_step": d / steps / 1e3,
                     "share": d / busy if busy else 0.0, "calls_per_step": c / steps}
                    for n, (d, c) in rows],
        }
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("trace_dir")
    p.add_argument("--process", default="GPU")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    print(json.dumps({"trace_dir": args.trace_dir,
                      "processes": summarize(load_events(args.trace_dir), args.process, args.steps,
                                             args.top)}))


if __name__ == "__main__":
    main()
