"""The configuration is typed and checked before anything runs (issue 15, part 1).

Every violation is a ClipevalError (exit 2 on the command line) naming the key, the value, what
is allowed and, for an unknown key, the nearest valid one: runtime values, top-level keys, model
options, task files and their composed config, suites, Hydra's own override errors, and mistyped
commands. In-process where the behaviour is the config's; a few subprocesses for exit codes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_config, exit_2, make_wds
from omegaconf import OmegaConf

from clipeval.cli import main
from clipeval.config import registry
from clipeval.config.construct import check_options
from clipeval.config.overrides import selection_overrides
from clipeval.config.runtime import Runtime
from clipeval.errors import ClipevalError, did_you_mean, nearest
from clipeval.run import runner
from clipeval.run.task import load_task

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def checked(monkeypatch, tmp_path):
    """``overrides`` -> what :func:`clipeval.run.runner.run` hands on after its checks, without running:
    (the config, the feature cache). Raises as ``run`` does."""
    monkeypatch.setattr(runner, "_run", lambda cfg, run_dir, cache: (cfg, cache))

    def check(overrides: list[str]):
        return runner.run(compose_config(selection_overrides(overrides)), tmp_path / "run")

    return check


# --- runtime ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("runtime.batch_size=abc", "runtime.batch_size must be a whole number of at least 1, not 'abc'"),
        ("runtime.batch_size=2.5", "runtime.batch_size must be a whole number of at least 1, not 2.5"),
        ("runtime.batch_size=true", "runtime.batch_size must be a whole number of at least 1, not True"),
        ("runtime.batch_size=0", "runtime.batch_size must be a whole number of at least 1, not 0"),
        ("runtime.limit=abc", "runtime.limit must be a whole number of at least 1 (the first N samples"),
        ("runtime.limit=0", "runtime.limit must be a whole number of at least 1"),
        ("runtime.workers=abc", "runtime.workers must be 'auto' or a whole number of at least 0, not 'abc'"),
        ("runtime.workers=-1", "runtime.workers must be 'auto' or a whole number of at least 0, not -1"),
        ("runtime.seed=abc", "runtime.seed must be a whole number from 0 to 2**32-1, not 'abc'"),
        ("runtime.seed=-1", "runtime.seed must be a whole number from 0 to 2**32-1, not -1"),
        ("runtime.cache=maybe", "runtime.cache must be true or false, not 'maybe'"),
        ("runtime.cache=1.0", "runtime.cache must be true or false, not 1.0"),  # was taken as true
        ("runtime.progress=0.0", "runtime.progress must be true or false, not 0.0"),
        ("runtime.compile=1.0", "runtime.compile must be true (inductor), false, or a torch.compile backend name, not"),
        ("runtime.precision=fp64", "runtime.precision must be one of 'fp32', 'bf16', 'fp16', not 'fp64'"),
        ("runtime.decode=jpeg", "runtime.decode must be one of 'pil', 'torchvision', not 'jpeg'"),
    ],
)
def test_a_runtime_value_of_the_wrong_type_or_range_is_refused_naming_key_value_and_what_is_allowed(
    checked, override, message
):
    with pytest.raises(ClipevalError) as info:
        checked(["task=digits", override])
    assert message in str(info.value)


def test_an_unknown_runtime_key_is_refused_with_the_nearest(checked):
    with pytest.raises(ClipevalError, match=r"runtime has no key 'bacth_size' \(runtime.bacth_size=3\)\. .*"):
        checked(["task=digits", "+runtime.bacth_size=3"])
    with pytest.raises(ClipevalError, match="Did you mean 'batch_size'"):
        checked(["task=digits", "+runtime.bacth_size=3"])
    with pytest.raises(ClipevalError, match="runtime has no key 'foo'"):
        Runtime.create(device="cpu", foo=1)
    with pytest.raises(ClipevalError, match="Did you mean 'batch_size'"):  # a typo in its start: was 'cache'
        checked(["task=digits", "+runtime.bacth=3"])


def test_the_nearest_name_weighs_the_start_of_a_longer_one_and_prefers_the_closer_whole_name():
    from clipeval.errors import nearest

    assert nearest("bacth", ["batch_size", "cache", "device", "seed"]) == "batch_size"
    assert nearest("digitz", ["digits", "digits_sketch", "folder"]) == "digits"
    assert nearest("tsk", ["tags", "task"]) == "task" and nearest("xyz", ["batch_size", "cache"]) is None


def test_yes_and_no_are_flags_and_the_run_records_what_it_ran_with(checked):
    cfg, cache = checked(["task=digits", "runtime.cache=no", "runtime.progress=0", "runtime.batch_size='32'"])
    assert cache.enabled is False  # "no" was true before: any non-empty string is
    recorded = (cfg.runtime.cache, cfg.runtime.progress, cfg.runtime.batch_size)  # what results.json keeps
    assert recorded == (False, False, 32) and isinstance(recorded[1], bool)
    runtime = Runtime.create(device="cpu", cache="no", channels_last="yes", compile="false", workers="2")
    assert (runtime.cache, runtime.channels_last, runtime.compile, runtime.workers) == (False, True, False, 2)


def test_a_flag_is_true_false_yes_no_on_off_or_1_0_everywhere_and_never_a_decimal_number(checked):
    """The same rule for the runtime's flags, a task's, a dataset's and a data source's own (numeric_sort)."""
    cfg, cache = checked(["task=digits", "runtime.cache=0", "runtime.channels_last=on"])
    assert (cache.enabled, cfg.runtime.channels_last) == (False, True)
    with pytest.raises(ClipevalError, match=r"task.allow_duplicate_classnames must be true or false, not 1.0"):
        checked(["task=digits", "++task.allow_duplicate_classnames=1.0"])
    with pytest.raises(ClipevalError, match=r"task.datasets.val.optional must be true or false .*, not 0.0"):
        checked(["task=imagenet_r", "task.datasets.val.optional=0.0"])
    folder = {"_target_": "clipeval.data.folder.ImageFolderSource", "root": "x"}
    assert check_options({**folder, "numeric_sort": "no"}, "d")["numeric_sort"] is False  # handed on as checked
    with pytest.raises(ClipevalError, match=r"numeric_sort=1.0 is not allowed: numeric_sort must be true or false"):
        check_options({**folder, "numeric_sort": 1.0}, "d")


def test_a_compile_backend_torch_does_not_know_is_refused_with_the_nearest():
    with pytest.raises(ClipevalError, match=r"runtime.compile must be true, false or a torch.compile backend.*'eagr'"):
        Runtime.create(device="cpu", compile="eagr")
    with pytest.raises(ClipevalError, match="Did you mean 'eager'"):
        Runtime.create(device="cpu", compile="eagr")


# --- the top level ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tags=abc", "tags must be a list of strings, e.g. tags=[baseline,ablation], not 'abc'"),
        # text is text: a number is refused, not turned into one ('1.0', and 1e3 as '1000.0')
        ("tags=[1,2]", "tags must be a list of strings, e.g. tags=[baseline,ablation]: tags.0 is 1, a number (quote"),
        ("tags=[1e3]", "tags.0 is 1000.0, a number (quote it to give text: '1000.0')"),
        ("model.name=123", "model.name must be the model's display name (a string), or null, not 123, a number (quo"),
        ("store=2024", "store must be a folder (a string), not 2024, a number (quote it to give text: '2024')."),
        ("step=abc", "step must be a whole number of at least 0, or null, not 'abc'"),
        ("step=-3", "step must be a whole number of at least 0, or null, not -3"),
        ("data_root=[a,b]", "data_root must be a folder (a string), not ['a', 'b']"),
        ("+datarot=x", "the top level has no key 'datarot' (datarot='x'). Available: cache_dir, data_root,"),
        ("+datarot=x", "Did you mean 'data_root'?"),
    ],
)
def test_top_level_keys_are_typed_and_closed(checked, override, message):
    with pytest.raises(ClipevalError) as info:
        checked(["task=digits", override])
    assert message in str(info.value)


def test_several_problems_are_listed_together(checked):
    with pytest.raises(ClipevalError) as info:
        checked(["task=digits", "runtime.seed=-1", "runtime.precision=fp64", "step=x"])
    lines = str(info.value).splitlines()
    assert lines[0] == "3 problems in the configuration:"
    assert {line.split(" must ")[0] for line in lines[1:]} == {"  - runtime.seed", "  - runtime.precision", "  - step"}


def test_every_shipped_config_fits_the_schema(checked):
    required = {"folder": ["task.root=x"], "wds": ["task.root=x"], "hf": ["task.path=x"], "hf_stream": ["task.path=x"]}
    required |= {"retrieval_wds": ["task.root=x"], "retrieval_hf": ["task.path=x"]}
    for suite in registry.options("suite"):
        checked([f"suite={suite}", "model=vit_b32"])
    for task in registry.options("task"):
        checked([f"task={task}", "model=rn50", "runtime=smoke", "tags=[a,'2024']", "step=3", *required.get(task, [])])


# --- model options ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["+model.pretraind=x"],
            "model: clipeval.models.open_clip.OpenClipEncoder has no option 'pretraind' (given pretraind='x'). "
            "Available: arch, cache_dir, checkpoint, model_config, name, pretrained. Did you mean 'pretrained'?",
        ),
        (
            ["model=hf", "model.name_or_path=x", "+model.revison=main"],
            "HFClipEncoder has no option 'revison' (given revison='main'). Available: name, name_or_path, revision. "
            "Did you mean 'revision'?",
        ),
        (["model.name=[a]"], "model.name must be the model's display name (a string), or null, not ['a']"),
        (["~model._target_"], "model._target_ is required: the import path of the class to build"),
    ],
)
def test_an_unknown_model_option_gets_the_nearest_before_anything_runs(checked, overrides, message):
    with pytest.raises(ClipevalError) as info:
        checked(["task=digits", *overrides])
    assert message in str(info.value)


def test_an_unknown_option_of_any_built_node_gets_the_nearest():
    cfg = compose_config(["task=digits", "+task.evaluators.zeroshot.clas_subset=[0,1]"])
    with pytest.raises(ClipevalError) as info:
        load_task(cfg.task)
    assert "evaluator 'zeroshot': clipeval.evaluators.zeroshot.ZeroShot has no option 'clas_subset'" in str(info.value)
    assert "Did you mean 'class_subset'?" in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["task=digits", "task.datasets.test.split=tset"],  # was a bare KeyError('tset')
            "dataset 'test' of task 'digits': split='tset' is not allowed: split must be 'train', 'val' or 'test'.",
        ),
        (
            ["task=digits", "+task.datasets.test.shift=blr"],
            "shift='blr' is not allowed: shift must be 'renditions', 'sketch', 'rotated', 'gaussian_noise', 'blur', "
            "'contrast' or 'occlusion'",
        ),
        (
            ["task=digits_corruptions", "task.datasets.blur_1.severity=7"],
            "dataset 'blur_1' of task 'digits_corruptions': severity=7 is not allowed: severity must be 1, 2, 3, 4 or 5.",
        ),
        (
            ["task=digits_corruptions", "~task.datasets.blur_1.severity"],
            "severity=null is not allowed: severity must be one of 1, 2, 3, 4, 5 with the corruption shift 'blur'.",
        ),
        (
            ["task=digits", "+task.datasets.test.severity=3"],
            "severity=3 is not allowed: severity must be left out (null): only gaussian_noise, blur, contrast, ",
        ),
        (["task=digits", "+task.datasets.test.seed=-1"], "seed=-1 is not allowed: seed must be greater than or equal"),
        (
            ["task=folder", "task.root=x", "+task.datasets.test.other_folders=skip"],
            "dataset 'test' of task 'folder': other_folders='skip' is not allowed: other_folders must be 'error' or "
            "'ignore'.",
        ),
        (["task=folder", "task.root=x", "+task.datasets.test.crop=-2"], "crop must be greater than or equal to 0"),
        (["task=folder", "task.root=x", "task.numeric_sort=maybe"], "numeric_sort must be true or false"),
        (  # pydantic's own words name Python classes ("Input is not a valid path for <class 'os.PathLike'>")
            ["task=folder", "task.root=null"],
            "dataset 'test' of task 'folder': root=null is not allowed: root must be a string, or a path, or a list.",
        ),
        (
            ["task=imagenet_fewshot", "task.datasets.train.per_class=0"],
            "dataset 'train' of task 'imagenet_fewshot': per_class=0 is not allowed: per_class must be greater than",
        ),
        (
            ["task=imagenet_fewshot", "+task.datasets.train.source.crop=x"],
            "dataset 'train' of task 'imagenet_fewshot', its source: crop='x' is not allowed: crop must be a whole "
            "number.",
        ),
        (
            ["task=digits_probe", "task.evaluators.linear_probe.test=test"],
            "evaluator 'linear_probe': test='test' is not allowed: test must be a list, not a single string.",
        ),
    ],
)
def test_a_data_source_argument_it_does_not_take_is_refused_naming_dataset_argument_value_and_what_is_allowed(
    overrides, message
):
    """A built node's constructor is its schema: its annotations say what each option takes."""
    with pytest.raises(ClipevalError) as info:
        load_task(compose_config(selection_overrides(overrides)).task)
    assert message in str(info.value)


