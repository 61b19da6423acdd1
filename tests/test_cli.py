"""The real command line, in subprocesses: exit codes, messages, outputs, sweeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import open_clip_overrides, save_tiny_open_clip

from clipeval.results.store import load_store


def clipeval(*args: str, tmp_path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "CLIPEVAL_CACHE": str(tmp_path / "cache"),
        "CLIPEVAL_STORE": str(tmp_path / "store"),
    }
    return subprocess.run(
        [sys.executable, "-m", "clipeval", *args, "runtime.workers=0"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=timeout,
    )


@pytest.mark.slow
def test_folder_run_writes_results_and_prints_the_table(tiny_open_clip, image_folder, tmp_path):
    out = tmp_path / "out"
    proc = clipeval(
        *open_clip_overrides(tiny_open_clip),
        "task=folder",
        f"task.root={image_folder}",
        f"hydra.run.dir={out}",
        tmp_path=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "top1" in proc.stdout and "mean_per_class_recall" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert {r["n"] for r in results["records"]} == {12}
    assert (out / "predictions" / "folder" / "test.parquet").is_file()
    log = proc.stderr + "".join(p.read_text() for p in out.glob("*.log"))
    assert "Loaded model clipeval-test-tiny" in log and "cache miss, encoding" in log
    # the printed tables are in the run's log file too; open_clip's skeleton build (shape check) says nothing
    log_file = (out / "clipeval.log").read_text()
    assert all(line in log_file for line in proc.stdout.splitlines())
    assert "[root]" not in log and "No pretrained weights loaded" not in log


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["task=folder", "task.root=/nonexistent/images", "model=rn50"],
            "Image folder '/nonexistent/images' not found. Looked in:",
        ),
        (
            ["task=wds", "task.root=/nonexistent/wds", "model=rn50"],
            "Webdataset split 'test' (test/nshards.txt) not found",
        ),
        (
            [
                "task=folder",
                "task.root=.",
                "model=open_clip",
                "model.arch=ViT-B-32",
                "model.pretrained=/no/such/file.pt",
            ],
            None,
        ),
        (["task=imagenet_x", "model=rn50"], "Unknown task 'imagenet_x'"),
    ],
)
def test_user_errors_exit_2_without_a_traceback(args, message, tmp_path, image_folder):
    args = [a.replace("task.root=.", f"task.root={image_folder}") for a in args]
    proc = clipeval(*args, tmp_path=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (message or "checkpoint file not found: /no/such/file.pt") in proc.stderr


@pytest.mark.slow
def test_multirun_sweep_stores_every_run(tiny_open_clip, image_folder, tmp_path):
    other = save_tiny_open_clip(tmp_path, seed=3)
    overrides = [o for o in open_clip_overrides(tiny_open_clip) if not o.startswith("model.pretrained=")]
    proc = clipeval(
        "-m",
        *overrides,
        f"model.pretrained={tiny_open_clip['pretrained']},{other}",
        "task=folder",
        f"task.root={image_folder}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        tmp_path=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    runs = load_store(tmp_path / "store")
    assert len(runs) == 2
    assert runs[0].model["fingerprint"] != runs[1].model["fingerprint"]
    assert sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/results.json")) == [
        "0_folder",
        "1_folder",
    ]
