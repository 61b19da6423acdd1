"""Every text file a config or a command line names is read one way (issue 15).

Class and template lists, a class subset, a folder task's class list, a webdataset's text files,
ObjectNet's mappings, and the JSON, CSV and YAML files of ``check`` and ``report``: a file that is
binary, compressed or in another encoding is one message (exit 2) naming the file and saying it is
not UTF-8 text, before any image is encoded. No message carries a file's raw bytes, and none quotes
more than a short piece of a value.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose_config, exit_2, make_image_folder, make_wds

from clipeval.config.construct import build
from clipeval.config.overrides import selection_overrides
from clipeval.data.wds import WebDatasetSource
from clipeval.errors import ClipevalError, printable, quoted
from clipeval.run.task import load_task

#: bytes that are not UTF-8 text, with a NUL and a terminal escape among them
BINARY = bytes(range(256)) * 8


@pytest.fixture
def binary(tmp_path) -> Path:
    path = tmp_path / "bin.txt"
    path.write_bytes(BINARY)
    return path


def assert_names_the_file_without_its_bytes(message: str, path: Path) -> None:
    assert str(path) in message
    assert "not a text file" in message and "not UTF-8" in message
    assert "\\x" not in message and "\x00" not in message and "\x1b" not in message
    assert len(message) < 400


@pytest.mark.parametrize(
    ("task", "key"),
    [
        ("digits", "task.templates"),
        ("digits", "task.classnames"),
        ("folder", "task.templates"),
        ("folder", "task.classes"),
        ("folder", "task.class_subset"),
    ],
)
def test_a_binary_file_given_as_a_list_is_refused_naming_it_before_anything_is_encoded(task, key, binary, tmp_path):
    root = make_image_folder(tmp_path / "images", per_class=1)
    where = [f"task.root={root}"] if task == "folder" else []
    cfg = compose_config(selection_overrides([f"task={task}", *where, f"{key}={binary}"]))
    with pytest.raises(ClipevalError) as info:
        load_task(cfg.task)  # builds the sources and checks classes and prompts: no model, no image encoded
    assert_names_the_file_without_its_bytes(str(info.value), binary)


def test_a_binary_file_on_the_command_line_is_exit_2_with_one_line(binary, tmp_path, capsys):
    err = exit_2(["task=digits", f"task.templates={binary}", f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    assert_names_the_file_without_its_bytes(err.strip().splitlines()[0], binary)


def test_a_webdatasets_binary_class_names_are_refused_naming_the_file(tmp_path):
    root = make_wds(tmp_path / "wds", shards=1)
    (root / "classnames.txt").write_bytes(BINARY)
    with pytest.raises(ClipevalError) as info:
        WebDatasetSource(str(root))
    assert_names_the_file_without_its_bytes(str(info.value), root / "classnames.txt")


def test_objectnets_mappings_are_read_as_json_text(tmp_path):
    from clipeval.data.imagenet import _objectnet_mapping

    (tmp_path / "folder_to_objectnet_label.json").write_bytes(BINARY)
    with pytest.raises(ClipevalError) as info:
        _objectnet_mapping(tmp_path)
    assert "folder_to_objectnet_label.json is not a JSON text file" in str(info.value)


def read_as_text(path: str) -> str:
    """A user's data source that reads a file itself."""
    return Path(path).read_bytes().decode("utf-8")


def test_a_class_that_fails_on_undecodable_bytes_is_named_without_them(binary):
    """Hydra's message would hold the repr of the bytes the class could not decode."""
    node = {"_target_": f"{__name__}.read_as_text", "path": str(binary)}
    with pytest.raises(ClipevalError) as info:
        build(node, "dataset 'test' of task 'mine'")
    message = str(info.value)
    assert message.startswith("Could not build dataset 'test' of task 'mine': UnicodeDecodeError:")
    assert "\\x" not in message and len(message) < 400


def test_quoted_values_are_json_short_and_escaped():
    assert quoted(None) == "null" and quoted(True) == "true" and quoted((0.1, 0.2)) == "[0.1, 0.2]"
    assert quoted("a\x00b\x1b[31m") == '"a\\u0000b\\u001b[31m"'
    assert quoted(b"\x89PNG" * 100).startswith("b'\\x89PNG") and len(quoted(b"\x89" * 100)) < 110
    long = quoted("x" * 5000)
    assert len(long) < 110 and "(4962 characters left out)" in long


def test_a_printed_message_has_no_control_characters_and_no_endless_line():
    text = printable("bad \x1b[2J value " + "y" * 10_000 + "\nnext line")
    first, second = text.split("\n")
    assert "\x1b" not in first and "\\x1b" in first
    assert first.endswith("characters more)") and len(first) < 2100
    assert second == "next line"


def test_an_architecture_config_is_read_as_json_text_before_open_clip_reads_it(binary, tmp_path):
    """open_clip read it itself: a UnicodeDecodeError holding the bytes, and a .txt file was silently not read."""
    from clipeval.models.open_clip import register_model_config

    arch = tmp_path / "my-arch.json"
    arch.write_bytes(BINARY)
    with pytest.raises(ClipevalError) as info:
        register_model_config("mine", str(arch))
    assert_names_the_file_without_its_bytes(str(info.value).replace("JSON text", "text"), arch)
    arch.write_text('{"embed_dim": 32}')
    with pytest.raises(ClipevalError, match=r"is not an open_clip architecture: it needs embed_dim, vision_cfg, text"):
        register_model_config("mine", str(arch))
    with pytest.raises(ClipevalError, match=r"bin.txt is not a .json file: open_clip reads <arch>.json files only"):
        register_model_config("mine", str(binary))


def test_an_empty_list_file_is_refused_naming_it(tmp_path, capsys):
    from conftest import exit_2

    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    message = exit_2(
        ["task=digits", "runtime.limit=16", f"task.templates={empty}", f"hydra.run.dir={tmp_path / 'run'}"], capsys
    )
    assert f"task.templates: file {empty} is empty (no line with text)" in message