def test_a_split_a_webdataset_does_not_have_is_refused_naming_the_ones_it_has(tmp_path):
    root = make_wds(tmp_path / "wds", split="train")
    with pytest.raises(ClipevalError) as info:
        load_task(compose_config(selection_overrides(["task=wds", f"task.root={root}", "task.split=tset"])).task)
    assert str(info.value) == (
        f"dataset 'test' of task 'wds': split='tset' is not allowed: split must be a split of webdataset {root}: "
        "'train'."
    )


def test_a_target_that_does_not_import_is_one_message_without_hydras_log_lines(checked, caplog):
    """Hydra's lookup logged an ERROR line (three in a run) before clipeval's message."""
    with caplog.at_level(logging.DEBUG), pytest.raises(ClipevalError) as info:
        checked(["task=digits", "model._target_=nope.Nope"])
    assert str(info.value).startswith("Could not build model: cannot import nope.Nope (ModuleNotFoundError: No modu")
    with caplog.at_level(logging.DEBUG), pytest.raises(ClipevalError) as info:
        load_task(compose_config(["task=digits", "task.datasets.test._target_=clipeval.data.folder.Nope"]).task)
    assert "cannot import clipeval.data.folder.Nope (ImportError: clipeval.data.folder has no attribute or " in str(
        info.value
    )
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# --- task files ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: bad\ndatasets: {a: 1\n", "is not valid YAML (line 3, column 1): expected ',' or '}'"),
        ("name: bad\nname: again\ndatasets: {}\nevaluators: {}\n", "is not valid YAML (line 2, column 1): found "),
        ("", "is empty: a task.yaml is a mapping with name, datasets and evaluators"),
        ("# only a comment\n", "is empty: a task.yaml is a mapping"),
        ("- name: bad\n- datasets: {}\n", "holds a list, not a mapping: a task.yaml is a mapping with name, dat"),
        ("just words\n", "holds a string, not a mapping"),
        ("version: 1\ndatasets: {}\nevaluators: {}\n", "has no name: a task.yaml needs name, datasets and evaluators"),
    ],
)
def test_a_task_file_that_is_not_a_task_is_refused_naming_the_file(tmp_path, monkeypatch, text, message):
    (tmp_path / "tasks" / "bad").mkdir(parents=True)
    (tmp_path / "tasks" / "bad" / "task.yaml").write_text(text)
    monkeypatch.setenv("CLIPEVAL_TASKS", str(tmp_path / "tasks"))
    with pytest.raises(ClipevalError) as info:
        compose_config(selection_overrides(["task=bad"]))
    assert str(info.value).startswith(f"{tmp_path / 'tasks' / 'bad' / 'task.yaml'} ")
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["task.datasets.val=5"],
            "task.datasets must be a mapping of dataset name to its source (a node with _target_), at least one: "
            "task.datasets.val is 5. (task file: {dir}/task.yaml)",
        ),
        (["+task.datasets.extra={root: x}"], "task.datasets.extra._target_ is required: the import path of the class"),
        (["~task.evaluators"], "task.evaluators is required: a mapping of evaluator name to its config"),
        (
            ["task.allow_duplicate_classnames=maybe"],
            "task.allow_duplicate_classnames must be true or false, not 'maybe'",
        ),
        (["task.classnames={a: 1}"], "task.classnames must be a list of strings, a file with one per line, or null"),
    ],
)
def test_a_composed_task_is_checked_naming_the_key_and_the_task_file(checked, overrides, message):
    with pytest.raises(ClipevalError) as info:
        checked(["task=imagenet", *overrides])
    assert message.format(dir=ROOT / "tasks" / "imagenet") in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["task=digits", "+task.foo=x"],
            "task has no key 'foo' (task.foo='x'): a task takes its schema's keys and its own variables (keys of its "
            "task.yaml that an interpolation uses, like root in ${{...root}}). Available: allow_duplicate_classnames, "
            "class_subset, classnames, datasets, dir, evaluators, main_metric, name, templates, version. "
            "(task file: {tasks}/digits/task.yaml)",
        ),
        (["task=folder", "task.root=x", "+task.rot=x"], "task has no key 'rot' (task.rot='x')"),
        (["task=folder", "task.root=x", "+task.rot=x"], "Did you mean 'root'?"),
        (["+suite.tasks.digits.templats=[a]"], "suite.tasks.digits has no key 'templats' (suite.tasks.digits.templat"),
        (["+suite.tasks.digits.templats=[a]"], "Did you mean 'templates'?"),
    ],
)
def test_a_key_added_to_a_task_must_be_a_task_key_or_a_variable_of_its_file(checked, overrides, message):
    """``+task.foo=x`` was kept and ignored: a task's keys are the schema's and those its task.yaml defines."""
    with pytest.raises(ClipevalError) as info:
        checked(overrides)
    assert message.format(tasks=ROOT / "tasks") in str(info.value)


