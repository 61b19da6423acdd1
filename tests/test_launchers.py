"""Sweeps on Hydra's launchers: parallel jobs (joblib), submitit's local jobs, and what every launcher shares.

Whatever runs a sweep's jobs, each job that finishes writes a complete store entry, jobs share the cache (an
entry two jobs need at once is computed once), a job that fails on the user's input ends alone (exit 2 once the
others finished), and the sweep ends with one line per job (clipeval/sweep.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import QUIET, exit_2, make_image_folder, run_in_process
from hydra import compose, initialize_config_dir

from clipeval.cli import main
from clipeval.config.paths import conf_dir
from clipeval.results.store import load_store

TESTS = Path(__file__).resolve().parent
MODEL = ["model=custom", "model._target_=fault_models.FaultyColour"]
SWEEP_TIMEOUT = 600  # seconds: generous, so that a slow machine never fails these tests


@pytest.fixture
def images(tmp_path) -> Path:
    return make_image_folder(tmp_path / "images")  # 12 images


@pytest.fixture
def drawings_task(tmp_path, monkeypatch) -> Path:
    """A user's task scoring the same image folder as task=folder with another prompt: a sweep over both tasks
    needs the same image features twice."""
    folder = tmp_path / "tasks" / "folder_drawings"
    folder.mkdir(parents=True)
    text = (TESTS.parent / "tasks" / "folder" / "task.yaml").read_text()
    text = text.replace("name: folder", "name: folder_drawings").replace('"a photo of a {c}."', '"a drawing of a {c}."')
    (folder / "task.yaml").write_text(text)
    monkeypatch.setenv("CLIPEVAL_TASKS", str(tmp_path / "tasks"))
    return folder


def sweep(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -m clipeval -m ARGS`` in a subprocess, tests/ importable (the launchers' processes inherit it)."""
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "clipeval", "-m", *args, *QUIET, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        capture_output=True,
        text=True,
        env=environ,
        cwd=tmp_path,
        timeout=SWEEP_TIMEOUT,
    )


def logs(sweep_dir: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(sweep_dir.glob("*/clipeval.log")))


# --- the launchers' configs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("launcher", "ours", "the_plugins"),
    [
        ("joblib", {"n_jobs": 2}, {"prefer": "processes", "timeout": None}),
        ("submitit_local", {"timeout_min": 1440}, {"submitit_folder": "${hydra.sweep.dir}/.submitit/%j"}),
        ("submitit_slurm", {"gpus_per_node": 1, "partition": None}, {"signal_delay_s": 120, "max_num_timeout": 0}),
    ],
)
def test_clipevals_launcher_configs_set_their_values_over_the_plugins(launcher, ours, the_plugins, recwarn):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True).hydra.launcher
    for key, value in {**ours, **the_plugins}.items():
        assert cfg._get_node(key)._value() == value, key
    assert "ConfigStore schema with the same name" not in "".join(str(w.message) for w in recwarn)


def test_a_launcher_whose_package_is_missing_is_exit_2_saying_what_to_install(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if "joblib_launcher" in name else real(name, *a)
    )
    err = exit_2(["-m", "task=digits", "hydra/launcher=joblib"], capsys)
    assert err.startswith("clipeval: error: hydra/launcher=joblib needs the hydra-joblib-launcher package")
    assert "pip install 'clipeval[launchers]'" in err


