"""Runs are named by what differs: the weights a model config points at, and the run directory."""

from __future__ import annotations

import shutil

import pytest

from clipeval.config.paths import asset
from clipeval.models.base import weights_label
from clipeval.results.store import ResultsDocument, model_label


@pytest.mark.parametrize(
    ("config", "label"),
    [
        ({"pretrained": "openai"}, "openai"),
        ({"pretrained": "openai", "checkpoint": "/ckpts/epoch_32.pt"}, "epoch_32"),
        ({"pretrained": "/runs/a/ckpt_2000.safetensors"}, "ckpt_2000"),
        ({"pretrained": "/logs/runA/checkpoints/epoch_32.pt"}, "runA/epoch_32"),  # open_clip's layout
        ({"pretrained": "/logs/runB/checkpoints/epoch_32.pt"}, "runB/epoch_32"),
        ({"name_or_path": "openai/clip-vit-base-patch32"}, "openai/clip-vit-base-patch32"),
        ({"pretrained": None}, None),
        ({}, None),
    ],
)
def test_the_weights_label_is_a_tag_a_file_stem_or_a_hub_id(config, label):
    assert weights_label(config) == label


def test_the_label_adds_the_weights_only_when_they_say_more():
    assert model_label({"name": "vit_b32", "weights": "openai"}) == "vit_b32 (openai)"
    assert model_label({"name": "tiny_digits", "weights": "tiny_digits"}) == "tiny_digits"
    assert model_label({"name": "tiny_digits"}) == "tiny_digits"  # documents written before the field


def test_a_sweep_over_checkpoints_names_each_run_by_its_weights(tmp_path, capsys):
    """``model.pretrained=a,b`` printed ``digits (v1) · tiny_digits`` twice, and the store files and report
    sections could not be told apart."""
    from clipeval.cli import main

    weights = []
    for name in ("ckpt_100", "ckpt_200"):
        weights.append(tmp_path / f"{name}.safetensors")
        shutil.copyfile(asset("tiny_digits.safetensors"), weights[-1])
    store = tmp_path / "store"
    main(
        [
            "-m",
            "task=digits",
            "runtime.limit=40",
            "runtime.progress=false",
            f"model.pretrained={weights[0]},{weights[1]}",
            f"store={store}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ]
    )
    out = capsys.readouterr().out
    assert "digits (v1) · tiny_digits (ckpt_100)" in out and "digits (v1) · tiny_digits (ckpt_200)" in out
    assert out.count("Run directory: ") == 2 and str(tmp_path / "sweep" / "0_digits") in out
    entries = sorted(p.name for p in store.glob("*.json"))
    assert [("ckpt_100" in e, "ckpt_200" in e) for e in entries].count((True, False)) == 1
    assert [("ckpt_100" in e, "ckpt_200" in e) for e in entries].count((False, True)) == 1
    labels = {ResultsDocument.load(store / e).model_label for e in entries}
    assert labels == {"tiny_digits (ckpt_100)", "tiny_digits (ckpt_200)"}


def test_the_report_selects_runs_by_their_label_with_the_weights_too(tmp_path):
    from clipeval.results.store import Selector

    raw = {"model": {"name": "tiny_digits", "weights": "ckpt_100"}, "selection": {"kind": "task", "name": "digits"}}
    doc = ResultsDocument(raw, records=[], path=tmp_path / "x.json")
    assert Selector(model="tiny_digits").matches(doc)
    assert Selector(model="tiny_digits (ckpt_100)").matches(doc) and Selector(model="*ckpt_100*").matches(doc)
    assert not Selector(model="*ckpt_200*").matches(doc)


def test_a_long_model_name_gives_a_store_file_name_every_file_system_takes(tmp_path):
    """A 260-character model.name made the store entry's name too long for the file system (exit 2 after the run)."""
    from clipeval.atomic import MAX_NAME_BYTES, safe_file_name
    from clipeval.cli import main

    names = [safe_file_name(f"20261130T000000Z_digits_{'m' * 260}{extra}_1234abcd.json") for extra in ("", "x")]
    assert all(len(n.encode()) <= MAX_NAME_BYTES and n.endswith("_1234abcd.json") for n in names)
    assert names[0] != names[1]  # the digest of the whole name keeps them apart
    assert safe_file_name("é" * 300).encode().decode()  # cut at whole characters
    store = tmp_path / "store"
    main(["task=digits", "runtime.limit=40", "runtime.progress=false", f"model.name={'m' * 260}", f"store={store}",
          f"hydra.run.dir={tmp_path / 'run'}"])  # fmt: skip
    (entry,) = store.glob("*.json")
    assert ResultsDocument.load(entry).model["name"] == "m" * 260