def test_a_task_variable_or_a_task_key_may_be_added(checked):
    checked(["task=folder", "task.root=x", "++task.numeric_sort=true", "++task.allow_duplicate_classnames=true"])
    checked(["task=digits", "++task.classnames=[a,b,c,d,e,f,g,h,i,j]"])  # a task key the task.yaml leaves out
    checked(["task=folder", "task.root=x", "task.class_subset=[0,1]"])  # passed on to its evaluator


UNUSED = (
    "task 'digits' does not use class_subset: its task.yaml passes no ${{...class_subset}} on to an evaluator, so the "
    "value would be ignored"
)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=digits", "+task.class_subset=[0,99]"], "task.class_subset=[0, 99]: " + UNUSED),
        (["task=digits", "+task.class_subset=[0,99]"], "set its option: task.evaluators.zeroshot.class_subset (+ to"),
        (["task=digits", "+task.class_subset=[0,99]"], "(task file: {tasks}/digits/task.yaml)"),
        (["+suite.tasks.digits.class_subset=[0,1]"], "set its option: suite.tasks.digits.evaluators.zeroshot.class_"),
        (["task=digits_probe", "+task.class_subset=[0,1]"], "None of its evaluators takes a class_subset."),
    ],
)
def test_a_task_key_the_task_does_not_pass_on_is_refused_not_ignored(checked, overrides, message):
    """``class_subset`` reaches an evaluator only through the task.yaml's ``${...class_subset}`` (folder, hf): on a
    task without one, ``+task.class_subset=[0,99]`` was kept and silently ignored."""
    with pytest.raises(ClipevalError) as info:
        checked(overrides)
    assert message.format(tasks=ROOT / "tasks") in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task.evaluators.zeroshot=null"], "task.evaluators must be a mapping of evaluator name to its config (a "),
        (
            ["~task.evaluators.zeroshot"],
            "with at least one evaluator: a task with none has nothing to evaluate, not {}",
        ),
        (["~task.datasets.test"], "task.datasets must be a mapping of dataset name to its source (a node with _tar"),
    ],
)
def test_a_task_with_nothing_to_evaluate_is_refused_before_the_run(checked, overrides, message):
    with pytest.raises(ClipevalError) as info:
        checked(["task=digits", *overrides])
    assert message in str(info.value)


