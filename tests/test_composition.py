"""`task=` composes exactly the task that runs; a suite only when no task is chosen."""

import subprocess
import sys

import pytest
import yaml
from conftest import compose_config

from clipeval.config.overrides import selection_overrides
from clipeval.errors import ClipevalError


def test_a_chosen_task_composes_no_suite():
    cfg = compose_config(selection_overrides(["task=imagenet_r"]))
    assert cfg.task.name == "imagenet_r"
    assert cfg.get("suite") is None


def test_without_a_task_the_default_suite_is_composed():
    cfg = compose_config(selection_overrides([]))
    assert cfg.suite.name == "digits_shifts" and cfg.get("task") is None


def test_a_task_sweep_composes_no_suite_either():
    assert selection_overrides(["task=digits,digits_sketch"])[0] == "~suite"
    assert selection_overrides(["-m", "task=a,b", "x=1"]) == ["-m", "~suite", "task=a,b", "x=1"]
    assert selection_overrides(["--cfg", "job", "task=a"]) == ["--cfg", "job", "~suite", "task=a"]


def test_a_task_and_a_suite_together_are_refused():
    with pytest.raises(ClipevalError, match="a run evaluates one task or one suite"):
        selection_overrides(["task=digits", "suite=natural_shifts"])


def test_explicit_suite_null_or_deletion_is_a_deletion():
    assert selection_overrides(["task=digits", "suite=null"]) == ["task=digits", "~suite"]
    assert selection_overrides(["task=digits", "~suite"]) == ["task=digits", "~suite"]
    assert compose_config(selection_overrides(["task=digits", "suite=null"])).get("suite") is None


def test_suite_keys_next_to_a_task_are_refused():
    for key in ("suite.name=foo", "+suite.robustness.x=1", "suite.robustness.baselines.path=/x.csv"):
        with pytest.raises(ClipevalError, match="runs that task alone, but .*sets a suite's keys"):
            selection_overrides(["task=digits", key])


@pytest.mark.slow
def test_the_cli_composes_only_the_task(tmp_path):
    out = subprocess.run([sys.executable, "-m", "clipeval", "task=digits", "--cfg", "job"], capture_output=True,
                         text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    assert config["task"]["name"] == "digits" and "suite" not in config
    both = subprocess.run([sys.executable, "-m", "clipeval", "task=digits", "suite=digits"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert both.returncode == 2 and "a run evaluates one task or one suite" in both.stderr


def test_a_sweep_checks_every_job_before_the_first_runs(tmp_path, capsys):
    """A bad value in a late job of a sweep is refused before job #0 runs (no store entry is written)."""
    from clipeval.cli import main

    store = tmp_path / "store"
    with pytest.raises(SystemExit) as info:
        main(["-m", "task=digits", "runtime.batch_size=16,abc", f"store={store}", f"hydra.sweep.dir={tmp_path / 'sw'}"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "Sweep job #1 (runtime.batch_size=abc): runtime.batch_size must be a whole number" in err
    assert "No job was run." in err and not store.exists()


def test_a_user_task_shadowing_a_builtin_or_misnamed_is_said(tmp_path, monkeypatch, caplog):
    """A user's digits/ replaces the built-in digits task: said, since both would be stored as 'digits'."""
    from clipeval.config.paths import task_dirs
    from clipeval.run.task import _say_where_it_comes_from

    builtin = (task_dirs()[-1] / "digits" / "task.yaml").read_text()
    (tmp_path / "digits").mkdir()
    (tmp_path / "digits" / "task.yaml").write_text(builtin.replace("name: digits", "name: my_digits"))
    monkeypatch.setenv("CLIPEVAL_TASKS", f"{tmp_path}:{tmp_path / 'nowhere'}")
    cfg = compose_config(selection_overrides(["task=digits"]))
    _say_where_it_comes_from(cfg.task)
    assert "shadows the built-in task of that name" in caplog.text
    assert "is named 'my_digits' (task.yaml 'name'): it is chosen as task=digits" in caplog.text
    assert f"CLIPEVAL_TASKS names {tmp_path / 'nowhere'}, which is not a folder" in caplog.text
