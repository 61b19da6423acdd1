"""conf/ and tasks/ travel inside the wheel, and an installed (non-editable) copy finds them."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_carries_configs_and_tasks_and_runs_from_an_install(tmp_path):
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "dist").glob("clipeval-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "clipeval/_bundled/conf/config.yaml",
        "clipeval/_bundled/conf/model/vit_b32.yaml",
        "clipeval/_bundled/tasks/folder/task.yaml",
        "hydra_plugins/clipeval_tasks/task_folders.py",
        "clipeval/embedded/assets/tiny_digits.safetensors",
    } <= names
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}
    help_run = subprocess.run(
        [sys.executable, "-m", "clipeval", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert help_run.returncode == 0, help_run.stderr
    assert "imagenet_sketch, imagenet_v2, iwildcam" in help_run.stdout and "tiny_digits" in help_run.stdout
    assert "mnist, mscoco, objectnet, pcam" in help_run.stdout  # retrieval and the 38-dataset tasks
    assert "retrieval_hf, retrieval_wds" in help_run.stdout and "wds, wds_imagenet1k" in help_run.stdout
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import clipeval.config.paths as p; print(p.conf_dir()); print(p.builtin_tasks_dir())",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert where.stdout.split() == [
        str(target / "clipeval/_bundled/conf"),
        str(target / "clipeval/_bundled/tasks"),
    ]