@pytest.mark.parametrize("flags", [[], ["--cfg", "job"], ["-m", "runtime.seed=1,2"]])
def test_an_empty_mapping_override_that_changes_nothing_is_refused(capsys, tmp_path, flags):
    """Hydra merges ``task.evaluators={}`` into the evaluators there: the run went on with all of them."""
    err = exit_2(["task=digits", "task.evaluators={}", *flags, f"hydra.run.dir={tmp_path}"], capsys)
    assert (
        "task.evaluators={} changes nothing: Hydra merges a mapping into the one already there, so task.evaluators "
        "keeps zeroshot. To drop an entry, delete it: ~task.evaluators.zeroshot (or task.evaluators.zeroshot=null); "
        "a task needs at least one."
    ) in err


def test_setting_a_task_key_the_task_file_leaves_out_says_it_is_not_used_not_did_you_mean(capsys, tmp_path):
    err = exit_2(["task=digits", "task.class_subset=[0,0]", f"hydra.run.dir={tmp_path}"], capsys)
    assert "Could not override 'task.class_subset': " + UNUSED.format() in err
    assert "classnames" not in err and "To append" not in err  # neither a wrong suggestion nor a key that is ignored


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("version: one", "task.version must be a whole number, or dot-separated whole numbers as text such as '2.1'"
         ", not 'one'."),
        ("version: true", "task.version must be a whole number, or dot-separated whole numbers as text such as"),
        ("version: 1.5", "task.version must be a whole number, or dot-separated whole numbers as text such as"),
        ("name: [a, b]", "task.name must be the task's name (a string); a task.yaml needs name, datasets and "
         "evaluators, not ['a', 'b']."),
        ("templates: true", "task.templates must be a list of strings, a file with one per line, or null (each with"
         " {c}), not True."),
        ("allow_duplicate_classnames: 1.0", "task.allow_duplicate_classnames must be true or false, not 1.0."),
        ("dataset: {}", "task has no key 'dataset' (task.dataset={}): "),  # a key nothing interpolates is no variable
        ("templtes: [a]", "Did you mean 'templates'?"),
    ],
)  # fmt: skip
def test_a_task_file_field_of_the_wrong_type_is_refused_naming_file_field_value_and_what_is_allowed(
    checked, tmp_path, monkeypatch, field, message
):
    task = "name: mine\nversion: 1\ndatasets:\n  test: {_target_: clipeval.embedded.source.DigitsSource}\n"
    task += "evaluators:\n  zeroshot: {_target_: clipeval.evaluators.zeroshot.ZeroShot}\n"
    key = field.split(":")[0]
    lines = [line for line in task.splitlines() if not line.startswith(f"{key}:")]
    (tmp_path / "tasks" / "mine").mkdir(parents=True)
    (tmp_path / "tasks" / "mine" / "task.yaml").write_text("\n".join([*lines, field]) + "\n")
    monkeypatch.setenv("CLIPEVAL_TASKS", str(tmp_path / "tasks"))
    with pytest.raises(ClipevalError) as info:
        checked(["task=mine"])
    assert message in str(info.value)
    assert str(info.value).endswith(f"(task file: {tmp_path / 'tasks' / 'mine' / 'task.yaml'})")


