"""torchrun: N processes share one run. Each rank encodes a contiguous span of every dataset's chunks and of
every attack's batches, every rank gets all of them, and rank 0 alone writes: the same numbers, bit for bit,
as one process (clipeval.distributed)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import exit_2, make_image_folder

from clipeval.cache import TensorCache
from clipeval.config.runtime import Runtime
from clipeval.data.folder import ImageFolderSource
from clipeval.distributed import World, joined, world
from clipeval.errors import ClipevalError
from clipeval.features import encode
from clipeval.features.encode import CHUNK_KIND, image_features

ROOT = Path(__file__).resolve().parents[1]

SHARDED_TASK = f"""
name: sharded
version: 1
classnames: null
templates: {ROOT / "tasks" / "digits" / "templates.txt"}
datasets:
  test: {{_target_: clipeval.embedded.source.DigitsSource, split: test}}
evaluators:
  zeroshot: {{_target_: clipeval.evaluators.zeroshot.ZeroShot}}
  adversarial:
    _target_: clipeval.evaluators.adversarial.Adversarial
    dataset: test
    eps: [2, 8]
    attacks: [pgd, apgd-ce]
    steps: 3
    limit: 40
    batch_size: 8
"""
# 360 test digits in batches of 32 and chunks of 64: 6 chunks, 3 per rank of 2
ARGS = ["task=sharded", "runtime.batch_size=32", "runtime.chunk_size=64", "runtime.workers=0", "runtime.progress=false"]


def test_the_ranks_spans_are_contiguous_disjoint_in_rank_order_and_cover_every_item():
    for size in range(1, 6):
        for n in range(0, 18):
            spans = [World(rank, size).span(n) for rank in range(size)]
            assert [i for span in spans for i in span] == list(range(n))
            assert max(map(len, spans)) - min(map(len, spans)) <= 1
            assert len(spans[0]) == max(map(len, spans))  # rank 0 is never idle while another rank works


def test_outside_torchrun_the_world_is_one_process_that_gathers_and_shares_its_own_values():
    with joined("auto") as ranks:
        assert ranks == world() == World() and not ranks.distributed and ranks.is_main
        assert ranks.gather({"a": 1}) == [{"a": 1}] and ranks.broadcast([2]) == [2]
        assert ranks.each(lambda: 3, "counting") == [3] and ranks.on_main(lambda: 4, "counting") == 4


def test_a_gpu_index_under_torchrun_is_refused_every_rank_would_use_it(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    refused = pytest.raises(
        ClipevalError, match=r"runtime.device=cuda:1 under torchrun would put every rank on one GPU"
    )
    with refused, joined("cuda:1"):
        pass
    assert world() == World()


def test_rank_variables_without_torchrun_are_exit_2_with_what_to_do(monkeypatch, capsys, tmp_path):
    for name in ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    message = exit_2(["task=digits", "runtime.device=cpu", f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    assert "Could not join the process group of rank 0 of 2 (gloo)" in message
    assert "start the run with torchrun, or unset them" in message


def test_a_sweep_under_torchrun_is_refused_with_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    message = exit_2(["-m", "task=digits,digits_sketch"], capsys)
    assert "A sweep (-m) cannot run under torchrun" in message


class _Gathers(World):
    """Rank ``rank`` of a world whose other ranks gave ``others`` (what they sent to a gather)."""

    def __init__(self, rank: int, size: int, others: dict[int, object]):
        super().__init__(rank, size)
        object.__setattr__(self, "others", others)

    def gather(self, share):
        return [share if r == self.rank else self.others[r] for r in range(self.size)]


def test_a_failure_on_one_rank_is_raised_on_every_rank_so_that_all_stop_at_the_same_point():
    failed_on_rank_0 = _Gathers(1, 2, {0: ("encoding x", None, "ClipevalError: image 7 is not an image")})
    with pytest.raises(ClipevalError, match=r"Rank 0 of 2 failed while encoding x: ClipevalError: image 7 is not"):
        failed_on_rank_0.each(lambda: "my chunks", "encoding x")
    fine = _Gathers(1, 2, {0: ("encoding x", "its chunks", None)})
    assert fine.each(lambda: "my chunks", "encoding x") == ["its chunks", "my chunks"]

    def broken():
        raise ValueError("a bug here")

    with pytest.raises(ValueError, match="a bug here"):  # the failing rank raises its own exception
        fine.each(broken, "encoding x")


def test_ranks_that_meet_at_different_steps_stop_instead_of_pairing_wrong_collectives(monkeypatch):
    import clipeval.distributed as distributed

    monkeypatch.setattr(distributed, "_out_of_step", False)
    elsewhere = _Gathers(0, 2, {1: ("finishing the run", None, None)})  # rank 1 left its evaluator early
    with pytest.raises(distributed.RanksOutOfStep, match="rank 0 was encoding x while rank 1 was finishing the run"):
        elsewhere.each(lambda: "my chunks", "encoding x")
    assert not distributed.in_step()  # the runner no longer waits for the others at the end


class _DiesBeforeGather(World):
    """A rank killed once it has encoded (and cached) its chunks, before the ranks meet."""

    def broadcast(self, value):
        return value  # rank 0 found nothing in the cache either

    def gather(self, share):
        raise KeyboardInterrupt("killed before the gather")


def test_chunks_cached_by_a_rank_of_one_launch_are_reused_by_a_launch_of_another_size(tmp_path, monkeypatch, caplog):
    """Chunk keys name the images and the batch size, never the rank or the number of ranks."""
    caplog.set_level(logging.INFO, logger="clipeval")
    source = ImageFolderSource(make_image_folder(tmp_path / "images", per_class=4))  # 12 images: 3 chunks of 4
    runtime = Runtime.create(device="cpu", workers=0, progress=False, batch_size=2, chunk_size=4)
    model = _model()
    monkeypatch.setattr(encode, "world", lambda: _DiesBeforeGather(rank=0, size=2))
    with pytest.raises(KeyboardInterrupt):  # rank 0 of 2 encodes chunks 0 and 1 (rank 1 would do chunk 2), then dies
        image_features(model, source, runtime, TensorCache(tmp_path / "cache"))
    assert len(list((tmp_path / "cache" / CHUNK_KIND).rglob("*.pt"))) == 2
    monkeypatch.setattr(encode, "world", World)  # one process now
    caplog.clear()
    resumed = image_features(model, source, runtime, TensorCache(tmp_path / "cache"))
    assert "resumed from 8 images (2 of 3 chunks) cached by a run that did not finish; encoding the other 4" in (
        caplog.text
    )
    fresh = image_features(model, source, runtime, TensorCache(tmp_path / "fresh"))
    assert torch.equal(resumed.features, fresh.features) and resumed.ids == fresh.ids


def _model():
    from fault_models import FaultyColour

    return FaultyColour()


@pytest.mark.slow
def test_two_ranks_with_gloo_give_the_features_records_and_predictions_of_one_process(tmp_path):
    tasks = tmp_path / "tasks" / "sharded"
    tasks.mkdir(parents=True)
    (tasks / "task.yaml").write_text(SHARDED_TASK)
    (tmp_path / "tmp").mkdir()
    one = _launch([sys.executable, "-m", "clipeval"], tmp_path, "one")
    two = _launch(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "clipeval"],
        tmp_path,
        "two",
    )
    features = [_entries(tmp_path / name / "cache", "features") for name in ("one", "two")]
    assert len(features[0]) == len(features[1]) == 1
    for field in ("features", "labels"):
        assert torch.equal(features[0][0][field], features[1][0][field])  # bit-identical
    assert features[0][0]["ids"] == features[1][0]["ids"]
    assert _entries(tmp_path / "two" / "cache", CHUNK_KIND) == []  # rank 0 removed every rank's chunks

    records = [json.loads((run / "results.json").read_text())["records"] for run in (one, two)]
    robust = [r for r in records[0] if r["metric"] == "robust_top1"]
    assert len(robust) == 2 * 3 and any(r["value"] < 1 for r in robust)  # (pgd, apgd-ce, worst) x 2 eps
    assert records[0] == records[1]
    predictions = [sorted((run / "predictions").iterdir()) for run in (one, two)]
    assert [p.name for p in predictions[0]] == [p.name for p in predictions[1]] and predictions[0]
    for a, b in zip(*predictions, strict=True):
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))

    log = (two / "clipeval.log").read_text()
    assert "Rank 0 of 2 encodes chunks 0-2 of 6 (images 0-191 of 360)" in log
    assert "Rank 0 of 2 attacks batches 0-" in log
    assert "0 entries read, 6 written (feature_chunks 3, features 1" in log  # rank 1 cached the other 3 chunks
    # rank 1 wrote nothing else: one run folder, one store entry, no folder of its own left behind
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["cache", "run", "store"]
    assert len(list((tmp_path / "two" / "store").glob("*.json"))) == 1
    assert list((tmp_path / "tmp").glob("clipeval-rank*")) == []


@pytest.mark.slow
def test_when_an_evaluator_fails_on_every_rank_rank_0_still_writes_what_finished_and_all_exit_2(tmp_path):
    tasks = tmp_path / "tasks" / "sharded"
    tasks.mkdir(parents=True)
    (tasks / "task.yaml").write_text(SHARDED_TASK.split("  adversarial:")[0] + REFUSING)
    (tmp_path / "tmp").mkdir()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run, stderr = _launch([*torchrun, "-m", "clipeval"], tmp_path, "two", returncode=1)
    assert "Evaluator 'refuses' of task 'sharded' failed: the data say no" in stderr  # rank 0 (exit 2)
    assert "[rank 1]" in stderr and "the data say no" in stderr.split("[rank 1]", 1)[1]  # rank 1 says it too
    document = json.loads((run / "results.json").read_text())
    assert [r["metric"] for r in document["records"]] and document["failures"][0]["evaluator"] == "refuses"


REFUSING = """  refuses: {_target_: fault_models.RefusingEvaluator}
"""


@pytest.mark.slow
def test_an_evaluator_that_fails_on_one_rank_only_fails_on_every_rank_without_a_hang(tmp_path):
    """Rank 1 failed inside an evaluator while rank 0 went on to the next one and waited for it for ever."""
    tasks = tmp_path / "tasks" / "sharded"
    tasks.mkdir(parents=True)
    two_datasets = SHARDED_TASK.split("evaluators:")[0].replace(
        "datasets:\n", "datasets:\n  train: {_target_: clipeval.embedded.source.DigitsSource, split: train}\n"
    )
    evaluators = "evaluators:\n  refuses: {_target_: fault_models.RefusingOnRankOne}\n"
    evaluators += "  zeroshot: {_target_: clipeval.evaluators.zeroshot.ZeroShot, datasets: [train]}\n"
    (tasks / "task.yaml").write_text(two_datasets + evaluators)
    (tmp_path / "tmp").mkdir()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run, stderr = _launch([*torchrun, "-m", "clipeval"], tmp_path, "two", returncode=1)
    assert "Rank 1 of 2 failed while running evaluator refuses of sharded: ClipevalError: rank 1's disk says no" in (
        stderr
    )
    document = json.loads((run / "results.json").read_text())
    assert document["failures"][0]["evaluator"] == "refuses" and document["records"] == []


def _launch(command: list[str], tmp_path: Path, name: str, returncode: int = 0):
    """Run ``command ARGS`` with its own cache and store under ``tmp_path/name``; the run folder (and stderr when
    ``returncode`` is not 0: torchrun exits 1 when a rank fails)."""
    folder = tmp_path / name
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
        "CLIPEVAL_TASKS": str(tmp_path / "tasks"),
        "CLIPEVAL_CACHE": str(folder / "cache"),
        "CLIPEVAL_STORE": str(folder / "store"),
        "TMPDIR": str(tmp_path / "tmp"),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [*command, *ARGS, f"hydra.run.dir={folder / 'run'}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert done.returncode == returncode, done.stderr[-4000:]
    return folder / "run" if returncode == 0 else (folder / "run", done.stderr)


def _entries(cache: Path, kind: str) -> list[dict]:
    return [torch.load(path, weights_only=True) for path in sorted((cache / kind).rglob("*.pt"))]
