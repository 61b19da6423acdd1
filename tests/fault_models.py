"""A user model for fault tests, loaded with ``model=custom model._target_=fault_models.FaultyColour``.

It encodes like :class:`user_model.MeanColourEncoder` (same fingerprint in every process), and reads
what to do wrong from the environment, so a test can set it for a subprocess:

- ``FAULT_SLEEP``: seconds to sleep per batch (a slow encoder a test can interrupt);
- ``FAULT_ENCODE_LOG``: a file to which every batch appends its image count (counts encodes across processes);
- ``FAULT_KILL_AFTER_CHUNKS`` and ``FAULT_CHUNK_DIR``: SIGKILL itself before the next batch once that many
  chunk files are in that folder (a run killed in the middle of a dataset);
- ``FAULT_HOLD_UNTIL``: ``FOLDER|TEXT``: before each batch of a dataset (not the 2-image probe of every model build,
  :func:`clipeval.models.base.check_outputs`), wait until a ``*.log`` file under FOLDER holds TEXT, 120 s at most
  (two processes that need the same features at once: the encoding one waits until the other says it waits).

Two Hydra callbacks stop a sweep between its jobs: :class:`PauseAfterJob` and :class:`InterruptAfterJob`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from user_model import MeanColourEncoder


def chunk_files(folder: str | Path) -> list[Path]:
    return sorted(Path(folder).rglob("*.pt")) if Path(folder).is_dir() else []


class FaultyColour(MeanColourEncoder):
    def encode_image(self, images):
        kill_after = os.environ.get("FAULT_KILL_AFTER_CHUNKS")
        if kill_after and len(chunk_files(os.environ["FAULT_CHUNK_DIR"])) >= int(kill_after):
            os.kill(os.getpid(), signal.SIGKILL)
        if log := os.environ.get("FAULT_ENCODE_LOG"):
            with open(log, "a") as f:
                f.write(f"{len(images)}\n")
        hold = os.environ.get("FAULT_HOLD_UNTIL")
        if hold and len(images) != 2:
            folder, _, text = hold.partition("|")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not any(
                text in log.read_text(errors="replace") for log in Path(folder).rglob("*.log")
            ):
                time.sleep(0.1)
        time.sleep(float(os.environ.get("FAULT_SLEEP", "0")))
        return super().encode_image(images)


class RefusingEvaluator:
    """An evaluator that fails on the user's input (a ClipevalError) once the evaluation has started."""

    def evaluate(self, ctx):
        from clipeval.errors import ClipevalError

        raise ClipevalError("the data say no")


class RefusingOnRankOne:
    """Under torchrun, fails on rank 1 only (a GPU out of memory, a node's disk), after reading the features."""

    def __init__(self, dataset: str = "test"):
        self.dataset = dataset

    def evaluate(self, ctx):
        from clipeval.errors import ClipevalError

        ctx.features(self.dataset)
        if os.environ.get("RANK") == "1":
            raise ClipevalError("rank 1's disk says no")
        return []


class PauseAfterJob(Callback):
    """A Hydra callback (``+hydra.callbacks.pause._target_=fault_models.PauseAfterJob``) that says on stderr when a
    job has ended (``[fault_models] job #N ended``, a log line) and then waits a minute: a test sends its signal between the jobs of a sweep."""

    def on_job_end(self, config, job_return, **kwargs):
        print(f"[fault_models] job #{config.hydra.job.get('num', 0)} ended", file=sys.stderr, flush=True)
        time.sleep(60)


class InterruptAfterJob(Callback):
    """A Hydra callback that raises ``KeyboardInterrupt`` once job ``job`` has ended, as Ctrl-C landing in Hydra's
    code between two jobs does (``+hydra.callbacks.stop._target_=fault_models.InterruptAfterJob``)."""

    def __init__(self, job: int = 0):
        self.job = job

    def on_job_end(self, config, job_return, **kwargs):
        if config.hydra.job.get("num", 0) == self.job:
            raise KeyboardInterrupt