def test_a_version_is_a_whole_number_or_dotted_numbers(checked, tmp_path, monkeypatch):
    for version in ("3", "'2.1'", "'1'"):
        (tmp_path / "tasks" / "mine").mkdir(parents=True, exist_ok=True)
        (tmp_path / "tasks" / "mine" / "task.yaml").write_text(
            f"name: mine\nversion: {version}\ndatasets: {{test: {{_target_: clipeval.embedded.source.DigitsSource}}}}"
            "\nevaluators: {zeroshot: {_target_: clipeval.evaluators.zeroshot.ZeroShot}}\n"
        )
        monkeypatch.setenv("CLIPEVAL_TASKS", str(tmp_path / "tasks"))
        checked(["task=mine"])


def test_a_task_loaded_on_its_own_is_checked_too():
    cfg = compose_config(["task=digits", "++task.allow_duplicate_classnames=no"])
    assert load_task(cfg.task).allow_duplicate_classnames is False  # a string "no" was true
    with pytest.raises(ClipevalError, match="task.allow_duplicate_classnames must be true or false, not 'sure'"):
        load_task(compose_config(["task=digits", "++task.allow_duplicate_classnames=sure"]).task)


# --- suites -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "suite.robustness.in_distribution=digit/test",
            "suite.robustness.in_distribution='digit/test' names task 'digit', which the suite does not run. "
            "Available: digits,",
        ),
        ("suite.robustness.in_distribution=digit/test", "Did you mean 'digits'?"),
        (
            "suite.robustness.in_distribution=digits/tset",
            "suite.robustness.in_distribution='digits/tset' names dataset 'tset', which task 'digits' does not have. "
            "Available: test. Did you mean 'test'?",
        ),
        ("+suite.robustness.shifts.extra=digits_nowhere", "names task 'digits_nowhere', which the suite does not run"),
        ("suite.robustness.shifts.sketch={datsets: digits_sketch}", "suite.robustness.shifts.sketch has no key 'dats"),
        ("suite.robustness.shifts.sketch={datsets: digits_sketch}", "Did you mean 'datasets'?"),
        ("+suite.robustnes={}", "suite has no key 'robustnes'"),
        ("suite.tasks.digits.datasets.test=5", "suite.tasks.digits.datasets must be a mapping of dataset name to"),
        ("suite.tasks.digits.datasets.test=5", ": suite.tasks.digits.datasets.test is 5. (task file: "),
        ("suite.robustness.figures=abc", "suite.robustness.figures must be a list of figures, each {_target_:"),
    ],
)
def test_a_suite_is_checked_before_any_task_runs(checked, override, message):
    with pytest.raises(ClipevalError) as info:
        checked([override])
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["+suite.robustness.shifts.extra=digits_probe"],
            "suite.robustness.shifts.extra='digits_probe' needs zero-shot top-1 records of task 'digits_probe' on "
            "train, test, renditions, sketch, rotated, which none of its evaluators (linear_probe: LinearProbe, "
            "few_shot: FewShot) writes",
        ),
        (["+suite.robustness.shifts.extra=digits_probe"], "Name a task and dataset that has one: digits/test, "),
        (["suite.robustness.in_distribution=digits_probe/test"], "in_distribution='digits_probe/test' needs zero-shot"),
        (
            ["suite=natural_shifts", "+suite.robustness.shifts.foo=imagenet_r/imagenet-r"],
            "suite.robustness.shifts names 'foo', which the suite's baselines (clipeval.report.baselines."
            "TableBaselines) have no points for: they have imagenetv2, imagenet-sketch, objectnet",
        ),
    ],
)
def test_a_robustness_setting_the_run_cannot_report_is_refused_before_the_run(checked, overrides, message):
    """A shift naming a task of probes, or a shift the baseline table lacks, used to fail after the evaluation."""
    with pytest.raises(ClipevalError) as info:
        checked(overrides)
    assert message in str(info.value)


