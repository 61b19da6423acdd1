"""Fixtures that build tiny real things: models saved to files, datasets in their real layouts."""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Nothing may be downloaded in tests; these must be set before huggingface_hub is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import signal

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from isolation import Guard
from PIL import Image

from clipeval.config.paths import conf_dir

GUARD: Guard | None = None  # set by pytest_configure

# A shell that starts the suite in the background (`nohup pytest &`) hands it SIGINT ignored, and programs it
# runs inherit that through exec: Ctrl-C tests would then test nothing. Deliver the signals as a terminal does.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

TINY_ARCH = "clipeval-test-tiny"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
CLASSES = ["red_square", "green_circle", "blue_triangle"]


# ---------------------------------------------------------------- tests never touch the user's files (isolation.py)


@pytest.hookimpl(trylast=True)  # after pytest's tmp_path plugin has set up the session's base temporary directory
def pytest_configure(config):
    """Point every default place clipeval and its libraries write to into the session's sandbox, before any test
    module is imported (huggingface_hub and datasets read their cache folders at import)."""
    global GUARD
    factory = getattr(config, "_tmp_path_factory", None)  # the tmp_path_factory fixture's object
    basetemp = factory.getbasetemp() if factory is not None else Path(tempfile.mkdtemp(prefix="clipeval-tests-"))
    GUARD = Guard.start(basetemp)


def pytest_unconfigure(config):
    if GUARD is not None:
        GUARD.stop()


def pytest_runtest_logstart(nodeid, location):
    if GUARD is not None:
        GUARD.current = nodeid


@pytest.fixture(scope="session", autouse=True)
def sandbox(request) -> Iterator[Path]:
    """The session's sandbox (isolation.py), the working directory of every test; fails the session when it
    created or changed files in the repository, or new files in the user's clipeval cache or store."""
    guard = GUARD
    cwd = guard.sandbox / "cwd"
    cwd.mkdir(exist_ok=True)
    before = os.getcwd()
    os.chdir(cwd)
    yield guard.sandbox
    os.chdir(before)
    left = guard.leftovers() + [f"{test}: {w}" for test, writes in sorted(guard.writes.items()) for w in writes]
    if left:
        pytest.fail(
            "The tests wrote outside pytest's temporary directories (tests/isolation.py):\n  " + "\n  ".join(left),
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch, request):
    """Each test gets its own cache and results store, and the root logger as it found it (a Hydra run in the
    process adds handlers bound to that test's captured stderr); it fails when it wrote outside pytest's
    temporary directories (in this process: the audit hook of isolation.py), naming what it wrote."""
    monkeypatch.setenv("CLIPEVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CLIPEVAL_STORE", str(tmp_path / "store"))
    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    logging.root.handlers[:], logging.root.level = handlers, level
    writes = GUARD.take(request.node.nodeid)
    if writes:
        pytest.fail("This test wrote outside pytest's temporary directories:\n  " + "\n  ".join(writes), pytrace=False)


def save_tiny_open_clip(folder: Path, seed: int) -> Path:
    import open_clip

    config = folder / f"{TINY_ARCH}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(str(config))
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_ARCH)
    checkpoint = folder / f"tiny-seed{seed}.pt"
    torch.save(model.state_dict(), checkpoint)
    return checkpoint


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory) -> dict[str, str]:
    """A randomly initialised small open_clip model in a checkpoint file, with its arch JSON."""
    folder = tmp_path_factory.mktemp("tiny_open_clip")
    checkpoint = save_tiny_open_clip(folder, seed=0)
    return {
        "arch": TINY_ARCH,
        "model_config": str(folder / f"{TINY_ARCH}.json"),
        "pretrained": str(checkpoint),
    }


def open_clip_overrides(tiny: dict[str, str], **extra: str) -> list[str]:
    return [
        "model=open_clip",
        f"model.arch={tiny['arch']}",
        f"model.model_config={tiny['model_config']}",
        f"model.pretrained={tiny['pretrained']}",
        *[f"{k}={v}" for k, v in extra.items()],
    ]


def synthetic_image(label: int, index: int, size: int = 40) -> Image.Image:
    """A flat colour per class with seeded noise, so images differ within a class."""
    rng = np.random.default_rng(1000 * label + index)
    base = np.zeros((size, size, 3), dtype=np.int16)
    base[..., label % 3] = 180
    noisy = np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy)


def make_image_folder(root: Path, classes=CLASSES, per_class: int = 4, fmt: str = "png") -> Path:
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            synthetic_image(label, i).save(root / name / f"img{i:02d}.{fmt}")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "images")


def make_wds(root: Path, classes=CLASSES, per_class: int = 4, shards: int = 2, split: str = "test") -> Path:
    """The CLIP_benchmark webdataset layout: split/nshards.txt, split/{0..N-1}.tar, text files."""
    (root / split).mkdir(parents=True, exist_ok=True)
    samples = [(label, i) for label in range(len(classes)) for i in range(per_class)]
    for shard in range(shards):
        with tarfile.open(root / split / f"{shard}.tar", "w") as tar:
            for n, (label, i) in enumerate(samples[shard::shards]):
                buf = io.BytesIO()
                synthetic_image(label, i).save(buf, format="PNG")
                key = f"s{shard}_{n:04d}"
                for ext, data in (("png", buf.getvalue()), ("cls", str(label).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    (root / split / "nshards.txt").write_text(f"{shards}\n")
    (root / "classnames.txt").write_text("\n".join(c.replace("_", " ") for c in classes) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\na drawing of a {c}.\n")
    return root


QUIET = ["runtime.workers=0", "runtime.progress=false"]

# ../shared/data beside the checkout (or beside the checkout a git worktree one level further down belongs to);
# tests that need it skip cleanly when it is absent
SHARED_DATA = next(
    (p / "shared" / "data" for p in Path(__file__).resolve().parents[2:4] if (p / "shared" / "data").is_dir()),
    Path(__file__).resolve().parents[2] / "shared" / "data",
)
TESTBED = SHARED_DATA / "imagenet_testbed"
PUBLISHED = SHARED_DATA / "published"
needs_testbed = pytest.mark.skipif(not (TESTBED / "robustness_top1s.csv").is_file(), reason="../shared/data is absent")


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def run_in_process(overrides: list[str], run_dir: Path) -> dict:
    from clipeval.run.runner import run

    return run(compose_config([*QUIET, *overrides]), run_dir)


def exit_2(argv: list[str], capsys) -> str:
    """``clipeval argv`` in process: it must exit 2 without a traceback; returns stderr."""
    from clipeval.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="session")
def tiny_hf_clip(tmp_path_factory) -> Path:
    """A tiny transformers CLIPModel with a byte-level tokenizer and image processor, saved to a folder."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder = tmp_path_factory.mktemp("tiny_hf_clip")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for ch in bytes_to_unicode().values():
            vocab[ch + suffix] = len(vocab)
    text = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
    )
    text.update(max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