def test_slurm_without_sbatch_is_exit_2_before_anything_is_submitted(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch on it
    err = exit_2(["-m", "task=digits", "hydra/launcher=submitit_slurm", f"hydra.sweep.dir={tmp_path / 'sw'}"], capsys)
    assert (
        "submits the sweep's jobs with SLURM's sbatch and srun, and sbatch and srun are not on this machine's PATH"
        in err
    )
    assert not (tmp_path / "sw").exists()


def test_every_jobs_config_is_checked_before_a_launcher_starts_any(tmp_path, capsys):
    argv = ["-m", "task=digits", "runtime.batch_size=16,abc", "hydra/launcher=joblib", f"store={tmp_path / 'store'}"]
    err = exit_2([*argv, f"hydra.sweep.dir={tmp_path / 'sw'}"], capsys)
    assert "Sweep job #1 (runtime.batch_size=abc): runtime.batch_size must be a whole number" in err
    assert not (tmp_path / "sw").exists() and not (tmp_path / "store").exists()


# --- every launcher: a job's user error ends that job alone ---------------------------------------------


def test_a_jobs_user_error_ends_it_alone_and_the_sweep_exits_2_naming_it(images, tmp_path, capsys):
    """Hydra's basic launcher, in this process. A user error used to exit the process in the middle of the sweep:
    the jobs after it never ran (and under a parallel launcher, the jobs running beside it were killed)."""
    sweep_dir = tmp_path / "sweep"
    with pytest.raises(SystemExit) as info:
        main(
            ["-m", *MODEL, "task=folder", f"task.root=/no/such/images,{images}", *QUIET, f"hydra.sweep.dir={sweep_dir}"]
        )
    out, err = capsys.readouterr()
    assert info.value.code == 2 and "Traceback" not in err
    assert err.startswith("[")  # the job's log line when it failed; then, once the sweep is done, its one message:
    err = err[err.index("clipeval: error: ") :]
    assert err.startswith("clipeval: error: Sweep job #0 (task.root=/no/such/images): Task 'folder': Image folder")
    assert err.endswith("1 of 2 jobs failed; the other one finished and wrote its results (listed above).\n")
    assert out.endswith(
        f"Sweep of 2 jobs (hydra/launcher=basic) in {sweep_dir}:\n"
        "  #0 task.root=/no/such/images: failed: Task 'folder': Image folder '/no/such/images' not found. Looked in:\n"
        f"  #1 task.root={images}: finished, {sweep_dir / '1_folder'}\n"
        f"Each finished job added its results to the store {tmp_path / 'store'} "
        f"(clipeval report store --store {tmp_path / 'store'}).\n"
    )
    (stored,) = load_store(tmp_path / "store")
    assert stored.raw["run_dir"] == str(sweep_dir / "1_folder")  # job #1 ran to its end
    assert "Sweep job #0 failed: Task 'folder'" in (sweep_dir / "0_folder" / "clipeval.log").read_text()


# --- parallel jobs --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_parallel_jobs_share_one_cache_and_each_writes_a_complete_store_entry(
    images, drawings_task, tmp_path, monkeypatch
):
    """Two joblib jobs that need the same image features at once: one encodes them while the other waits for it
    and reads them; each job's results equal a run of it alone."""
    sweep_dir = tmp_path / "sweep"
    proc = sweep(
        [
            "hydra/launcher=joblib",
            *MODEL,
            "task=folder,folder_drawings",
            f"++task.root={images}",
            "runtime.batch_size=4",
        ],
        tmp_path,
        CLIPEVAL_CACHE=str(tmp_path / "cache"),
        CLIPEVAL_STORE=str(tmp_path / "store"),
        FAULT_HOLD_UNTIL=f"{sweep_dir}|Another run is computing the image features",
    )
    assert proc.returncode == 0, proc.stderr
    text = logs(sweep_dir)
    assert text.count("Another run is computing the image features") == 1  # they needed them at once
    assert text.count("Encoded 12 images") == 1
    assert len(list((tmp_path / "cache" / "features").rglob("*.pt"))) == 1
    assert "[job #0]" in text and "[job #1]" in text  # the jobs share the console: their log lines say whose

    stored = {doc.selection["name"]: doc for doc in load_store(tmp_path / "store")}
    assert sorted(stored) == ["folder", "folder_drawings"]
    assert "Sweep of 2 jobs (hydra/launcher=joblib)" in proc.stdout
    assert f"#1 task=folder_drawings: finished, {sweep_dir / '1_folder_drawings'}" in proc.stdout

    monkeypatch.setenv("CLIPEVAL_CACHE", str(tmp_path / "alone-cache"))
    for task in stored:
        alone = run_in_process([*MODEL, f"task={task}", f"task.root={images}", "runtime.batch_size=4"], tmp_path / task)
        assert stored[task].raw["records"] == alone["records"]
        assert stored[task].raw["data"] == alone["data"]


@pytest.mark.slow
def test_submitit_local_jobs_end_alone_and_the_sweep_says_where_each_one_is(images, tmp_path):
    """submitit's local executor, the way a SLURM array runs: each job a process of its own, with no console."""
    sweep_dir = tmp_path / "sweep"
    proc = sweep(
        ["hydra/launcher=submitit_local", *MODEL, "task=folder", f"task.root={images},/no/such/images"],
        tmp_path,
        CLIPEVAL_CACHE=str(tmp_path / "cache"),
        CLIPEVAL_STORE=str(tmp_path / "store"),
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "clipeval: error: Sweep job #1 (task.root=/no/such/images): Task 'folder': Image folder" in proc.stderr
    assert f"#0 task.root={images}: finished, {sweep_dir / '0_folder'}" in proc.stdout
    assert "#1 task.root=/no/such/images: failed: Task 'folder': Image folder" in proc.stdout
    (stored,) = load_store(tmp_path / "store")
    assert stored.raw["run_dir"] == str(sweep_dir / "0_folder")
    assert "Sweep job #1 failed: Task 'folder'" in (sweep_dir / "1_folder" / "clipeval.log").read_text()
    assert list(sweep_dir.glob(".submitit/*/*_log.out"))  # each job's own output, as on SLURM