def test_a_shift_on_a_zero_shot_task_or_an_evaluators_renamed_record_is_accepted(checked):
    checked(["+suite.robustness.shifts.extra=digits_rotated", "suite.robustness.in_distribution=digits"])
    from clipeval.config.construct import check_robustness_references

    suite = compose_config(["suite=natural_shifts"])  # objectnet's in-distribution setting: a renamed record
    check_robustness_references(OmegaConf.to_container(suite, resolve=False))


def test_a_task_whose_evaluators_do_not_say_what_they_write_is_not_judged():
    from clipeval.config.construct import check_robustness_references

    user = {"_target_": "collections.OrderedDict"}  # a user's evaluator: no zero_shot_top1
    cfg = {"suite": {"tasks": {"mine": {"datasets": {"test": {}}, "evaluators": {"mine": user}}},
                     "robustness": {"in_distribution": "mine/test", "shifts": {"s": "mine"}}}}  # fmt: skip
    check_robustness_references(cfg)


FIGURE = "suite.robustness.figures.0"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (f"{FIGURE}.file=a.txt", f"{FIGURE}.file must be a file name (no folder) ending in .png, .pdf, .svg, which"),
        (f"{FIGURE}.file=a.txt", "not 'a.txt'"),
        (f"{FIGURE}.file=plots/a.png", "not 'plots/a.png'"),
        (f"{FIGURE}.file=''", "not ''"),
        ("suite.robustness.figures.1.file=effective_robustness.png", "effective_robustness.png would be written by"),
        (f"+{FIGURE}.dpi=300", f"{FIGURE} has no key 'dpi' ({FIGURE}.dpi=300). Available: _target_, file."),
        (f"{FIGURE}._target_=clipeval.report.figures.save", "cannot draw a figure: a figure's _target_ is called with"),
    ],
)
def test_a_figure_is_checked_before_the_run_not_when_it_is_drawn(checked, override, message):
    """A figure is drawn after the evaluation: a file it cannot write, or an option nothing reads, used to show only
    then (or never)."""
    with pytest.raises(ClipevalError) as info:
        checked([override])
    assert message in str(info.value)


