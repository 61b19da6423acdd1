"""Every config composes, and bad choices on the command line fail with a helpful exit 2."""

from __future__ import annotations

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

from clipeval.cli import main, missing_keys
from clipeval.config import registry

MODELS = registry.options("model")
TASKS = registry.options("task")


def test_builtin_groups_and_options_are_discovered():
    assert {"model", "task", "runtime", "suite"} <= set(registry.groups())
    assert {"open_clip", "hf", "custom", "vit_b32", "vit_b16", "vit_l14", "rn50"} <= set(MODELS)
    assert {"folder", "hf", "wds", "digits", "digits_sketch"} <= set(TASKS)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_and_task_composes(model, task):
    cfg = compose_config([f"model={model}", f"task={task}"])
    assert cfg.task.name == task
    assert "_target_" in OmegaConf.to_container(cfg.model)
    # What is left to the user is one of the documented required values, which the CLI asks for.
    assert set(missing_keys(cfg)) <= {
        "task.root",
        "task.path",
        "model.arch",
        "model.name_or_path",
        "model._target_",
    }


def test_named_open_clip_models_point_at_openai_weights():
    cfg = compose_config(["model=vit_b32", "task=folder"])
    assert (cfg.model.arch, cfg.model.pretrained, cfg.model.name) == (
        "ViT-B-32-quickgelu",  # OpenAI's weights were trained with QuickGELU
        "openai",
        "vit_b32",
    )


def test_user_task_folders_come_from_clipeval_tasks(tmp_path, monkeypatch):
    (tmp_path / "my_task").mkdir()
    (tmp_path / "my_task" / "task.yaml").write_text("name: my_task\nversion: 3\ndatasets: {}\nevaluators: {}\n")
    monkeypatch.setenv("CLIPEVAL_TASKS", str(tmp_path))
    assert "my_task" in registry.options("task")
    cfg = compose_config(["model=vit_b32", "task=my_task"])
    assert cfg.task.version == 3
    assert cfg.task.dir == str(tmp_path / "my_task")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["task=foldr", "model=vit_b32"],
            # a long list has the suggestion first, where it is seen
            "Unknown task 'foldr'. Did you mean 'folder'? Available: " + ", ".join(TASKS[:2]) + ", ",
        ),
        (["task=folder", "model=vit_b23"], "Did you mean 'vit_b32'?"),
        (["-m", "task=folder,imagenet_q", "model=vit_b32"], "Unknown task 'imagenet_q'"),
        (
            ["suite=digit"],
            "Unknown suite 'digit'. Available: digits, imagenet_c, natural_shifts, openclip_benchmark. Did you mean 'digits'?",
        ),
    ],
)
def test_bad_group_choices_exit_2_with_the_options(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err


def test_nothing_to_evaluate_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["~suite", f"hydra.run.dir={tmp_path}"])
    assert exit_info.value.code == 2
    assert "choose a task (task=<name>) or a suite (suite=<name>)" in capsys.readouterr().err


def test_missing_required_values_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["task=folder", "model=open_clip", f"hydra.run.dir={tmp_path}"])
    assert exit_info.value.code == 2
    assert "model.arch=<value> task.root=<value>" in capsys.readouterr().err


def test_help_lists_groups_their_options_and_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for group in ("model", "runtime", "suite", "task"):
        assert f"{group}: {', '.join(registry.options(group))}" in out
    assert {"imagenet_r", "objectnet", "tiny_digits", "natural_shifts"} <= set(out.replace(",", " ").split())
    assert "== Commands ==" in out
    assert "report   reports computed from stored results" in out and "check    record a finished run" in out


def test_a_target_in_a_moved_module_names_its_new_place():
    from clipeval.config.construct import build
    from clipeval.errors import ClipevalError

    with pytest.raises(ClipevalError, match=r"has moved: use clipeval\.data\.folder\.ImageFolderSource"):
        build({"_target_": "clipeval.sources.folder.ImageFolderSource", "root": ["x"]}, "dataset 'x'")
