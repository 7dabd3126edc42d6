"""Where a run's numbers go: `metrics.jsonl` (one JSON object per line, the file other commands
read) and TensorBoard event files (tensorboardX: no TensorFlow needed). Process 0 alone writes."""

from __future__ import annotations

import json
import os

import numpy as np


class Logbook:
    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows the interrupted run wrote past its last checkpoint."""
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            rows = [line for line in f if (row := _parse(line)) and row["step"] <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(rows)
        os.replace(tmp, self.path)

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as exc:  # name the file: a full disk's write error carries no name
            raise OSError(exc.errno, exc.strerror, self.path) from exc
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)):
                self._tb.add_scalar(key, value, step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        if self.enabled:
            self._tb.add_image(tag, image, step, dataformats="HWC")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _parse(line: str) -> dict | None:
    """A row, or None for a blank line or one torn by a kill mid-write (dropped on resume)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and "step" in row else None


def _plain(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.item()
    return value


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no metrics.jsonl; is {workdir!r} a training workdir?")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