def test_a_figure_may_be_a_pdf_or_an_svg_in_any_case(checked):
    checked([f"{FIGURE}.file=grid.PDF", "suite.robustness.figures.1.file=bars.svg"])


# --- the command line: Hydra's errors, commands, help -------------------------------------------------------


def test_an_unknown_key_in_an_override_exits_2_with_the_nearest(capsys, tmp_path):
    err = exit_2(["task=digits", "runtime.bacth_size=3", f"hydra.run.dir={tmp_path}"], capsys)
    assert err.startswith(
        "clipeval: error: Could not override 'runtime.bacth_size': runtime has no key 'bacth_size'. Available: "
    )
    assert "Did you mean 'batch_size'?" in err
    assert "+runtime" not in err  # not Hydra's advice to add the mistyped key with '+', which would be refused
    err = exit_2(["task=digits", "task.datasets.tst.root=x", f"hydra.run.dir={tmp_path}"], capsys)
    assert "task.datasets has no key 'tst'. Available: test. Did you mean 'test'?" in err


def test_a_mistyped_group_at_the_top_level_gets_the_group(capsys, tmp_path):
    """``task`` is not a key of the composed config until a task is chosen; it is still what ``tsk=`` means."""
    err = exit_2(["tsk=digits", f"hydra.run.dir={tmp_path}"], capsys)
    assert "the top level has no key 'tsk'." in err and "Did you mean 'task'?" in err


def test_the_nearest_name_is_the_same_name_in_other_case_else_the_closest_ignoring_case():
    assert nearest("renditions", ["in_distribution", "RENDITIONS", "corruptions"]) == "RENDITIONS"
    assert nearest("SKECH", ["sketch", "rotated"]) == "sketch"
    assert nearest("tsk", ["tags", "task", "store"]) == "task"
    assert nearest("zzz", ["tags", "task"]) is None


def test_the_suggestion_comes_before_a_long_list_of_choices():
    with pytest.raises(ClipevalError) as info:
        Runtime.create(device="cpu", compile="eagr")  # torch has some 20 backends
    message = str(info.value)
    assert message.index("Did you mean 'eager'?") < message.index("Available: ")
    assert did_you_mean("tst", ["test", "val"]) == "Available: test, val. Did you mean 'test'?"  # a short one: after


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("runtime.batch_size=[1,", "Malformed override 'runtime.batch_size=[1,': no viable alternative at input"),
        ("runtime.batch_size==3", "Malformed override 'runtime.batch_size==3': extraneous input '='"),
        ("runtime.batch_size", "Malformed override 'runtime.batch_size': missing EQUAL at '<EOF>' (an override is"),
    ],
)
def test_a_malformed_override_exits_2_with_hydras_explanation(capsys, tmp_path, override, message):
    err = exit_2(["task=digits", override, f"hydra.run.dir={tmp_path}"], capsys)
    assert message in err
    assert "override_grammar" in err  # Hydra's pointer to the grammar


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["reprt", "store"], "unknown command 'reprt'; did you mean 'report'? Commands: report, check"),
        (["chek"], "unknown command 'chek'; did you mean 'check'?"),
        (["help"], "unknown command 'help'. Commands: report, check (clipeval <command> --help); a run takes"),
        (["task"], "'task' is not a command: to choose a task, write task=<name>."),
        (["digits"], "'digits' is not a command: to choose it, write task=digits or suite=digits. Commands: report,"),
        (["digits_sketch"], "'digits_sketch' is not a command: to choose it, write task=digits_sketch."),
        (["vit_b32", "task=digits"], "'vit_b32' is not a command: to choose it, write model=vit_b32."),
    ],
)
def test_a_mistyped_command_exits_2_with_the_nearest(capsys, argv, message):
    assert message in exit_2(argv, capsys)


def test_overrides_flags_and_deletions_are_not_taken_for_commands(capsys):
    for argv in (["task=digits"], ["~suite", "task=digits"], ["tags=[a]"]):
        main(["--cfg", "job", *argv])  # prints the composed config and returns
        assert "name: digits" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags",
    [["--cfg", "job"], ["--cfg", "all"], ["-c", "hydra", "--resolve"], ["--info", "defaults"], ["-m", "--cfg", "job"]],
)
def test_printing_an_invalid_config_exits_2_with_the_message_a_run_gives(capsys, checked, flags):
    """``--cfg job`` printed an invalid config and exited 0."""
    with pytest.raises(ClipevalError) as info:
        checked(["task=digits", "runtime.cache=1.0", "+task.foo=x"])
    err = exit_2([*flags, "task=digits", "runtime.cache=1.0", "+task.foo=x"], capsys)
    assert err == f"clipeval: error: {info.value}\n" and not capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--package", "nope"], "--package nope: the config has no 'nope'. Available: cache_dir, data_root, model,"),
        (["--package", "runtime.batch_sze"], "the config has no 'runtime.batch_sze'. Available: batch_size, cache,"),
        (["--package", "runtime.batch_sze"], "Did you mean 'batch_size'?"),
        (["--package=suite"], "--package suite: the config has no 'suite': no suite is chosen (choose one with suite="),
    ],
)
def test_printing_a_package_the_config_does_not_have_exits_2_with_the_nearest(capsys, argv, message):
    """Hydra printed "package 'nope' not found in config" and exited 1, which a CI gate reads as a regression."""
    assert message in exit_2(["task=digits", "--cfg", "job", *argv], capsys)
    main(["task=digits", "--cfg", "job", "--package", "runtime"])
    assert "# @package runtime\ndevice: auto\n" in capsys.readouterr().out


def test_printing_a_config_with_a_value_still_to_give_shows_it(capsys):
    main(["--cfg", "job", "task=folder"])  # task.root: ??? is what to give, not an error
    assert "root: ???" in capsys.readouterr().out


def test_on_the_real_command_line_each_kind_exits_2(tmp_path):
    """Subprocesses: the exit code is the process's. A value, a task file, a command, an unknown key."""
    (tmp_path / "tasks" / "listed").mkdir(parents=True)
    (tmp_path / "tasks" / "listed" / "task.yaml").write_text("- a\n- b\n")
    env = {**os.environ, "CLIPEVAL_TASKS": str(tmp_path / "tasks"), "CLIPEVAL_STORE": str(tmp_path / "store")}
    cases = {
        ("task=digits", "runtime.batch_size=abc"): "runtime.batch_size must be a whole number of at least 1, not 'abc'",
        ("task=listed",): "task.yaml holds a list, not a mapping",
        ("reprt", "store"): "unknown command 'reprt'; did you mean 'report'?",
        ("runtime.bacth_size=3",): "Did you mean 'batch_size'?",
        ("task=digits", "model._target_=nope.Nope"): "Could not build model: cannot import nope.Nope",  # no log line
        ("task=digits", "runtime.cache=1.0", "--cfg", "job"): "runtime.cache must be true or false, not 1.0.",
    }
    for args, message in cases.items():
        proc = subprocess.run(
            [sys.executable, "-m", "clipeval", *args, f"hydra.run.dir={tmp_path / 'run'}"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("clipeval: error: ") and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "argv", [["task=digits", "runtime=null"], ["task=digits", "model=null"], ["task=digits", "=3"]]
)
def test_a_group_set_to_nothing_is_exit_2_not_hydras_traceback(argv, capsys):
    assert exit_2(argv, capsys).startswith("clipeval: error: Config group override must be a string or a list")


def test_a_task_file_that_is_not_utf8_is_exit_2_naming_it(tmp_path, monkeypatch, capsys):

    (tmp_path / "latin").mkdir()
    (tmp_path / "latin" / "task.yaml").write_bytes(b"name: latin\n# caf\xe9\n")
    monkeypatch.setenv("CLIPEVAL_TASKS", str(tmp_path))
    assert f"{tmp_path / 'latin' / 'task.yaml'} is not UTF-8 text (byte 17" in exit_2(["task=latin"], capsys)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["task=digits", "+model.foo=1", "--cfg", "job"],
            "model: clipeval.models.open_clip.OpenClipEncoder has no option 'foo'",
        ),
        (
            ["task=digits", "task.datasets.test.split=tset", "--cfg", "job"],
            "dataset 'test' of task 'digits': split='tset' is not allowed",
        ),
        (
            ["-m", "task=digits", "task.datasets.test.split=test,tset"],
            "Sweep job #1 (task.datasets.test.split=tset): dataset 'test' of task 'digits'",
        ),
        (
            ["suite=digits", "suite.robustness.figures.0._target_=clipeval.report.figures.nope", "--cfg", "job"],
            "cannot import clipeval.report.figures.nope",
        ),
    ],
)
def test_options_and_targets_are_checked_before_printing_or_a_sweeps_first_job(argv, message, tmp_path, capsys):
    """The schema alone let these through: ``--cfg`` printed them (exit 0) and a sweep ran job #0 first."""
    err = exit_2([*argv, f"store={tmp_path / 'store'}", f"hydra.sweep.dir={tmp_path / 'sw'}"], capsys)
    assert message in err and not (tmp_path / "store").exists()
